package e2e

// Upstream v6.3.0 behaviour of claims whose spec asks for something beyond
// a plain volume: a label selector, several access modes, a volume populator
// (issue 9 item 6).

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// waitEventWith waits for an Event of the type and reason on the object whose
// message contains all of words, and returns it. Reasons alone are not
// enough: the provision loop sends "Provisioning" and "ProvisioningFailed"
// Events of its own.
func waitEventWith(t *testing.T, c *clients, ns, name, eventType, reason string, timeout time.Duration, words ...string) corev1.Event {
	t.Helper()
	var found corev1.Event
	eventually(t, timeout, fmt.Sprintf("%s event %s on %s/%s mentioning %q", eventType, reason, ns, name, words), func(ctx context.Context) (bool, string, error) {
		evs, err := claimEvents(ctx, c, ns, name)
		if err != nil {
			return false, err.Error(), nil
		}
		for _, e := range evs {
			if e.Type == eventType && e.Reason == reason && containsAll(e.Message, words) {
				found = e
				return true, "", nil
			}
		}
		return false, eventSummary(ctx, c, ns, name), nil
	})
	return found
}

func containsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// requirePending checks that the claim is still Pending, bound to nothing.
func requirePending(t *testing.T, c *clients, ns, name string) {
	t.Helper()
	pvc, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(testContext(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading claim %s/%s: %v", ns, name, err)
	}
	if pvc.Status.Phase != corev1.ClaimPending || pvc.Spec.VolumeName != "" {
		t.Errorf("claim %s/%s is %s, volume %q; want Pending without a volume", ns, name, pvc.Status.Phase, pvc.Spec.VolumeName)
	}
}

// A claim with spec.selector cannot be served by dynamic provisioning (a new
// volume has no labels to match). The user sees one Warning Event saying so
// and what to do; nothing is created and the sidecar does not retry in a loop.
func TestSelectorClaimIsRefusedWithEvent(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "selector")
	pvc := newClaim(ns, "gold", "1Mi")
	pvc.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}
	pvc = createClaim(t, c, pvc)

	ev := waitEventWith(t, c, ns, pvc.Name, corev1.EventTypeWarning, "ProvisioningFailed", provisionWait,
		"spec.selector", "dynamic provisioning cannot satisfy a label selector")
	for _, what := range []string{"without spec.selector", "PersistentVolume whose labels match"} {
		if !strings.Contains(ev.Message, what) {
			t.Errorf("event %q does not say what to do (%q)", ev.Message, what)
		}
	}
	// A final refusal, not a retry loop: the Event is not repeated.
	time.Sleep(10 * time.Second)
	evs, err := claimEvents(testContext(t), c, ns, pvc.Name)
	if err != nil {
		t.Fatal(err)
	}
	var count int32
	for _, e := range evs {
		if e.Reason == "ProvisioningFailed" && strings.Contains(e.Message, "spec.selector") {
			count += max(e.Count, 1)
		}
	}
	if count > 2 {
		t.Errorf("the refusal was reported %d times in 10 s; a final refusal is reported once per change of the claim", count)
	}
	requireNoCreateVolume(t, pvc)
	requirePending(t, c, ns, pvc.Name)
}

// A claim whose dataSourceRef names a kind the sidecar does not provision
// from (here a Backup of a populator that is not installed) is left to its
// volume populator, and its user is told so with upstream's Normal
// "Provisioning" Event rather than left in silence.
func TestPopulatorClaimGetsExternalPopulatorEvent(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "populator")
	pvc := newClaim(ns, "restored", "1Mi")
	pvc.Spec.DataSourceRef = &corev1.TypedObjectReference{APIGroup: ptr.To("backup.example.com"), Kind: "Backup", Name: "monday"}
	pvc = createClaim(t, c, pvc)

	waitEventWith(t, c, ns, pvc.Name, corev1.EventTypeNormal, "Provisioning", provisionWait,
		"Backup.backup.example.com", "monday", "external volume populator")
	requireNoCreateVolume(t, pvc)
	requirePending(t, c, ns, pvc.Name)
}

// The driver is asked for every access mode of a claim, one capability each,
// as upstream does; a claim with ReadWriteOnce and ReadWriteMany gets a
// volume usable both ways, not one merged mode. The test driver has no
// SINGLE_NODE_MULTI_WRITER, so ReadWriteOnce(Pod) is SINGLE_NODE_WRITER.
func TestClaimGetsOneVolumeCapabilityPerAccessMode(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "accessmodes")
	const (
		snw  = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		mnro = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
		mnmw = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	)
	tests := []struct {
		name  string
		modes []corev1.PersistentVolumeAccessMode
		block bool
		want  []csi.VolumeCapability_AccessMode_Mode
	}{
		{name: "rwo-rwx", modes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce, corev1.ReadWriteMany}, want: []csi.VolumeCapability_AccessMode_Mode{snw, mnmw}},
		{name: "rox-rwo", modes: []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany, corev1.ReadWriteOnce}, want: []csi.VolumeCapability_AccessMode_Mode{mnro, snw}},
		{name: "rwx-rwo-block", block: true, modes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany, corev1.ReadWriteOnce}, want: []csi.VolumeCapability_AccessMode_Mode{mnmw, snw}},
		{name: "rwop", modes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}, want: []csi.VolumeCapability_AccessMode_Mode{snw}},
	}
	claims := map[string]*corev1.PersistentVolumeClaim{}
	for _, tc := range tests {
		pvc := newClaim(ns, tc.name, "1Mi")
		pvc.Spec.AccessModes = tc.modes
		if tc.block {
			pvc.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
		}
		claims[tc.name] = createClaim(t, c, pvc)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pv := waitBound(t, c, ns, tc.name)
			if !slices.Equal(pv.Spec.AccessModes, tc.modes) {
				t.Errorf("PV access modes %v, want the claim's %v", pv.Spec.AccessModes, tc.modes)
			}
			calls := createVolumeCalls(t, claims[tc.name])
			if len(calls) == 0 {
				t.Fatal("the driver logged no CreateVolume for the claim")
			}
			var got []csi.VolumeCapability_AccessMode_Mode
			for _, vc := range calls[len(calls)-1].GetVolumeCapabilities() {
				got = append(got, vc.GetAccessMode().GetMode())
				if tc.block != (vc.GetBlock() != nil) || tc.block == (vc.GetMount() != nil) {
					t.Errorf("capability %v: want block %v", vc, tc.block)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("CreateVolume asked for access modes %v, want %v (one per access mode of the claim)", got, tc.want)
			}
		})
	}
}
