//go:build linux || darwin

package embedded

import "syscall"

// freeBytes is the space on the file system holding dir that an
// unprivileged process may use (statfs's f_bavail: the blocks reserved for
// root are not ours to plan with even when we run as root).
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
