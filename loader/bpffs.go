package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ensureBPFFS makes sure dir lies on a bpffs, mounting one on its parent
// when the parent is not one yet. Debian does not mount /sys/fs/bpf by
// default, and `ip netns exec` gives each command a fresh /sys without it.
func ensureBPFFS(dir string) error {
	parent := filepath.Dir(dir)
	if isBPFFS(parent) {
		return os.MkdirAll(dir, 0o700)
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", parent, err)
	}
	if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", parent, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.BPF_FS_MAGIC
}

// removePins deletes the pin directory and what is in it. Pins are plain
// files on bpffs: unlinking one drops a reference, nothing more.
func removePins(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("remove stale pin: %w", err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pin directory: %w", err)
	}
	return nil
}
