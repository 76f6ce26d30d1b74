package invariants

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/crossns/external-provisioner/pkg/sharing"
	"github.com/crossns/external-provisioner/test/csidriver"
)

// TestSharedVolumeFindings: subordinate PVs are references to their owner's
// volume, not volumes — and they never make a leak look owned.
func TestSharedVolumeFindings(t *testing.T) {
	const ns = "inv-share"
	ledger := NewLedger()
	ledger.AddNamespace(ns, "TestShare")
	ledger.AddObject("uid-src", "claim", ns, "src")
	pv := func(name, handle string, subordinate bool) corev1.PersistentVolume {
		p := corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeSpec{
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "file.csi.crossns.io", VolumeHandle: handle}},
				ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: name},
			},
			Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound},
		}
		if subordinate {
			p.Annotations = map[string]string{sharing.SharedFromAnnotation: ns + "/src", sharing.SharedVolumeAnnotation: "pvc-src"}
		}
		return p
	}
	tests := []struct {
		name  string
		state State
		want  []string
	}{
		{name: "owner and two shares: one volume, no finding", state: State{
			Volumes: []csidriver.Volume{{ID: "v1", Name: "pvc-uid-src"}},
			PVs:     []corev1.PersistentVolume{pv("pvc-src", "v1", false), pv("pvc-a", "v1", true), pv("pvc-b", "v1", true)},
		}},
		{name: "a leak is still a leak next to a shared volume", state: State{
			Volumes: []csidriver.Volume{{ID: "v1", Name: "pvc-uid-src"}, {ID: "v2", Name: "pvc-uid-src-2"}},
			PVs:     []corev1.PersistentVolume{pv("pvc-src", "v1", false), pv("pvc-a", "v1", true)},
		}, want: []string{`leaked volume v2 (name "pvc-uid-src-2"`}},
		{name: "shares alone do not own a volume: leaked once they go", state: State{
			Volumes: []csidriver.Volume{{ID: "v1", Name: "pvc-uid-src"}},
			PVs:     []corev1.PersistentVolume{pv("pvc-a", "v1", true), pv("pvc-b", "v1", true)},
		}, want: []string{`leaked volume v1 (name "pvc-uid-src"`, "only subordinate PVs [pvc-a pvc-b]", "claim inv-share/src of TestShare"}},
		{name: "two owners of one volume", state: State{
			Volumes: []csidriver.Volume{{ID: "v1", Name: "pvc-uid-src"}},
			PVs:     []corev1.PersistentVolume{pv("pvc-src", "v1", false), pv("pvc-copy", "v1", false)},
		}, want: []string{"is the handle of PVs [pvc-src pvc-copy]"}},
		{name: "a live share whose volume is gone is lost", state: State{
			PVs: []corev1.PersistentVolume{pv("pvc-a", "v9", true)},
		}, want: []string{"lost volume v9: PV pvc-a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := BackendFindings(&tc.state, ledger)
			var all []string
			for _, f := range got {
				all = append(all, f.String())
			}
			joined := strings.Join(all, "\n")
			if len(tc.want) == 0 && len(got) > 0 {
				t.Fatalf("findings:\n%s\nwant none", joined)
			}
			for _, w := range tc.want {
				if !strings.Contains(joined, w) {
					t.Errorf("findings:\n%s\nwant one containing %q", joined, w)
				}
			}
			if len(tc.want) > 0 && len(got) != 1 {
				t.Errorf("%d findings, want 1:\n%s", len(got), joined)
			}
		})
	}
}
