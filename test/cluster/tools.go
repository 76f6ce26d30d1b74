package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// cacheSchema changes when the cache layout or the build recipe changes in a
// way the hashed inputs do not show.
const cacheSchema = "testbed-tools-v1"

// Module paths of the pinned tools; their versions come from the tools module.
const (
	kubernetesModule   = "k8s.io/kubernetes"
	snapshotterModule  = "github.com/kubernetes-csi/external-snapshotter/v8"
	snapshotClientMod  = "github.com/kubernetes-csi/external-snapshotter/client/v8"
	gatewayAPIModule   = "sigs.k8s.io/gateway-api"
	toolsModuleRelPath = "test/cluster/tools"
)

// tool is one binary built from the tools module.
type tool struct {
	name    string
	pkg     string
	ldflags func(v moduleVersions) []string
}

// moduleVersions maps module path to its resolved version and directory.
type moduleVersions map[string]moduleInfo

type moduleInfo struct {
	Path    string
	Version string
	Dir     string
}

// kubeVersionFlags stamps what `kubectl version` and /version report, the
// way Kubernetes' own build does (hack/lib/version.sh sets the same
// variables in both version packages). buildDate stays at its default so the
// binaries, and the cache key, do not change with the clock.
func kubeVersionFlags(v moduleVersions) []string {
	ver := v[kubernetesModule].Version // v1.37.0
	major, minor := "", ""
	if parts := strings.SplitN(strings.TrimPrefix(ver, "v"), ".", 3); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	var flags []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X", pkg+".gitVersion="+ver,
			"-X", pkg+".gitMajor="+major,
			"-X", pkg+".gitMinor="+minor,
			"-X", pkg+".gitTreeState=clean",
		)
	}
	return flags
}

func snapshotterVersionFlags(v moduleVersions) []string {
	return []string{"-X", "main.version=" + v[snapshotterModule].Version}
}

// tools lists what the bed runs from the tools module, built in this order.
var tools = []tool{
	{name: Etcd, pkg: "./etcd", ldflags: func(moduleVersions) []string { return nil }},
	{name: KubeAPIServer, pkg: kubernetesModule + "/cmd/kube-apiserver", ldflags: kubeVersionFlags},
	{name: KubeControllerManager, pkg: kubernetesModule + "/cmd/kube-controller-manager", ldflags: kubeVersionFlags},
	{name: "kubectl", pkg: kubernetesModule + "/cmd/kubectl", ldflags: kubeVersionFlags},
	{name: SnapshotController, pkg: snapshotterModule + "/cmd/snapshot-controller", ldflags: snapshotterVersionFlags},
	{name: CSISnapshotter, pkg: snapshotterModule + "/cmd/csi-snapshotter", ldflags: snapshotterVersionFlags},
}

// Tools are the cached tool binaries and the module directories the CRDs are
// read from.
type Tools struct {
	// BinDir holds one binary per tool, named after the tool.
	BinDir string
	// Key is the hash of everything the binaries depend on.
	Key string
	// Modules are the pinned modules, with their module-cache directories.
	Modules moduleVersions
}

// Bin returns the path of a tool binary.
func (t *Tools) Bin(name string) string { return filepath.Join(t.BinDir, name) }

// EnsureTools returns the cached tools for the pinned versions, building them
// first when this machine has not built them yet. A warm call takes
// seconds: it hashes the inputs and finds the finished bin directory.
func EnsureTools(ctx context.Context, repoRoot, cacheRoot string) (*Tools, error) {
	logger := klog.FromContext(ctx)
	toolsDir := filepath.Join(repoRoot, toolsModuleRelPath)
	mods, err := resolveModules(ctx, repoRoot)
	if err != nil {
		return nil, err
	}
	key, inputs, err := toolsKey(ctx, toolsDir, mods)
	if err != nil {
		return nil, err
	}
	keyDir := filepath.Join(cacheRoot, key)
	t := &Tools{BinDir: filepath.Join(keyDir, "bin"), Key: key, Modules: mods}
	if toolsComplete(t.BinDir) {
		logger.V(2).Info("Using cached tools", "dir", t.BinDir)
		return t, nil
	}
	if err := os.MkdirAll(keyDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating tool cache %s: %w", keyDir, err)
	}
	// Another clone or CI run on this machine may be building the same key:
	// wait for it instead of building twice on two cores.
	unlock, err := lockFile(ctx, keyDir+".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if toolsComplete(t.BinDir) {
		return t, nil
	}
	if err := os.WriteFile(filepath.Join(keyDir, "inputs.txt"), []byte(inputs), 0o644); err != nil {
		return nil, fmt.Errorf("recording tool inputs: %w", err)
	}
	if err := buildTools(ctx, toolsDir, keyDir, mods); err != nil {
		return nil, err
	}
	return t, nil
}

func toolsComplete(binDir string) bool {
	for _, tl := range tools {
		if _, err := os.Stat(filepath.Join(binDir, tl.name)); err != nil {
			return false
		}
	}
	return true
}

