package sharing

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// TestShareRefusals: every refusal names what to change, has its kind, and
// leaves the source unheld.
func TestShareRefusals(t *testing.T) {
	otherDriver := func(pv *v1.PersistentVolume) { pv.Spec.CSI.Driver = "ebs.csi.aws.com" }
	rwo := func(pv *v1.PersistentVolume) { pv.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce} }
	roxOnly := func(pv *v1.PersistentVolume) { pv.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany} }
	block := func(pv *v1.PersistentVolume) { pv.Spec.VolumeMode = ptr.To(v1.PersistentVolumeBlock) }
	subordinateOf := func(pv *v1.PersistentVolume) {
		pv.Annotations = map[string]string{SharedFromAnnotation: "raw/imagenet", SharedVolumeAnnotation: "pv-imagenet"}
	}
	tests := []struct {
		name    string
		enabled bool
		noGrant bool
		// grantTo is the source name the grant allows; "" is ml-data.
		grantTo string
		// grantsErr makes grants unreadable.
		grantsErr bool
		source    *v1.PersistentVolumeClaim
		volume    *v1.PersistentVolume
		claim     *v1.PersistentVolumeClaim
		wantKind  FailureKind
		wantUndec bool
		reason    string
		words     []string
	}{
		{name: "gate off", claim: consumer("proj-a", "data"), reason: events.SharingDisabled,
			words: []string{"--feature-gates=CrossNamespaceVolumeSharing=true", "datasets/ml-data"}},
		{name: "no grant: says both are needed, reveals nothing about the source", enabled: true, noGrant: true, claim: consumer("proj-a", "data"),
			reason: events.ReferenceGrantMissing, words: []string{`namespace "datasets"`, `from "proj-a"`, `PersistentVolumeClaim "ml-data"`, SharingAnnotation, "both are needed"}},
		{name: "no grant, source missing: still only the grant", enabled: true, noGrant: true, claim: consumer("proj-a", "data", shareFrom("datasets/nothing")),
			reason: events.ReferenceGrantMissing, words: []string{`"nothing"`}},
		{name: "grants unreadable", enabled: true, grantsErr: true, claim: consumer("proj-a", "data"), wantUndec: true,
			reason: events.ReferenceGrantsUnavailable, words: []string{"ReferenceGrant CRD"}},
		{name: "grant but no annotation: a grant alone allows clones only", enabled: true, source: source(sharing("")), claim: consumer("proj-a", "data"),
			reason: events.SharingNotAllowed, words: []string{SharingAnnotation + "=ReadOnlyMany", `ReferenceGrant "share-ml-data" allows clones`}},
		{name: "annotation with a value that means nothing", enabled: true, source: source(sharing("yes")), claim: consumer("proj-a", "data"),
			reason: events.SharingNotAllowed, words: []string{`"yes"`, "ReadOnlyMany or ReadWriteMany"}},
		{name: "owner allows read-only, claim asks read-write", enabled: true, claim: consumer("proj-a", "data", modes(v1.ReadWriteMany)),
			reason: events.SharingNotAllowed, words: []string{"allows sharing it ReadOnlyMany", "asks for ReadWriteMany", "accessModes [ReadOnlyMany]"}},
		{name: "claim asks a single-node mode", enabled: true, claim: consumer("proj-a", "data", modes(v1.ReadWriteOnce)), wantKind: Unsupported,
			reason: events.ShareInvalid, words: []string{"ReadWriteOnce", "create the claim again"}},
		{name: "claim has a data source too", enabled: true, wantKind: Unsupported, reason: events.ShareInvalid, words: []string{"data source"},
			claim: consumer("proj-a", "data", func(c *v1.PersistentVolumeClaim) {
				c.Spec.DataSourceRef = &v1.TypedObjectReference{Kind: "PersistentVolumeClaim", Name: "x"}
			})},
		{name: "claim names a data source by annotation too: an edit fixes it", enabled: true, reason: events.ShareInvalid,
			words: []string{"provisioner.crossns.io/data-source", "remove one of the two annotations"},
			claim: consumer("proj-a", "data", func(c *v1.PersistentVolumeClaim) {
				c.Annotations["provisioner.crossns.io/data-source"] = "PersistentVolumeClaim/datasets/ml-data"
			})},
		{name: "annotation names no claim", enabled: true, claim: consumer("proj-a", "data", shareFrom("datasets/ML_data")),
			reason: events.ShareInvalid, words: []string{"<namespace>/<claim>"}},
		{name: "source not found", enabled: true, grantTo: "nothing", claim: consumer("proj-a", "data", shareFrom("datasets/nothing")),
			reason: events.ShareSourceNotReady, words: []string{"datasets/nothing not found"}},
		{name: "source not bound", enabled: true, claim: consumer("proj-a", "data"), reason: events.ShareSourceNotReady, words: []string{"Pending, not Bound"},
			source: source(func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeName, c.Status.Phase = "", v1.ClaimPending })},
		{name: "source being deleted", enabled: true, source: source(held, deleting), claim: consumer("proj-a", "data"),
			reason: events.ShareSourceNotReady, words: []string{"being deleted"}},
		{name: "source of another driver", enabled: true, volume: sourceVolume(otherDriver), claim: consumer("proj-a", "data"),
			reason: events.ShareRefused, words: []string{`CSI driver "ebs.csi.aws.com"`, `StorageClass "files"`, "StorageClass of the source's driver"}},
		{name: "source is ReadWriteOnce", enabled: true, volume: sourceVolume(rwo), claim: consumer("proj-a", "data"),
			reason: events.ShareRefused, words: []string{"[ReadWriteOnce]", "many nodes", "clone"}},
		{name: "source volume read-only, claim asks read-write", enabled: true, source: source(sharing("ReadWriteMany")), volume: sourceVolume(roxOnly),
			claim: consumer("proj-a", "data", modes(v1.ReadWriteMany)), reason: events.ShareRefused, words: []string{"mounted [ReadOnlyMany]", "accessModes [ReadOnlyMany]"}},
		{name: "Block source, Filesystem claim", enabled: true, volume: sourceVolume(block), claim: consumer("proj-a", "data"),
			reason: events.ShareRefused, words: []string{"Block volume", "asks for Filesystem", "volumeMode: Block"}},
		{name: "request larger than the source", enabled: true, claim: consumer("proj-a", "data", request("3Ti")),
			reason: events.ShareRefused, words: []string{"asks for 3Ti", "has 2Ti", "at most 2Ti"}},
		{name: "source is itself a share", enabled: true, volume: sourceVolume(subordinateOf), claim: consumer("proj-a", "data"),
			reason: events.ShareRefused, words: []string{"share from raw/imagenet instead"}},
		{name: "another VolumeAttributesClass", enabled: true, reason: events.ShareRefused, words: []string{`"gold"`},
			claim: consumer("proj-a", "data", func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeAttributesClassName = ptr.To("gold") })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, vol := tc.source, tc.volume
			if src == nil {
				src = source()
			}
			if vol == nil {
				vol = sourceVolume()
			}
			e := newEnv(t, tc.enabled, src, vol, tc.claim)
			if !tc.noGrant {
				to := cmp.Or(tc.grantTo, "ml-data")
				e.grants.Allow(grantRef("proj-a", Key{"datasets", to}), "share-"+to)
			}
			if tc.grantsErr {
				e.grants.SetError(fmt.Errorf("%w: CRD not installed", referencegrant.ErrUnavailable))
			}
			pv, err := e.s.Share(context.Background(), tc.claim, "pvc-x")
			if pv != nil {
				t.Fatalf("Share() = PV %s, want a refusal", pv.Name)
			}
			se, ok := AsError(err)
			if !ok {
				t.Fatalf("Share() error = %v, want a *sharing.Error", err)
			}
			if se.Kind != tc.wantKind || se.Undecided != tc.wantUndec || se.Reason != tc.reason {
				t.Errorf("Share() = kind %v undecided %v reason %s, want %v %v %s", se.Kind, se.Undecided, se.Reason, tc.wantKind, tc.wantUndec, tc.reason)
			}
			for _, w := range tc.words {
				if !strings.Contains(se.Message, w) {
					t.Errorf("message %q does not contain %q", se.Message, w)
				}
			}
			if se.Denial == "" {
				t.Errorf("no denial label for %s", se.Reason)
			}
			if fins := e.claim(t, "datasets", src.Name).Finalizers; slices.Contains(fins, SourceFinalizer) && !slices.Contains(src.Finalizers, SourceFinalizer) {
				t.Errorf("a refused share held the source claim: finalizers %v", fins)
			}
			if fins := e.volume(t, vol.Name).Finalizers; slices.Contains(fins, SourceFinalizer) {
				t.Errorf("a refused share held the source PV: finalizers %v", fins)
			}
			if evs := e.events(); len(evs) != 0 {
				t.Errorf("Share sent Events %v; refusals are told by the provisioner, once", evs)
			}
		})
	}
}

