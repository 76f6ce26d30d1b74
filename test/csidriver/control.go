package csidriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/klog/v2"
)

// The control API lets out-of-process tests steer a running driver binary:
//
//	POST /delay  {"method":"CreateVolume","delay":"3s"}  ("0s": no delay, even under "*")
//	POST /delay  {"method":"CreateVolume","delay":"4s","ignoreCancel":true}
//	POST /fail   {"method":"CreateVolume","count":2,"code":"Unavailable"}
//	POST /reset
//	GET  /knobs
//
// A delayed call normally ends when its caller gives up (the sidecar's
// --timeout): it answers DeadlineExceeded or Canceled and does nothing. With
// "ignoreCancel" it behaves like a real driver whose backend operation has
// started: it sleeps the whole delay whatever the caller does, then does its
// work (CreateVolume creates the volume in the data dir) and answers, maybe
// to nobody. While such a call runs, a call of the same method and name (the
// sidecar retrying CreateVolume for the same claim) is refused at once with
// Aborted "operation pending for this name", without consuming an injected
// failure; once it has returned, a retry gets the volume it made (name
// idempotency), after that retry's own delay. So two volumes are never made
// for one name. "ignoreCancel" needs a delay above zero; a method's own rule,
// "0s" included, replaces the "*" rule together with its ignoreCancel.
// KnobState.Running lists the calls ignoring cancellation that have not
// returned yet; /reset clears the rules but does not end those calls.
//
// Every successful request answers 200 with the resulting KnobState as JSON;
// invalid requests (unknown fields included) answer 400 with a plain-text
// reason.

// DelayRequest is the body of POST /delay.
type DelayRequest struct {
	Method string `json:"method"`
	Delay  string `json:"delay"`
	// IgnoreCancel lets the delayed calls outlive their caller.
	IgnoreCancel bool `json:"ignoreCancel,omitempty"`
}

// FailRequest is the body of POST /fail. Code is a codes.Code name such as
// "ResourceExhausted".
type FailRequest struct {
	Method string `json:"method"`
	Count  int    `json:"count"`
	Code   string `json:"code"`
}

// maxControlBody bounds request bodies; real ones are tiny.
const maxControlBody = 64 << 10

// ControlHandler returns the HTTP handler of the control API.
func (d *Driver) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /delay", func(w http.ResponseWriter, r *http.Request) {
		var req DelayRequest
		if !decodeBody(w, r, &req) {
			return
		}
		delay, err := time.ParseDuration(req.Delay)
		if err != nil {
			http.Error(w, fmt.Sprintf("invalid delay %q: %v", req.Delay, err), http.StatusBadRequest)
			return
		}
		set := d.SetDelay
		if req.IgnoreCancel {
			set = d.SetDelayIgnoringCancel
		}
		d.respond(w, set(req.Method, delay))
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		var req FailRequest
		if !decodeBody(w, r, &req) {
			return
		}
		code, err := ParseCode(req.Code)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d.respond(w, d.FailNext(req.Method, req.Count, code))
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		d.Reset()
		d.respond(w, nil)
	})
	mux.HandleFunc("GET /knobs", func(w http.ResponseWriter, _ *http.Request) {
		d.respond(w, nil)
	})
	return mux
}

// decodeBody rejects unknown fields so that a misspelt key fails the test
// that sent it instead of being ignored.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		http.Error(w, fmt.Sprintf("invalid JSON body: %v", err), http.StatusBadRequest)
		return false
	}
	return true
}

func (d *Driver) respond(w http.ResponseWriter, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(d.Knobs()); err != nil {
		klog.ErrorS(err, "Writing control response")
	}
}

// ListenControl listens on a loopback host:port. Other addresses are refused:
// the API is unauthenticated and can make the driver fail at will.
func ListenControl(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("invalid control endpoint %q: %w", addr, err)
	}
	if host != "localhost" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("control endpoint %q must be a loopback address", addr)
		}
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on control endpoint %s: %w", addr, err)
	}
	return lis, nil
}

// ServeControl serves the control API on lis until ctx is cancelled.
func (d *Driver) ServeControl(ctx context.Context, lis net.Listener) error {
	srv := &http.Server{Handler: d.ControlHandler(), ReadHeaderTimeout: 10 * time.Second}
	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(lis) }()
	klog.InfoS("Serving control API", "address", lis.Addr().String())

	select {
	case err := <-errCh:
		return fmt.Errorf("serving control API on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), gracefulStopTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-errCh; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving control API on %s: %w", lis.Addr(), err)
	}
	return nil
}
