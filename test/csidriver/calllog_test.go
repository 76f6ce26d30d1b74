package csidriver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

func TestCallLogFormat(t *testing.T) {
	td := startDriver(t, Config{})
	ctx := context.Background()

	secretReq := &csi.CreateVolumeRequest{
		Name:               "pvc-secret",
		VolumeCapabilities: mountCap(),
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 4096},
		Parameters:         map[string]string{"type": "fast"},
		MutableParameters:  map[string]string{"iops": "3000"},
		Secrets:            map[string]string{"password": "hunter2"},
	}
	createVolume(t, td, secretReq)
	if _, err := td.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: ""}); err == nil {
		t.Fatal("DeleteVolume without ID succeeded")
	}
	if _, err := td.ident.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(td.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("hunter2")) {
		t.Fatalf("secret leaked into the call log:\n%s", raw)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want one per call:\n%s", len(lines), raw)
	}
	t.Logf("sample line: %s", lines[0])
	// Every line is a JSON object with exactly the documented keys.
	for i, line := range lines {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		for _, key := range []string{"time", "method", "request", "code", "error", "duration_ms"} {
			if _, ok := obj[key]; !ok {
				t.Errorf("line %d lacks %q: %s", i, key, line)
			}
		}
		if len(obj) != 6 {
			t.Errorf("line %d has %d keys, want 6: %s", i, len(obj), line)
		}
	}

	recs, err := ReadCallLog(td.logPath)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		method, code string
		errPart      string
	}{
		{"CreateVolume", "OK", ""},
		{"DeleteVolume", "InvalidArgument", "volume_id is required"},
		{"GetPluginInfo", "OK", ""},
	}
	for i, w := range want {
		r := recs[i]
		if r.Method != w.method || r.Code != w.code || !strings.Contains(r.Error, w.errPart) || (w.errPart == "" && r.Error != "") {
			t.Errorf("record %d = %s/%s/%q, want %s/%s/%q", i, r.Method, r.Code, r.Error, w.method, w.code, w.errPart)
		}
		if r.Time.IsZero() || time.Since(r.Time) > time.Hour || r.DurationMS < 0 {
			t.Errorf("record %d has implausible time %v / duration %v", i, r.Time, r.DurationMS)
		}
	}

	// The request decodes back into the CSI message, minus the secrets
	// (mutable_parameters included: e2e reads a VolumeAttributesClass's
	// parameters from here).
	got, err := recs[0].CSIRequest()
	if err != nil {
		t.Fatal(err)
	}
	wantReq := proto.Clone(secretReq).(*csi.CreateVolumeRequest)
	wantReq.Secrets = nil
	if !proto.Equal(got, wantReq) {
		t.Errorf("decoded request %v, want %v", got, wantReq)
	}
	if !strings.Contains(string(recs[0].Request), `"secrets":"***stripped***"`) {
		t.Errorf("request does not show stripped secrets: %s", recs[0].Request)
	}
}

// TestCallLogConcurrent checks that concurrent calls never interleave
// within a line.
func TestCallLogConcurrent(t *testing.T) {
	td := startDriver(t, Config{})
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := td.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{
				Name:               fmt.Sprintf("pvc-%d", i),
				VolumeCapabilities: mountCap(),
				Parameters:         map[string]string{"padding": strings.Repeat("x", 4096)},
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	recs, err := ReadCallLog(td.logPath)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range recs {
		var req csi.CreateVolumeRequest
		if err := r.DecodeRequest(&req); err != nil {
			t.Fatal(err)
		}
		names[req.GetName()] = true
	}
	if len(recs) != n || len(names) != n {
		t.Errorf("got %d records for %d names, want %d of each", len(recs), len(names), n)
	}
}

func TestParseCallLog(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		methods []string
		wantErr bool
	}{
		{
			name:    "records and foreign lines",
			input:   "I1121 klog line\n{\"method\":\"Probe\",\"code\":\"OK\",\"request\":{}}\n\n{\"method\":\"CreateVolume\",\"code\":\"NotFound\",\"request\":{}}\n",
			methods: []string{"Probe", "CreateVolume"},
		},
		{
			name:    "line still being written is ignored",
			input:   "{\"method\":\"Probe\",\"code\":\"OK\",\"request\":{}}\n{\"method\":\"Crea",
			methods: []string{"Probe"},
		},
		{
			name:    "corrupt complete line is an error",
			input:   "{\"method\":\"Probe\"\n",
			wantErr: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := ParseCallLog(strings.NewReader(tc.input))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			var methods []string
			for _, r := range recs {
				methods = append(methods, r.Method)
			}
			if strings.Join(methods, ",") != strings.Join(tc.methods, ",") {
				t.Errorf("methods %v, want %v", methods, tc.methods)
			}
		})
	}
}

