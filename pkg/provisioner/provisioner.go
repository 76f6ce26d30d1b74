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
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/metrics"
)

// SourceResolver resolves and authorizes data sources (pkg/datasource).
type SourceResolver interface {
	Resolve(claim *v1.PersistentVolumeClaim, req datasource.Request) (*datasource.Source, error)
	Authorize(claim *v1.PersistentVolumeClaim, ref datasource.Ref) (string, error)
}

// SourceProtector keeps a source from being deleted while volumes are
// provisioned from it (pkg/clone).
type SourceProtector interface {
	Protect(ctx context.Context, src *datasource.Source) error
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
	Topology                  TopologyBuilder // nil: driver has no topology
	VolumeAttachments         storagelisters.VolumeAttachmentLister
	Recorder                  record.EventRecorder
	Metrics                   *metrics.Provisioning
}

// Provisioner implements controller.Provisioner, BlockProvisioner, Qualifier
// and DeletionGuard.
type Provisioner struct {
	Config
	inflight inflight
	deleted  deletedVolumes
}

var (
	_ controller.Provisioner      = &Provisioner{}
	_ controller.BlockProvisioner = &Provisioner{}
	_ controller.Qualifier        = &Provisioner{}
	_ controller.DeletionGuard    = &Provisioner{}
)

// New returns a provisioner for one driver.
func New(cfg Config) *Provisioner {
	return &Provisioner{Config: cfg, inflight: newInflight(), deleted: deletedVolumes{at: map[string]time.Time{}}}
}

// SupportsBlock: every CSI driver can be asked; the driver refuses block
// capabilities it does not support.
func (p *Provisioner) SupportsBlock(context.Context) bool { return true }

// ShouldProvision leaves claims whose dataSourceRef names another kind to
// their volume populator, without an Event: that is their normal path.
func (p *Provisioner) ShouldProvision(_ context.Context, claim *v1.PersistentVolumeClaim) bool {
	ref, ok := datasource.RefOf(claim)
	return !ok || ref.Handled()
}

// Provision creates the volume for a claim and returns its PV.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	start := time.Now()
	claim, class := opts.PVC, opts.StorageClass
	logger := klog.FromContext(ctx).WithValues("claim", klog.KObj(claim))
	ctx = klog.NewContext(ctx, logger)

	req, refs, err := p.buildRequest(claim, class, opts.PVName)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}

	src, err := p.Sources.Resolve(claim, datasource.Request{Bytes: req.CapacityRange.RequiredBytes, Mode: datasource.ModeOf(claim.Spec.VolumeMode)})
	if err != nil {
		if de, ok := datasource.AsError(err); ok && de.Kind == datasource.Denied {
			return p.denied(ctx, claim, de)
		}
		if _, ok := datasource.AsError(err); ok {
			return nil, controller.ProvisioningFinished, err
		}
		return nil, controller.ProvisioningNoChange, err
	}
	if src != nil {
		req.VolumeContentSource = src.Content
	}

	if p.Topology != nil && p.PluginCaps[csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS] {
		if req.AccessibilityRequirements, err = p.Topology.Requirements(class, opts.SelectedNode, claim.Name); err != nil {
			return nil, controller.ProvisioningFinished, fmt.Errorf("topology: %w", err)
		}
	}
	if ref := refs[provisionerSecret]; ref != nil {
		if req.Secrets, err = p.readSecret(ctx, ref); err != nil {
			return nil, controller.ProvisioningNoChange, err
		}
	}

	if src != nil && p.Protector != nil {
		if err := p.Protector.Protect(ctx, src); err != nil {
			return nil, controller.ProvisioningNoChange, fmt.Errorf("protecting %s while it is used: %w", src.Ref, err)
		}
	}
	if src != nil && src.CrossNamespace {
		// Last-moment check: a grant deleted while the source was being
		// resolved or protected must still stop this claim.
		if src.Grant, err = p.Sources.Authorize(claim, src.Ref); err != nil {
			if de, ok := datasource.AsError(err); ok {
				return p.denied(ctx, claim, de)
			}
			return nil, controller.ProvisioningNoChange, err
		}
	}

	resp, state, err := p.createVolume(ctx, claim, req, opts.SelectedNode != nil)
	if err != nil {
		p.Metrics.ObserveProvision(src, err, time.Since(start))
		return nil, state, err
	}
	pv, err := p.buildVolume(ctx, claim, class, opts.PVName, refs, req, resp.Volume, src)
	if err != nil {
		// The driver created a volume no PV will ever own: remove it.
		p.cleanup(ctx, claim, resp.Volume.VolumeId, req.Secrets)
		p.Metrics.ObserveProvision(src, err, time.Since(start))
		return nil, controller.ProvisioningFinished, err
	}
	p.Metrics.ObserveProvision(src, nil, time.Since(start))
	p.recordProvenance(claim, pv, src)
	logger.V(2).Info("Provisioned", "pv", pv.Name, "volumeHandle", resp.Volume.VolumeId, "source", sourceLabel(src))
	return pv, controller.ProvisioningFinished, nil
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

// denied reports a refused data source once, with its own reason, and tells
// the loop to stop retrying on a timer: a grant change requeues the claim.
func (p *Provisioner) denied(ctx context.Context, claim *v1.PersistentVolumeClaim, de *datasource.Error) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	if de.Reason == events.ReferenceGrantsUnavailable && p.inflight.get(claim.UID) != nil {
		// Unreadable grants are not a revocation: keep the call in flight
		// and decide once grants can be read (they requeue the claim).
		p.Recorder.Event(claim, v1.EventTypeWarning, de.Reason, de.Message)
		return nil, controller.ProvisioningInBackground, fmt.Errorf("%s; a CreateVolume for this claim may still be running and is finished or cleaned up then", de.Message)
	}
	if done, state, err := p.revokedInFlight(ctx, claim, de); done {
		return nil, state, err
	}
	klog.FromContext(ctx).V(2).Info("Data source refused", "reason", de.Reason, "message", de.Message)
	p.Recorder.Event(claim, v1.EventTypeWarning, de.Reason, de.Message)
	p.Metrics.ObserveDenial(de.DenialReason)
	return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: de.Message}
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

func sourceLabel(src *datasource.Source) string {
	if src == nil {
		return ""
	}
	return src.Ref.String()
}
