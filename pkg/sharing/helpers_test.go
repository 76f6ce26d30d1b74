package sharing

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

const (
	driver = "files.csi.example.com"
	handle = "vol-ml-data"
)

// env is a Sharer over informers that are never started: objects are put
// into their indexers (handlers do not fire) and into a fake clientset
// (for the finalizer writes), as the sample-controller tests do.
type env struct {
	s        *Sharer
	client   *fake.Clientset
	grants   *referencegrant.Fake
	requeued *requeuer
	recorder *recorder
	factory  informers.SharedInformerFactory
}

// recorder records Events as "<type> <reason> <namespace>/<name> <message>".
type recorder struct {
	mu     sync.Mutex
	events []string
}

var _ record.EventRecorder = &recorder{}

func (r *recorder) Event(obj runtime.Object, eventType, reason, message string) {
	m, _ := meta.Accessor(obj)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s %s %s/%s %s", eventType, reason, m.GetNamespace(), m.GetName(), message))
}

func (r *recorder) Eventf(obj runtime.Object, eventType, reason, format string, args ...any) {
	r.Event(obj, eventType, reason, fmt.Sprintf(format, args...))
}

func (r *recorder) AnnotatedEventf(obj runtime.Object, _ map[string]string, eventType, reason, format string, args ...any) {
	r.Eventf(obj, eventType, reason, format, args...)
}

func newEnv(t *testing.T, enabled bool, objs ...runtime.Object) *env {
	t.Helper()
	e := &env{
		client:   fake.NewClientset(objs...),
		grants:   referencegrant.NewFake(),
		requeued: &requeuer{},
		recorder: &recorder{},
	}
	e.factory = informers.NewSharedInformerFactory(e.client, 0)
	claims, volumes := e.factory.Core().V1().PersistentVolumeClaims(), e.factory.Core().V1().PersistentVolumes()
	s, err := New(Config{DriverName: driver, Enabled: enabled, Client: e.client, Claims: claims, Volumes: volumes,
		Grants: e.grants, Requeue: e.requeued, Recorder: e.recorder})
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	for _, o := range objs {
		e.cache(t, o)
	}
	return e
}

// cache puts o into its informer's indexer (add or update).
func (e *env) cache(t *testing.T, o runtime.Object) {
	t.Helper()
	var err error
	switch o := o.(type) {
	case *v1.PersistentVolumeClaim:
		err = e.s.claimIndex.Update(o)
	case *v1.PersistentVolume:
		err = e.s.volumeIndex.Update(o)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// refresh copies the clientset's current claims and PVs into the caches,
// as the informers would after the sidecar's own writes.
func (e *env) refresh(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	claims, _ := e.client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	for i := range claims.Items {
		e.cache(t, &claims.Items[i])
	}
	pvs, _ := e.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	for i := range pvs.Items {
		e.cache(t, &pvs.Items[i])
	}
}

func (e *env) claim(t *testing.T, ns, name string) *v1.PersistentVolumeClaim {
	t.Helper()
	c, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) volume(t *testing.T, name string) *v1.PersistentVolume {
	t.Helper()
	pv, err := e.client.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pv
}

// events drains the Events recorded so far.
func (e *env) events() []string {
	e.recorder.mu.Lock()
	defer e.recorder.mu.Unlock()
	out := e.recorder.events
	e.recorder.events = nil
	return out
}

// assertEvents checks the Events since the last call: each want is
// "<type> <reason> <namespace>/<name>" followed by words its message must hold.
func (e *env) assertEvents(t *testing.T, want ...[]string) {
	t.Helper()
	got := e.events()
	if len(got) != len(want) {
		t.Errorf("got %d Events, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
		return
	}
	for i, w := range want {
		head := strings.Fields(w[0])
		if !strings.HasPrefix(got[i], head[0]+" "+head[1]+" ") {
			t.Errorf("Event %d = %q, want %s %s", i, got[i], head[0], head[1])
		}
		if !strings.HasPrefix(got[i], head[0]+" "+head[1]+" "+head[2]+" ") {
			t.Errorf("Event %d = %q, want it on %s", i, got[i], head[2])
		}
		for _, word := range w[1:] {
			if !strings.Contains(got[i], word) {
				t.Errorf("Event %d = %q, want it to contain %q", i, got[i], word)
			}
		}
	}
}

func ev(head string, words ...string) []string { return append([]string{head}, words...) }

// requeuer records the claims handed back to the loop.
type requeuer struct {
	mu     sync.Mutex
	claims []string
}

func (r *requeuer) Requeue(claims ...*v1.PersistentVolumeClaim) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range claims {
		r.claims = append(r.claims, c.Namespace+"/"+c.Name)
	}
}

func (r *requeuer) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.claims
	r.claims = nil
	slices.Sort(out)
	return out
}

// Builders. The source is datasets/ml-data, bound to PV pv-ml-data.

func source(mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{
		TypeMeta: metav1.TypeMeta{Kind: "PersistentVolumeClaim", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "datasets", Name: "ml-data", UID: "uid-ml-data", ResourceVersion: "1",
			Annotations: map[string]string{SharingAnnotation: "ReadOnlyMany"}},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Ti")}},
			StorageClassName: ptr.To("files"),
			VolumeName:       "pv-ml-data",
		},
		Status: v1.PersistentVolumeClaimStatus{Phase: v1.ClaimBound},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func sharing(v string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		if v == "" {
			delete(c.Annotations, SharingAnnotation)
			return
		}
		c.Annotations[SharingAnnotation] = v
	}
}

func held(c *v1.PersistentVolumeClaim) { c.Finalizers = append(c.Finalizers, SourceFinalizer) }

func deleting(c *v1.PersistentVolumeClaim) {
	c.DeletionTimestamp = &metav1.Time{}
	c.Finalizers = append(c.Finalizers, "kubernetes.io/pvc-protection")
}

func sourceVolume(mods ...func(*v1.PersistentVolume)) *v1.PersistentVolume {
	pv := &v1.PersistentVolume{
		TypeMeta:   metav1.TypeMeta{Kind: "PersistentVolume", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: "pv-ml-data", UID: "uid-pv-ml-data", ResourceVersion: "1"},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Ti")},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			ClaimRef:                      &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "datasets", Name: "ml-data", UID: "uid-ml-data"},
			MountOptions:                  []string{"nconnect=4"},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: driver, VolumeHandle: handle, FSType: "xfs",
				VolumeAttributes:     map[string]string{"path": "/exports/ml-data"},
				NodeStageSecretRef:   &v1.SecretReference{Name: "stage", Namespace: "storage"},
				NodePublishSecretRef: &v1.SecretReference{Name: "publish", Namespace: "storage"},
			}},
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
	}
	for _, m := range mods {
		m(pv)
	}
	return pv
}

