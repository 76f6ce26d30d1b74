package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// repoRoot is the sidecar's module, two levels up from this one.
const repoRoot = "../.."

// buildSidecar builds ./cmd/csi-provisioner as `make build` does (static,
// -trimpath, -s -w), for linux and this machine's GOARCH, stamped with
// version, and returns its path.
func buildSidecar(t *testing.T, version string) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the image is a linux image; its binary can only be run on linux")
	}
	bin := filepath.Join(t.TempDir(), "csi-provisioner")
	start := time.Now()
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+version,
		"-o", bin, "./cmd/csi-provisioner")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/csi-provisioner: %v\n%s", err, out)
	}
	t.Logf("Built the sidecar in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// TestImage builds an image tarball from a freshly built sidecar, reads it
// back with go-containerregistry as `docker load` would, checks its config
// and its only layer, and runs the binary extracted from it.
func TestImage(t *testing.T) {
	const version = "v0.0.0-imagetest"
	bin := buildSidecar(t, version)
	dir := t.TempDir()
	out := filepath.Join(dir, "image.tar")
	ref := "csi-provisioner:" + version
	created := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	labels := map[string]string{
		"org.opencontainers.image.version": version,
		"org.opencontainers.image.source":  "https://github.com/crossns/external-provisioner",
	}

	start := time.Now()
	res, err := build(options{
		Binary: bin, Out: out, Ref: ref, OS: "linux", Arch: runtime.GOARCH,
		User: "65532:65532", Labels: labels, Created: created,
	})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	t.Logf("Wrote the tarball in %v (%d bytes)", time.Since(start).Round(time.Millisecond), res.Size)
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	// manifest.json: what docker load reads.
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(out) })
	if err != nil {
		t.Fatalf("reading manifest.json: %v", err)
	}
	if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{ref}) || len(m[0].Layers) != 1 {
		t.Fatalf("manifest.json = %+v, want one image tagged %q with one layer", m, ref)
	}

	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("reading the image: %v", err)
	}
	// Digests, sizes and diff IDs agree with the blobs.
	if err := validate.Image(img); err != nil {
		t.Fatalf("invalid image: %v", err)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != res.Digest {
		t.Errorf("image ID %s, build reported %s", id, res.Digest)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/csi-provisioner"}) || len(cf.Config.Cmd) != 0 {
		t.Errorf("Entrypoint %q Cmd %q, want [/csi-provisioner] and no Cmd", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("User %q, want 65532:65532", cf.Config.User)
	}
	for k, v := range labels {
		if cf.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cf.Config.Labels[k], v)
		}
	}
	if !cf.Created.Time.Equal(created) {
		t.Errorf("Created %v, want %v", cf.Created.Time, created)
	}
	if len(cf.RootFS.DiffIDs) != 1 || len(cf.History) != 1 {
		t.Errorf("config has %d diff IDs and %d history entries, want 1 and 1", len(cf.RootFS.DiffIDs), len(cf.History))
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatalf("reading the layer: %v", err)
	}
	if hdr.Name != "csi-provisioner" || hdr.Typeflag != tar.TypeReg || hdr.Mode != 0o755 || hdr.Uid != 0 || hdr.Gid != 0 {
		t.Errorf("layer entry %q type %c mode %o owner %d:%d, want regular file csi-provisioner mode 755 owner 0:0",
			hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid)
	}
	if !hdr.ModTime.Equal(created) {
		t.Errorf("layer entry mtime %v, want %v", hdr.ModTime, created)
	}
	extracted := filepath.Join(t.TempDir(), "csi-provisioner")
	f, err := os.OpenFile(extracted, os.O_CREATE|os.O_WRONLY|os.O_EXCL, os.FileMode(hdr.Mode).Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, tr); err != nil {
		t.Fatalf("extracting the binary: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("the layer holds more than the binary (next entry: %v)", err)
	}

	got, err := exec.Command(extracted, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", extracted, err, got)
	}
	if !strings.Contains(string(got), version) {
		t.Errorf("--version printed %q, want it to contain %q", got, version)
	}

	// Same inputs, same bytes: the tarball is reproducible.
	again := filepath.Join(dir, "again.tar")
	if _, err := build(options{
		Binary: bin, Out: again, Ref: ref, OS: "linux", Arch: runtime.GOARCH,
		User: "65532:65532", Labels: labels, Created: created,
	}); err != nil {
		t.Fatalf("second build: %v", err)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	if !slices.Equal(a, b) {
		t.Errorf("two builds from the same inputs differ")
	}
}

// TestBuildRefuses checks that options an image must not be built with are
// refused before anything is written.
func TestBuildRefuses(t *testing.T) {
	dir := t.TempDir()
	notELF := filepath.Join(dir, "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	valid := options{
		Binary: notELF, Out: filepath.Join(dir, "out.tar"), Ref: "csi-provisioner:test",
		OS: "linux", Arch: "amd64", User: "65532:65532",
	}
	for _, tc := range []struct {
		name   string
		change func(*options)
		want   string
	}{
		{"root user", func(o *options) { o.User = "0:0" }, "root"},
		{"named user", func(o *options) { o.User = "nonroot" }, "numeric"},
		{"bad gid", func(o *options) { o.User = "65532:staff" }, "gid"},
		{"darwin", func(o *options) { o.OS = "darwin" }, "only linux"},
		{"no ref", func(o *options) { o.Ref = "" }, "reference"},
		{"bad ref", func(o *options) { o.Ref = "csi-provisioner:v1+meta" }, "reference"},
		{"unknown arch", func(o *options) { o.Arch = "wasm" }, "not supported"},
		{"not ELF", func(o *options) {}, "bad magic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := valid
			tc.change(&o)
			_, err := build(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("build: %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(o.Out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists after a refused build", o.Out)
			}
		})
	}
}

// TestBuildRefusesOtherArch checks that a binary for one GOARCH does not go
// into an image for another.
func TestBuildRefusesOtherArch(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	if runtime.GOOS != "linux" {
		t.Skip("needs an ELF binary")
	}
	other := "s390x"
	if runtime.GOARCH == other {
		other = "amd64"
	}
	_, err = build(options{
		Binary: self, Out: filepath.Join(t.TempDir(), "out.tar"), Ref: "csi-provisioner:test",
		OS: "linux", Arch: other, User: "65532",
	})
	if err == nil || !strings.Contains(err.Error(), "GOARCH="+other) {
		t.Errorf("build: %v, want an architecture mismatch", err)
	}
}
