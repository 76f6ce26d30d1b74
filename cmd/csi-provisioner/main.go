// Command csi-provisioner is a CSI sidecar that provisions PersistentVolumes
// for PersistentVolumeClaims, with KEP-3294 cross-namespace data sources.
// main only wires: flags → clients → CSI connection → informers →
// controllers → HTTP endpoint → leader election → run.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/connection"
	"github.com/kubernetes-csi/csi-lib-utils/leaderelection"
	csimetrics "github.com/kubernetes-csi/csi-lib-utils/metrics"
	"github.com/kubernetes-csi/csi-lib-utils/rpc"
	"github.com/kubernetes-csi/csi-lib-utils/standardflags"
	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/klog/v2"
	gatewayclientset "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	libcontroller "sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
	libmetrics "sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller/metrics"

	"github.com/crossns/external-provisioner/pkg/access"
	"github.com/crossns/external-provisioner/pkg/cachesync"
	"github.com/crossns/external-provisioner/pkg/capacity"
	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/features"
	"github.com/crossns/external-provisioner/pkg/inflight"
	"github.com/crossns/external-provisioner/pkg/metrics"
	"github.com/crossns/external-provisioner/pkg/migration"
	"github.com/crossns/external-provisioner/pkg/nodedeployment"
	"github.com/crossns/external-provisioner/pkg/preflight"
	"github.com/crossns/external-provisioner/pkg/protection"
	"github.com/crossns/external-provisioner/pkg/provisioner"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
	"github.com/crossns/external-provisioner/pkg/requeue"
	"github.com/crossns/external-provisioner/pkg/sharing"
	"github.com/crossns/external-provisioner/pkg/snapshotapi"
	"github.com/crossns/external-provisioner/pkg/topology"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "unknown"

var (
	master                      = flag.String("master", "", "URL of kube-apiserver, overriding the server of the kubeconfig; with neither this, --kubeconfig nor KUBECONFIG set, the in-cluster config is used.")
	kubeAPICapacityQPS          = flag.Float64("kube-api-capacity-qps", 1, "QPS of the separate client that writes CSIStorageCapacity objects (--enable-capacity).")
	kubeAPICapacityBurst        = flag.Int("kube-api-capacity-burst", 5, "Burst of the separate client that writes CSIStorageCapacity objects (--enable-capacity).")
	volumeNamePrefix            = flag.String("volume-name-prefix", "pvc", "Prefix of the names of created volumes: <prefix>-<claim UID>.")
	volumeNameUUIDLength        = flag.Int("volume-name-uuid-length", -1, "Length of the claim UID in volume names, dashes removed; -1 keeps the whole UID with its dashes.")
	operationTimeout            = flag.Duration("timeout", 10*time.Second, "Timeout of each call to the CSI driver.")
	workerThreads               = flag.Uint("worker-threads", 100, "Number of claims and volumes processed at once.")
	retryIntervalStart          = flag.Duration("retry-interval-start", time.Second, "First retry interval of a failed provisioning or deletion; doubles on each failure.")
	retryIntervalMax            = flag.Duration("retry-interval-max", 5*time.Minute, "Longest retry interval of a failed provisioning or deletion.")
	extraCreateMetadata         = flag.Bool("extra-create-metadata", false, "Pass csi.storage.k8s.io/pvc/name, pvc/namespace and pv/name as CreateVolume parameters.")
	defaultFSType               = flag.String("default-fstype", "", "File system type of volumes whose StorageClass sets none; empty leaves the choice to the driver.")
	strictTopology              = flag.Bool("strict-topology", false, "With late binding, require the volume in exactly the selected node's topology segment.")
	immediateTopology           = flag.Bool("immediate-topology", true, "With immediate binding and no allowedTopologies, require the volume in a segment where the driver runs.")
	controllerPublishReadOnly   = flag.Bool("controller-publish-readonly", false, "Mark PVs whose access modes are all ReadOnlyMany as read-only, so ControllerPublish attaches them read-only.")
	preventVolumeModeConversion = flag.Bool("prevent-volume-mode-conversion", true, "Refuse to restore a snapshot into another volume mode unless its VolumeSnapshotContent allows it.")
	enablePprof                 = flag.Bool("enable-pprof", false, "Serve pprof on --http-endpoint under /debug/pprof.")
	cloningProtectionThreads    = flag.Uint("cloning-protection-threads", 1, "Number of data sources whose protection finalizer is released at once.")
	snapshotOrphanSweepInterval = flag.Duration("snapshot-orphan-sweep-interval", 5*time.Minute, "How often every VolumeSnapshot carrying the provisioner's source-protection finalizer is checked again, releasing finalizers nothing needs (left by a crash or missed events); 0 turns the sweep off.")

	enableCapacity              = flag.Bool("enable-capacity", false, "Publish CSIStorageCapacity objects with the driver's GetCapacity per StorageClass and topology segment. Needs the env variables NAMESPACE and POD_NAME.")
	capacityPollInterval        = flag.Duration("capacity-poll-interval", time.Minute, "How often the driver's capacity is asked again.")
	capacityThreads             = flag.Uint("capacity-threads", 1, "Number of CSIStorageCapacity objects updated at once.")
	capacityForImmediateBinding = flag.Bool("capacity-for-immediate-binding", false, "Also publish capacity for StorageClasses with Immediate volume binding.")
	capacityOwnerrefLevel       = flag.Int("capacity-ownerref-level", 1, "Owner of CSIStorageCapacity objects: 0 the sidecar's pod, 1 its controller (StatefulSet, ReplicaSet), 2 the ReplicaSet's Deployment; negative: no owner, objects are never garbage collected.")

	enableNodeDeployment           = flag.Bool("node-deployment", false, "Run beside the CSI driver on every node (a DaemonSet) for node-local volumes: provision the claims whose selected node is this one (env variable NODE_NAME), delete only volumes accessible from it, publish capacity for it; no leader election.")
	nodeDeploymentImmediateBinding = flag.Bool("node-deployment-immediate-binding", true, "With --node-deployment, compete for claims of classes with Immediate binding by selecting this node; false leaves them to something else that selects nodes.")
	nodeDeploymentBaseDelay        = flag.Duration("node-deployment-base-delay", 20*time.Second, "With --node-deployment, the first wait before selecting this node for an Immediate claim; it doubles with every attempt lost.")
	nodeDeploymentMaxDelay         = flag.Duration("node-deployment-max-delay", 60*time.Second, "With --node-deployment, the longest wait before selecting this node for an Immediate claim.")
)

