package sharing

import (
	"context"
	"errors"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// TestSyncHoldsWhileShared: the source claim and PV keep the finalizer while
// a subordinate exists or a claim allowed now waits to be bound, and lose
// it otherwise. A waiting claim refused for any reason holds nothing.
func TestSyncHoldsWhileShared(t *testing.T) {
	bound := consumer("proj-a", "data", boundTo("pvc-uid-proj-a-data"))
	otherDriver := func(c *v1.PersistentVolumeClaim) {
		c.Annotations["volume.kubernetes.io/storage-provisioner"] = "other.csi"
	}
	tests := []struct {
		name     string
		objs     []runtime.Object
		grant    bool
		wantHeld bool
	}{
		{name: "nothing shares it: released", objs: objs(source(held), sourceVolume(volumeHeld))},
		{name: "a subordinate: held", objs: objs(source(held), sourceVolume(volumeHeld), bound), grant: true, wantHeld: true},
		{name: "a subordinate whose grant was revoked: still held (it keeps its volume)", objs: objs(source(held), sourceVolume(volumeHeld), bound), wantHeld: true},
		{name: "a claim allowed now waits: held", objs: objs(source(held), sourceVolume(volumeHeld), consumer("proj-a", "data")), grant: true, wantHeld: true},
		{name: "a waiting claim without a grant: released", objs: objs(source(held), sourceVolume(volumeHeld), consumer("proj-a", "data"))},
		{name: "a waiting claim that asks too much: released", objs: objs(source(held), sourceVolume(volumeHeld), consumer("proj-a", "data", request("3Ti"))), grant: true},
		{name: "a waiting claim of another driver: released", objs: objs(source(held), sourceVolume(volumeHeld), consumer("proj-a", "data", otherDriver)), grant: true},
		{name: "a waiting claim, source being deleted: released", objs: objs(source(held, deleting), sourceVolume(volumeHeld), consumer("proj-a", "data")), grant: true},
		{name: "finalizers removed by hand while shared: put back", objs: objs(source(), sourceVolume(), bound), grant: true, wantHeld: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var all []runtime.Object
			for _, o := range tc.objs {
				all = append(all, o)
				if c, ok := o.(*v1.PersistentVolumeClaim); ok && c.Spec.VolumeName == "pvc-"+string(c.UID) {
					all = append(all, sub(t, c))
				}
			}
			e := newEnv(t, true, all...)
			if tc.grant {
				e.allow("proj-a")
			}
			if err := e.s.sync(context.Background(), "pv-ml-data"); err != nil {
				t.Fatal(err)
			}
			claimHeld := slices.Contains(e.claim(t, "datasets", "ml-data").Finalizers, SourceFinalizer)
			volumeIsHeld := slices.Contains(e.volume(t, "pv-ml-data").Finalizers, SourceFinalizer)
			src := tc.objs[0].(*v1.PersistentVolumeClaim)
			if claimHeld != tc.wantHeld && !(src.DeletionTimestamp != nil && tc.wantHeld) {
				t.Errorf("source claim held = %v, want %v", claimHeld, tc.wantHeld)
			}
			if volumeIsHeld != tc.wantHeld {
				t.Errorf("source PV held = %v, want %v", volumeIsHeld, tc.wantHeld)
			}
		})
	}
}

func objs(o ...runtime.Object) []runtime.Object { return o }

// TestSoftDeletedSourceWaitsForShares: a source claim deleted while shared
// stays (finalizer) and says so once; when the last subordinate goes it is
// released, so its deletion and the volume's reclaim proceed.
func TestSoftDeletedSourceWaitsForShares(t *testing.T) {
	a, b := consumer("proj-a", "data", boundTo("pvc-uid-proj-a-data")), consumer("proj-b", "data", boundTo("pvc-uid-proj-b-data"))
	subA, subB := sub(t, a), sub(t, b)
	e := newEnv(t, true, source(held, deleting), sourceVolume(volumeHeld), a, b, subA, subB)
	e.allow("proj-a")
	e.allow("proj-b")
	ctx := context.Background()

	if err := e.s.sync(ctx, "pv-ml-data"); err != nil {
		t.Fatal(err)
	}
	e.assertEvents(t, ev("Normal DeletionWaitsForShares datasets/ml-data", "2 claim(s)", "proj-a/data, proj-b/data", SourceFinalizer))
	if err := e.s.sync(ctx, "pv-ml-data"); err != nil {
		t.Fatal(err)
	}
	e.assertEvents(t) // told once

	if err := e.s.volumeIndex.Delete(subA); err != nil {
		t.Fatal(err)
	}
	if err := e.s.sync(ctx, "pv-ml-data"); err != nil {
		t.Fatal(err)
	}
	e.assertEvents(t, ev("Normal DeletionWaitsForShares datasets/ml-data", "1 claim(s)", "proj-b/data"))
	if !slices.Contains(e.volume(t, "pv-ml-data").Finalizers, SourceFinalizer) {
		t.Fatal("released while proj-b/data still shares the volume")
	}

	if err := e.s.volumeIndex.Delete(subB); err != nil {
		t.Fatal(err)
	}
	if err := e.s.sync(ctx, "pv-ml-data"); err != nil {
		t.Fatal(err)
	}
	if fins := e.claim(t, "datasets", "ml-data").Finalizers; slices.Contains(fins, SourceFinalizer) {
		t.Errorf("source claim finalizers %v after the last share went", fins)
	}
	if fins := e.volume(t, "pv-ml-data").Finalizers; len(fins) != 0 {
		t.Errorf("source PV finalizers %v after the last share went", fins)
	}
}

