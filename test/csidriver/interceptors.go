package csidriver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// AllMethods is the method name that makes a knob apply to every call.
const AllMethods = "*"

// callLogger writes one CallRecord line per gRPC call.
type callLogger struct {
	mu  sync.Mutex
	out io.Writer
}

// intercept is the outermost interceptor, so that the logged duration and
// code include injected delays and failures.
func (l *callLogger) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	l.write(start, shortMethod(info.FullMethod), req, err, time.Since(start))
	return resp, err
}

func (l *callLogger) write(start time.Time, method string, req any, callErr error, d time.Duration) {
	reqJSON := json.RawMessage(protosanitizer.StripSecrets(req).String())
	if !json.Valid(reqJSON) {
		// StripSecrets reports its own failures as plain text; keep the
		// line valid JSON by embedding that text as a string.
		quoted, _ := json.Marshal(string(reqJSON))
		reqJSON = quoted
	}
	st := status.Convert(callErr)
	rec := CallRecord{
		Time:       start.UTC(),
		Method:     method,
		Request:    reqJSON,
		Code:       st.Code().String(),
		Error:      st.Message(),
		DurationMS: float64(d) / float64(time.Millisecond),
	}
	line, err := json.Marshal(rec)
	if err != nil {
		klog.ErrorS(err, "Encoding call log record", "method", method)
		return
	}
	line = append(line, '\n')

	l.mu.Lock()
	defer l.mu.Unlock()
	// A single Write per line keeps lines whole even for O_APPEND files
	// shared with other writers.
	if _, err := l.out.Write(line); err != nil {
		klog.ErrorS(err, "Writing call log record", "method", method)
	}
}

// knobs holds the test-controlled delays and injected failures.
type knobs struct {
	mu       sync.Mutex
	delays   map[string]time.Duration
	failures map[string]failure
}

type failure struct {
	remaining int
	code      codes.Code
}

// KnobState is a snapshot of the active knobs, as reported by the control
// endpoint.
type KnobState struct {
	Delays   map[string]string       `json:"delays"`
	Failures map[string]FailureState `json:"failures"`
}

// FailureState describes a pending "fail the next N calls" rule.
type FailureState struct {
	Count int    `json:"count"`
	Code  string `json:"code"`
}

func newKnobs() *knobs {
	return &knobs{delays: map[string]time.Duration{}, failures: map[string]failure{}}
}

// checkMethod rejects names that would never match a call, so a typo in a
// test fails loudly instead of silently not injecting anything.
func checkMethod(method string) error {
	if method == AllMethods {
		return nil
	}
	if _, ok := csiMethods[method]; !ok {
		return fmt.Errorf("unknown CSI method %q (use a short name like CreateVolume, or %q)", method, AllMethods)
	}
	return nil
}

func (k *knobs) setDelay(method string, d time.Duration) error {
	if err := checkMethod(method); err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("negative delay %v for %s", d, method)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	// A zero delay is kept: it exempts the method from a "*" delay.
	k.delays[method] = d
	return nil
}

func (k *knobs) failNext(method string, count int, code codes.Code) error {
	if err := checkMethod(method); err != nil {
		return err
	}
	if count < 0 {
		return fmt.Errorf("negative failure count %d for %s", count, method)
	}
	if code == codes.OK && count > 0 {
		return fmt.Errorf("cannot inject failures with code OK for %s", method)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if count == 0 {
		delete(k.failures, method)
	} else {
		k.failures[method] = failure{remaining: count, code: code}
	}
	return nil
}

func (k *knobs) reset() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.delays)
	clear(k.failures)
}

func (k *knobs) state() KnobState {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := KnobState{Delays: map[string]string{}, Failures: map[string]FailureState{}}
	for m, d := range k.delays {
		st.Delays[m] = d.String()
	}
	for m, f := range k.failures {
		st.Failures[m] = FailureState{Count: f.remaining, Code: f.code.String()}
	}
	return st
}

// take decides the fate of one call when it arrives: its delay, and whether
// it consumes one injected failure. Deciding on arrival keeps "fail the next
// N calls" exact even when delayed calls overlap. A rule for the method wins
// over the "*" rule.
func (k *knobs) take(method string) (time.Duration, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delay, ok := k.delays[method]
	if !ok {
		delay = k.delays[AllMethods]
	}
	for _, key := range []string{method, AllMethods} {
		f, ok := k.failures[key]
		if !ok {
			continue
		}
		f.remaining--
		if f.remaining <= 0 {
			delete(k.failures, key)
		} else {
			k.failures[key] = f
		}
		return delay, status.Errorf(f.code, "injected failure for %s (%d more pending)", method, f.remaining)
	}
	return delay, nil
}

func (k *knobs) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := shortMethod(info.FullMethod)
	delay, injected := k.take(method)
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if injected != nil {
		klog.V(2).InfoS("Injecting failure", "method", method, "code", status.Code(injected))
		return nil, injected
	}
	return handler(ctx, req)
}

// SetDelay delays every following call of method by delay. "*" applies to
// all methods without their own setting; a method set to zero is exempt.
func (d *Driver) SetDelay(method string, delay time.Duration) error {
	if err := d.knobs.setDelay(method, delay); err != nil {
		return fmt.Errorf("setting delay: %w", err)
	}
	klog.InfoS("Set delay", "method", method, "delay", delay)
	return nil
}

// FailNext makes the next count calls of method ("*" for any method) fail
// with code. Zero clears the rule.
func (d *Driver) FailNext(method string, count int, code codes.Code) error {
	if err := d.knobs.failNext(method, count, code); err != nil {
		return fmt.Errorf("setting failure injection: %w", err)
	}
	klog.InfoS("Set failure injection", "method", method, "count", count, "code", code)
	return nil
}

// Reset clears all delays and pending injected failures.
func (d *Driver) Reset() {
	d.knobs.reset()
	klog.InfoS("Reset test knobs")
}

// Knobs reports the active delays and pending failures.
func (d *Driver) Knobs() KnobState {
	return d.knobs.state()
}

// setDelays applies Config.Delays in a stable order, so that the first
// invalid entry reported is deterministic.
func (k *knobs) setDelays(delays map[string]time.Duration) error {
	for _, m := range slices.Sorted(maps.Keys(delays)) {
		if err := k.setDelay(m, delays[m]); err != nil {
			return err
		}
	}
	return nil
}
