package referencegrant

import "testing"

func TestChangeAffects(t *testing.T) {
	devNightly := claimsChange("prod", []string{"dev"}, snapshotTarget("nightly"))
	devSnapshots := claimsChange("prod", []string{"dev", "qa"}, snapshotTarget(""))
	claimRef := Reference{FromKind: claimKind, FromNamespace: "dev", ToKind: claimKind, ToNamespace: "prod", ToName: "nightly"}
	tests := []struct {
		name   string
		change Change
		ref    Reference
		want   bool
	}{
		{name: "named target", change: devNightly, ref: snapshotRef("dev", "prod", "nightly"), want: true},
		{name: "another name", change: devNightly, ref: snapshotRef("dev", "prod", "weekly")},
		{name: "another from namespace", change: devNightly, ref: snapshotRef("qa", "prod", "nightly")},
		{name: "target in another namespace", change: devNightly, ref: snapshotRef("dev", "staging", "nightly")},
		{name: "another kind with the same name", change: devNightly, ref: claimRef},
		{name: "every name", change: devSnapshots, ref: snapshotRef("qa", "prod", "weekly"), want: true},
		{name: "another from kind", change: devNightly, ref: Reference{FromKind: "Pod", FromNamespace: "dev", ToGroup: snapshotGroup, ToKind: snapshotKind, ToNamespace: "prod", ToName: "nightly"}},
		{name: "same namespace never needs a grant", change: claimsChange("prod", []string{"prod"}, snapshotTarget("")), ref: snapshotRef("prod", "prod", "nightly")},
		{name: "all", change: AllChanged, ref: claimRef, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.change.Affects(tc.ref); got != tc.want {
				t.Errorf("%v.Affects(%+v) = %v, want %v", tc.change, tc.ref, got, tc.want)
			}
		})
	}
}

func TestChangeString(t *testing.T) {
	tests := []struct {
		change Change
		want   string
	}{
		{change: AllChanged, want: "all"},
		{
			change: Change{Namespace: "prod",
				From: []Origin{{Kind: claimKind, Namespace: "dev"}, {Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "web"}},
				To:   []Target{{Kind: claimKind}, snapshotTarget("nightly")}},
			want: "prod: from [PersistentVolumeClaim dev, gateway.networking.k8s.io/HTTPRoute web] to [PersistentVolumeClaim *, snapshot.storage.k8s.io/VolumeSnapshot nightly]",
		},
	}
	for _, tc := range tests {
		if got := tc.change.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
