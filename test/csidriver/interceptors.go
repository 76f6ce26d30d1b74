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

// callLogger writes one ArrivalRecord line per gRPC call when it arrives
// and one CallRecord line when it ends.
type callLogger struct {
	mu       sync.Mutex
	out      io.Writer
	arrivals io.Writer
}

// intercept is the outermost interceptor, so that the logged duration and
// code include injected delays and failures.
func (l *callLogger) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	method := shortMethod(info.FullMethod)
	l.arrived(start, method, req)
	resp, err := handler(ctx, req)
	l.write(start, method, req, err, time.Since(start))
	return resp, err
}

// arrived writes the ArrivalRecord of a call.
func (l *callLogger) arrived(start time.Time, method string, req any) {
	line, err := json.Marshal(ArrivalRecord{Time: start.UTC(), Method: method, Name: requestName(req)})
	if err != nil {
		klog.ErrorS(err, "Encoding arrival record", "method", method)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.arrivals.Write(append(line, '\n')); err != nil {
		klog.ErrorS(err, "Writing arrival record", "method", method)
	}
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

// knobs holds the test-controlled delays and injected failures, and the
// calls still running under a delay that ignores cancellation.
type knobs struct {
	mu       sync.Mutex
	delays   map[string]delayRule
	failures map[string]failure
	// running counts the calls ignoring cancellation that have not returned
	// yet, by runningKey. A named one (CreateVolume, CreateSnapshot) is
	// there at most once: a duplicate is refused while it runs.
	running map[string]int
	// unattended lets tests wait for calls that outlive their caller.
	unattended sync.WaitGroup
}

// delayRule is the delay of one method (or of "*").
type delayRule struct {
	delay time.Duration
	// ignoreCancel makes a delayed call sleep the whole delay and then do
	// its work even when the caller has given up, the way a backend
	// operation that was started runs to its end.
	ignoreCancel bool
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
	// IgnoreCancel lists, sorted, the methods (or "*") whose delay ignores
	// the caller's cancellation.
	IgnoreCancel []string `json:"ignoreCancel,omitempty"`
	// Running lists, sorted, the calls ignoring cancellation that are still
	// sleeping or working, as "<method> <name>" ("<method>" for calls
	// without a name). Tests wait for it to empty before checking what
	// such a call left behind. /reset does not clear it.
	Running []string `json:"running,omitempty"`
}

// FailureState describes a pending "fail the next N calls" rule.
type FailureState struct {
	Count int    `json:"count"`
	Code  string `json:"code"`
}

func newKnobs() *knobs {
	return &knobs{delays: map[string]delayRule{}, failures: map[string]failure{}, running: map[string]int{}}
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

func (k *knobs) setDelay(method string, r delayRule) error {
	if err := checkMethod(method); err != nil {
		return err
	}
	if r.delay < 0 {
		return fmt.Errorf("negative delay %v for %s", r.delay, method)
	}
	if r.ignoreCancel && r.delay == 0 {
		// Nothing would be ignored; most likely the delay was forgotten.
		return fmt.Errorf("ignoreCancel without a delay for %s", method)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	// A zero delay is kept: it exempts the method from a "*" delay, its
	// ignoreCancel included.
	k.delays[method] = r
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
	for m, r := range k.delays {
		st.Delays[m] = r.delay.String()
		if r.ignoreCancel {
			st.IgnoreCancel = append(st.IgnoreCancel, m)
		}
	}
	for m, f := range k.failures {
		st.Failures[m] = FailureState{Count: f.remaining, Code: f.code.String()}
	}
	for key, n := range k.running {
		for range n {
			st.Running = append(st.Running, key)
		}
	}
	slices.Sort(st.IgnoreCancel)
	slices.Sort(st.Running)
	return st
}

// arrival is what the knobs decided for one call when it arrived.
type arrival struct {
	rule delayRule
	// injected is the failure the call returns after its delay, if any.
	injected error
	// key is the call's runningKey while it ignores cancellation, else "".
	key string
}

// take decides the fate of one call when it arrives: its delay, and whether
// it consumes one injected failure. Deciding on arrival keeps "fail the next
// N calls" exact even when delayed calls overlap. A rule for the method wins
// over the "*" rule.
//
// A call whose name matches one still running under ignoreCancel is refused
// with Aborted before any knob applies to it (it consumes no injected
// failure), as a driver that serialises operations per name would.
func (k *knobs) take(method, name string) (arrival, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := runningKey(method, name)
	if name != "" && k.running[key] > 0 {
		return arrival{}, status.Errorf(codes.Aborted, "operation pending for this name: %s %q is still running", method, name)
	}
	var a arrival
	var ok bool
	if a.rule, ok = k.delays[method]; !ok {
		a.rule = k.delays[AllMethods]
	}
	if a.rule.ignoreCancel && a.rule.delay > 0 {
		a.key = key
		k.running[key]++
		k.unattended.Add(1)
	}
	for _, m := range []string{method, AllMethods} {
		f, ok := k.failures[m]
		if !ok {
			continue
		}
		f.remaining--
		if f.remaining <= 0 {
			delete(k.failures, m)
		} else {
			k.failures[m] = f
		}
		a.injected = status.Errorf(f.code, "injected failure for %s (%d more pending)", method, f.remaining)
		break
	}
	return a, nil
}

// done ends a call that take registered as running.
func (k *knobs) done(a arrival) {
	if a.key == "" {
		return
	}
	k.mu.Lock()
	if k.running[a.key]--; k.running[a.key] <= 0 {
		delete(k.running, a.key)
	}
	k.mu.Unlock()
	k.unattended.Done()
}

// runningKey identifies a call ignoring cancellation in KnobState.Running.
func runningKey(method, name string) string {
	if name == "" {
		return method
	}
	return method + " " + name
}

// requestName is the name of a request that creates a named object
// (CreateVolume, CreateSnapshot), or "".
func requestName(req any) string {
	if n, ok := req.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}

func (k *knobs) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := shortMethod(info.FullMethod)
	name := requestName(req)
	a, err := k.take(method, name)
	if err != nil {
		klog.V(2).InfoS("Refusing a call while one of the same name runs", "method", method, "name", name)
		return nil, err
	}
	defer k.done(a)
	if a.key != "" {
		sleepIgnoringCancel(ctx, a.rule.delay, method, name)
		// The caller's cancellation does not end the call, so the handler
		// must not see it either.
		ctx = context.WithoutCancel(ctx)
	} else if a.rule.delay > 0 {
		t := time.NewTimer(a.rule.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if a.injected != nil {
		klog.V(2).InfoS("Injecting failure", "method", method, "code", status.Code(a.injected))
		return nil, a.injected
	}
	return handler(ctx, req)
}

// sleepIgnoringCancel sleeps d whatever happens to the caller; it only
// logs when the caller gives up, which is the case the knob exists for.
func sleepIgnoringCancel(callCtx context.Context, d time.Duration, method, name string) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return
	case <-callCtx.Done():
		klog.V(2).InfoS("Caller gave up on a delayed call; finishing it anyway", "method", method, "name", name)
	}
	<-t.C
}

// SetDelay delays every following call of method by delay. "*" applies to
// all methods without their own setting; a method set to zero is exempt.
// A caller that gives up ends the delayed call (DeadlineExceeded or
// Canceled), and the call does nothing.
func (d *Driver) SetDelay(method string, delay time.Duration) error {
	return d.setDelay(method, delayRule{delay: delay})
}

// SetDelayIgnoringCancel is SetDelay for calls that run to their end even
// when the caller gives up: each sleeps the whole delay, then does its work
// (a CreateVolume creates the volume) and answers, maybe to nobody. While
// one runs, a call of the same method and name is refused with Aborted
// "operation pending for this name".
func (d *Driver) SetDelayIgnoringCancel(method string, delay time.Duration) error {
	return d.setDelay(method, delayRule{delay: delay, ignoreCancel: true})
}

func (d *Driver) setDelay(method string, r delayRule) error {
	if err := d.knobs.setDelay(method, r); err != nil {
		return fmt.Errorf("setting delay: %w", err)
	}
	klog.InfoS("Set delay", "method", method, "delay", r.delay, "ignoreCancel", r.ignoreCancel)
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

// Reset clears all delays and pending injected failures. Calls already
// sleeping keep the delay they arrived with.
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
		if err := k.setDelay(m, delayRule{delay: delays[m]}); err != nil {
			return err
		}
	}
	return nil
}
