package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// stopTimeout is how long a component gets to exit after SIGTERM before it
// is killed.
var stopTimeout = 15 * time.Second

// child is a component this process started.
type child struct {
	pid int
	// exited is closed when the process has exited (and been reaped). While
	// a component starts, this is the liveness signal: /proc/<pid>/cmdline
	// is briefly empty while the kernel finishes the exec, so processAlive
	// can report a just-started process as gone.
	exited chan struct{}
}

// running reports whether the child has not exited yet.
func (ch *child) running() bool {
	select {
	case <-ch.exited:
		return false
	default:
		return true
	}
}

// startDetached starts bin in its own session (setsid), so it outlives the
// command that started it and ^C in that terminal does not reach it, with
// stdout and stderr appended to logPath and its PID written to pidPath.
func startDetached(ctx context.Context, component, bin string, args []string, logPath, pidPath string) (*child, error) {
	return startDetachedEnv(ctx, component, bin, args, nil, logPath, pidPath)
}

// startDetachedEnv is startDetached with env ("K=V") added to this
// process's environment.
func startDetachedEnv(ctx context.Context, component, bin string, args, env []string, logPath, pidPath string) (*child, error) {
	logger := klog.FromContext(ctx)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("creating log dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(pidPath), 0o755); err != nil {
		return nil, fmt.Errorf("creating pid dir: %w", err)
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log of %s: %w", component, err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "==== %s starting %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devNull.Close()
	// Not CommandContext: the component must outlive ctx.
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, logFile, logFile
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", component, err)
	}
	ch := &child{pid: cmd.Process.Pid, exited: make(chan struct{})}
	// Reap the child if it exits while this process lives (go test), so a
	// dead component does not linger as a zombie.
	go func() {
		_ = cmd.Wait()
		close(ch.exited)
	}()
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(ch.pid)+"\n"), 0o644); err != nil {
		_ = syscall.Kill(-ch.pid, syscall.SIGKILL)
		return nil, fmt.Errorf("recording PID of %s: %w", component, err)
	}
	logger.V(2).Info("Started component", "component", component, "pid", ch.pid, "log", logPath)
	return ch, nil
}

// readPID reads a PID file; a missing file is (0, nil).
func readPID(path string) (int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("PID file %s holds %q", path, data)
	}
	return pid, nil
}

// processAlive reports whether pid runs the binary named bin. Zombies count
// as dead, and so does a PID reused by another program since the bed
// recorded it.
func processAlive(pid int, bin string) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may hold spaces.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	if len(cmdline) == 0 {
		// A process inside execve has no arguments yet; kernel threads,
		// the only others without, do not take over a PID the bed wrote.
		return true
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	return filepath.Base(string(argv0)) == bin
}

// stopProcess sends SIGTERM to the component's process group, waits up to
// stopTimeout for it to exit and then sends SIGKILL.
func stopProcess(ctx context.Context, component string, pid int, bin string) error {
	logger := klog.FromContext(ctx)
	if !processAlive(pid, bin) {
		return nil
	}
	logger.V(2).Info("Stopping component", "component", component, "pid", pid)
	if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling %s (pid %d): %w", component, pid, err)
	}
	if waitExit(pid, bin, stopTimeout) {
		return nil
	}
	logger.Info("Component did not stop after SIGTERM, killing it", "component", component, "pid", pid, "timeout", stopTimeout)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing %s (pid %d): %w", component, pid, err)
	}
	if !waitExit(pid, bin, 5*time.Second) {
		return fmt.Errorf("%s (pid %d) still running after SIGKILL", component, pid)
	}
	return nil
}

func waitExit(pid int, bin string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !processAlive(pid, bin) {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return !processAlive(pid, bin)
}

// rssKiB returns VmRSS of pid in KiB, from /proc/<pid>/status.
func rssKiB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// tailFile returns the last n lines of a log, for error messages about a
// component that died while starting.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
