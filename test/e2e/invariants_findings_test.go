package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The findings themselves are tested without a bed in test/invariants.

// TestInvariantCheckSeesLeakedAndLostVolumes makes both kinds of volume
// mismatch on the bed on purpose, checks that the survey finds them and
// names this test, and repairs them before the test's own check runs.
func TestInvariantCheckSeesLeakedAndLostVolumes(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	ns := createNamespace(t, c, "invariants")
	leakedName := bedName(ns, "leaked")
	leakedID := createDriverVolume(t, leakedName, 1<<20) // no PV: leaked until deleted at cleanup

	lostPV := bedName(ns, "lost")
	_, err := c.kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: lostPV},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: "nobody"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				CSI: &corev1.CSIPersistentVolumeSource{Driver: driverName, VolumeHandle: "no-such-volume-" + ns},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating PV: %v", err)
	}
	t.Cleanup(func() {
		if err := c.kube.CoreV1().PersistentVolumes().Delete(context.Background(), lostPV, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting PV %s: %v", lostPV, err)
		}
	})

	want := map[string][]string{
		"leaked volume " + leakedID: {leakedID, leakedName, "created directly on the driver of " + t.Name()},
		"lost volume " + lostPV:     {"no-such-volume-" + ns, lostPV, "claim " + ns + "/nobody of " + t.Name()},
	}
	eventually(t, objectWait, "the survey to find the leaked and the lost volume", func(ctx context.Context) (bool, string, error) {
		s, err := survey(ctx, ledger.clients, nil)
		if err != nil {
			return false, err.Error(), nil
		}
		var seen []string
		found := 0
		for _, f := range backendFindings(s) {
			subs, ok := want[f.Key]
			if !ok {
				continue
			}
			seen = append(seen, f.String())
			for _, sub := range subs {
				if !strings.Contains(f.String(), sub) {
					return false, "", fmt.Errorf("finding %q does not name %q", f, sub)
				}
			}
			found++
		}
		return found == len(want), strings.Join(seen, "; "), nil
	})
}
