package bench

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]int, 200)
	for i := range hundred {
		hundred[i] = 200 - i // 200 ms … 1 ms, unsorted on purpose
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Percentiles
	}{
		{name: "none", in: nil, want: Percentiles{}},
		{name: "one", in: ms(1500), want: Percentiles{N: 1, Min: 1.5, P50: 1.5, P95: 1.5, P99: 1.5, Max: 1.5}},
		{name: "nearest rank of four", in: ms(4000, 1000, 3000, 2000), want: Percentiles{N: 4, Min: 1, P50: 2, P95: 4, P99: 4, Max: 4}},
		// 200 samples: P50 is the 100th, P95 the 190th, P99 the 198th smallest.
		{name: "two hundred", in: ms(hundred...), want: Percentiles{N: 200, Min: 0.001, P50: 0.1, P95: 0.19, P99: 0.198, Max: 0.2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentiles(tc.in); got != tc.want {
				t.Errorf("percentiles = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{in: []float64{3}, want: 3},
		{in: []float64{5, 1, 3}, want: 3},
		{in: []float64{4, 1, 3, 2}, want: 2.5},
	}
	for _, tc := range tests {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
}

const exposition = `# HELP csi_provisioner_kube_api_requests_total [ALPHA] Requests sent to kube-apiserver.
# TYPE csi_provisioner_kube_api_requests_total counter
csi_provisioner_kube_api_requests_total{client="main",resource="persistentvolumes",verb="create"} 200
csi_provisioner_kube_api_requests_total{client="main",resource="volumesnapshots",verb="patch"} 2
csi_provisioner_kube_api_requests_total{client="events",resource="events",verb="create"} 612
csi_provisioner_datasource_denials_total{reason="no_grant"} 50
process_start_time_seconds 1.7e+09
weird_label_value{path="a \"quoted\" \\ value",x="}"} 1 1700000000000
`

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.sum(apiRequestsMetric, nil); got != 814 {
		t.Errorf("sum of all requests = %v, want 814", got)
	}
	if got := m.sum(apiRequestsMetric, map[string]string{"client": "main"}); got != 202 {
		t.Errorf("main requests = %v, want 202", got)
	}
	if got := m.sum(denialsMetric, map[string]string{"reason": "no_grant"}); got != 50 {
		t.Errorf("denials = %v, want 50", got)
	}
	if got := m.sum("process_start_time_seconds", nil); got != 1.7e9 {
		t.Errorf("unlabelled series = %v, want 1.7e9", got)
	}
	var weird sample
	for _, s := range m {
		if s.name == "weird_label_value" {
			weird = s
		}
	}
	if want := (map[string]string{"path": `a "quoted" \ value`, "x": "}"}); !reflect.DeepEqual(weird.labels, want) || weird.value != 1 {
		t.Errorf("escaped labels parsed as %v = %v, want %v = 1", weird.labels, weird.value, want)
	}
	for _, bad := range []string{"no_value", `x{a="1"`, `x{a=1} 2`, "x abc"} {
		if _, err := parseMetrics(strings.NewReader(bad + "\n")); err == nil {
			t.Errorf("parseMetrics(%q) succeeded, want an error", bad)
		}
	}
}

func TestRequestDelta(t *testing.T) {
	before, err := parseMetrics(strings.NewReader(`
csi_provisioner_kube_api_requests_total{client="main",resource="persistentvolumes",verb="watch"} 1
csi_provisioner_kube_api_requests_total{client="main",resource="persistentvolumes",verb="create"} 1
`))
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseMetrics(strings.NewReader(exposition + `
csi_provisioner_kube_api_requests_total{client="main",resource="persistentvolumes",verb="watch"} 1
`))
	if err != nil {
		t.Fatal(err)
	}
	got := requestDelta(before, after, 200)
	want := []RequestCount{
		{Client: "events", Verb: "create", Resource: "events", Total: 612, PerClaim: 3.06},
		{Client: "main", Verb: "create", Resource: "persistentvolumes", Total: 199, PerClaim: 0.995},
		{Client: "main", Verb: "patch", Resource: "volumesnapshots", Total: 2, PerClaim: 0.01},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("requestDelta =\n%+v\nwant (unchanged watch left out)\n%+v", got, want)
	}
	if pc := perClient(got); pc["main"] != 1.005 || pc["events"] != 3.06 {
		t.Errorf("perClient = %v", pc)
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a parenthesis must not shift the fields.
	stat := "4242 (csi-provisioner (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 37 0 0 20 0 12 0 100 0 0\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if got != 2.87 {
		t.Errorf("cpu seconds = %v, want 2.87 (utime 250 + stime 37 ticks)", got)
	}
	if _, err := parseStatCPU([]byte("4242 (short) S 1")); err == nil {
		t.Error("a truncated stat line parsed")
	}
}

func TestStatusKiB(t *testing.T) {
	status := []byte("Name:\tcsi-provisioner\nVmPeak:\t 1391524 kB\nVmHWM:\t   70312 kB\nVmRSS:\t   61376 kB\n")
	for key, want := range map[string]int64{"VmHWM": 70312, "VmRSS": 61376} {
		if got, err := statusKiB(status, key); err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", key, got, err, want)
		}
	}
	if _, err := statusKiB(status, "VmSwap"); err == nil {
		t.Error("a missing key was found")
	}
}

func TestBusyFraction(t *testing.T) {
	a, err := parseMachine([]byte("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 ..."))
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseMachine([]byte("cpu  250 0 150 800 100 0 0 0 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	// 200 ticks busy out of 300: idle and iowait count as not busy.
	if got := busyFraction(a, b); math.Abs(got-2.0/3) > 1e-9 {
		t.Errorf("busy = %v, want 2/3", got)
	}
}

func TestParseLimits(t *testing.T) {
	tests := []struct {
		in      string
		want    []Limits
		wantErr bool
	}{
		{in: "default,50/100", want: []Limits{{}, {QPS: 50, Burst: 100}}},
		{in: "2.5/5", want: []Limits{{QPS: 2.5, Burst: 5}}},
		{in: "", wantErr: true},
		{in: "50", wantErr: true},
		{in: "0/10", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseLimits(tc.in)
		if (err != nil) != tc.wantErr || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseLimits(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
	if got := (Limits{QPS: 50, Burst: 100}).Args(); !reflect.DeepEqual(got, []string{"--kube-api-qps=50", "--kube-api-burst=100"}) {
		t.Errorf("Args = %v", got)
	}
	if got := (Limits{}).Args(); got != nil {
		t.Errorf("default Args = %v, want none", got)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "default", mod: func(*Config) {}},
		{name: "grant namespaces over one grant's limit", mod: func(c *Config) { c.GrantNamespaces = 17 }, wantErr: "at most 16"},
		{name: "more namespaces than claims", mod: func(c *Config) { c.Claims = 10 }, wantErr: "more than -claims"},
		{name: "no grant scenario", mod: func(c *Config) { c.GrantClaims = 0 }},
		{name: "no runs", mod: func(c *Config) { c.Runs = 0 }, wantErr: "-runs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSummarizeTakesMediansOfSuccessfulRuns(t *testing.T) {
	raised := Limits{QPS: 50, Burst: 100}
	run := func(lim Limits, pvs float64, mainReq float64, failed string) RunResult {
		return RunResult{Limits: lim, Error: failed, Fanout: FanoutResult{
			PVsPerSecond: pvs, CreateToPV: Percentiles{N: 200, P50: pvs},
			Requests: []RequestCount{{Client: "main", Verb: "create", Resource: "persistentvolumes", PerClaim: mainReq}},
		}}
	}
	runs := []RunResult{
		run(Limits{}, 5, 1, ""), run(raised, 40, 1, ""),
		run(Limits{}, 4, 1.2, ""), run(raised, 30, 1, ""),
		run(Limits{}, 6, 1.1, ""), run(raised, 1, 9, "timed out"),
	}
	got := summarize(runs, []Limits{{}, raised})
	if len(got) != 2 {
		t.Fatalf("got %d summaries, want 2", len(got))
	}
	if s := got[0]; s.Runs != 3 || s.PVsPerSecond != 5 || s.CreateToPV.P50 != 5 || s.RequestsPerClaim["main"] != 1.1 {
		t.Errorf("default summary = %+v, want 3 runs, 5 PVs/s, p50 5, 1.1 main requests", s)
	}
	if s := got[1]; s.Runs != 2 || s.PVsPerSecond != 35 || s.RequestsPerClaim["main"] != 1 {
		t.Errorf("raised summary = %+v, want the failed run left out: 2 runs, 35 PVs/s", s)
	}
	if want := 5 / Upstream.ClaimsPerSecond; got[0].PVsVsUpstream != want {
		t.Errorf("vs upstream = %v, want %v", got[0].PVsVsUpstream, want)
	}
}