func TestInjectedFailureIsLogged(t *testing.T) {
	td := startDriver(t, Config{})
	if err := td.FailNext("CreateVolume", 1, codes.Unavailable); err != nil {
		t.Fatal(err)
	}
	_, err := td.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "pvc-x", VolumeCapabilities: mountCap()})
	if err == nil {
		t.Fatal("injected failure did not happen")
	}
	recs, err := ReadCallLog(td.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Code != "Unavailable" || !strings.Contains(recs[0].Error, "injected") {
		t.Fatalf("records %+v, want one Unavailable injected failure", recs)
	}
	var req csi.CreateVolumeRequest
	if err := recs[0].DecodeRequest(&req); err != nil || req.GetName() != "pvc-x" {
		t.Errorf("decoded %v (%v), want name pvc-x", &req, err)
	}
	if len(td.Volumes()) != 0 {
		t.Error("the failed call created a volume")
	}
}

func TestNewRequest(t *testing.T) {
	for method, want := range map[string]proto.Message{
		"CreateVolume":   &csi.CreateVolumeRequest{},
		"DeleteSnapshot": &csi.DeleteSnapshotRequest{},
		"Probe":          &csi.ProbeRequest{},
		"NodeGetInfo":    &csi.NodeGetInfoRequest{},
	} {
		got, err := NewRequest(method)
		if err != nil {
			t.Fatal(err)
		}
		if got.ProtoReflect().Descriptor() != want.ProtoReflect().Descriptor() {
			t.Errorf("NewRequest(%s) = %T", method, got)
		}
	}
	if _, err := NewRequest("Nope"); err == nil {
		t.Error("NewRequest accepted an unknown method")
	}
}

// TestDecodeRequestKeepsLargeInt64: sizes near 2^63 come back exactly (a
// float64 on the way would round them past the int64 range and fail).
func TestDecodeRequestKeepsLargeInt64(t *testing.T) {
	for _, n := range []int64{math.MinInt64, math.MaxInt64, math.MaxInt64 - 1, 1<<53 + 1} {
		rec := CallRecord{Method: "CreateVolume", Request: json.RawMessage(fmt.Sprintf(`{"name":"v","capacity_range":{"required_bytes":%d}}`, n))}
		req := &csi.CreateVolumeRequest{}
		if err := rec.DecodeRequest(req); err != nil {
			t.Fatalf("DecodeRequest(%d): %v", n, err)
		}
		if got := req.GetCapacityRange().GetRequiredBytes(); got != n {
			t.Errorf("required_bytes = %d, want %d", got, n)
		}
	}
}

// TestArrivalLog: every call is logged when it arrives, before its delay;
// its arrival and its call record carry the same time, so the two join.
func TestArrivalLog(t *testing.T) {
	var arrivals syncBuffer
	td := startDriver(t, Config{ArrivalLog: &arrivals})
	if err := td.SetDelay("CreateVolume", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := td.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "pvc-slow", VolumeCapabilities: mountCap()}); err != nil {
			t.Errorf("CreateVolume: %v", err)
		}
	}()
	// While the call sleeps it is in the arrival log, not yet in the call log.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(arrivals.String(), "pvc-slow") {
		if time.Now().After(deadline) {
			t.Fatal("no arrival record while the call sleeps")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if recs, _ := ReadCallLog(td.logPath); len(FilterCalls(recs, "CreateVolume")) != 0 {
		t.Error("the call is in the call log before it ended")
	}
	<-done
	got, err := ParseArrivals(strings.NewReader(arrivals.String()))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadCallLog(td.logPath)
	if err != nil {
		t.Fatal(err)
	}
	calls := FilterCalls(recs, "CreateVolume")
	if len(got) != 1 || got[0].Method != "CreateVolume" || got[0].Name != "pvc-slow" || len(calls) != 1 || !got[0].Time.Equal(calls[0].Time) {
		t.Errorf("arrivals %+v, call records %+v: want one arrival of pvc-slow with the time of its call record", got, calls)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