// buildTools builds one tool at a time (the machine has two cores) into
// keyDir/partial, each to a temporary name renamed when the link is done, and
// renames partial to bin at the end. An interrupted build leaves neither a
// half-written binary nor a bin directory behind, and the next run resumes
// with the tools that are not finished yet.
func buildTools(ctx context.Context, toolsDir, keyDir string, mods moduleVersions) error {
	logger := klog.FromContext(ctx)
	partial := filepath.Join(keyDir, "partial")
	if err := os.MkdirAll(partial, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", partial, err)
	}
	start := time.Now()
	for _, tl := range tools {
		out := filepath.Join(partial, tl.name)
		if _, err := os.Stat(out); err == nil {
			logger.Info("Tool already built", "tool", tl.name)
			continue
		}
		logger.Info("Building tool", "tool", tl.name, "package", tl.pkg)
		t0 := time.Now()
		tmp := out + ".tmp"
		args := append([]string{"build"}, toolBuildFlags(tl, mods)...)
		args = append(args, "-o", tmp, tl.pkg)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = toolsDir
		cmd.Env = toolBuildEnv()
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("building %s (%s): %w", tl.name, tl.pkg, err)
		}
		if err := os.Rename(tmp, out); err != nil {
			return fmt.Errorf("finishing %s: %w", tl.name, err)
		}
		logger.Info("Built tool", "tool", tl.name, "duration", time.Since(t0).Round(time.Second))
	}
	if err := os.Rename(partial, filepath.Join(keyDir, "bin")); err != nil {
		return fmt.Errorf("finishing tool cache: %w", err)
	}
	logger.Info("Tools ready", "dir", filepath.Join(keyDir, "bin"), "duration", time.Since(start).Round(time.Second))
	return nil
}

// toolBuildFlags are the go build flags of one tool; they are part of the key.
func toolBuildFlags(tl tool, mods moduleVersions) []string {
	ld := append([]string{"-s", "-w"}, tl.ldflags(mods)...)
	return []string{"-trimpath", "-ldflags", strings.Join(ld, " ")}
}

func toolBuildEnv() []string {
	return append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-buildvcs=false -mod=readonly")
}

// resolveModules returns the versions and module-cache directories of the
// pinned modules, downloading any the module cache lacks: the tool modules
// as the tools module selects them, and gateway-api (whose ReferenceGrant
// CRD the bed installs) as the main module does, so the CRD matches the
// client types the sidecar and the tests are built with.
func resolveModules(ctx context.Context, repoRoot string) (moduleVersions, error) {
	mods := moduleVersions{}
	for _, r := range []struct {
		dir  string
		mods []string
	}{
		{filepath.Join(repoRoot, toolsModuleRelPath), []string{kubernetesModule, snapshotterModule, snapshotClientMod}},
		{repoRoot, []string{gatewayAPIModule}},
	} {
		if err := resolveIn(ctx, r.dir, r.mods, mods); err != nil {
			return nil, err
		}
	}
	return mods, nil
}

func resolveIn(ctx context.Context, dir string, want []string, into moduleVersions) error {
	// `go list -m` gives the versions the module in dir selects; `go mod
	// download` then gives their directories, fetching any that are missing.
	listed, err := goJSON(ctx, dir, append([]string{"list", "-m", "-json"}, want...)...)
	if err != nil {
		return fmt.Errorf("resolving pinned modules in %s: %w", dir, err)
	}
	var pinned []string
	for _, m := range listed {
		pinned = append(pinned, m.Path+"@"+m.Version)
	}
	downloaded, err := goJSON(ctx, dir, append([]string{"mod", "download", "-json"}, pinned...)...)
	if err != nil {
		return fmt.Errorf("downloading pinned modules: %w", err)
	}
	for _, m := range downloaded {
		into[m.Path] = m
	}
	for _, p := range want {
		if into[p].Dir == "" {
			return fmt.Errorf("module %s has no directory in the module cache", p)
		}
	}
	return nil
}

func goJSON(ctx context.Context, dir string, args ...string) ([]moduleInfo, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = toolBuildEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	var mods []moduleInfo
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var m moduleInfo
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return mods, nil
		} else if err != nil {
			return nil, fmt.Errorf("decoding go %s output: %w", args[0], err)
		}
		mods = append(mods, m)
	}
}

// toolsKey hashes everything the binaries are made of: the tools module's
// go.mod and go.sum, the etcd main, the build flags and the Go toolchain.
// It returns the key and a readable list of the inputs.
func toolsKey(ctx context.Context, toolsDir string, mods moduleVersions) (string, string, error) {
	var inputs strings.Builder
	fmt.Fprintf(&inputs, "schema %s\n", cacheSchema)
	goEnv, err := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOOS", "GOARCH").Output()
	if err != nil {
		return "", "", fmt.Errorf("reading go env: %w", err)
	}
	fmt.Fprintf(&inputs, "go %s\n", strings.Join(strings.Fields(string(goEnv)), " "))
	for _, tl := range tools {
		fmt.Fprintf(&inputs, "tool %s %s %q\n", tl.name, tl.pkg, toolBuildFlags(tl, mods))
	}
	h := sha256.New()
	h.Write([]byte(inputs.String()))
	files := []string{"go.mod", "go.sum"}
	etcdFiles, err := filepath.Glob(filepath.Join(toolsDir, "etcd", "*.go"))
	if err != nil {
		return "", "", err
	}
	for _, f := range etcdFiles {
		files = append(files, filepath.Join("etcd", filepath.Base(f)))
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(toolsDir, f))
		if err != nil {
			return "", "", fmt.Errorf("hashing tool inputs: %w", err)
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&inputs, "file %s %s\n", f, hex.EncodeToString(sum[:]))
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], inputs.String(), nil
}

// lockFile takes an exclusive flock, waiting for another holder (logging so
// a waiting build does not look hung). The lock goes away with the process.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if !logged {
			klog.FromContext(ctx).Info("Waiting for another process building the same tools", "lock", path)
			logged = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
