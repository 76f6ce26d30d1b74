// Command loadbench runs the sidecar's load benchmark (test/bench) on the
// local test bed of this clone, which `make bench` brings up first. It
// prints a table and writes _output/bench/<timestamp>.json.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/bench"
	"github.com/crossns/external-provisioner/test/cluster"
)

func main() {
	def := bench.DefaultConfig()
	cfg := def
	klog.InitFlags(nil)
	flag.IntVar(&cfg.Claims, "claims", def.Claims, "claims in the fan-out, all created at once")
	flag.IntVar(&cfg.Namespaces, "namespaces", def.Namespaces, "namespaces the fan-out claims are spread over")
	flag.IntVar(&cfg.GrantClaims, "grant-claims", def.GrantClaims, "claims created before their grant (0 skips the scenario)")
	flag.IntVar(&cfg.GrantNamespaces, "grant-namespaces", def.GrantNamespaces, "namespaces of those claims (one grant allows them all, at most 16)")
	flag.StringVar(&cfg.SourceNamespace, "source-namespace", def.SourceNamespace, "namespace of the source snapshot (created and deleted by the bench)")
	flag.IntVar(&cfg.SourceMiB, "source-mib", def.SourceMiB, "MiB of files in the source volume, copied by every restore")
	flag.IntVar(&cfg.Runs, "runs", def.Runs, "times to measure every limits; the summary shows medians")
	limits := flag.String("limits", "default,50/100", `sidecar client limits to measure: "default" and/or qps/burst, comma-separated`)
	sidecarArgs := flag.String("sidecar-args", "", "extra sidecar flags for every run (space-separated), e.g. --v=2")
	flag.DurationVar(&cfg.Timeout, "timeout", def.Timeout, "bound of each wait for claims to bind and for cleanup")
	flag.DurationVar(&cfg.DenialWait, "denial-wait", def.DenialWait, "bound of the wait for the grant scenario's claims to be refused")
	flag.DurationVar(&cfg.SettleMax, "settle-max", def.SettleMax, "bound of the wait for the sidecar's requests (Events) to drain")
	flag.BoolVar(&cfg.BuildSidecar, "build", def.BuildSidecar, "rebuild the sidecar from this clone before measuring")
	out := flag.String("out", "", "directory of the JSON report (default <repo>/_output/bench)")
	flag.Parse()

	var err error
	if cfg.Limits, err = bench.ParseLimits(*limits); err != nil {
		fail(err)
	}
	cfg.SidecarArgs = strings.Fields(*sidecarArgs)
	if err := cfg.Validate(); err != nil {
		fail(err)
	}
	root, err := cluster.FindRepoRoot()
	if err != nil {
		fail(err)
	}
	if *out == "" {
		*out = filepath.Join(root, "_output", "bench")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = klog.NewContext(ctx, klog.Background())
	bed, err := cluster.Load(root)
	if err != nil {
		fail(fmt.Errorf("%w (start it with `make cluster-up`)", err))
	}
	if err := bed.Check(ctx); err != nil {
		fail(fmt.Errorf("the test bed is not healthy: %w", err))
	}

	stamp := time.Now().Format("20060102-150405")
	rep, runErr := bench.Run(ctx, bed, cfg)
	klog.Flush()
	if rep != nil && len(rep.Runs) > 0 {
		rep.PrintTable(os.Stdout)
		path, err := rep.WriteJSON(*out, stamp)
		if err != nil {
			fail(fmt.Errorf("writing the report: %w", err))
		}
		fmt.Printf("\nReport: %s\n", path)
	}
	if runErr != nil {
		fail(runErr)
	}
}

func fail(err error) {
	klog.Flush()
	fmt.Fprintf(os.Stderr, "loadbench: %v\n", err)
	os.Exit(1)
}
