#pragma once
// The task's filesystem view, built inside a new mount namespace by the sandbox's PID 1.
//
// enter_sandbox_root makes every mount private, stages the new root on a tmpfs (mounted over /tmp
// of this namespace only; the host never sees it), binds what the spec asks for, and pivots into
// it, detaching the host's tree. Paths inside a rootfs directory are resolved with
// openat2(RESOLVE_IN_ROOT), so symlinks planted in an image cannot send a mount onto the host.
//
// What the task sees:
//   /                host mode: read-only tmpfs with read-only binds of /usr, /bin, /sbin, /lib*
//                    (symlinks copied as symlinks on merged-/usr hosts) and the spec's /etc
//                    entries, plus /etc/hostname; dir mode: the rootfs dir (read-only if asked)
//   /proc            fresh procfs; masked_paths() hidden, readonly_proc_paths() read-only
//   /dev             tmpfs with null zero full random urandom tty (bound from the host),
//                    ptmx -> pts/ptmx, pts (devpts newinstance), shm (tmpfs), mqueue,
//                    fd stdin stdout stderr symlinks into /proc/self/fd
//   /sys             sysfs read-only (a read-only recursive bind of the host's /sys when a fresh
//                    sysfs cannot be mounted, i.e. host network namespace with a user namespace),
//                    cgroup2 read-only at /sys/fs/cgroup with a cgroup namespace, /sys/firmware
//                    masked
//   /tmp             private tmpfs (rootfs.tmp_size_bytes)
//   sandbox_mount    the task's sandbox dir, read-write
//   volumes          bound read-only unless the volume says otherwise

#include <string>
#include <vector>

#include "corral/common/fd.hpp"
#include "corral/common/result.hpp"
#include "corral/isolator/sandbox_spec.hpp"

namespace corral::isolator {

// Paths OCI runtimes mask (files: /dev/null bound over them; directories: empty read-only tmpfs).
const std::vector<std::string>& masked_paths();
// Paths under /proc made read-only.
const std::vector<std::string>& readonly_proc_paths();

// Builds the sandbox root for `spec` and makes it the root and cwd ("/") of the calling process.
// Must run in a new mount namespace (and in the task's new pid namespace, for /proc), as root of
// that namespace. On error the namespace is left half built; the caller exits.
// rootfs_mount_fd: for an overlay rootfs in a user namespace, the detached mount made by
// make_idmapped_overlay on the host side; it is attached as the new root.
Result<void> enter_sandbox_root(const SandboxSpec& spec, int rootfs_mount_fd = -1);

// For an overlay rootfs with a user namespace: builds, as the host's root (init user namespace),
// a detached overlay mount whose lower layers are idmapped into the user namespace `userns_fd`
// (read-only clones of the layer dirs: the image's uid N is N inside the task, host_uid + N on
// the host; the store's files are not changed). The overlay keeps trusted.* xattrs working
// (opaque dirs) since its mounter is the host's root. Gives the upper dir to the namespace's
// root (the top layer's root owner, shifted) when it is owned by ids outside the range.
// Errors name the layer and the fallback when the file system or kernel cannot idmap.
Result<UniqueFd> make_idmapped_overlay(const SandboxSpec& spec, int userns_fd);

}  // namespace corral::isolator