// TestRevocationToldOnBothSides: removing the annotation or the grant is
// told once to the subordinate's claim and the source claim; the share
// keeps its volume.
func TestRevocationToldOnBothSides(t *testing.T) {
	a := consumer("proj-a", "data", boundTo("pvc-uid-proj-a-data"))
	ctx := context.Background()
	t.Run("annotation removed", func(t *testing.T) {
		e := newEnv(t, true, source(held, sharing("")), sourceVolume(volumeHeld), a, sub(t, a))
		e.allow("proj-a")
		if err := e.s.sync(ctx, "pv-ml-data"); err != nil {
			t.Fatal(err)
		}
		e.assertEvents(t,
			ev("Warning ShareRevoked proj-a/data", "annotation "+SharingAnnotation+" was removed", "keeps the shared volume", "new claims"),
			ev("Warning ShareRevoked datasets/ml-data", "proj-a/data", "keeps the volume until proj-a/data is deleted", "deletes the claim"))
		if err := e.s.sync(ctx, "pv-ml-data"); err != nil {
			t.Fatal(err)
		}
		e.assertEvents(t)
		if !slices.Contains(e.volume(t, "pv-ml-data").Finalizers, SourceFinalizer) {
			t.Error("a revoked share no longer holds its source")
		}
	})
	t.Run("grant deleted", func(t *testing.T) {
		e := newEnv(t, true, source(held), sourceVolume(volumeHeld), a, sub(t, a))
		if err := e.s.sync(ctx, "pv-ml-data"); err != nil {
			t.Fatal(err)
		}
		e.assertEvents(t,
			ev("Warning ShareRevoked proj-a/data", `no ReferenceGrant in namespace "datasets" allows PersistentVolumeClaims from "proj-a"`),
			ev("Warning ShareRevoked datasets/ml-data", "proj-a/data"))
	})
	t.Run("grants unreadable: nothing is said", func(t *testing.T) {
		e := newEnv(t, true, source(held), sourceVolume(volumeHeld), a, sub(t, a))
		e.grants.SetError(referencegrant.ErrUnavailable)
		if err := e.s.sync(ctx, "pv-ml-data"); err != nil {
			t.Fatal(err)
		}
		e.assertEvents(t)
	})
}

// TestExpansionOfShareRefusedLoudly: a subordinate claim asking to grow is
// told (and so is the source's owner), once per size.
func TestExpansionOfShareRefusedLoudly(t *testing.T) {
	a := consumer("proj-a", "data", boundTo("pvc-uid-proj-a-data"))
	subA := sub(t, a)
	grown := a.DeepCopy()
	grown.Spec.Resources.Requests[v1.ResourceStorage] = mustQuantity("3Ti")
	e := newEnv(t, true, source(held), sourceVolume(volumeHeld), grown, subA)
	e.allow("proj-a")
	ctx := context.Background()
	for range 2 {
		if err := e.s.sync(ctx, "pv-ml-data"); err != nil {
			t.Fatal(err)
		}
	}
	e.assertEvents(t,
		ev("Warning SharedVolumeExpansionRefused proj-a/data", "3Ti", "every claim sharing it", "datasets/"+ExpansionRefusedSecret, "owner of datasets/ml-data"),
		ev("Warning SharedVolumeExpansionRefused datasets/ml-data", "proj-a/data", "3Ti"))
}

