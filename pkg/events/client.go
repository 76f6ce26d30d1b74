package events

import (
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// SplitClient returns main with its core/v1 Events routed to events. The
// provision loop records Events through the client it is given; this gives
// those Events the events client's own QPS budget.
func SplitClient(main, events kubernetes.Interface) kubernetes.Interface {
	return splitClient{Interface: main, core: splitCore{CoreV1Interface: main.CoreV1(), events: events.CoreV1()}}
}

type splitClient struct {
	kubernetes.Interface
	core typedcorev1.CoreV1Interface
}

func (c splitClient) CoreV1() typedcorev1.CoreV1Interface { return c.core }

type splitCore struct {
	typedcorev1.CoreV1Interface
	events typedcorev1.CoreV1Interface
}

func (c splitCore) Events(namespace string) typedcorev1.EventInterface {
	return c.events.Events(namespace)
}
