package soak

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/cluster"
	"github.com/crossns/external-provisioner/test/csidriver"
)

// FaultResult is what one fault did and how long the bed took to recover.
type FaultResult struct {
	Fault
	Injected time.Time `json:"injected"`
	// Ended is when the fault was over: the killed component started
	// again, the injected failures answered, the delay lifted.
	Ended time.Time `json:"ended"`
	// RecoverySeconds is from Ended until the probe's operation, started
	// then, succeeded (for driver errors the probe starts with the fault
	// and triggers the failing calls: from the last failure on).
	RecoverySeconds float64 `json:"recoverySeconds"`
	// Probe is what the probe did.
	Probe string `json:"probe"`
	// Note says what happened, e.g. which replica led.
	Note string `json:"note,omitempty"`
	// Error is set when the fault could not be injected or the bed did not
	// recover within the probe timeout.
	Error string `json:"error,omitempty"`
}

// probeOp is an operation whose success shows the bed works again.
type probeOp struct {
	name string
	run  func(ctx context.Context) error
}

// injectFault injects one fault, ends it, and measures the recovery.
func (r *run) injectFault(ctx context.Context, f Fault) FaultResult {
	res := FaultResult{Fault: f}
	logger := klog.FromContext(ctx).WithValues("fault", f.Index, "kind", f.Kind)
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Injecting fault", "what", f.String())
	var err error
	switch f.Kind {
	case FaultSidecarKill:
		err = r.killAndStart(ctx, &res, sidecars...)
		r.recoverWith(ctx, &res, r.provisionProbe(f.Index))
	case FaultLeaderKill:
		err = r.killLeader(ctx, &res)
		r.recoverWith(ctx, &res, r.provisionProbe(f.Index))
	case FaultDriverRestart:
		err = r.killAndStart(ctx, &res, cluster.TestDriver)
		r.recoverWith(ctx, &res, r.provisionProbe(f.Index))
	case FaultAPIServerRestart:
		err = r.killAndStart(ctx, &res, cluster.KubeAPIServer)
		r.recoverWith(ctx, &res, r.provisionProbe(f.Index))
	case FaultSnapshotControllerRestart:
		err = r.killAndStart(ctx, &res, cluster.SnapshotController)
		r.recoverWith(ctx, &res, r.snapshotProbe(f.Index))
	case FaultDelay:
		err = r.delay(ctx, &res)
	default:
		err = r.driverErrors(ctx, &res)
	}
	if err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	if res.Error != "" {
		logger.Error(nil, "Fault", "error", res.Error)
	} else {
		logger.Info("Recovered", "recoverySeconds", round2(res.RecoverySeconds), "probe", res.Probe, "note", res.Note)
	}
	return res
}

// killAndStart kills components, keeps them down f.Down and starts them
// again; the fault ends once they run.
func (r *run) killAndStart(ctx context.Context, res *FaultResult, components ...string) error {
	for _, c := range components {
		r.bed.hold(c)
	}
	defer func() {
		for _, c := range components {
			r.bed.release(c)
		}
	}()
	res.Injected = time.Now()
	for _, c := range components {
		if err := r.bed.kill(ctx, c); err != nil {
			return err
		}
	}
	sleep(ctx, res.Down)
	for _, c := range components {
		if err := r.bed.start(ctx, c); err != nil {
			return err
		}
	}
	res.Ended = time.Now()
	return nil
}

// killLeader kills the replica that leads and starts it again at once (as
// standby); the fault ends when it was killed: the other takes over.
func (r *run) killLeader(ctx context.Context, res *FaultResult) error {
	var leader string
	_, err := poll(ctx, time.Second, 2*time.Minute, func(ctx context.Context) (bool, string) {
		l := r.bed.leaders(ctx)
		if len(l) == 1 {
			leader = l[0]
		}
		return len(l) == 1, fmt.Sprintf("leaders %v", l)
	})
	if err != nil {
		return fmt.Errorf("finding the leader: %w", err)
	}
	res.Note = "killed leader " + leader
	r.bed.hold(leader)
	defer r.bed.release(leader)
	res.Injected = time.Now()
	if err := r.bed.kill(ctx, leader); err != nil {
		return err
	}
	res.Ended = time.Now()
	return r.bed.start(ctx, leader)
}

