package referencegrant

import "testing"

func TestDescribe(t *testing.T) {
	tests := []struct {
		name        string
		ref         Reference
		wantDescr   string
		wantMessage string
	}{
		{
			name:        "snapshot",
			ref:         snapshotRef("dev", "prod", "nightly"),
			wantDescr:   `a ReferenceGrant in namespace "prod" with from {group: "", kind: PersistentVolumeClaim, namespace: "dev"} and to {group: "snapshot.storage.k8s.io", kind: VolumeSnapshot, name: "nightly"}`,
			wantMessage: `no ReferenceGrant in namespace "prod" allows PersistentVolumeClaims from "dev" to use VolumeSnapshot "nightly"; to allow it, create a ReferenceGrant in namespace "prod" with from {group: "", kind: PersistentVolumeClaim, namespace: "dev"} and to {group: "snapshot.storage.k8s.io", kind: VolumeSnapshot, name: "nightly"}`,
		},
		{
			name:        "claim",
			ref:         Reference{FromKind: claimKind, FromNamespace: "dev", ToKind: claimKind, ToNamespace: "prod", ToName: "data"},
			wantDescr:   `a ReferenceGrant in namespace "prod" with from {group: "", kind: PersistentVolumeClaim, namespace: "dev"} and to {group: "", kind: PersistentVolumeClaim, name: "data"}`,
			wantMessage: `no ReferenceGrant in namespace "prod" allows PersistentVolumeClaims from "dev" to use PersistentVolumeClaim "data"; to allow it, create a ReferenceGrant in namespace "prod" with from {group: "", kind: PersistentVolumeClaim, namespace: "dev"} and to {group: "", kind: PersistentVolumeClaim, name: "data"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Describe(tc.ref); got != tc.wantDescr {
				t.Errorf("Describe = %s\nwant       %s", got, tc.wantDescr)
			}
			if got := DenyMessage(tc.ref); got != tc.wantMessage {
				t.Errorf("DenyMessage = %s\nwant          %s", got, tc.wantMessage)
			}
		})
	}
}
