package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestToolsKeyFollowsThePins(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module x\nrequire k8s.io/kubernetes v1.37.0\n")
	write("go.sum", "sum\n")
	write("etcd/main.go", "package main\n")
	mods := moduleVersions{
		kubernetesModule:  {Path: kubernetesModule, Version: "v1.37.0"},
		snapshotterModule: {Path: snapshotterModule, Version: "v8.7.0"},
	}
	ctx := context.Background()
	key := func() string {
		t.Helper()
		k, _, err := toolsKey(ctx, dir, mods)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key()
	if again := key(); again != base {
		t.Errorf("key not stable: %s then %s", base, again)
	}
	write("go.mod", "module x\nrequire k8s.io/kubernetes v1.37.1\n")
	bumped := key()
	if bumped == base {
		t.Error("key did not change with go.mod")
	}
	write("etcd/main.go", "package main // changed\n")
	if key() == bumped {
		t.Error("key did not change with the etcd main")
	}
}

func TestKubeVersionFlagsStampBothVersionPackages(t *testing.T) {
	flags := strings.Join(kubeVersionFlags(moduleVersions{kubernetesModule: {Version: "v1.37.0"}}), " ")
	for _, want := range []string{
		"k8s.io/component-base/version.gitVersion=v1.37.0",
		"k8s.io/component-base/version.gitMajor=1",
		"k8s.io/component-base/version.gitMinor=37",
		"k8s.io/client-go/pkg/version.gitVersion=v1.37.0",
		"k8s.io/client-go/pkg/version.gitMinor=37",
	} {
		if !strings.Contains(flags, want) {
			t.Errorf("ldflags %q lack %q", flags, want)
		}
	}
}