// TestWaitingClaimsRequeued: a change of the source claim or its PV, or of
// a grant, puts the claims waiting to share it back into the loop — not
// claims already bound, nor claims of other sources.
func TestWaitingClaimsRequeued(t *testing.T) {
	waitA, waitB := consumer("proj-a", "data"), consumer("proj-b", "data")
	bound := consumer("proj-c", "data", boundTo("pvc-uid-proj-c-data"))
	other := consumer("proj-a", "other", shareFrom("datasets/other"))
	pending := source(func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeName, c.Status.Phase = "", v1.ClaimPending })
	e := newEnv(t, true, pending, waitA, waitB, bound, other)

	e.s.claimChanged(pending, source())
	if got, want := e.requeued.take(), []string{"proj-a/data", "proj-b/data"}; !slices.Equal(got, want) {
		t.Errorf("source bound: requeued %v, want %v", got, want)
	}
	unchanged := source()
	e.s.claimChanged(source(), unchanged)
	if got := e.requeued.take(); len(got) != 0 {
		t.Errorf("source unchanged: requeued %v, want none", got)
	}
	e.s.claimChanged(source(sharing("")), source())
	if got := e.requeued.take(); len(got) != 2 {
		t.Errorf("annotation added: requeued %v, want both waiting claims", got)
	}
	e.s.volumeChanged(nil, sourceVolume())
	if got := e.requeued.take(); len(got) != 2 {
		t.Errorf("source PV appeared: requeued %v, want both waiting claims", got)
	}

	e.s.GrantsChanged(referencegrant.Change{Namespace: "datasets",
		From: []referencegrant.Origin{{Kind: ClaimKind, Namespace: "proj-b"}},
		To:   []referencegrant.Target{{Kind: ClaimKind, Name: "ml-data"}}})
	if got, want := e.requeued.take(), []string{"proj-b/data"}; !slices.Equal(got, want) {
		t.Errorf("grant for proj-b: requeued %v, want %v", got, want)
	}
	e.s.GrantsChanged(referencegrant.Change{Namespace: "prod",
		From: []referencegrant.Origin{{Kind: ClaimKind, Namespace: "proj-b"}}, To: []referencegrant.Target{{Kind: ClaimKind}}})
	if got := e.requeued.take(); len(got) != 0 {
		t.Errorf("grant in another namespace: requeued %v, want none", got)
	}
	e.s.GrantsChanged(referencegrant.AllChanged)
	if got, want := e.requeued.take(), []string{"proj-a/data", "proj-a/other", "proj-b/data"}; !slices.Equal(got, want) {
		t.Errorf("all grants changed: requeued %v, want %v", got, want)
	}
}

// TestSharedWith: the deletion guard's question, from the handle index.
func TestSharedWith(t *testing.T) {
	a := consumer("proj-a", "data", boundTo("pvc-uid-proj-a-data"))
	subA := sub(t, a)
	lone := sourceVolume(func(pv *v1.PersistentVolume) { pv.Name, pv.Spec.CSI.VolumeHandle = "pv-lone", "vol-lone" })
	e := newEnv(t, true, source(), sourceVolume(), a, subA, lone)
	for _, tc := range []struct {
		pv   *v1.PersistentVolume
		want []string
	}{
		{pv: sourceVolume(), want: []string{subA.Name}},
		{pv: subA, want: []string{"pv-ml-data"}},
		{pv: lone},
	} {
		got, err := e.s.SharedWith(tc.pv)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("SharedWith(%s) = %v, %v; want %v", tc.pv.Name, got, err, tc.want)
		}
	}
}

// TestSyncOnlyWhereResponsible: with --node-deployment only the instance on
// the volume's node holds, releases and tells (Config.Responsible); the
// others leave the source alone, so Events are not repeated per node.
func TestSyncOnlyWhereResponsible(t *testing.T) {
	tests := []struct {
		name        string
		responsible func(*v1.PersistentVolume) (bool, error)
		wantEvents  bool
		wantErr     bool
	}{
		{name: "no filter (one sidecar for the cluster): acts", wantEvents: true},
		{name: "the volume's node: acts", responsible: func(*v1.PersistentVolume) (bool, error) { return true, nil }, wantEvents: true},
		{name: "another node: leaves it", responsible: func(*v1.PersistentVolume) (bool, error) { return false, nil }},
		{name: "cannot tell: retried", responsible: func(*v1.PersistentVolume) (bool, error) { return false, errors.New("bad selector") }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := consumer("proj-a", "data", boundTo("pvc-uid-proj-a-data"))
			// Finalizers removed by hand while shared: the responsible
			// instance puts them back and tells the deleting owner.
			e := newEnv(t, true, source(deleting), sourceVolume(), a, sub(t, a))
			e.allow("proj-a")
			e.s.cfg.Responsible = tc.responsible
			err := e.s.sync(context.Background(), "pv-ml-data")
			if (err != nil) != tc.wantErr {
				t.Fatalf("sync: %v, want error %v", err, tc.wantErr)
			}
			held := slices.Contains(e.volume(t, "pv-ml-data").Finalizers, SourceFinalizer)
			if held != tc.wantEvents {
				t.Errorf("source PV held = %v, want %v", held, tc.wantEvents)
			}
			if tc.wantEvents {
				e.assertEvents(t, ev("Normal DeletionWaitsForShares datasets/ml-data", "1 claim(s)", "proj-a/data"))
			} else {
				e.assertEvents(t)
			}
		})
	}
}