// TestShare: the subordinate PV points at the same volume, read-only for
// ReadOnlyMany, with the source's node secrets and capacity; both claims
// hold the finalizer and get an Event.
func TestShare(t *testing.T) {
	tests := []struct {
		name         string
		claim        *v1.PersistentVolumeClaim
		source       *v1.PersistentVolumeClaim
		wantReadOnly bool
		wantGrant    string
		wantAccess   string
	}{
		{name: "ReadOnlyMany across namespaces", claim: consumer("proj-a", "data"), source: source(),
			wantReadOnly: true, wantGrant: "share-ml-data", wantAccess: "ReadOnlyMany"},
		{name: "ReadWriteMany across namespaces", claim: consumer("proj-a", "data", modes(v1.ReadWriteMany)), source: source(sharing("ReadWriteMany")),
			wantGrant: "share-ml-data", wantAccess: "ReadWriteMany"},
		{name: "read-only claim of a read-write share", claim: consumer("proj-a", "data"), source: source(sharing("ReadWriteMany")),
			wantReadOnly: true, wantGrant: "share-ml-data", wantAccess: "ReadWriteMany"},
		{name: "within one namespace: the annotation alone", claim: consumer("datasets", "reader", shareFrom("ml-data")), source: source(),
			wantReadOnly: true, wantAccess: "ReadOnlyMany"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, true, tc.source, sourceVolume(), tc.claim)
			e.allow("proj-a")
			pv, err := e.s.Share(context.Background(), tc.claim, "pvc-new")
			if err != nil {
				t.Fatalf("Share() error = %v", err)
			}
			refused := &v1.SecretReference{Name: ExpansionRefusedSecret, Namespace: "datasets"}
			wantCSI := &v1.CSIPersistentVolumeSource{
				Driver: driver, VolumeHandle: handle, FSType: "xfs", ReadOnly: tc.wantReadOnly,
				VolumeAttributes:          map[string]string{"path": "/exports/ml-data"},
				NodeStageSecretRef:        &v1.SecretReference{Name: "stage", Namespace: "storage"},
				NodePublishSecretRef:      &v1.SecretReference{Name: "publish", Namespace: "storage"},
				ControllerExpandSecretRef: refused, NodeExpandSecretRef: refused,
			}
			if !reflect.DeepEqual(pv.Spec.CSI, wantCSI) {
				t.Errorf("spec.csi = %+v\nwant      %+v", pv.Spec.CSI, wantCSI)
			}
			if got := pv.Spec.Capacity[v1.ResourceStorage]; got.Cmp(resource.MustParse("2Ti")) != 0 {
				t.Errorf("capacity %s, want the source's 2Ti", got.String())
			}
			if pv.Name != "pvc-new" || pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete ||
				!slices.Equal(pv.Spec.AccessModes, tc.claim.Spec.AccessModes) || !slices.Equal(pv.Spec.MountOptions, []string{"nconnect=4"}) {
				t.Errorf("PV %s: reclaim %s, modes %v, mount options %v", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy, pv.Spec.AccessModes, pv.Spec.MountOptions)
			}
			wantAnn := map[string]string{
				SharedFromAnnotation: "datasets/ml-data", SharedFromUIDAnnotation: "uid-ml-data", SharedVolumeAnnotation: "pv-ml-data",
				SharedAccessAnnotation: tc.wantAccess, modifySecretNameAnn: ExpansionRefusedSecret, modifySecretNamespaceAnn: "datasets",
			}
			if tc.wantGrant != "" {
				wantAnn[ReferenceGrantAnnotation] = tc.wantGrant
			}
			if !reflect.DeepEqual(pv.Annotations, wantAnn) {
				t.Errorf("annotations %v, want %v", pv.Annotations, wantAnn)
			}
			if !IsSubordinate(pv) || !e.s.Subordinate(pv) {
				t.Error("the PV is not recognised as a subordinate")
			}
			if fins := e.claim(t, "datasets", "ml-data").Finalizers; !slices.Equal(fins, []string{SourceFinalizer}) {
				t.Errorf("source claim finalizers %v, want [%s]", fins, SourceFinalizer)
			}
			if fins := e.volume(t, "pv-ml-data").Finalizers; !slices.Equal(fins, []string{SourceFinalizer}) {
				t.Errorf("source PV finalizers %v, want [%s]", fins, SourceFinalizer)
			}
			live := "seen by both"
			if tc.wantReadOnly {
				live = "mounted read-only"
			}
			e.assertEvents(t,
				ev("Normal VolumeShared "+tc.claim.Namespace+"/"+tc.claim.Name, "datasets/ml-data", "pv-ml-data", "no copy", live, "Expand or change the source"),
				ev("Normal VolumeShared datasets/ml-data", tc.claim.Namespace+"/"+tc.claim.Name, "pvc-new", "deleting this claim waits"))
		})
	}
}

