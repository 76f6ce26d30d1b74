// Command image writes a container image of the csi-provisioner binary as a
// tarball, without a Docker engine: `make image` runs it. The tarball has the
// format of `docker save` (load it with `docker load -i` or `podman load -i`,
// push it with `crane push`); see build for what the image holds.
//
// Usage:
//
//	go run . -binary ../../_output/image/linux-amd64/csi-provisioner \
//	    -out ../../_output/image/csi-provisioner-v0.1.0-linux-amd64.tar \
//	    -ref csi-provisioner:v0.1.0 -arch amd64 \
//	    -label org.opencontainers.image.version=v0.1.0
//
// It lives in a module of its own so that go-containerregistry is not a
// dependency of the sidecar (vendor/).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// labelFlags collects repeated -label key=value flags.
type labelFlags map[string]string

func (l labelFlags) String() string { return fmt.Sprint(map[string]string(l)) }

func (l labelFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	l[k] = v
	return nil
}

func main() {
	labels := labelFlags{}
	var opts options
	flag.StringVar(&opts.Binary, "binary", "", "static linux binary to put at /csi-provisioner (required)")
	flag.StringVar(&opts.Out, "out", "", "tarball to write; its directory must exist (required)")
	flag.StringVar(&opts.Ref, "ref", "", "image name:tag recorded in the tarball (required)")
	flag.StringVar(&opts.OS, "os", "linux", "image OS (GOOS); only linux")
	flag.StringVar(&opts.Arch, "arch", runtime.GOARCH, "image architecture (GOARCH); must match the binary")
	flag.StringVar(&opts.User, "user", "65532:65532", "numeric non-root uid[:gid] the container runs as")
	flag.Var(labels, "label", "image label key=value (repeatable)")
	created := flag.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "image creation time, seconds since the Unix epoch (default $SOURCE_DATE_EPOCH, else 0)")
	flag.Parse()
	if flag.NArg() != 0 {
		fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	if *created != "" {
		sec, err := strconv.ParseInt(*created, 10, 64)
		if err != nil || sec < 0 {
			fail(fmt.Errorf("-created %q: want seconds since the Unix epoch", *created))
		}
		opts.Created = time.Unix(sec, 0)
	}
	opts.Labels = labels

	res, err := build(opts)
	if err != nil {
		fail(err)
	}
	fmt.Printf("Wrote %s: %s, %s/%s, image ID %s, %.1f MB\n",
		opts.Out, opts.Ref, opts.OS, opts.Arch, res.Digest, float64(res.Size)/1e6)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "image:", err)
	os.Exit(1)
}
