package realnode

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is where the machine's cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupMount is one mounted cgroup hierarchy of the machine, remounted
// the same way inside the node's mount namespace.
type cgroupMount struct {
	dir     string // under /sys/fs/cgroup
	fstype  string // cgroup or cgroup2
	options string
}

// hierarchies lists the machine's cgroup mounts under /sys/fs/cgroup with
// the options that select their controllers (a v1 hierarchy must be mounted
// again with exactly its own set).
func hierarchies() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || (fields[2] != "cgroup" && fields[2] != "cgroup2") {
			continue
		}
		dir, ok := strings.CutPrefix(fields[1], cgroupRoot+"/")
		if !ok || strings.Contains(dir, "/") {
			continue
		}
		var opts []string
		for _, o := range strings.Split(fields[3], ",") {
			switch o {
			case "rw", "ro", "relatime", "nosuid", "nodev", "noexec":
			default:
				opts = append(opts, o)
			}
		}
		if len(opts) == 0 {
			opts = []string{"rw"}
		}
		out = append(out, cgroupMount{dir: dir, fstype: fields[2], options: strings.Join(opts, ",")})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("realnode: no cgroup hierarchies under /sys/fs/cgroup")
	}
	return out, nil
}

// makeCgroups creates /<name>/daemons and /<name>/pods in every hierarchy
// (the kubelet checks its cgroupRoot in each); cpuset children need their
// cpus and mems before a task may join.
func (c *Config) makeCgroups(hs []cgroupMount) error {
	for _, h := range hs {
		for _, sub := range []string{"", "daemons", "pods"} {
			p := filepath.Join(cgroupRoot, h.dir, c.Name, sub)
			if err := os.MkdirAll(p, 0o755); err != nil {
				return fmt.Errorf("realnode: cgroup %s: %w", p, err)
			}
			if h.dir == "cpuset" {
				for _, k := range []string{"cpuset.cpus", "cpuset.mems"} {
					v, err := os.ReadFile(filepath.Join(filepath.Dir(p), k))
					if err != nil {
						return err
					}
					if err := os.WriteFile(filepath.Join(p, k), v, 0o644); err != nil {
						return fmt.Errorf("realnode: cgroup %s: %s: %w", p, k, err)
					}
				}
			}
		}
	}
	return nil
}

// daemonsProcs is the cgroup.procs file a process writes its PID to, so
// that it and everything it forks belongs to this node.
func (c *Config) daemonsProcs() string {
	return filepath.Join(cgroupRoot, "pids", c.Name, "daemons", "cgroup.procs")
}

// nodePIDs lists every process in the node's pids cgroup tree: the daemons,
// the shims they forked, and the pods' processes under the kubelet's root.
func (c *Config) nodePIDs() []int {
	var pids []int
	root := filepath.Join(cgroupRoot, "pids", c.Name)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// killAll SIGKILLs the node's processes until its cgroups are empty.
// Membership in the node's cgroup is what makes a process ours: nothing
// else is ever signalled.
func (c *Config) killAll(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := c.nodePIDs()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("realnode: %d processes of node %s survive SIGKILL: %v", len(pids), c.Name, pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes /<name> and everything under it from every
// hierarchy, deepest first.
func (c *Config) removeCgroups() error {
	var errs []error
	entries, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return err
	}
	for _, e := range entries {
		root := filepath.Join(cgroupRoot, e.Name(), c.Name)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("realnode: cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}