// TestShareDecidedAgainAfterHolding: a grant revoked while the finalizers
// are written still stops the share; the hold is left for sync to release.
func TestShareDecidedAgainAfterHolding(t *testing.T) {
	claim := consumer("proj-a", "data")
	e := newEnv(t, true, source(), sourceVolume(), claim)
	e.allow("proj-a")
	e.client.PrependReactor("patch", "persistentvolumes", func(_ clientAction) (bool, runtime.Object, error) {
		e.grants.Revoke(grantRef("proj-a", Key{"datasets", "ml-data"}))
		return false, nil, nil
	})
	_, err := e.s.Share(context.Background(), claim, "pvc-x")
	if se, ok := AsError(err); !ok || se.Reason != events.ReferenceGrantMissing {
		t.Fatalf("Share() error = %v, want ReferenceGrantMissing", err)
	}
	if n := e.s.queue.Len(); n != 1 {
		t.Errorf("%d sources queued for release, want 1", n)
	}
	e.refresh(t)
	if err := e.s.sync(context.Background(), "pv-ml-data"); err != nil {
		t.Fatal(err)
	}
	if fins := e.claim(t, "datasets", "ml-data").Finalizers; len(fins) != 0 {
		t.Errorf("source claim still held after the revoked share: %v", fins)
	}
}
