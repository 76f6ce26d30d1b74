package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/cluster"
)

// sidecars are the two replicas of the sidecar the run keeps up.
var sidecars = []string{cluster.Provisioner, cluster.ProvisionerReplica}

// supervised are the components the run starts again when they exit, as a
// kubelet restarts a pod's containers. etcd is never touched.
var supervised = []string{
	cluster.KubeAPIServer, cluster.KubeControllerManager, cluster.SnapshotController,
	cluster.TestDriver, cluster.CSISnapshotter, cluster.Provisioner, cluster.ProvisionerReplica,
}

// Exit is a component that exited without a fault killing it, and was
// started again.
type Exit struct {
	At        time.Time `json:"at"`
	Component string    `json:"component"`
	// Reason is what its log said last: "lost the driver connection",
	// "lost its lease", "crashed" or "exited".
	Reason string `json:"reason"`
	// Tail is the end of its log, for a crash.
	Tail string `json:"tail,omitempty"`
}

// bedControl serialises what the run does to the bed's processes (the
// cluster package is not safe for concurrent use), starts components that
// exit unless a fault holds them down, and samples the sidecars' memory.
type bedControl struct {
	bed *cluster.Cluster

	// mu serialises calls into bed that start or stop processes.
	mu sync.Mutex

	state sync.Mutex
	// held are components a fault keeps down: not restarted.
	held  map[string]bool
	exits []Exit
	mem   memory
}

// memory is what the sampler saw of the sidecars' resident memory.
type memory struct {
	// PeakKiB is the highest VmHWM of any sidecar process; PeakComponent
	// had it.
	PeakKiB       int64
	PeakComponent string
	// LastKiB is each sidecar's latest VmRSS.
	LastKiB map[string]int64
	Samples int
}

func newBedControl(bed *cluster.Cluster) *bedControl {
	return &bedControl{bed: bed, held: map[string]bool{}, mem: memory{LastKiB: map[string]int64{}}}
}

// hold keeps a component down until release.
func (b *bedControl) hold(component string) {
	b.state.Lock()
	defer b.state.Unlock()
	b.held[component] = true
}

func (b *bedControl) release(component string) {
	b.state.Lock()
	defer b.state.Unlock()
	delete(b.held, component)
}

func (b *bedControl) anyHeld() bool {
	b.state.Lock()
	defer b.state.Unlock()
	return len(b.held) > 0
}

// kill sends SIGKILL to a component.
func (b *bedControl) kill(ctx context.Context, component string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Contains(sidecars, component) {
		// Its peak until now, which dies with it.
		b.sampleLocked(component)
	}
	return b.bed.KillComponent(ctx, component)
}

// start starts a component (no-op when it runs), retrying for a while:
// a sidecar started while kube-apiserver is down exits at once.
func (b *bedControl) start(ctx context.Context, component string) error {
	var err error
	for deadline := time.Now().Add(2 * time.Minute); ; {
		b.mu.Lock()
		err = b.bed.StartComponent(ctx, component)
		b.mu.Unlock()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		klog.FromContext(ctx).V(2).Info("Starting component failed; retrying", "component", component, "err", err)
		time.Sleep(time.Second)
	}
}

// supervise starts components that exited again until ctx ends, and
// samples the sidecars' memory every second.
func (b *bedControl) supervise(ctx context.Context) {
	logger := klog.FromContext(ctx)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, comp := range sidecars {
			b.mu.Lock()
			b.sampleLocked(comp)
			b.mu.Unlock()
		}
		for _, comp := range supervised {
			// While a fault holds a component down, nothing is started:
			// a sidecar started while the driver is down waits for it
			// (and would keep the lock); the fault's own start comes first.
			if b.anyHeld() || b.bed.ComponentPID(comp) != 0 {
				continue
			}
			b.mu.Lock()
			// Checked again under the lock: a fault may have just
			// started it.
			if b.anyHeld() || b.bed.ComponentPID(comp) != 0 {
				b.mu.Unlock()
				continue
			}
			reason, tail := exitReason(b.bed.LogPath(comp))
			e := Exit{At: time.Now(), Component: comp, Reason: reason}
			if reason == "crashed" {
				e.Tail = tail
			}
			logger.Info("Component exited; starting it again", "component", comp, "reason", reason)
			err := b.bed.StartComponent(ctx, comp)
			b.mu.Unlock()
			b.state.Lock()
			b.exits = append(b.exits, e)
			b.state.Unlock()
			if err != nil {
				logger.Error(err, "Starting component again; retrying", "component", comp)
			}
		}
	}
}

