package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDetachedProcessLifecycle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	logPath, pidPath := filepath.Join(dir, "logs", "sleeper.log"), filepath.Join(dir, "pids", "sleeper.pid")
	ch, err := startDetached(ctx, "sleeper", "/bin/sleep", []string{"60"}, logPath, pidPath)
	if err != nil {
		t.Fatalf("startDetached: %v", err)
	}
	pid := ch.pid
	if !ch.running() {
		t.Fatal("child reported exited right after start")
	}
	// processAlive may miss a process still inside exec; it is for
	// processes started earlier, by another command.
	waitCmdline(t, pid)
	t.Cleanup(func() { _ = stopProcess(ctx, "sleeper", pid, "sleep") })

	if got, err := readPID(pidPath); err != nil || got != pid {
		t.Errorf("readPID = %d, %v; want %d", got, err, pid)
	}
	if !processAlive(pid, "sleep") {
		t.Fatal("started process is not alive")
	}
	if processAlive(pid, "etcd") {
		t.Error("a PID running another binary counts as alive")
	}
	if rss, err := rssKiB(pid); err != nil || rss <= 0 {
		t.Errorf("rssKiB = %d, %v", rss, err)
	}
	sid := sessionID(t, pid)
	if sid != pid {
		t.Errorf("process is in session %d, want its own (%d)", sid, pid)
	}
	if err := stopProcess(ctx, "sleeper", pid, "sleep"); err != nil {
		t.Fatalf("stopProcess: %v", err)
	}
	if processAlive(pid, "sleep") {
		t.Error("process alive after stopProcess")
	}
	select {
	case <-ch.exited:
	case <-time.After(5 * time.Second):
		t.Error("exited not closed after the process stopped")
	}
	if log, _ := os.ReadFile(logPath); !strings.Contains(string(log), "starting /bin/sleep 60") {
		t.Errorf("log lacks the start line: %q", log)
	}
}

func TestStopKillsAProcessIgnoringSIGTERM(t *testing.T) {
	old := stopTimeout
	stopTimeout = 500 * time.Millisecond
	t.Cleanup(func() { stopTimeout = old })
	ctx := context.Background()
	dir := t.TempDir()
	ch, err := startDetached(ctx, "stubborn", "/bin/sh", []string{"-c", `trap "" TERM; sleep 60`},
		filepath.Join(dir, "stubborn.log"), filepath.Join(dir, "stubborn.pid"))
	if err != nil {
		t.Fatalf("startDetached: %v", err)
	}
	pid := ch.pid
	waitCmdline(t, pid)
	time.Sleep(200 * time.Millisecond) // let sh install the trap
	start := time.Now()
	if err := stopProcess(ctx, "stubborn", pid, "sh"); err != nil {
		t.Fatalf("stopProcess: %v", err)
	}
	if processAlive(pid, "sh") {
		t.Error("process alive after SIGKILL")
	}
	if d := time.Since(start); d < stopTimeout {
		t.Errorf("stopped after %s, before the SIGTERM grace period", d)
	}
}

func TestReadPIDOfAMissingFile(t *testing.T) {
	if pid, err := readPID(filepath.Join(t.TempDir(), "none.pid")); pid != 0 || err != nil {
		t.Errorf("readPID = %d, %v; want 0, nil", pid, err)
	}
}

// sessionID reads field 6 of /proc/<pid>/stat.
func sessionID(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	sid, err := strconv.Atoi(fields[3])
	if err != nil {
		t.Fatal(err)
	}
	return sid
}

// waitCmdline waits until the kernel has finished exec'ing pid.
func waitCmdline(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil && len(data) > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d has no cmdline after 5s", pid)
}