// registerFlags adds to flag.CommandLine the flags main does not declare as
// package variables: logging, the sidecar flags shared with the other CSI
// sidecars (csi-lib-utils standardflags, which registers some on
// flag.CommandLine whatever it is given), --automaxprocs and --feature-gates.
func registerFlags() *logsapi.LoggingConfiguration {
	logsConfig := logsapi.NewLoggingConfiguration()
	runtime.Must(logsapi.AddFeatureGates(features.Gate))
	logsapi.AddGoFlags(logsConfig, flag.CommandLine)
	standardflags.RegisterCommonFlags(flag.CommandLine)
	// --automaxprocs sets GOMAXPROCS once, from the container's CPU quota, as
	// upstream's sidecars do (go.uber.org/automaxprocs). Since Go 1.25 the
	// runtime already does this by default and follows later quota changes;
	// the flag then pins the value it computes (integer quota, at least 1).
	standardflags.AddAutomaxprocs(func(format string, args ...any) {
		klog.InfoS("automaxprocs", "detail", fmt.Sprintf(format, args...))
	})
	flag.Var(features.Flag(), "feature-gates", "Comma-separated Name=true|false pairs; may be repeated, each adds to the earlier ones. Options are:\n"+features.Help())
	return logsConfig
}

func main() {
	fg := features.Gate
	logsConfig := registerFlags()
	flag.Parse()
	logs.InitLogs()
	if err := logsapi.ValidateAndApply(logsConfig, fg); err != nil {
		klog.ErrorS(err, "Invalid logging configuration")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	cfg := standardflags.Configuration
	if cfg.ShowVersion {
		fmt.Println(os.Args[0], version)
		return
	}
	logger := klog.Background()
	ctx := klog.NewContext(context.Background(), logger)
	logger.Info("Starting csi-provisioner", "version", version, "featureGates", features.Effective())
	if features.Enabled(features.ReleaseLeaderElectionOnExit) {
		// SIGTERM and SIGINT cancel ctx: work stops and the Lease is
		// released (leader election's ReleaseOnCancel) instead of expiring.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
		defer stop()
	}

	if err := run(ctx, cfg); err != nil {
		klog.ErrorS(err, "csi-provisioner failed")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
}

func fatal(err error, msg string) {
	klog.ErrorS(err, msg)
	klog.FlushAndExit(klog.ExitFlushTimeout, 1)
}

func run(ctx context.Context, cfg standardflags.SidecarConfiguration) error {
	logger := klog.FromContext(ctx)
	if cfg.MetricsAddress != "" && cfg.HttpEndpoint != "" {
		return fmt.Errorf("only one of --metrics-address and --http-endpoint can be set")
	}
	if err := provisioner.ValidateNaming(*volumeNamePrefix, *volumeNameUUIDLength); err != nil {
		return err
	}

	// Kubernetes clients: the main budget is for PVs and finalizers; Events
	// get a budget of their own so they never delay a PV.
	restConfig, source, err := buildConfig(*master, cfg.KubeConfig, os.Getenv)
	if err != nil {
		return fmt.Errorf("building the Kubernetes client config from %s: %w", source, err)
	}
	logger.Info("Kubernetes client config", "source", source)
	restConfig.QPS, restConfig.Burst = float32(cfg.KubeAPIQPS), cfg.KubeAPIBurst
	csiMetrics := metrics.NewCSIMetricsManager()
	registry := metrics.NewRegistry()
	apiRequests := metrics.NewAPIRequests(registry)

	mainConfig := rest.CopyConfig(restConfig)
	mainConfig.Wrap(apiRequests.Wrap(metrics.ClientMain))
	crdConfig := rest.CopyConfig(mainConfig) // CRDs speak JSON only
	mainConfig.ContentType = "application/vnd.kubernetes.protobuf"
	eventsConfig := rest.CopyConfig(restConfig)
	eventsConfig.Wrap(apiRequests.Wrap(metrics.ClientEvents))
	eventsConfig.ContentType = mainConfig.ContentType
	// CSIStorageCapacity objects get a client of their own, as upstream:
	// publishing for many classes and segments never spends the PV budget.
	capacityConfig := rest.CopyConfig(restConfig)
	capacityConfig.Wrap(apiRequests.Wrap(metrics.ClientCapacity))
	capacityConfig.ContentType = mainConfig.ContentType
	capacityConfig.QPS, capacityConfig.Burst = float32(*kubeAPICapacityQPS), *kubeAPICapacityBurst
	// Leader election gets a client of its own, as upstream: a main client
	// throttled by a burst of claims never delays renewing the Lease.
	leaderElectionConfig := rest.CopyConfig(restConfig)
	leaderElectionConfig.Wrap(apiRequests.Wrap(metrics.ClientLeaderElection))
	leaderElectionConfig.ContentType = mainConfig.ContentType

	client, err := kubernetes.NewForConfig(mainConfig)
	if err != nil {
		return fmt.Errorf("creating Kubernetes client: %w", err)
	}
	eventsClient, err := kubernetes.NewForConfig(eventsConfig)
	if err != nil {
		return fmt.Errorf("creating Kubernetes events client: %w", err)
	}
	snapClient, err := snapclientset.NewForConfig(crdConfig)
	if err != nil {
		return fmt.Errorf("creating snapshot client: %w", err)
	}
	gatewayClient, err := gatewayclientset.NewForConfig(crdConfig)
	if err != nil {
		return fmt.Errorf("creating gateway API client: %w", err)
	}
	off, err := features.DisableUnserved(client.Discovery())
	if err != nil {
		return err
	}
	if len(off) > 0 {
		logger.Info("Feature gates turned off: kube-apiserver does not serve their API; restart the sidecar once it does", "gates", off, "featureGates", features.Effective())
	}

	// CSI driver: wait for it, learn its name and what it can do.
	conn, err := connection.Connect(ctx, cfg.CSIAddress, csiMetrics, connection.OnConnectionLoss(connection.ExitOnConnectionLoss()))
	if err != nil {
		return fmt.Errorf("connecting to CSI driver at %s: %w", cfg.CSIAddress, err)
	}
	if err := rpc.ProbeForever(ctx, conn, *operationTimeout); err != nil {
		return fmt.Errorf("waiting for the CSI driver to be ready: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, *operationTimeout)
	defer cancel()
	driverName, err := rpc.GetDriverName(cctx, conn)
	if err != nil {
		return fmt.Errorf("reading the CSI driver name: %w", err)
	}
	csiMetrics.SetDriverName(driverName)
	pluginCaps, err := rpc.GetPluginCapabilities(cctx, conn)
	if err != nil {
		return fmt.Errorf("reading the plugin capabilities of %s: %w", driverName, err)
	}
	controllerCaps, err := rpc.GetControllerCapabilities(cctx, conn)
	if err != nil {
		return fmt.Errorf("reading the controller capabilities of %s: %w", driverName, err)
	}
	if !pluginCaps[csi.PluginCapability_Service_CONTROLLER_SERVICE] || !controllerCaps[csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME] {
		return fmt.Errorf("CSI driver %s does not support CREATE_DELETE_VOLUME: it cannot provision volumes, so csi-provisioner has nothing to do next to it", driverName)
	}
	logger = logger.WithValues("driver", driverName)
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Connected to CSI driver")
	// CSI migration: a driver that replaces an in-tree plugin also provisions
	// the classes naming that plugin, and its CSI call metrics get the
	// migrated label, recorded by a connection of their own (as upstream).
	migrated := migration.For(driverName)
	if migrated != nil {
		logger.Info("CSI migration: provisioning and deleting the volumes of the in-tree plugin too", "inTreePlugin", migrated.InTreePlugin())
		csiMetrics = metrics.NewCSIMetricsManager(csimetrics.WithMigration())
		csiMetrics.SetDriverName(driverName)
		migratedConn, err := connection.Connect(ctx, cfg.CSIAddress, csiMetrics, connection.OnConnectionLoss(connection.ExitOnConnectionLoss()))
		if err != nil {
			return fmt.Errorf("connecting to CSI driver at %s: %w", cfg.CSIAddress, err)
		}
		conn.Close()
		conn = migratedConn
	}
	// Node mode: this instance serves the node it runs on, as its driver
	// describes it (NodeGetInfo).
	var nodeInfo *csi.NodeGetInfoResponse
	nodeName := ""
	if *enableNodeDeployment {
		if nodeName = os.Getenv("NODE_NAME"); nodeName == "" {
			return fmt.Errorf("--node-deployment needs the env variable NODE_NAME (from fieldRef spec.nodeName)")
		}
		nctx, ncancel := context.WithTimeout(ctx, *operationTimeout)
		nodeInfo, err = nodedeployment.NodeInfo(nctx, csi.NewNodeClient(conn))
		ncancel()
		if err != nil {
			return fmt.Errorf("--node-deployment: asking CSI driver %s about node %s: %w", driverName, nodeName, err)
		}
		logger = logger.WithValues("node", nodeName)
		ctx = klog.NewContext(ctx, logger)
		logger.Info("Node deployment: provisioning for this node only", "nodeID", nodeInfo.NodeId, "topology", nodeInfo.GetAccessibleTopology().GetSegments())
		if nodeInfo.GetAccessibleTopology() == nil {
			logger.Info("WARNING: the CSI driver reports no topology for this node, so every node's instance deletes every released volume of the driver (as upstream); node-local drivers should report topology")
		}
	}

	crossNamespace := features.Enabled(features.CrossNamespaceVolumeDataSource)
	if crossNamespace {
		checkAPIServerGate(ctx, client)
	}

	// Informers: every read on the provisioning path comes from these caches.
	factory := informers.NewSharedInformerFactory(client, 15*time.Minute)
	claimInformer := factory.Core().V1().PersistentVolumeClaims()
	requeueInformer, err := requeue.Wrap(claimInformer.Informer())
	if err != nil {
		return fmt.Errorf("indexing claims: %w", err)
	}
	resolver := &datasource.Resolver{
		DriverName:                  driverName,
		CrossNamespace:              crossNamespace,
		PreventVolumeModeConversion: *preventVolumeModeConversion,
		Claims:                      claimInformer.Lister(),
		Volumes:                     factory.Core().V1().PersistentVolumes().Lister(),
	}
	recorder := events.NewRecorder(ctx, eventsClient, "csi-provisioner-"+driverName)
	// The record of CreateVolume calls in flight lives in the sidecar's
	// namespace, one ConfigMap per driver.
	// (In node mode one per node: each instance settles only its driver's calls.)
	recordsOf := driverName
	if nodeName != "" {
		recordsOf += "-" + nodeName
	}
	records := inflight.NewStore(client, sidecarNamespace(), inflight.ConfigMapName(recordsOf))
	protectionConfig := protection.Config{DriverName: driverName, Client: client, SnapClient: snapClient,
		Claims: claimInformer, Records: records, Recorder: recorder, SweepInterval: *snapshotOrphanSweepInterval}
	if crossNamespace {
		protectionConfig.Grants = resolver
	}
	protector, err := protection.New(protectionConfig)
	if err != nil {
		return fmt.Errorf("creating source protection controller: %w", err)
	}
	records.OnRemove(func(r inflight.Record) { protector.RecordRemoved(r.Source) })
	resolver.Held = protector
	// The snapshot API may be installed after the sidecar starts: restores
	// wait for it, and its informers start when it is served.
	snapshots := snapshotapi.NewWatcher(snapClient, client.Discovery(), 15*time.Minute, logger.WithName("snapshotapi"))
	resolver.Snapshots = snapshots
	snapshots.CheckContentsAccess(access.Reviewer{Client: client})
	snapshots.OnAvailable(protector.SnapshotsAvailable)
	snapshots.OnContentsCached(protector.ContentsAvailable)
	// Live sharing (pkg/sharing) decides across namespaces with the same
	// grants; its gate alone also needs them watched.
	sharingEnabled := features.Enabled(features.CrossNamespaceVolumeSharing)
	var grants *referencegrant.Watcher
	var grantChecker referencegrant.Checker
	if crossNamespace || sharingEnabled {
		grants = referencegrant.NewWatcher(gatewayClient, client.Discovery(), 15*time.Minute, logger.WithName("referencegrants"))
		grants.AddListener(func(c referencegrant.Change) {
			requeueInformer.GrantsChanged(c)
			protector.GrantsChanged(c.Namespace)
		})
		grantChecker = grants
	}
	if crossNamespace {
		resolver.Grants = grants
	}

	// Topology is used when the driver has it and the Topology gate is on.
	withTopology := pluginCaps[csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS] && features.Enabled(features.Topology)
	// Nodes and CSINodes: watched, or in node mode this node's alone, made
	// from NodeGetInfo (an instance never provisions for another node).
	var nodes corelisters.NodeLister
	var csiNodes storagelisters.CSINodeLister
	var node *nodedeployment.Node
	switch {
	case nodeInfo == nil:
		nodes = factory.Core().V1().Nodes().Lister()
		if withTopology {
			csiNodes = factory.Storage().V1().CSINodes().Lister()
		}
	default:
		node, err = nodedeployment.New(nodedeployment.Config{
			NodeName: nodeName, DriverName: driverName, NodeInfo: nodeInfo,
			ImmediateBinding: *nodeDeploymentImmediateBinding, BaseDelay: *nodeDeploymentBaseDelay, MaxDelay: *nodeDeploymentMaxDelay,
			Client: client, Claims: claimInformer, Classes: factory.Storage().V1().StorageClasses().Lister(),
		})
		if err != nil {
			return err
		}
		nodes, csiNodes = node.Listers()
	}
	// Always wired, gate on or off: a share-from claim is refused rather
	// than given a volume of its own, and volumes shared earlier keep their
	// source held and are never deleted under their subordinates.
	sharingConfig := sharing.Config{DriverName: driverName, Enabled: sharingEnabled, Client: client,
		Claims: claimInformer, Volumes: factory.Core().V1().PersistentVolumes(), Grants: grantChecker,
		Requeue: requeueInformer, Recorder: recorder}
	if node != nil {
		sharingConfig.Responsible = node.Accessible
	}
	sharer, err := sharing.New(sharingConfig)
	if err != nil {
		return fmt.Errorf("creating the volume sharing controller: %w", err)
	}
	var capacityFactory informers.SharedInformerFactory
	var capacityCtrl *capacity.Controller
	if *enableCapacity {
		capacityClient, err := kubernetes.NewForConfig(capacityConfig)
		if err != nil {
			return fmt.Errorf("creating Kubernetes client for storage capacity: %w", err)
		}
		capacityFactory, capacityCtrl, err = newCapacity(ctx, capacityClient, conn, driverName, withTopology, controllerCaps, factory, node)
		if err != nil {
			return err
		}
		registry.CustomMustRegister(capacityCtrl.Metrics())
	}

	var topo provisioner.TopologyBuilder
	if withTopology {
		topo = &topology.Builder{
			Driver: driverName, Strict: *strictTopology, Immediate: *immediateTopology,
			Nodes: nodes, CSINodes: csiNodes,
		}
	}
	// VolumeAttributesClasses, read when the gate is on (DisableUnserved
	// turned it off above if kube-apiserver does not serve the API). The
	// cache is not waited for: the provisioner asks kube-apiserver for a
	// class the cache lacks (always, under upstream's RBAC: "get" only).
	var vacs storagelisters.VolumeAttributesClassLister
	if features.Enabled(features.VolumeAttributesClass) {
		vacs = provisioner.VolumeAttributesClassLister(ctx, access.Reviewer{Client: client}, factory.Storage().V1().VolumeAttributesClasses())
	}
	// identity is this process's, unique per start as upstream's: it names
	// the provisioner and holds the leader election Lease.
	identity := strconv.FormatInt(time.Now().UnixMilli(), 10) + "-" + strconv.Itoa(rand.IntN(10000)) + "-" + driverName
	if nodeName != "" {
		identity += "-" + nodeName
	}
	prov := provisioner.New(provisioner.Config{
		DriverName:                driverName,
		Identity:                  identity,
		CSI:                       csi.NewControllerClient(conn),
		ControllerCaps:            controllerCaps,
		PluginCaps:                pluginCaps,
		Client:                    client,
		Timeout:                   *operationTimeout,
		VolumeNamePrefix:          *volumeNamePrefix,
		VolumeNameUUIDLength:      *volumeNameUUIDLength,
		ExtraCreateMetadata:       *extraCreateMetadata,
		DefaultFSType:             *defaultFSType,
		ControllerPublishReadOnly: *controllerPublishReadOnly,
		Sources:                   resolver,
		Protector:                 protector,
		Records:                   records,
		Claims:                    claimInformer.Lister(),
		Sharer:                    sharer,
		Topology:                  topo,
		VolumeAttachments:         factory.Storage().V1().VolumeAttachments().Lister(),
		VolumeAttributesClasses:   vacs,
		Recorder:                  recorder,
		Metrics:                   metrics.NewProvisioning(registry),
		Migration:                 migrated,
	})
	settler, err := inflight.NewController(records, prov, claimInformer, factory.Core().V1().PersistentVolumes())
	if err != nil {
		return fmt.Errorf("creating the in-flight record controller: %w", err)
	}
	libMetrics := libmetrics.New("controller")
	registry.RawMustRegister(libMetrics.PersistentVolumeClaimProvisionTotal, libMetrics.PersistentVolumeClaimProvisionFailedTotal,
		libMetrics.PersistentVolumeClaimProvisionDurationSeconds, libMetrics.PersistentVolumeDeleteTotal,
		libMetrics.PersistentVolumeDeleteFailedTotal, libMetrics.PersistentVolumeDeleteDurationSeconds)
	loopOptions := []func(*libcontroller.ProvisionController) error{
		libcontroller.Threadiness(int(*workerThreads)),
		libcontroller.RateLimiter(workqueue.NewItemExponentialFailureRateLimiter(*retryIntervalStart, *retryIntervalMax)),
		libcontroller.FailedProvisionThreshold(0),
		libcontroller.FailedDeleteThreshold(0),
		libcontroller.CreateProvisionedPVLimiter(workqueue.DefaultControllerRateLimiter()),
		libcontroller.AddFinalizer(true),
		libcontroller.LeaderElection(false),
		libcontroller.MetricsInstance(libMetrics),
		libcontroller.ClaimsInformer(requeueInformer),
		libcontroller.VolumesInformer(factory.Core().V1().PersistentVolumes().Informer()),
		libcontroller.ClassesInformer(factory.Storage().V1().StorageClasses().Informer()),
		libcontroller.NodesLister(nodes),
	}
	if migrated != nil {
		// Classes name the in-tree plugin; the library hands their claims over.
		loopOptions = append(loopOptions, libcontroller.AdditionalProvisionerNames([]string{migrated.InTreePlugin()}))
	}
	var loopProvisioner libcontroller.Provisioner = prov
	if node != nil {
		loopProvisioner = node.Wrap(prov)
	}
	loop := libcontroller.NewProvisionController(logger, events.SplitClient(client, eventsClient), driverName, loopProvisioner, loopOptions...)

	// Work starts only when every cache it reads is full: an empty cache
	// shows an attached volume as detached and a granted claim as denied.
	caches := []cachesync.Cache{
		{Name: "PersistentVolumeClaims", HasSynced: claimInformer.Informer().HasSynced},
		{Name: "PersistentVolumes", HasSynced: factory.Core().V1().PersistentVolumes().Informer().HasSynced},
		{Name: "StorageClasses", HasSynced: factory.Storage().V1().StorageClasses().Informer().HasSynced},
		{Name: "VolumeAttachments", HasSynced: factory.Storage().V1().VolumeAttachments().Informer().HasSynced},
		{Name: "VolumeSnapshots", HasSynced: snapshots.HasSynced},
	}
	if node == nil {
		caches = append(caches, cachesync.Cache{Name: "Nodes", HasSynced: factory.Core().V1().Nodes().Informer().HasSynced})
	}
	if topo != nil && node == nil {
		caches = append(caches, cachesync.Cache{Name: "CSINodes", HasSynced: factory.Storage().V1().CSINodes().Informer().HasSynced})
	}
	if grants != nil {
		caches = append(caches, cachesync.Cache{Name: "ReferenceGrants", HasSynced: grants.HasSynced})
	}

	// Everything that writes runs only on the leader.
	runAsLeader := func(ctx context.Context) {
		factory.Start(ctx.Done())
		go snapshots.Run(ctx)
		if grants != nil {
			go grants.Run(ctx)
		}
		if !cachesync.Wait(ctx, caches...) {
			return
		}
		go protector.Run(ctx, int(*cloningProtectionThreads))
		go sharer.Run(ctx, 1)
		// Calls recorded by an earlier process are known before any new one.
		if err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
			if err := records.Load(ctx); err != nil {
				logger.Error(err, "Reading the record of CreateVolume calls in flight; retrying")
				return false, nil
			}
			return true, nil
		}); err != nil {
			return
		}
		go records.Run(ctx)
		go settler.Run(ctx, 1)
		if capacityCtrl != nil {
			capacityFactory.Start(ctx.Done())
			go capacityCtrl.Run(ctx, int(*capacityThreads))
		}
		loop.Run(ctx)
	}

	mux := http.NewServeMux()
	endpoint := cfg.HttpEndpoint
	if endpoint == "" {
		endpoint = cfg.MetricsAddress
	}
	if endpoint != "" {
		mux.Handle(cfg.MetricsPath, metrics.Handler(registry, csiMetrics.GetRegistry()))
		if *enablePprof {
			csiMetrics.RegisterPprofToServer(mux)
		}
	}
	if cfg.LeaderElection && node != nil {
		logger.Info("--leader-election is ignored with --node-deployment: every node's instance works for its node")
	}
	if !cfg.LeaderElection || node != nil {
		serve(ctx, endpoint, mux)
		runAsLeader(ctx)
		return nil
	}
	leaderElectionClient, err := kubernetes.NewForConfig(leaderElectionConfig)
	if err != nil {
		return fmt.Errorf("creating Kubernetes client for leader election: %w", err)
	}
	le := leaderelection.NewLeaderElection(leaderElectionClient, strings.ReplaceAll(driverName, "/", "-"), runAsLeader)
	if endpoint != "" {
		le.PrepareHealthCheck(mux, leaderelection.DefaultHealthCheckTimeout)
	}
	if cfg.LeaderElectionNamespace != "" {
		le.WithNamespace(cfg.LeaderElectionNamespace)
	}
	le.WithLeaseDuration(cfg.LeaderElectionLeaseDuration)
	le.WithRenewDeadline(cfg.LeaderElectionRenewDeadline)
	le.WithRetryPeriod(cfg.LeaderElectionRetryPeriod)
	le.WithLabels(cfg.LeaderElectionLabels)
	// Not the host name (csi-lib-utils' default): replicas sharing one, as
	// pods with hostNetwork on one node do, would all lead at once.
	le.WithIdentity(identity)
	if features.Enabled(features.ReleaseLeaderElectionOnExit) {
		le.WithContext(ctx)
		le.WithReleaseOnCancel(true)
	}
	serve(ctx, endpoint, mux)
	if err := le.Run(); err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	return nil
}

// newCapacity wires the CSIStorageCapacity publisher (--enable-capacity):
// its owner, its own informer on the sidecar's namespace and the shared
// StorageClass, CSINode and Node informers. client is the capacity client
// (--kube-api-capacity-qps/-burst); withTopology: one object per segment.
func newCapacity(ctx context.Context, client kubernetes.Interface, conn *grpc.ClientConn, driverName string,
	withTopology bool, controllerCaps rpc.ControllerCapabilitySet, factory informers.SharedInformerFactory, node *nodedeployment.Node,
) (informers.SharedInformerFactory, *capacity.Controller, error) {
	logger := klog.FromContext(ctx)
	if !controllerCaps[csi.ControllerServiceCapability_RPC_GET_CAPACITY] {
		return nil, nil, fmt.Errorf("--enable-capacity is set but CSI driver %s does not support GET_CAPACITY: remove the flag", driverName)
	}
	if *capacityThreads < 1 || *capacityPollInterval <= 0 {
		return nil, nil, fmt.Errorf("--capacity-threads must be at least 1 and --capacity-poll-interval positive")
	}
	namespace, podName := os.Getenv("NAMESPACE"), os.Getenv("POD_NAME")
	if namespace == "" {
		return nil, nil, fmt.Errorf("--enable-capacity needs the env variable NAMESPACE (the pod's namespace, from fieldRef metadata.namespace): CSIStorageCapacity objects are created there")
	}
	if podName == "" && *capacityOwnerrefLevel >= 0 {
		return nil, nil, fmt.Errorf("--enable-capacity needs the env variable POD_NAME (from fieldRef metadata.name) to find the owner of CSIStorageCapacity objects, or --capacity-ownerref-level=-1")
	}
	owner, err := capacity.Owner(ctx, client, namespace, podName, *capacityOwnerrefLevel)
	if err != nil {
		return nil, nil, fmt.Errorf("finding the owner of CSIStorageCapacity objects: %w", err)
	}
	if owner == nil {
		logger.Info("CSIStorageCapacity objects get no owner reference (--capacity-ownerref-level < 0): they are never garbage collected; delete them by hand when removing the driver", "namespace", namespace)
	} else {
		logger.Info("CSIStorageCapacity objects are owned", "kind", owner.Kind, "name", owner.Name, "namespace", namespace)
	}
	// In node mode each instance publishes for its node alone, under a
	// managed-by value of its node's (upstream's), and looks after only those.
	managedBy := capacity.ManagedByValue
	if node != nil {
		managedBy = node.ManagedBy(capacity.ManagedByValue)
	}
	capacityFactory := informers.NewSharedInformerFactoryWithOptions(client, 15*time.Minute,
		informers.WithNamespace(namespace), informers.WithTweakListOptions(capacity.ListOptions(driverName, managedBy)))
	cfg := capacity.Config{
		DriverName:       driverName,
		Client:           client,
		CSI:              csi.NewControllerClient(conn),
		Timeout:          *operationTimeout,
		Namespace:        namespace,
		Owner:            owner,
		ImmediateBinding: *capacityForImmediateBinding,
		PollInterval:     *capacityPollInterval,
		Classes:          factory.Storage().V1().StorageClasses(),
		Capacities:       capacityFactory.Storage().V1().CSIStorageCapacities(),
		ManagedBy:        managedBy,
	}
	switch {
	case node != nil && withTopology:
		cfg.Topology = node // its own segment, which never changes
	case withTopology:
		cfg.CSINodes, cfg.Nodes = factory.Storage().V1().CSINodes(), factory.Core().V1().Nodes()
		cfg.Topology = &topology.Builder{Driver: driverName, Nodes: cfg.Nodes.Lister(), CSINodes: cfg.CSINodes.Lister()}
	}
	ctrl, err := capacity.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating storage capacity publisher: %w", err)
	}
	return capacityFactory, ctrl, nil
}

func serve(ctx context.Context, endpoint string, mux *http.ServeMux) {
	if endpoint == "" {
		return
	}
	go func() {
		klog.FromContext(ctx).Info("Serving metrics and health checks", "address", endpoint)
		if err := http.ListenAndServe(endpoint, mux); err != nil {
			fatal(err, "HTTP endpoint failed")
		}
	}()
}

// checkAPIServerGate warns loudly when the API server would drop
// dataSourceRef.namespace: the sidecar's gate alone cannot make
// cross-namespace provisioning work.
func checkAPIServerGate(ctx context.Context, client kubernetes.Interface) {
	logger := klog.FromContext(ctx)
	ns := sidecarNamespace()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch res, err := preflight.CrossNamespaceDataSource(pctx, client, ns); res {
	case preflight.Kept:
		logger.Info("Preflight: kube-apiserver keeps spec.dataSourceRef.namespace")
	case preflight.Dropped:
		logger.Error(nil, "WARNING: CrossNamespaceVolumeDataSource is enabled on csi-provisioner but kube-apiserver drops spec.dataSourceRef.namespace: "+
			"enable --feature-gates=CrossNamespaceVolumeDataSource=true on kube-apiserver and kube-controller-manager, or name cross-namespace sources in the claim annotation "+
			datasource.DataSourceAnnotation+" (e.g. VolumeSnapshot.snapshot.storage.k8s.io/prod/nightly), which needs no kube-apiserver gate")
	default:
		logger.Info("Preflight: could not check whether kube-apiserver keeps spec.dataSourceRef.namespace", "err", err)
	}
}

// sidecarNamespace is the namespace the sidecar runs in, from the downward
// API (POD_NAMESPACE, or NAMESPACE as --enable-capacity uses), else "default".
func sidecarNamespace() string {
	for _, env := range []string{"POD_NAMESPACE", "NAMESPACE"} {
		if ns := os.Getenv(env); ns != "" {
			return ns
		}
	}
	return "default"
}