func volumeHeld(pv *v1.PersistentVolume) { pv.Finalizers = append(pv.Finalizers, SourceFinalizer) }

// consumer is a claim in ns asking to share datasets/ml-data.
func consumer(ns, name string, mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{
		TypeMeta: metav1.TypeMeta{Kind: "PersistentVolumeClaim", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), ResourceVersion: "1",
			Annotations: map[string]string{
				ShareFromAnnotation:                        "datasets/ml-data",
				"volume.kubernetes.io/storage-provisioner": driver,
			}},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Ti")}},
			StorageClassName: ptr.To("files"),
		},
		Status: v1.PersistentVolumeClaimStatus{Phase: v1.ClaimPending},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func modes(m ...v1.PersistentVolumeAccessMode) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) { c.Spec.AccessModes = m }
}

func request(q string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Spec.Resources.Requests = v1.ResourceList{v1.ResourceStorage: resource.MustParse(q)}
	}
}

func shareFrom(v string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) { c.Annotations[ShareFromAnnotation] = v }
}

// boundTo binds a consumer claim to PV name.
func boundTo(name string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Spec.VolumeName = name
		c.Status.Phase = v1.ClaimBound
	}
}

// sub is the subordinate PV of consumer claim c, as Share builds it.
func sub(t *testing.T, c *v1.PersistentVolumeClaim) *v1.PersistentVolume {
	t.Helper()
	pv := subordinate(c, "pvc-"+string(c.UID), &decision{from: Key{"datasets", "ml-data"}, source: source(), volume: sourceVolume(), allowed: ReadOnly})
	pv.UID = types.UID("uid-pvc-" + string(c.UID))
	pv.Spec.ClaimRef = &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: c.Namespace, Name: c.Name, UID: c.UID}
	pv.Status.Phase = v1.VolumeBound
	return pv
}

// allowProj lets claims in proj-a use datasets/ml-data under grant g.
func (e *env) allow(ns string) {
	e.grants.Allow(grantRef(ns, Key{"datasets", "ml-data"}), "share-ml-data")
}

// clientAction is what a fake clientset reactor is handed.
type clientAction = k8stesting.Action

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }
