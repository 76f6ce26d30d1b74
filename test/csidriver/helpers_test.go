package csidriver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// testDriver is a driver served in-process on a temporary unix socket.
type testDriver struct {
	*Driver
	endpoint string
	logPath  string
	conn     *grpc.ClientConn
	ctrl     csi.ControllerClient
	ident    csi.IdentityClient
	stop     func()
}

// startDriver serves a driver for cfg until the test ends (or stop is
// called). Empty DataDir gets a fresh temporary directory; the call log goes
// to a file whose path is in logPath.
func startDriver(t *testing.T, cfg Config) *testDriver {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
	}
	logPath := filepath.Join(t.TempDir(), "calls.jsonl")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	cfg.CallLog = logFile

	// Unix socket paths are limited to ~108 bytes; t.TempDir() paths
	// embed the test name and can exceed that.
	sockDir, err := os.MkdirTemp("", "csidrv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	endpoint := "unix://" + filepath.Join(sockDir, "csi.sock")

	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	lis, err := Listen(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, lis) }()

	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return &testDriver{
		Driver:   d,
		endpoint: endpoint,
		logPath:  logPath,
		conn:     conn,
		ctrl:     csi.NewControllerClient(conn),
		ident:    csi.NewIdentityClient(conn),
		stop:     stop,
	}
}

func mountCap() []*csi.VolumeCapability {
	return []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}}
}

func blockCap() []*csi.VolumeCapability {
	return []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}}
}

func createVolume(t *testing.T, td *testDriver, req *csi.CreateVolumeRequest) *csi.Volume {
	t.Helper()
	if req.VolumeCapabilities == nil {
		req.VolumeCapabilities = mountCap()
	}
	resp, err := td.ctrl.CreateVolume(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateVolume(%s): %v", req.GetName(), err)
	}
	return resp.GetVolume()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
}

// readTree maps relative paths below root to file contents ("<dir>" for
// directories, "-> target" for symlinks) plus permission bits.
func readTree(t *testing.T, root string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			tree[rel] = "-> " + target
		case info.IsDir():
			tree[rel] = "<dir> " + info.Mode().Perm().String()
		default:
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			tree[rel] = string(data) + " " + info.Mode().Perm().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}
