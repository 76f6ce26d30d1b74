package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/crossns/external-provisioner/pkg/inflight"
	"github.com/crossns/external-provisioner/test/csidriver"
)

// TestRecordedCallNeverMadeIsSettledWithoutCopy: a sidecar recorded a
// CreateVolume for a cross-namespace clone and stopped before making it (the
// long soak's leader kill hit that window); then the owner revoked the grant.
// The next sidecar must end the record without the driver ever copying the
// source for that claim: it asks without the source (an empty volume at
// most), deletes what it got, and tells the claim. Before, it repeated the
// recorded request, and the driver made a copy of prod's data after the
// grant was gone.
func TestRecordedCallNeverMadeIsSettledWithoutCopy(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	src := provisionSource(t, c, prod, "db", map[string]string{"secret.txt": "prod only"})
	grant(t, c, prod, "share", dev, "", "PersistentVolumeClaim", "db")

	var name string
	stopSidecarWhile(t, func() {
		pvc := createClaim(t, c, fromClaim(newClaim(dev, "copy", "1Mi"), prod, "db"))
		name = "pvc-" + string(pvc.UID)
		// What the stopped sidecar had written before its call.
		records := inflight.NewStore(c.kube, "default", inflight.ConfigMapName(driverName))
		if err := records.Load(ctx); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go records.Run(rctx)
		size := resource.MustParse("1Mi")
		if err := records.Add(ctx, inflight.Record{ClaimUID: pvc.UID, Namespace: dev, Claim: "copy", PVName: name,
			Source: "PersistentVolumeClaim/" + prod + "/db",
			Request: &csi.CreateVolumeRequest{
				Name:          name,
				CapacityRange: &csi.CapacityRange{RequiredBytes: size.Value()},
				VolumeCapabilities: []*csi.VolumeCapability{{
					AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
					AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
				}},
				VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
					Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: src.Spec.CSI.VolumeHandle}}},
			}}); err != nil {
			t.Fatalf("writing the in-flight record: %v", err)
		}
		if err := c.gateway.GatewayV1beta1().ReferenceGrants(prod).Delete(ctx, "share", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	msg := waitEvent(t, c, dev, "copy", "ReferenceGrantRevoked")
	if !strings.Contains(msg, "was deleted") {
		t.Errorf("event %q does not say the volume was deleted", msg)
	}
	waitBackendVolumeGone(t, name, "its recorded call was settled after the grant was revoked")
	calls := driverCalls(t, "CreateVolume", func(r csidriver.CallRecord) bool {
		req := &csi.CreateVolumeRequest{}
		return r.DecodeRequest(req) == nil && req.Name == name
	})
	if len(calls) == 0 {
		t.Fatal("the record was ended without asking the driver what the call made")
	}
	for _, r := range calls {
		req := &csi.CreateVolumeRequest{}
		if err := r.DecodeRequest(req); err != nil {
			t.Fatal(err)
		}
		if req.VolumeContentSource != nil {
			t.Errorf("CreateVolume %s after the grant was revoked with source %v: the driver copied prod's data for a claim that may not have it", name, req.VolumeContentSource)
		}
	}
	got, err := c.kube.CoreV1().PersistentVolumeClaims(dev).Get(ctx, "copy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.VolumeName != "" {
		t.Errorf("claim bound to %s after its grant was revoked", got.Spec.VolumeName)
	}
}
