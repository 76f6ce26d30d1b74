// Command csi-test-driver runs the file-backed test CSI driver of package
// github.com/crossns/external-provisioner/test/csidriver.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/csidriver"
)

func main() {
	var (
		endpoint        = flag.String("endpoint", "", "CSI endpoint: unix:///abs/path.sock or tcp://host:port (required)")
		dataDir         = flag.String("data-dir", "", "directory holding volumes, snapshots and their metadata (required)")
		driverName      = flag.String("drivername", csidriver.DefaultDriverName, "CSI driver name")
		nodeID          = flag.String("nodeid", "", "node ID reported by NodeGetInfo (default: host name)")
		topology        = flag.String("topology", "", "accessible topology of all volumes, key=value[,key2=value2]")
		capacity        = flag.String("capacity", csidriver.DefaultCapacity, "total capacity reported by GetCapacity, as a resource quantity")
		logFile         = flag.String("log-file", "", "file receiving one JSON line per gRPC call (default: stderr)")
		arrivalLog      = flag.String("arrival-log", "", "optional file receiving one JSON line per gRPC call when it arrives")
		controlEndpoint = flag.String("control-endpoint", "", "optional loopback host:port of the HTTP control API")
		volumeIDPrefix  = flag.String("volume-id-prefix", "", "prefix of every volume ID handed out and expected, e.g. projects/UNSPECIFIED/zones/UNSPECIFIED/disks/ to serve as pd.csi.storage.gke.io for a CSI migration test")
		delays          = map[string]time.Duration{}
	)
	flag.Func("delay", "per-method delay Method=duration, repeatable or comma separated; * means all methods", func(s string) error {
		return csidriver.ParseDelays(s, delays)
	})
	klog.InitFlags(nil)
	flag.Parse()

	if err := run(*endpoint, *dataDir, *driverName, *nodeID, *topology, *capacity, *logFile, *arrivalLog, *controlEndpoint, *volumeIDPrefix, delays); err != nil {
		klog.ErrorS(err, "csi-test-driver failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(endpoint, dataDir, driverName, nodeID, topology, capacity, logFile, arrivalLog, controlEndpoint, volumeIDPrefix string, delays map[string]time.Duration) error {
	if endpoint == "" || dataDir == "" {
		return fmt.Errorf("--endpoint and --data-dir are required")
	}
	topo, err := csidriver.ParseTopology(topology)
	if err != nil {
		return fmt.Errorf("--topology: %w", err)
	}
	var callLog io.Writer = os.Stderr
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("--log-file: %w", err)
		}
		defer f.Close()
		callLog = f
	}
	var arrivals io.Writer
	if arrivalLog != "" {
		f, err := os.OpenFile(arrivalLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("--arrival-log: %w", err)
		}
		defer f.Close()
		arrivals = f
	}

	d, err := csidriver.New(csidriver.Config{
		DriverName:      driverName,
		NodeID:          nodeID,
		DataDir:         dataDir,
		Topology:        topo,
		Capacity:        capacity,
		CallLog:         callLog,
		ArrivalLog:      arrivals,
		Delays:          delays,
		Endpoint:        endpoint,
		ControlEndpoint: controlEndpoint,
		VolumeIDPrefix:  volumeIDPrefix,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return d.Run(ctx)
}
