package csidriver

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestControlAPI(t *testing.T) {
	td := startDriver(t, Config{})
	lis, err := ListenControl("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- td.ServeControl(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeControl: %v", err)
		}
	})
	base := "http://" + lis.Addr().String()

	// Steps run in order against one driver; each checks the HTTP status
	// and, on success, the knob state returned.
	steps := []struct {
		name, method, path, body string
		wantStatus               int
		wantState                *KnobState
	}{
		{"set delay", "POST", "/delay", `{"method":"CreateVolume","delay":"3s"}`, 200,
			&KnobState{Delays: map[string]string{"CreateVolume": "3s"}, Failures: map[string]FailureState{}}},
		{"set failure", "POST", "/fail", `{"method":"GetCapacity","count":2,"code":"Unavailable"}`, 200,
			&KnobState{Delays: map[string]string{"CreateVolume": "3s"}, Failures: map[string]FailureState{"GetCapacity": {2, "Unavailable"}}}},
		{"get state", "GET", "/knobs", "", 200,
			&KnobState{Delays: map[string]string{"CreateVolume": "3s"}, Failures: map[string]FailureState{"GetCapacity": {2, "Unavailable"}}}},
		{"reset", "POST", "/reset", "", 200,
			&KnobState{Delays: map[string]string{}, Failures: map[string]FailureState{}}},
		{"delay ignoring cancel", "POST", "/delay", `{"method":"CreateVolume","delay":"4s","ignoreCancel":true}`, 200,
			&KnobState{Delays: map[string]string{"CreateVolume": "4s"}, Failures: map[string]FailureState{}, IgnoreCancel: []string{"CreateVolume"}}},
		{"wildcard ignoring cancel", "POST", "/delay", `{"method":"*","delay":"2s","ignoreCancel":true}`, 200,
			&KnobState{Delays: map[string]string{"*": "2s", "CreateVolume": "4s"}, Failures: map[string]FailureState{}, IgnoreCancel: []string{"*", "CreateVolume"}}},
		{"0s exempts, ignoreCancel included", "POST", "/delay", `{"method":"CreateVolume","delay":"0s"}`, 200,
			&KnobState{Delays: map[string]string{"*": "2s", "CreateVolume": "0s"}, Failures: map[string]FailureState{}, IgnoreCancel: []string{"*"}}},
		{"ignoreCancel without delay", "POST", "/delay", `{"method":"CreateVolume","delay":"0s","ignoreCancel":true}`, 400, nil},
		{"misspelt ignoreCancel", "POST", "/delay", `{"method":"CreateVolume","delay":"4s","ignoreCancellation":true}`, 400, nil},
		{"ignoreCancel not a bool", "POST", "/delay", `{"method":"CreateVolume","delay":"4s","ignoreCancel":"yes"}`, 400, nil},
		{"reset clears ignoreCancel", "POST", "/reset", "", 200,
			&KnobState{Delays: map[string]string{}, Failures: map[string]FailureState{}}},
		{"unknown code", "POST", "/fail", `{"method":"GetCapacity","count":1,"code":"UNAVAILABLE"}`, 400, nil},
		{"unknown method", "POST", "/fail", `{"method":"Nope","count":1,"code":"Internal"}`, 400, nil},
		{"misspelt field", "POST", "/fail", `{"method":"GetCapacity","cuont":1,"code":"Internal"}`, 400, nil},
		{"bad duration", "POST", "/delay", `{"method":"CreateVolume","delay":"soon"}`, 400, nil},
		{"not JSON", "POST", "/delay", `delay=3s`, 400, nil},
		{"wrong verb", "GET", "/fail", "", 405, nil},
		{"unknown path", "POST", "/explode", "{}", 404, nil},
	}
	for _, s := range steps {
		req, err := http.NewRequest(s.method, base+s.path, strings.NewReader(s.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != s.wantStatus {
			t.Errorf("%s: status %d (%s), want %d", s.name, resp.StatusCode, body, s.wantStatus)
			continue
		}
		if s.wantState == nil {
			continue
		}
		var got KnobState
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%s: decoding %q: %v", s.name, body, err)
		}
		if !reflect.DeepEqual(got, *s.wantState) {
			t.Errorf("%s: state %+v, want %+v", s.name, got, *s.wantState)
		}
	}

	// A failure injected over HTTP reaches gRPC callers and the call log.
	resp, err := http.Post(base+"/fail", "application/json", strings.NewReader(`{"method":"GetCapacity","count":1,"code":"ResourceExhausted"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := td.ctrl.GetCapacity(context.Background(), &csi.GetCapacityRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("GetCapacity: %v, want ResourceExhausted", err)
	}
	if _, err := td.ctrl.GetCapacity(context.Background(), &csi.GetCapacityRequest{}); err != nil {
		t.Fatalf("GetCapacity after the injected failure: %v", err)
	}
	recs, err := ReadCallLog(td.logPath)
	if err != nil {
		t.Fatal(err)
	}
	calls := FilterCalls(recs, "GetCapacity")
	if len(calls) != 2 || calls[0].Code != "ResourceExhausted" || calls[1].Code != "OK" {
		t.Errorf("logged GetCapacity calls %+v, want ResourceExhausted then OK", calls)
	}
}

func TestListenControlRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:8080", "example.com:80", "nonsense"} {
		if lis, err := ListenControl(addr); err == nil {
			lis.Close()
			t.Errorf("ListenControl(%q) succeeded", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		lis, err := ListenControl(addr)
		if err != nil {
			t.Errorf("ListenControl(%q): %v", addr, err)
			continue
		}
		lis.Close()
	}
}

// TestRun covers the endpoint handling of Run: a stale socket is replaced,
// and the control endpoint comes up alongside the CSI endpoint.
func TestRun(t *testing.T) {
	sockDir, err := os.MkdirTemp("", "csirun")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "csi.sock")
	// Leave a stale socket behind, as a killed driver would.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	// Reserve a free loopback port for the control endpoint.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	controlAddr := probe.Addr().String()
	probe.Close()

	d, err := New(Config{DataDir: t.TempDir(), Endpoint: "unix://" + sock, ControlEndpoint: controlAddr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	// WaitForReady makes the call wait for the server to come up, so no
	// polling is needed; Run opens the control listener before serving.
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := csi.NewIdentityClient(conn).Probe(context.Background(), &csi.ProbeRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	resp, err := http.Get("http://" + controlAddr + "/knobs")
	if err != nil {
		t.Fatalf("control endpoint: %v", err)
	}
	resp.Body.Close()

	conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	// A regular file at the socket path is not ours to delete.
	plain := filepath.Join(sockDir, "file")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if lis, err := Listen("unix://" + plain); err == nil {
		lis.Close()
		t.Error("Listen replaced a regular file")
	}
}