// driverErrors makes the next Count calls of Method fail with the fault's
// code. The probe (the operation that calls Method) starts with the fault;
// the fault ends when every injected failure was answered (by the probe or
// the workload), or after a minute (the rest are then cleared).
func (r *run) driverErrors(ctx context.Context, res *FaultResult) error {
	code := res.Kind[len("error-"):]
	op, err := r.methodProbe(ctx, res.Index, res.Method)
	if err != nil {
		return err
	}
	res.Probe = op.name
	if err := r.bed.driverControl(ctx, "/fail", csidriver.FailRequest{Method: res.Method, Count: res.Count, Code: code}); err != nil {
		return err
	}
	res.Injected = time.Now()
	done := make(chan error, 1)
	go func() { done <- op.run(ctx) }()
	var probeErr error
	probeDone := time.Time{}
	_, waitErr := poll(ctx, 200*time.Millisecond, time.Minute, func(ctx context.Context) (bool, string) {
		select {
		case probeErr = <-done:
			if probeDone.IsZero() {
				probeDone = time.Now()
			}
			done = nil
		default:
		}
		k, err := r.bed.driverKnobs(ctx)
		if err != nil {
			return false, err.Error()
		}
		f, pending := k.Failures[res.Method]
		return !pending, fmt.Sprintf("%d of %d failures pending", f.Count, res.Count)
	})
	res.Ended = time.Now()
	if waitErr != nil {
		res.Note = "not every injected failure was answered within a minute; cleared"
		if err := r.bed.driverControl(ctx, "/fail", csidriver.FailRequest{Method: res.Method, Count: 0, Code: code}); err != nil {
			return err
		}
	}
	if done != nil {
		select {
		case probeErr = <-done:
		case <-time.After(r.cfg.ProbeTimeout):
			probeErr = fmt.Errorf("%s did not succeed within %s", op.name, r.cfg.ProbeTimeout)
		}
		probeDone = time.Now()
	}
	if probeErr != nil {
		res.Error = fmt.Sprintf("no recovery: %v", probeErr)
		return nil
	}
	res.RecoverySeconds = max(0, probeDone.Sub(res.Ended).Seconds())
	return nil
}

// delay makes calls of Method take Delay for Hold, then lifts it; the probe
// runs after.
func (r *run) delay(ctx context.Context, res *FaultResult) error {
	op, err := r.methodProbe(ctx, res.Index, res.Method)
	if err != nil {
		return err
	}
	if err := r.bed.driverControl(ctx, "/delay", csidriver.DelayRequest{Method: res.Method, Delay: res.Delay.String(), IgnoreCancel: res.IgnoreCancel}); err != nil {
		return err
	}
	res.Injected = time.Now()
	sleep(ctx, res.Hold)
	if err := r.bed.driverControl(ctx, "/delay", csidriver.DelayRequest{Method: res.Method, Delay: "0s"}); err != nil {
		return err
	}
	res.Ended = time.Now()
	r.recoverWith(ctx, res, op)
	return nil
}

// recoverWith runs the probe from the fault's end and records how long it
// took to succeed.
func (r *run) recoverWith(ctx context.Context, res *FaultResult, op probeOp) {
	if res.Ended.IsZero() {
		return // the fault was not injected
	}
	res.Probe = op.name
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, r.cfg.ProbeTimeout)
	defer cancel()
	if err := op.run(pctx); err != nil {
		res.Error = fmt.Sprintf("no recovery within %s: %v", r.cfg.ProbeTimeout, err)
		return
	}
	res.RecoverySeconds = time.Since(start).Seconds() + start.Sub(res.Ended).Seconds()
}

