// Package provisioner implements the provision loop's Provisioner: claim +
// StorageClass → CSI CreateVolumeRequest → PersistentVolume, and Delete.
package provisioner

import (
	"context"
	"fmt"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/rpc"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/inflight"
	"github.com/crossns/external-provisioner/pkg/keylock"
	"github.com/crossns/external-provisioner/pkg/metrics"
	"github.com/crossns/external-provisioner/pkg/migration"
)

// SourceResolver resolves and authorizes data sources (pkg/datasource).
type SourceResolver interface {
	Resolve(claim *v1.PersistentVolumeClaim, req datasource.Request) (*datasource.Source, error)
	Authorize(claim *v1.PersistentVolumeClaim, ref datasource.Ref) (string, error)
}

// SourceProtector keeps a source, and the backend data behind it, from being
// deleted while volumes are provisioned from it (pkg/protection). claim is
// the claim that uses it (for Events).
type SourceProtector interface {
	Protect(ctx context.Context, claim *v1.PersistentVolumeClaim, src *datasource.Source) error
}

// TopologyBuilder computes CreateVolume accessibility requirements (pkg/topology).
type TopologyBuilder interface {
	Requirements(class *storagev1.StorageClass, selected *v1.Node, claimName string) (*csi.TopologyRequirement, error)
}

// Config is everything the provisioner needs; main fills it from flags.
type Config struct {
	DriverName string
	// Identity goes into every PV's volume attributes so a restarted driver
	// instance can tell its volumes apart.
	Identity string
	CSI      csi.ControllerClient
	// ControllerCaps and PluginCaps are the driver's, read at start.
	ControllerCaps rpc.ControllerCapabilitySet
	PluginCaps     rpc.PluginCapabilitySet
	// Client reads secrets; writes of PVs are the provision loop's.
	Client kubernetes.Interface
	// Timeout bounds each CSI call (--timeout).
	Timeout                   time.Duration
	VolumeNamePrefix          string
	VolumeNameUUIDLength      int
	ExtraCreateMetadata       bool
	DefaultFSType             string
	ControllerPublishReadOnly bool
	Sources                   SourceResolver
	Protector                 SourceProtector // nil: no source protection
	Topology                  TopologyBuilder // nil: driver has no topology or the Topology gate is off
	VolumeAttachments         storagelisters.VolumeAttachmentLister
	// VolumeAttributesClasses reads the classes claims name in
	// spec.volumeAttributesClassName (vac.go). nil when the
	// VolumeAttributesClass feature gate is off or kube-apiserver does not
	// serve storage.k8s.io/v1 volumeattributesclasses: the field is then
	// ignored, as upstream does.
	VolumeAttributesClasses storagelisters.VolumeAttributesClassLister
	Recorder                record.EventRecorder
	Metrics                 *metrics.Provisioning
	// Records is the durable record of CreateVolume calls in flight
	// (pkg/inflight); New makes a memory-only one when nil.
	Records *inflight.Store
	// Claims tells a claim the loop still works on after it was deleted
	// from one that exists; nil: every claim handed over exists.
	Claims corelisters.PersistentVolumeClaimLister
	// Migration translates classes and PVs of the in-tree plugin that
	// migrates to this driver (CSI migration); nil for other drivers.
	Migration *migration.Migration
	// Sharer serves claims that ask to share a volume (share.go); nil:
	// none are served and no PV is taken for a subordinate.
	Sharer Sharer
}

// Provisioner implements controller.Provisioner, BlockProvisioner and
// DeletionGuard. It is no Qualifier: claims a volume populator serves reach
// Provision, which tells their users a populator is expected, as upstream does.
type Provisioner struct {
	Config
	// claimLocks keeps Provision and Settle of one claim from overlapping.
	claimLocks keylock.Map[types.UID]
	deleted    deletedVolumes
	// topologies keeps each claim's accessibility requirements until its
	// provisioning ends (topology.go).
	topologies topologyMemo
}

var (
	_ controller.Provisioner      = &Provisioner{}
	_ controller.BlockProvisioner = &Provisioner{}
	_ controller.DeletionGuard    = &Provisioner{}
)

// New returns a provisioner for one driver.
func New(cfg Config) *Provisioner {
	if cfg.Records == nil {
		cfg.Records = inflight.NewStore(nil, "", "")
	}
	return &Provisioner{Config: cfg, deleted: deletedVolumes{at: map[string]time.Time{}}}
}

// SupportsBlock: every CSI driver can be asked; the driver refuses block
// capabilities it does not support.
func (p *Provisioner) SupportsBlock(context.Context) bool { return true }

