package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/cluster"
	"github.com/crossns/external-provisioner/test/csidriver"
)

// The test driver serving as GCE PD's CSI driver: kube-controller-manager
// hands claims of kubernetes.io/gce-pd classes to pd.csi.storage.gke.io (CSI
// migration is GA and always on for it), and csi-translation-lib reads disk
// names from volume IDs of this form.
const (
	gceDriver   = "pd.csi.storage.gke.io"
	gcePlugin   = "kubernetes.io/gce-pd"
	gceIDPrefix = "projects/UNSPECIFIED/zones/UNSPECIFIED/disks/"
)

// startInstance starts a driver and sidecar pair beside the bed's for the
// rest of the test.
func startInstance(t *testing.T, inst cluster.Instance) {
	t.Helper()
	if err := bed.StartInstance(testContext(t), inst); err != nil {
		t.Fatalf("starting instance %s: %v", inst.Name, err)
	}
	t.Cleanup(func() {
		if err := bed.StopInstance(context.Background(), inst.Name); err != nil {
			t.Errorf("stopping instance %s: %v", inst.Name, err)
		}
	})
}

// instanceCalls returns the decoded requests of method the instance's
// driver received.
func instanceCalls[R any, P interface {
	*R
	proto.Message
}](t *testing.T, instance, method string) []P {
	t.Helper()
	recs, err := csidriver.ReadCallLog(bed.InstanceCallLogPath(instance))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading the call log of %s: %v", instance, err)
	}
	var out []P
	for _, r := range csidriver.FilterCalls(recs, method) {
		req := P(new(R))
		if err := r.DecodeRequest(req); err != nil {
			t.Fatalf("decoding %s request: %v", method, err)
		}
		out = append(out, req)
	}
	return out
}

// TestInTreeStorageClassProvisionedByMigratedDriver is CSI migration for a
// user of an in-tree class: a claim of a kubernetes.io/gce-pd class is
// provisioned by the sidecar of pd.csi.storage.gke.io with the class's
// parameters translated, binds to a PV in the in-tree form with the
// migration annotations, and deleting the claim deletes the disk with the
// volume handle the driver gave it.
func TestInTreeStorageClassProvisionedByMigratedDriver(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	startInstance(t, cluster.Instance{Name: "gcepd", DriverName: gceDriver, NodeID: "gce-node",
		DriverArgs: []string{"--volume-id-prefix=" + gceIDPrefix}})
	ns := createNamespace(t, c, "migration")
	class := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: bedName(ns, "standard")},
		Provisioner:       gcePlugin,
		Parameters:        map[string]string{"type": "pd-standard", "replication-type": "none", "fstype": "ext4"},
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
	if _, err := c.kube.StorageV1().StorageClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.kube.StorageV1().StorageClasses().Delete(context.Background(), class.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting StorageClass %s: %v", class.Name, err)
		}
	})
	claim := newClaim(ns, "disk", "1Gi")
	claim.Spec.StorageClassName = ptr.To(class.Name)
	claim = createClaim(t, c, claim)
	pv := waitBound(t, c, ns, "disk")

	// The driver was asked in its own terms.
	creates := instanceCalls[csi.CreateVolumeRequest](t, "gcepd", "CreateVolume")
	if len(creates) != 1 || creates[0].Name != "pvc-"+string(claim.UID) {
		t.Fatalf("driver got CreateVolume %v, want one for pvc-%s", creates, claim.UID)
	}
	if want := map[string]string{"type": "pd-standard", "replication-type": "none"}; !maps.Equal(creates[0].Parameters, want) {
		t.Errorf("CreateVolume parameters %v, want %v (fstype goes to the capability)", creates[0].Parameters, want)
	}
	if got := creates[0].VolumeCapabilities[0].GetMount().GetFsType(); got != "ext4" {
		t.Errorf("CreateVolume fstype %q, want ext4", got)
	}

	// The PV is in the in-tree form, annotated as upstream's is.
	gce := pv.Spec.GCEPersistentDisk
	if pv.Spec.CSI != nil || gce == nil {
		t.Fatalf("PV %s source %+v, want the in-tree gcePersistentDisk form", pv.Name, pv.Spec.PersistentVolumeSource)
	}
	var handle string
	for _, v := range readInstanceVolumes(t, "gcepd") {
		if v.Name == "pvc-"+string(claim.UID) {
			handle = gceIDPrefix + v.ID
		}
	}
	if gce.PDName != path.Base(handle) || gce.FSType != "ext4" {
		t.Errorf("gcePersistentDisk %+v, want pdName %s (of volume %s), fsType ext4", gce, path.Base(handle), handle)
	}
	for k, want := range map[string]string{"pv.kubernetes.io/provisioned-by": gcePlugin, "pv.kubernetes.io/migrated-to": gceDriver} {
		if got := pv.Annotations[k]; got != want {
			t.Errorf("PV annotation %s = %q, want %q", k, got, want)
		}
	}

	// The CSI calls of migrated volumes are labelled so.
	eventually(t, provisionWait, "CreateVolume counted as migrated", func(ctx context.Context) (bool, string, error) {
		body, err := httpBody(ctx, bed.InstanceMetricsURL("gcepd"))
		if err != nil {
			return false, err.Error(), nil
		}
		return migratedCount(body, "CreateVolume") > 0, "no migrated=\"true\" CreateVolume in csi_sidecar_operations_seconds", nil
	})

	// Deleting the claim deletes the disk, with the handle the driver gave.
	if err := c.kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "disk", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, provisionWait, "PV "+pv.Name+" to be gone", func(ctx context.Context) (bool, string, error) {
		got, err := c.kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return false, fmt.Sprintf("phase %s, finalizers %v", got.Status.Phase, got.Finalizers), nil
	})
	deletes := instanceCalls[csi.DeleteVolumeRequest](t, "gcepd", "DeleteVolume")
	if len(deletes) != 1 || deletes[0].VolumeId != handle {
		var ids []string
		for _, d := range deletes {
			ids = append(ids, d.VolumeId)
		}
		t.Fatalf("DeleteVolume calls %v, want one for %s", ids, handle)
	}
	if vols := readInstanceVolumes(t, "gcepd"); len(vols) != 0 {
		t.Errorf("driver still holds volumes %v", vols)
	}
}

// migratedCount sums csi_sidecar_operations_seconds_count of a method's
// calls labelled migrated="true".
func migratedCount(metrics, method string) int {
	n := 0
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "csi_sidecar_operations_seconds_count{") && strings.Contains(line, `method_name="/csi.v1.Controller/`+method+`"`) &&
			strings.Contains(line, `migrated="true"`) {
			n++
		}
	}
	return n
}

// readInstanceVolumes lists the volumes in an instance driver's backend.
func readInstanceVolumes(t *testing.T, instance string) []csidriver.Volume {
	t.Helper()
	vols, _, err := csidriver.ReadDataDir(bed.InstanceDataDir(instance))
	if err != nil {
		t.Fatalf("reading the backend of %s: %v", instance, err)
	}
	return vols
}
