package testbed

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Namespace names are "rauta-<creator pid>-<6 hex>-<role>". The PID makes a
// crashed run's leftovers recognisable; the random part keeps testbeds of
// one process apart.
const namePrefix = "rauta-"

// newNamePrefix returns "rauta-<pid>-<6 random hex>-" for one testbed.
func newNamePrefix() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random testbed id: %w", err)
	}
	return fmt.Sprintf("%s%d-%s-", namePrefix, os.Getpid(), hex.EncodeToString(b[:])), nil
}

// creatorPID extracts the creator PID from a namespace name, reporting false
// for names that are not ours.
func creatorPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, false
	}
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) != 3 || len(parts[1]) != 6 || parts[2] == "" {
		return 0, false
	}
	if _, err := hex.DecodeString(parts[1]); err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 || strconv.Itoa(pid) != parts[0] {
		return 0, false
	}
	return pid, true
}

// removeStaleNamespaces deletes testbed namespaces whose creator is gone.
//
// A namespace is stale when the PID in its name
//   - does not exist (kill(pid, 0) fails with ESRCH), or
//   - exists but holds no file descriptor on the namespace. Every live
//     testbed keeps one open from before the bind mount until after the
//     unmount, so this means the PID was reused by an unrelated process.
//
// A mount point that is not yet a namespace (its creator is between creating
// the file and mounting) is left alone while the creator lives.
func removeStaleNamespaces() error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scan for stale namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		pid, ok := creatorPID(e.Name())
		if !ok {
			continue
		}
		path := filepath.Join(netnsDir, e.Name())
		if creatorAlive(pid, path) {
			continue
		}
		if err := removeMountPoint(path); err != nil {
			errs = append(errs, fmt.Errorf("remove stale namespace: %w", err))
		}
	}
	return errors.Join(errs...)
}

// creatorAlive errs on the side of "alive": deleting a running test's
// namespace is far worse than leaking one until the next run.
func creatorAlive(pid int, path string) bool {
	if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		return true
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return true
	}
	held, err := holdsNamespace(pid, st.Ino)
	if err != nil {
		return true
	}
	return held
}

// holdsNamespace reports whether process pid has an open file descriptor on
// the network namespace with inode ino.
func holdsNamespace(pid int, ino uint64) (bool, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false, fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	want := fmt.Sprintf("net:[%d]", ino)
	for _, fd := range fds {
		// Descriptors closed since ReadDir just fail to resolve.
		if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && target == want {
			return true, nil
		}
	}
	return false, nil
}