// Provision creates the volume for a claim and returns its PV. The order is
// the safety argument: every check that can refuse the claim (class, source,
// topology, secret, and the grant) comes before the source is protected and
// the call is recorded durably; the grant is decided again after each of
// those, the last time right before CreateVolume is made.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	start := time.Now()
	claim := opts.PVC
	logger := klog.FromContext(ctx).WithValues("claim", klog.KObj(claim))
	ctx = klog.NewContext(ctx, logger)
	defer p.claimLocks.Lock(claim.UID)()

	if !p.Migration.Accepts(claim) {
		// The PV controller left a claim of the in-tree plugin to that
		// plugin (its CSI migration is off); upstream ignores it too.
		return nil, controller.ProvisioningFinished, &controller.IgnoredError{
			Reason: fmt.Sprintf("claim is for in-tree plugin %s, not migrated to %s", p.Migration.InTreePlugin(), p.DriverName)}
	}
	if p.claimGone(claim) {
		// The loop keeps claims whose call was in flight and hands them back
		// after they are deleted: end the call instead of making a PV.
		if _, err := p.settle(ctx, claim.UID); err != nil {
			return nil, controller.ProvisioningInBackground, fmt.Errorf("claim was deleted while CreateVolume was running: %w", err)
		}
		p.topologies.forget(claim.UID)
		return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: "claim was deleted"}
	}
	if p.Sharer != nil && p.Sharer.Requested(claim) {
		// A share binds to a volume that exists: no CreateVolume at all.
		return p.provisionShared(ctx, opts)
	}
	if ref, ok := datasource.RefOf(claim); ok && !ref.Handled() && ref.Validate() == nil {
		// A volume populator's claim: it provisions the volume (through a
		// claim of its own) and binds it to this one. A kind that only looks
		// like one of ours ("volumesnapshot", apiGroup "core") is refused by
		// the resolver instead: no populator serves it.
		msg := populatorMessage(ref)
		p.Recorder.Event(claim, v1.EventTypeNormal, events.ExternalPopulatorExpected, msg)
		return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: msg}
	}
	pv, src, err := p.provision(ctx, opts, start)
	if err != nil {
		state, err := p.finish(ctx, claim, err)
		if state == controller.ProvisioningFinished || state == controller.ProvisioningReschedule {
			p.topologies.forget(claim.UID)
		}
		return nil, state, err
	}
	p.topologies.forget(claim.UID)
	p.recordProvenance(claim, pv, src)
	logger.V(2).Info("Provisioned", "pv", pv.Name, "volumeHandle", volumeHandle(pv), "source", sourceLabel(src))
	return pv, controller.ProvisioningFinished, nil
}

// provision does one attempt; errors carry their kind (state.go). Attempts
// that reached the driver are counted in the provisioning metrics.
func (p *Provisioner) provision(ctx context.Context, opts controller.ProvisionOptions, start time.Time) (*v1.PersistentVolume, *datasource.Source, error) {
	claim := opts.PVC
	// A class of the in-tree plugin this driver replaces is provisioned in
	// the driver's terms; its PV is written back in the plugin's form.
	class, migrated, err := p.Migration.Class(klog.FromContext(ctx), opts.StorageClass)
	if err != nil {
		return nil, nil, fail(invalid, err)
	}
	if migrated {
		ctx = migration.Context(ctx, true)
	}
	if claim.Spec.Selector != nil {
		return nil, nil, unsupportedClaim("the claim has spec.selector, and dynamic provisioning cannot satisfy a label selector: " +
			"a volume it creates has no labels to match. Create the claim again without spec.selector (the field cannot be changed) " +
			"to have a volume provisioned, or create a PersistentVolume whose labels match the selector for the claim to bind to")
	}
	req, refs, err := p.buildRequest(claim, class, opts.PVName)
	if err != nil {
		return nil, nil, fail(invalid, err)
	}
	vac, err := p.volumeAttributesClass(ctx, claim)
	if err != nil {
		return nil, nil, err // typed in vac.go
	}
	req.MutableParameters = mutableParameters(vac)
	src, err := p.Sources.Resolve(claim, datasource.Request{Bytes: req.CapacityRange.RequiredBytes, Mode: datasource.ModeOf(claim.Spec.VolumeMode)})
	if err != nil {
		return nil, nil, err // typed by kindOf
	}
	if src != nil {
		req.VolumeContentSource = src.Content
	}
	if req.AccessibilityRequirements, err = p.requirements(claim, class, opts.SelectedNode); err != nil {
		return nil, src, err // typed in topology.go
	}
	secretRef := refs[provisionerSecret]
	if secretRef != nil {
		if req.Secrets, err = p.readSecret(ctx, secretRef); err != nil {
			return nil, src, err
		}
	}
	source := ""
	if src != nil {
		source = src.Ref.Key()
		// Only a claim allowed now may hold someone else's source: decide
		// again before protecting, once more after, so a grant deleted
		// meanwhile still stops the call (the hold is then released), and
		// a last time once the call is recorded (createVolume).
		if err := p.authorize(claim, src); err != nil {
			return nil, src, err
		}
		if p.Protector != nil {
			if err := p.Protector.Protect(ctx, claim, src); err != nil {
				return nil, src, fmt.Errorf("protecting %s while it is used: %w", src.Ref, err)
			}
			if err := p.authorize(claim, src); err != nil {
				return nil, src, err
			}
		}
	}
	authorize := func() error {
		if src == nil {
			return nil
		}
		return p.authorize(claim, src)
	}
	resp, err := p.createVolume(ctx, claim, opts.PVName, source, secretRef, req, opts.SelectedNode != nil, authorize)
	if err == nil {
		var pv *v1.PersistentVolume
		if pv, err = p.buildVolume(ctx, claim, class, opts.PVName, refs, req, resp.Volume, src); err == nil && migrated {
			pv, err = p.Migration.ToInTree(pv)
		}
		if err == nil {
			if vac != nil {
				// The PV controller binds a claim that names a class only
				// to a PV of the same class.
				pv.Spec.VolumeAttributesClassName = ptr.To(vac.Name)
			}
			p.Metrics.ObserveProvision(src, nil, time.Since(start))
			return pv, src, nil
		}
		// The driver created a volume no PV will ever own: remove it.
		p.discard(ctx, claim.UID, resp.Volume.VolumeId, req.Secrets)
		err = fail(invalid, err)
	}
	p.Metrics.ObserveProvision(src, err, time.Since(start))
	return nil, src, err
}

