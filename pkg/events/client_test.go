package events

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// Events written through the split client land on the events client; every
// other core/v1 request stays on the main one.
func TestSplitClientRoutesOnlyEvents(t *testing.T) {
	main, evs := fake.NewClientset(), fake.NewClientset()
	c := SplitClient(main, evs)
	ctx := context.Background()
	if _, err := c.CoreV1().Events("dev").Create(ctx, &v1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "dev"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		client   *fake.Clientset
		resource string
	}{
		{"event on the events client", evs, "events"},
		{"PV on the main client", main, "persistentvolumes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			acts := tc.client.Actions()
			if len(acts) != 1 || acts[0].GetResource().Resource != tc.resource {
				t.Fatalf("actions = %v, want one on %s", acts, tc.resource)
			}
		})
	}
}