// methodProbe returns the probe that calls a driver method; what it needs
// beforehand (a Bound claim to delete, a ready snapshot) is made now.
func (r *run) methodProbe(ctx context.Context, k int, method string) (probeOp, error) {
	switch method {
	case "CreateVolume":
		return r.provisionProbe(k), nil
	case "CreateSnapshot":
		return r.snapshotProbe(k), nil
	case "DeleteVolume":
		c, err := r.w.createClaim(ctx, ClaimSpec{Namespace: canaryNamespace, Name: fmt.Sprintf("canary-%02d-del", k)}, true)
		if err != nil {
			return probeOp{}, err
		}
		if _, err := r.w.waitBound(ctx, canaryNamespace, c.spec.Name, r.cfg.ProbeTimeout); err != nil {
			return probeOp{}, err
		}
		return probeOp{name: "delete a Bound claim until its backend volume is gone", run: func(ctx context.Context) error {
			r.w.deleteClaim(ctx, c)
			return r.waitBackendGone(ctx, "volume", "pvc-"+string(c.uid))
		}}, nil
	case "DeleteSnapshot":
		name := fmt.Sprintf("canary-%02d-del", k)
		if err := r.w.createSnapshot(ctx, canaryNamespace, name, canarySource); err != nil {
			return probeOp{}, err
		}
		if err := r.w.waitSnapshotReady(ctx, canaryNamespace, name, r.cfg.ProbeTimeout); err != nil {
			return probeOp{}, err
		}
		vs, err := r.w.snaps.SnapshotV1().VolumeSnapshots(canaryNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return probeOp{}, err
		}
		return probeOp{name: "delete a ready VolumeSnapshot until its backend snapshot is gone", run: func(ctx context.Context) error {
			if err := r.w.deleteSnapshot(ctx, canaryNamespace, name); err != nil {
				return err
			}
			return r.waitBackendGone(ctx, "snapshot", "snapshot-"+string(vs.UID))
		}}, nil
	}
	return probeOp{}, fmt.Errorf("no probe for %s", method)
}

// canarySource is the claim in the canary namespace that snapshot probes
// snapshot.
const canarySource = "canary-src"

// provisionProbe creates a claim and waits until it is Bound, then deletes it.
func (r *run) provisionProbe(k int) probeOp {
	return probeOp{name: "provision a claim until Bound", run: func(ctx context.Context) error {
		c, err := r.w.createClaim(ctx, ClaimSpec{Namespace: canaryNamespace, Name: fmt.Sprintf("canary-%02d", k)}, true)
		if err != nil {
			return err
		}
		_, err = r.w.waitBound(ctx, canaryNamespace, c.spec.Name, r.cfg.ProbeTimeout)
		r.w.deleteClaim(context.WithoutCancel(ctx), c)
		return err
	}}
}

// snapshotProbe snapshots the canary source and waits until the snapshot
// is ready, then deletes it.
func (r *run) snapshotProbe(k int) probeOp {
	return probeOp{name: "snapshot a claim until ready", run: func(ctx context.Context) error {
		name := fmt.Sprintf("canary-%02d", k)
		if err := r.w.createSnapshot(ctx, canaryNamespace, name, canarySource); err != nil {
			return err
		}
		err := r.w.waitSnapshotReady(ctx, canaryNamespace, name, r.cfg.ProbeTimeout)
		if derr := r.w.deleteSnapshot(context.WithoutCancel(ctx), canaryNamespace, name); derr != nil && !apierrors.IsNotFound(derr) && err == nil {
			err = derr
		}
		return err
	}}
}

// waitBackendGone waits until the driver holds no volume or snapshot of
// that name.
func (r *run) waitBackendGone(ctx context.Context, kind, name string) error {
	_, err := poll(ctx, 250*time.Millisecond, r.cfg.ProbeTimeout, func(context.Context) (bool, string) {
		vols, snaps, err := csidriver.ReadDataDir(r.w.dataDir)
		if err != nil {
			return false, err.Error()
		}
		if kind == "volume" {
			for _, v := range vols {
				if v.Name == name {
					return false, "backend volume " + v.ID + " still there"
				}
			}
			return true, ""
		}
		for _, s := range snaps {
			if s.Name == name {
				return false, "backend snapshot " + s.ID + " still there"
			}
		}
		return true, ""
	})
	return err
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
