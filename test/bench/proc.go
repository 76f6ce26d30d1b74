package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports (the kernel fixes it for
// user space whatever CONFIG_HZ is), and reading sysconf would need cgo.
const clockTicks = 100

// procSample is what /proc says about one process at one moment.
type procSample struct {
	// cpuSeconds is utime+stime: CPU time the process used since it started.
	cpuSeconds float64
	// hwmKiB is VmHWM, the peak resident set over the process lifetime.
	hwmKiB int64
	// rssKiB is VmRSS, the resident set now.
	rssKiB int64
}

func readProc(pid int) (procSample, error) {
	var p procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	if p.cpuSeconds, err = parseStatCPU(stat); err != nil {
		return p, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	if p.hwmKiB, err = statusKiB(status, "VmHWM"); err != nil {
		return p, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	if p.rssKiB, err = statusKiB(status, "VmRSS"); err != nil {
		return p, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return p, nil
}

// parseStatCPU returns utime+stime in seconds. The fields are counted after
// the parenthesised command name, which may itself hold spaces and ')'.
func parseStatCPU(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name")
	}
	// After ")": state(3) ppid(4) ... utime(14) stime(15), numbered as in proc(5).
	f := strings.Fields(string(stat[i+1:]))
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("only %d fields", len(f)+2)
	}
	u, err := strconv.ParseUint(f[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	s, err := strconv.ParseUint(f[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return float64(u+s) / clockTicks, nil
}

// statusKiB reads a "Key:   123 kB" line of /proc/<pid>/status.
func statusKiB(status []byte, key string) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, key+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s", key)
}

// machineSample is the first line of /proc/stat: CPU time of all cores.
type machineSample struct{ busy, total uint64 }

func readMachine() (machineSample, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineSample{}, err
	}
	return parseMachine(data)
}

// parseMachine counts idle and iowait as not busy.
func parseMachine(data []byte) (machineSample, error) {
	line, _, _ := bytes.Cut(data, []byte{'\n'})
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return machineSample{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var m machineSample
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return machineSample{}, fmt.Errorf("/proc/stat: %w", err)
		}
		m.total += n
		if i != 3 && i != 4 { // idle, iowait
			m.busy += n
		}
	}
	return m, nil
}

// busyFraction is the share of all cores' time spent busy between a and b.
func busyFraction(a, b machineSample) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}

// Machine describes where the figures were measured.
type Machine struct {
	CPUs     int    `json:"cpus"`
	Model    string `json:"model"`
	Kernel   string `json:"kernel"`
	Hostname string `json:"hostname"`
}

func describeMachine(cpus int) Machine {
	m := Machine{CPUs: cpus}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	m.Hostname, _ = os.Hostname()
	return m
}
