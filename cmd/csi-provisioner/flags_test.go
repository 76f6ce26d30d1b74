package main

import (
	"flag"
	"sort"
	"strings"
	"sync"
	"testing"
)

// upstreamFlag is one flag of upstream external-provisioner v6.3.0's --help.
type upstreamFlag struct {
	name string
	// def is the default as --help prints it (Go's flag DefValue: "5m0s",
	// "true", "" for none).
	def string
	// noDefault: a map-valued flag whose printed default depends on the flag
	// type, not on the setting; only its presence is compared.
	noDefault bool
	// missing names the issue that adds the flag; until then it must not
	// exist (a flag without its behaviour would be a lie).
	missing string
	// pending names the issue (being worked on) that adds the flag: absent
	// or present, but if present with upstream's default.
	pending string
}

// upstreamFlags is upstream v6.3.0's full flag list: cmd/csi-provisioner
// (csi-provisioner.go), csi-lib-utils standardflags (v0.24) and
// k8s.io/component-base logs/api/v1 AddGoFlags.
var upstreamFlags = []upstreamFlag{
	// Connection and identity.
	{name: "master", def: ""},
	{name: "kubeconfig", def: ""},
	{name: "csi-address", def: "/run/csi/socket"},
	{name: "version", def: "false"},
	{name: "timeout", def: "10s"},
	// Client budgets.
	{name: "kube-api-qps", def: "5"},
	{name: "kube-api-burst", def: "10"},
	{name: "kube-api-capacity-qps", def: "1"},
	{name: "kube-api-capacity-burst", def: "5"},
	// Leader election.
	{name: "leader-election", def: "false"},
	{name: "leader-election-namespace", def: ""},
	{name: "leader-election-lease-duration", def: "15s"},
	{name: "leader-election-renew-deadline", def: "10s"},
	{name: "leader-election-retry-period", def: "5s"},
	{name: "leader-election-labels", noDefault: true},
	// HTTP endpoint.
	{name: "http-endpoint", def: ""},
	{name: "metrics-address", def: ""},
	{name: "metrics-path", def: "/metrics"},
	{name: "enable-pprof", def: "false"},
	// Provisioning.
	{name: "volume-name-prefix", def: "pvc"},
	{name: "volume-name-uuid-length", def: "-1"},
	{name: "retry-interval-start", def: "1s"},
	{name: "retry-interval-max", def: "5m0s"},
	{name: "worker-threads", def: "100"},
	{name: "cloning-protection-threads", def: "1"},
	{name: "extra-create-metadata", def: "false"},
	{name: "default-fstype", def: ""},
	{name: "strict-topology", def: "false"},
	{name: "immediate-topology", def: "true"},
	{name: "controller-publish-readonly", def: "false"},
	{name: "prevent-volume-mode-conversion", def: "true"},
	{name: "feature-gates", def: ""},
	{name: "automaxprocs", def: ""}, // a bool func flag: --help prints no default (off)
	// Storage capacity.
	{name: "enable-capacity", def: "false"},
	{name: "capacity-threads", def: "1"},
	{name: "capacity-poll-interval", def: "1m0s"},
	{name: "capacity-for-immediate-binding", def: "false"},
	{name: "capacity-ownerref-level", def: "1"},
	// Distributed provisioning (node deployment, issue 12).
	{name: "node-deployment", def: "false"},
	{name: "node-deployment-immediate-binding", def: "true"},
	{name: "node-deployment-base-delay", def: "20s"},
	{name: "node-deployment-max-delay", def: "1m0s"},
	// Snapshot source-protection sweep (upstream v6.2.1/v6.3.0).
	{name: "snapshot-orphan-sweep-interval", def: "5m0s"},
	// Logging.
	{name: "v", def: "0"},
	{name: "vmodule", def: ""},
	{name: "logging-format", def: "text"},
	{name: "log-flush-frequency", def: "5s"},
	{name: "log-json-info-buffer-size", def: "0"},
	{name: "log-json-split-stream", def: "false"},
	{name: "log-text-info-buffer-size", def: "0"},
	{name: "log-text-split-stream", def: "false"},
}

// ourOwnFlags are flags upstream v6.3.0 does not have. Empty: every flag of
// this sidecar is upstream's (its additions are feature gates and
// StorageClass-independent behaviour, not flags).
var ourOwnFlags = map[string]string{}

var registerOnce sync.Once

// commandLine returns flag.CommandLine with every flag main registers; the
// test binary's own flags (test.*) are left out by the callers.
func commandLine() *flag.FlagSet {
	registerOnce.Do(func() { registerFlags() })
	return flag.CommandLine
}

func TestFlagsMatchUpstream(t *testing.T) {
	fs := commandLine()
	var help strings.Builder
	fs.SetOutput(&help)
	fs.PrintDefaults()
	fs.SetOutput(nil)
	for _, uf := range upstreamFlags {
		t.Run(uf.name, func(t *testing.T) {
			f := fs.Lookup(uf.name)
			switch {
			case uf.missing != "":
				if f != nil {
					t.Errorf("--%s exists, but its behaviour comes with %s: remove the flag or its expected-missing mark", uf.name, uf.missing)
				}
				return
			case f == nil && uf.pending != "":
				t.Logf("--%s not yet here (expected: %s)", uf.name, uf.pending)
				return
			case f == nil:
				t.Fatalf("upstream flag --%s is missing: a manifest passing it makes the sidecar exit", uf.name)
			}
			if !uf.noDefault && f.DefValue != uf.def {
				t.Errorf("--%s default = %q, want upstream's %q", uf.name, f.DefValue, uf.def)
			}
			if !strings.Contains(help.String(), "  -"+uf.name+" ") && !strings.Contains(help.String(), "  -"+uf.name+"\n") {
				t.Errorf("--help does not list --%s", uf.name)
			}
		})
	}
}

// TestNoFlagsBeyondUpstream: every flag we register is upstream's or listed
// in ourOwnFlags, so the README's flag table can say "upstream's flags".
func TestNoFlagsBeyondUpstream(t *testing.T) {
	known := map[string]bool{}
	for _, uf := range upstreamFlags {
		known[uf.name] = true
	}
	var extra []string
	commandLine().VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "test.") {
			return // the test binary's
		}
		if _, ours := ourOwnFlags[f.Name]; !known[f.Name] && !ours {
			extra = append(extra, f.Name)
		}
	})
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("flags not in upstream v6.3.0's list: %v; add them to ourOwnFlags (and the README) or remove them", extra)
	}
}
