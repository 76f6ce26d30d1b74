package csidriver

import (
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func TestParseTopology(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{"", map[string]string{}, false},
		{"topology.kubernetes.io/zone=a", map[string]string{"topology.kubernetes.io/zone": "a"}, false},
		{"zone=a, rack=r1", map[string]string{"zone": "a", "rack": "r1"}, false},
		{"zone", nil, true},
		{"=a", nil, true},
		{"zone=", nil, true},
		{"zone=a,zone=b", nil, true},
	}
	for _, tc := range tests {
		got, err := ParseTopology(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("ParseTopology(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseDelays(t *testing.T) {
	tests := []struct {
		in      []string // one entry per repetition of the flag
		want    map[string]time.Duration
		wantErr bool
	}{
		{[]string{"CreateVolume=2s"}, map[string]time.Duration{"CreateVolume": 2 * time.Second}, false},
		{[]string{"CreateVolume=2s,*=10ms"}, map[string]time.Duration{"CreateVolume": 2 * time.Second, "*": 10 * time.Millisecond}, false},
		{[]string{"*=10ms", "DeleteVolume=1s", "*=20ms"}, map[string]time.Duration{"DeleteVolume": time.Second, "*": 20 * time.Millisecond}, false},
		{[]string{"CreateVolume"}, nil, true},
		{[]string{"CreateVolume=fast"}, nil, true},
		{[]string{"CreateVolume=-1s"}, nil, true},
		{[]string{"NotAMethod=1s"}, nil, true},
	}
	for _, tc := range tests {
		got := map[string]time.Duration{}
		var err error
		for _, s := range tc.in {
			if err = ParseDelays(s, got); err != nil {
				break
			}
		}
		if (err != nil) != tc.wantErr || (!tc.wantErr && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("ParseDelays(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseCode(t *testing.T) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		got, err := ParseCode(c.String())
		if err != nil || got != c {
			t.Errorf("ParseCode(%q) = %v, %v", c.String(), got, err)
		}
	}
	for _, bad := range []string{"", "UNAVAILABLE", "unavailable", "Code(42)"} {
		if _, err := ParseCode(bad); err == nil {
			t.Errorf("ParseCode(%q) succeeded", bad)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in, network, addr string
		wantErr           bool
	}{
		{"unix:///run/csi/csi.sock", "unix", "/run/csi/csi.sock", false},
		{"unix:/run/csi.sock", "unix", "/run/csi.sock", false},
		{"/run/csi.sock", "unix", "/run/csi.sock", false},
		{"tcp://127.0.0.1:10000", "tcp", "127.0.0.1:10000", false},
		{"unix://", "", "", true},
		{"", "", "", true},
		{"http://x", "", "", true},
	}
	for _, tc := range tests {
		network, addr, err := parseEndpoint(tc.in)
		if (err != nil) != tc.wantErr || network != tc.network || addr != tc.addr {
			t.Errorf("parseEndpoint(%q) = %q, %q, %v", tc.in, network, addr, err)
		}
	}
}