// authorize decides a cross-namespace source again (an index lookup) and
// records the grant that allows it.
func (p *Provisioner) authorize(claim *v1.PersistentVolumeClaim, src *datasource.Source) error {
	if !src.CrossNamespace {
		return nil
	}
	grant, err := p.Sources.Authorize(claim, src.Ref)
	if err != nil {
		return err
	}
	src.Grant = grant
	return nil
}

// claimGone reports whether the loop handed over a claim that no longer
// exists (deleted, or replaced by another of the same name).
func (p *Provisioner) claimGone(claim *v1.PersistentVolumeClaim) bool {
	if p.Claims == nil {
		return false
	}
	cur, err := p.Claims.PersistentVolumeClaims(claim.Namespace).Get(claim.Name)
	return apierrors.IsNotFound(err) || (err == nil && cur.UID != claim.UID)
}

// buildRequest turns claim and class into a CreateVolumeRequest without
// secrets, topology or content source, and resolves the class's secret
// references. They are resolved (and validated) now, once, so a typo in the
// class fails the claim before a volume exists rather than when a pod mounts it.
func (p *Provisioner) buildRequest(claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, pvName string) (*csi.CreateVolumeRequest, secretRefs, error) {
	cp, err := parseClassParams(class.Parameters)
	if err != nil {
		return nil, nil, err
	}
	name, err := volumeName(p.VolumeNamePrefix, p.VolumeNameUUIDLength, claim.UID)
	if err != nil {
		return nil, nil, err
	}
	cr, err := capacityRange(claim)
	if err != nil {
		return nil, nil, err
	}
	fsType := cp.fsType
	if fsType == "" {
		fsType = p.DefaultFSType
	}
	caps, err := volumeCapabilities(claim, fsType, class.MountOptions, p.ControllerCaps[csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER])
	if err != nil {
		return nil, nil, err
	}
	params := cp.driver
	if p.ExtraCreateMetadata {
		params[pvcNameKey], params[pvcNamespaceKey], params[pvNameKey] = claim.Name, claim.Namespace, pvName
	}
	refs, err := resolveSecretRefs(cp, templateParams{pvName: pvName, claim: claim})
	if err != nil {
		return nil, nil, err
	}
	return &csi.CreateVolumeRequest{Name: name, CapacityRange: cr, VolumeCapabilities: caps, Parameters: params}, refs, nil
}

func (p *Provisioner) readSecret(ctx context.Context, ref *v1.SecretReference) (map[string]string, error) {
	s, err := p.Client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1GetOptions)
	if err != nil {
		return nil, fmt.Errorf("reading provisioner secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	out := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}

// checkCapacity compares the created size with the request: 0 means the
// driver does not report it (take the request); less than asked is a broken
// promise the claim must not be bound to.
func checkCapacity(requested, got int64) (int64, error) {
	if got == 0 {
		return requested, nil
	}
	if got < requested {
		return 0, fmt.Errorf("driver created a volume of %s, smaller than the requested %s",
			resource.NewQuantity(got, resource.BinarySI), resource.NewQuantity(requested, resource.BinarySI))
	}
	return got, nil
}

// populatorMessage tells the user of a claim whose dataSourceRef names a kind
// this sidecar does not provision from what it waits for.
func populatorMessage(ref datasource.Ref) string {
	kind := ref.Kind
	if ref.Group != "" {
		kind += "." + ref.Group
	}
	return fmt.Sprintf("dataSourceRef names %s %s/%s, a kind this provisioner does not provision from: "+
		"assuming an external volume populator provisions the volume; if none is installed for %s, the claim stays Pending",
		kind, ref.Namespace, ref.Name, kind)
}

func sourceLabel(src *datasource.Source) string {
	if src == nil {
		return ""
	}
	return src.Ref.String()
}
