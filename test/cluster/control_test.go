package cluster

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A restarted snapshot component is ready when its new process logs that it
// started, not because the log still holds the line of the one before.
func TestLogShowsFromIgnoresEarlierProcesses(t *testing.T) {
	log := filepath.Join(t.TempDir(), "snapshot-controller.log")
	if err := os.WriteFile(log, []byte("==== starting\n"+snapshotControllerStarted+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ready := logShowsFrom(log, logSize(log), snapshotControllerStarted)
	if ok, _ := ready(context.Background()); ok {
		t.Fatal("ready on the earlier process's line")
	}
	f, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("==== starting again\nI0101 " + snapshotControllerStarted + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if ok, detail := ready(context.Background()); !ok {
		t.Fatalf("not ready after the new process logged: %s", detail)
	}
}

func TestOnlyComponentsBesideEtcdRestart(t *testing.T) {
	c := &Cluster{layout: newLayout(t.TempDir()), tools: &Tools{}}
	if err := c.KillComponent(context.Background(), Etcd); err == nil {
		t.Error("KillComponent(etcd) accepted: the bed keeps no second copy of its data")
	}
	// Nothing runs: killing and stopping are no-ops.
	for _, comp := range []string{Provisioner, ProvisionerReplica, TestDriver, KubeAPIServer} {
		if err := c.KillComponent(context.Background(), comp); err != nil {
			t.Errorf("KillComponent(%s) of a stopped bed: %v", comp, err)
		}
		if pid := c.ComponentPID(comp); pid != 0 {
			t.Errorf("ComponentPID(%s) = %d on a stopped bed", comp, pid)
		}
	}
}

func TestReplicaRunsTheSidecarBinaryOnItsOwnPort(t *testing.T) {
	c := &Cluster{layout: newLayout("/repo"), tools: &Tools{}}
	if got := c.binPath(ProvisionerReplica); got != "/repo/_output/bin/csi-provisioner" {
		t.Errorf("binPath(replica) = %s", got)
	}
	c.state.Ports.ProvisionerHTTP = 28080
	args := c.replicaArgs([]string{"--leader-election"})
	want := "--http-endpoint=127.0.0.1:28081"
	found := false
	for _, a := range args {
		if a == want {
			found = true
		}
	}
	if !found || args[len(args)-1] != "--leader-election" {
		t.Errorf("replicaArgs = %v, want %s and the extra flag last", args, want)
	}
}
