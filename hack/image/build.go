package main

import (
	"archive/tar"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// entrypoint is where the binary lives in the image and what the image runs.
const entrypoint = "/csi-provisioner"

// binaryMode is the permission of the binary in the layer: owned by root,
// readable and executable by the image's non-root user.
const binaryMode = 0o755

// options describe one image. Every field except Labels and Created is
// required; build checks them before it reads the binary.
type options struct {
	// Binary is the path of a statically linked ELF executable for OS/Arch
	// (CGO_ENABLED=0): it becomes the image's only file, at entrypoint.
	Binary string
	// Out is the path of the tarball to write; its directory must exist.
	// The file is replaced only when the whole tarball is written.
	Out string
	// Ref names the image in the tarball's manifest.json, "name:tag"
	// (e.g. "csi-provisioner:v0.1.0"); a missing tag means "latest".
	Ref string
	// OS and Arch are the image platform in Go's spelling (GOOS, GOARCH).
	// OS must be "linux"; Arch must match the binary's ELF machine.
	OS, Arch string
	// User is the numeric "uid" or "uid:gid" the container runs as; uid 0
	// (root) and names (which need /etc/passwd, absent here) are refused.
	User string
	// Labels become the config's labels (e.g. org.opencontainers.image.*).
	Labels map[string]string
	// Created is the image creation time in the config and the
	// modification time of the binary in the layer. The zero time gives
	// 1970-01-01T00:00:00Z, so equal inputs give a byte-identical tarball.
	Created time.Time
}

// result is what build wrote.
type result struct {
	// Digest is the image ID: the sha256 of the config, "sha256:<64 hex>".
	Digest string
	// Size is the tarball's size in bytes.
	Size int64
}

// build writes a tarball in the format of `docker save` (manifest.json, the
// config and one gzipped layer; `docker load`, `podman load`, `crane push`
// and skopeo's docker-archive: read it) of an image with no base ("FROM
// scratch"), one layer holding opts.Binary at /csi-provisioner (root-owned,
// mode 0755) and a config that runs it as opts.User with Entrypoint
// ["/csi-provisioner"].
//
// It returns an error, and leaves no file at opts.Out, when an option is
// invalid, the binary is not a static ELF executable for opts.Arch, or
// reading or writing fails.
func build(opts options) (result, error) {
	if err := opts.check(); err != nil {
		return result{}, err
	}
	tag, err := name.NewTag(opts.Ref)
	if err != nil {
		return result{}, fmt.Errorf("image reference %q: %w", opts.Ref, err)
	}
	if err := checkBinary(opts.Binary, opts.Arch); err != nil {
		return result{}, err
	}
	created := opts.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()

	dir := filepath.Dir(opts.Out)
	layerFile, err := os.CreateTemp(dir, ".layer-*.tar.gz")
	if err != nil {
		return result{}, fmt.Errorf("creating the layer file: %w", err)
	}
	defer os.Remove(layerFile.Name())
	if err := writeLayer(layerFile, opts.Binary, created); err != nil {
		layerFile.Close()
		return result{}, fmt.Errorf("writing the layer: %w", err)
	}
	if err := layerFile.Close(); err != nil {
		return result{}, fmt.Errorf("writing the layer: %w", err)
	}
	layer, err := tarball.LayerFromFile(layerFile.Name())
	if err != nil {
		return result{}, fmt.Errorf("reading the layer back: %w", err)
	}

	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: opts.Arch,
		OS:           opts.OS,
		Created:      v1.Time{Time: created},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: []string{entrypoint},
			User:       opts.User,
			WorkingDir: "/",
			Labels:     opts.Labels,
		},
	})
	if err != nil {
		return result{}, fmt.Errorf("setting the image config: %w", err)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "hack/image: COPY csi-provisioner " + entrypoint,
			Comment:   "static binary, built without a Docker engine",
		},
	})
	if err != nil {
		return result{}, fmt.Errorf("adding the layer: %w", err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return result{}, fmt.Errorf("computing the image ID: %w", err)
	}

	out, err := os.CreateTemp(dir, ".image-*.tar")
	if err != nil {
		return result{}, fmt.Errorf("creating the tarball: %w", err)
	}
	defer os.Remove(out.Name()) // fails harmlessly after the rename
	if err := tarball.Write(tag, img, out); err != nil {
		out.Close()
		return result{}, fmt.Errorf("writing the tarball: %w", err)
	}
	fi, err := out.Stat()
	if err != nil {
		out.Close()
		return result{}, fmt.Errorf("writing the tarball: %w", err)
	}
	if err := out.Close(); err != nil {
		return result{}, fmt.Errorf("writing the tarball: %w", err)
	}
	// CreateTemp makes the file 0600; a tarball is not a secret.
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return result{}, fmt.Errorf("writing the tarball: %w", err)
	}
	if err := os.Rename(out.Name(), opts.Out); err != nil {
		return result{}, fmt.Errorf("writing the tarball: %w", err)
	}
	return result{Digest: id.String(), Size: fi.Size()}, nil
}