// exitReason reads why a component's last process ended from its log.
func exitReason(logPath string) (reason, tail string) {
	tail = lastProcessLog(logPath, 64<<10)
	switch {
	case strings.Contains(tail, "panic:") || strings.Contains(tail, "fatal error:"):
		return "crashed", lastLines(tail, 40)
	case strings.Contains(tail, "Lost connection to CSI driver"), strings.Contains(tail, `"Lost connection"`):
		return "lost the driver connection", ""
	case strings.Contains(tail, "Stopped leading"), strings.Contains(tail, "leaderelection lost"):
		return "lost its lease", ""
	}
	return "exited", ""
}

// lastProcessLog returns what the last process of a component logged (the
// bed writes a "==== <time> starting" line before each), at most limit bytes.
func lastProcessLog(path string, limit int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, st.Size()-limit)
	data, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return ""
	}
	if i := bytes.LastIndex(data, []byte("\n==== ")); i >= 0 {
		data = data[i+1:]
	}
	return string(data)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sampleLocked reads one sidecar's VmRSS and VmHWM; b.mu is held, so the
// process is not being replaced.
func (b *bedControl) sampleLocked(component string) {
	pid := b.bed.ComponentPID(component)
	if pid == 0 {
		return
	}
	rss, hwm, err := readMemory(pid)
	if err != nil {
		return
	}
	b.state.Lock()
	defer b.state.Unlock()
	b.mem.Samples++
	b.mem.LastKiB[component] = rss
	if hwm > b.mem.PeakKiB {
		b.mem.PeakKiB, b.mem.PeakComponent = hwm, component
	}
}

func (b *bedControl) memory() memory {
	b.state.Lock()
	defer b.state.Unlock()
	m := b.mem
	m.LastKiB = map[string]int64{}
	for k, v := range b.mem.LastKiB {
		m.LastKiB[k] = v
	}
	return m
}

func (b *bedControl) exitsSoFar() []Exit {
	b.state.Lock()
	defer b.state.Unlock()
	return append([]Exit(nil), b.exits...)
}

// readMemory returns VmRSS and VmHWM of pid in KiB.
func readMemory(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		key, rest, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if key == "VmRSS" {
			rss = v
		} else {
			hwm = v
		}
	}
	return rss, hwm, nil
}

// leaders returns the sidecar replicas that say they lead.
func (b *bedControl) leaders(ctx context.Context) []string {
	var out []string
	for comp, url := range map[string]string{
		cluster.Provisioner:        b.bed.ProvisionerMetricsURL(),
		cluster.ProvisionerReplica: b.bed.ProvisionerReplicaMetricsURL(),
	} {
		if body, err := httpGet(ctx, url); err == nil && strings.Contains(body, `leader_election_master_status{name=""} 1`) {
			out = append(out, comp)
		}
	}
	return out
}

func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s answered %d: %s", url, resp.StatusCode, body)
	}
	return string(body), err
}

// driverControl posts to the test driver's control API (test/csidriver),
// retrying while the driver restarts.
func (b *bedControl) driverControl(ctx context.Context, path string, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	var last error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.bed.DriverControlURL()+path, bytes.NewReader(data))
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			last = err
			continue
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("driver control %s %s: %d %s", path, data, resp.StatusCode, answer)
		}
		return nil
	}
	return fmt.Errorf("driver control %s: %w", path, last)
}

// driverKnobs reads the driver's active knobs.
func (b *bedControl) driverKnobs(ctx context.Context) (knobState, error) {
	var k knobState
	body, err := httpGet(ctx, b.bed.DriverControlURL()+"/knobs")
	if err != nil {
		return k, err
	}
	return k, json.Unmarshal([]byte(body), &k)
}

// knobState is the part of the driver's /knobs answer the run reads.
type knobState struct {
	Failures map[string]struct {
		Count int `json:"count"`
	} `json:"failures"`
	Running []string `json:"running"`
}

// fileSize is the size of a file, 0 when it does not exist.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
