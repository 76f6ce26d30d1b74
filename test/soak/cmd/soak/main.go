// Command soak runs the fault and soak harness (test/soak) on this clone's
// test bed: the one `make cluster-up` started, or one it brings up itself
// (and takes down at the end, unless -keep-bed). It prints the figures and
// every invariant violation, writes _output/soak/<time>-seed-<seed>.json and
// exits 1 when an invariant was violated.
//
//	make soak                      the long run: 1,000 claims, 50 namespaces
//	make test-soak                 the short run of `make test` (-short)
//	make soak SOAK_ARGS="-seed 7"  a run again, with the seed it printed
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/cluster"
	"github.com/crossns/external-provisioner/test/soak"
)

func main() {
	klog.InitFlags(nil)
	short := flag.Bool("short", false, "the short run of `make test`: 100 claims over 10 namespaces, every fault kind once")
	// The long run's values; -short replaces those not given.
	def := soak.LongConfig()
	seed := flag.Uint64("seed", 0, "seed of the plan (workload and faults); 0 draws one and prints it")
	claims := flag.Int("claims", def.Claims, "claims the workload makes, sources included")
	namespaces := flag.Int("namespaces", def.Namespaces, "namespaces of the workload")
	faults := flag.Int("faults", def.Faults, "faults injected, one after the other")
	minPerKind := flag.Int("min-per-kind", def.MinPerKind, "times each fault kind comes at least")
	kinds := flag.String("kinds", "all", "fault kinds, comma-separated: "+strings.Join(soak.AllKinds(), ","))
	sidecarTimeout := flag.Duration("sidecar-timeout", def.SidecarTimeout, "the sidecar's --timeout; delay faults outlast it")
	sidecarArgs := flag.String("sidecar-args", "", "extra flags of both sidecar replicas (space-separated)")
	maxRSS := flag.Float64("max-rss-mib", def.MaxRSSMiB, "bound of the sidecar's resident memory")
	settle := flag.Duration("settle-timeout", def.SettleTimeout, "bound of the wait for the bed to settle at the end")
	keep := flag.Bool("keep", false, "leave the run's namespaces on the bed instead of deleting them")
	keepBed := flag.Bool("keep-bed", false, "leave a bed this command brought up running")
	build := flag.Bool("build", true, "rebuild the sidecar from this clone first (a running bed's)")
	out := flag.String("out", "", "directory of the JSON report (default <repo>/_output/soak)")
	flag.Parse()

	cfg := def
	if *short {
		cfg = soak.ShortConfig()
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	override := func(name string, apply func()) {
		if set[name] {
			apply()
		}
	}
	cfg.Seed = *seed
	override("claims", func() { cfg.Claims = *claims })
	override("namespaces", func() { cfg.Namespaces = *namespaces })
	override("faults", func() { cfg.Faults = *faults })
	override("min-per-kind", func() { cfg.MinPerKind = *minPerKind })
	override("sidecar-timeout", func() { cfg.SidecarTimeout = *sidecarTimeout })
	override("max-rss-mib", func() { cfg.MaxRSSMiB = *maxRSS })
	override("settle-timeout", func() { cfg.SettleTimeout = *settle })
	var err error
	if cfg.Kinds, err = soak.ParseKinds(*kinds); err != nil {
		fail(err)
	}
	cfg.SidecarArgs = strings.Fields(*sidecarArgs)
	cfg.Keep = *keep
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if err := cfg.Validate(); err != nil {
		fail(err)
	}

	root, err := cluster.FindRepoRoot()
	if err != nil {
		fail(err)
	}
	if *out == "" {
		*out = filepath.Join(root, "_output", "soak")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = klog.NewContext(ctx, klog.Background())
	fmt.Printf("Soak run with seed %d (reproduce: %s)\n", cfg.Seed, command(cfg.Seed))

	bed, teardown, err := attach(ctx, *build, *keepBed)
	if err != nil {
		fail(err)
	}
	stamp := time.Now().Format("20060102-150405")
	rep, runErr := soak.Run(ctx, bed, cfg)
	logs := bed.LogDir()
	if runErr != nil || rep.Failed() {
		// The bed's logs go with it; keep them with the report.
		logs = filepath.Join(*out, fmt.Sprintf("%s-seed-%d-logs", stamp, cfg.Seed))
		if err := copyDir(bed.LogDir(), logs); err != nil {
			klog.Background().Error(err, "Keeping the bed's logs")
		}
	}
	teardown()
	klog.Flush()
	if runErr != nil {
		fail(fmt.Errorf("%w (logs: %s)", runErr, logs))
	}
	rep.Command = command(cfg.Seed)
	rep.WriteText(os.Stdout)
	path, err := writeJSON(*out, stamp, rep)
	if err != nil {
		fail(fmt.Errorf("writing the report: %w", err))
	}
	fmt.Printf("\nReport: %s\nLogs: %s\n", path, logs)
	if rep.Failed() {
		os.Exit(1)
	}
}

// copyDir copies the regular files of src into dst.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

// attach returns this clone's running bed, or brings one up (and a
// teardown that takes it down again unless keepBed).
func attach(ctx context.Context, build, keepBed bool) (*cluster.Cluster, func(), error) {
	noop := func() {}
	opts, err := cluster.OptionsFromEnv()
	if err != nil {
		return nil, noop, err
	}
	if bed, err := cluster.Load(opts.RepoRoot); err == nil && bed.Check(ctx) == nil {
		klog.FromContext(ctx).Info("Using the running test bed", "kubeconfig", bed.Kubeconfig())
		if build {
			if err := bed.BuildProvisioner(ctx); err != nil {
				return nil, noop, err
			}
		}
		return bed, noop, nil
	}
	upCtx, cancel := context.WithTimeout(ctx, 25*time.Minute)
	defer cancel()
	bed, err := cluster.Up(upCtx, opts)
	if err != nil {
		return nil, noop, err
	}
	if !bed.StartedHere() || keepBed {
		return bed, noop, nil
	}
	return bed, func() {
		if err := bed.Down(context.Background()); err != nil {
			klog.Background().Error(err, "Taking the test bed down")
		}
	}, nil
}

// command is the command line that runs the same plan again: the flags
// given, with the seed.
func command(seed uint64) string {
	args := []string{"go run ./test/soak/cmd/soak"}
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "seed", "keep-bed", "out":
			return
		}
		if f.Value.String() == "true" {
			args = append(args, "-"+f.Name)
			return
		}
		args = append(args, fmt.Sprintf("-%s=%q", f.Name, f.Value.String()))
	})
	return strings.Join(append(args, fmt.Sprintf("-seed=%d", seed)), " ")
}

func writeJSON(dir, stamp string, rep *soak.Report) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-seed-%d.json", stamp, rep.Seed))
	return path, os.WriteFile(path, append(data, '\n'), 0o644)
}

func fail(err error) {
	klog.Flush()
	fmt.Fprintf(os.Stderr, "soak: %v\n", err)
	os.Exit(2)
}