// check returns an error naming the first missing or invalid option.
func (o options) check() error {
	switch {
	case o.Binary == "":
		return errors.New("no binary given")
	case o.Out == "":
		return errors.New("no output path given")
	case o.Ref == "":
		return errors.New("no image reference given")
	case o.OS != "linux":
		return fmt.Errorf("image OS %q: only linux images can be built (the binary is an ELF executable)", o.OS)
	case o.Arch == "":
		return errors.New("no image architecture given")
	}
	return checkUser(o.User)
}

// checkUser accepts "uid" or "uid:gid", both decimal, uid not 0.
func checkUser(user string) error {
	uid, gid, hasGID := strings.Cut(user, ":")
	n, err := strconv.ParseUint(uid, 10, 32)
	if err != nil {
		return fmt.Errorf("user %q: want a numeric uid or uid:gid (the image has no /etc/passwd)", user)
	}
	if n == 0 {
		return fmt.Errorf("user %q: the image must not run as root", user)
	}
	if hasGID {
		if _, err := strconv.ParseUint(gid, 10, 32); err != nil {
			return fmt.Errorf("user %q: want a numeric gid after the colon", user)
		}
	}
	return nil
}

// elfMachines maps GOARCH to the ELF machine of its binaries.
var elfMachines = map[string]elf.Machine{
	"386":     elf.EM_386,
	"amd64":   elf.EM_X86_64,
	"arm":     elf.EM_ARM,
	"arm64":   elf.EM_AARCH64,
	"loong64": elf.EM_LOONGARCH,
	"ppc64le": elf.EM_PPC64,
	"riscv64": elf.EM_RISCV,
	"s390x":   elf.EM_S390,
}

// checkBinary returns an error unless path is an ELF executable for the
// GOARCH arch with no program interpreter, i.e. statically linked: an image
// without a base has no dynamic loader and no libc.
func checkBinary(path, arch string) error {
	want, ok := elfMachines[arch]
	if !ok {
		return fmt.Errorf("image architecture %q is not supported", arch)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("binary %s: %w", path, err)
	}
	defer f.Close()
	if f.Machine != want {
		return fmt.Errorf("binary %s is for %s, not %s (GOARCH=%s)", path, f.Machine, want, arch)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("binary %s is not an executable (%s)", path, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("binary %s is dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}

// writeLayer writes to w a gzipped tar holding only the binary at
// entrypoint, owned by 0:0 with binaryMode and modification time mtime.
func writeLayer(w io.Writer, binary string, mtime time.Time) error {
	f, err := os.Open(binary)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", binary)
	}
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(entrypoint, "/"),
		Size:     fi.Size(),
		Mode:     binaryMode,
		ModTime:  mtime,
	}); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err != nil {
		return err
	}
	if n != fi.Size() {
		return fmt.Errorf("%s changed while it was read", binary)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
