#include "corral/isolator/mounts.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "corral/common/fd.hpp"

namespace corral::isolator {
namespace {

constexpr const char* kBase = "/tmp";     // staging tmpfs, mounted over /tmp of the new namespace
constexpr const char* kOld = "/oldroot";  // the host's root while building
constexpr const char* kNew = "/newroot";  // the sandbox root while building

Result<void> do_mount(const std::string& source, const std::string& target, const char* type,
                      unsigned long flags, const std::string& data = "") {
  if (::mount(source.empty() ? nullptr : source.c_str(), target.c_str(), type, flags,
              data.empty() ? nullptr : data.c_str()) != 0) {
    return Error::from_errno("mount " + (source.empty() ? std::string("(none)") : source) + " on " +
                             target + (type ? std::string(" type ") + type : "") +
                             (data.empty() ? "" : " (" + data + ")"));
  }
  return {};
}

// Sets mount attributes on `path` and, with recursive, every mount below it.
Result<void> set_attrs(const std::string& path, uint64_t attrs, bool recursive) {
  mount_attr attr{};
  attr.attr_set = attrs;
  if (::syscall(SYS_mount_setattr, AT_FDCWD, path.c_str(), recursive ? AT_RECURSIVE : 0, &attr,
                sizeof attr) != 0) {
    return Error::from_errno("mount_setattr " + path);
  }
  return {};
}

Result<void> make_dir(const std::string& path, mode_t mode = 0755) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return Error::from_errno("mkdir " + path);
  }
  return {};
}

Result<void> make_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd) return Error::from_errno("create mount point " + path);
  return {};
}

Result<void> make_symlink(const std::string& target, const std::string& path) {
  if (::symlink(target.c_str(), path.c_str()) != 0) {
    return Error::from_errno("symlink " + path + " -> " + target);
  }
  return {};
}

Result<void> write_small_file(const std::string& path, const std::string& content) {
  UniqueFd fd(::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd) return Error::from_errno("create " + path);
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    return Error::from_errno("write " + path);
  }
  return {};
}

UniqueFd openat2_in_root(int root, const std::string& rel, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return UniqueFd(static_cast<int>(::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how)));
}

// Resolves `path` (absolute, as the task sees it) inside the new root, creating missing
// directories and, when `file`, an empty file as the last component. Symlinks are followed
// within the new root only. Returns an O_PATH fd of the mount point.
Result<UniqueFd> mount_point_in_root(int root, const std::string& path, bool file) {
  std::string rel = path.substr(1);
  UniqueFd cur(::fcntl(root, F_DUPFD_CLOEXEC, 3));
  if (!cur) return Error::from_errno("dup new root fd");
  size_t start = 0;
  std::string prefix;
  while (start < rel.size()) {
    size_t end = rel.find('/', start);
    bool last = end == std::string::npos;
    if (last) end = rel.size();
    std::string comp = rel.substr(start, end - start);
    prefix += (prefix.empty() ? "" : "/") + comp;
    if (last && file) {
      UniqueFd f(::openat(cur.get(), comp.c_str(),
                          O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644));
      if (!f && errno != EEXIST) return Error::from_errno("create mount point " + path);
    } else if (::mkdirat(cur.get(), comp.c_str(), 0755) != 0 && errno != EEXIST) {
      return Error::from_errno("mkdir " + path + " (at " + comp + ")");
    }
    cur = openat2_in_root(root, prefix, O_PATH);
    if (!cur) return Error::from_errno("open " + prefix + " inside the new root");
    start = end + 1;
  }
  return cur;
}

std::string fd_path(const UniqueFd& fd) {
  return std::string(kOld) + "/proc/self/fd/" + std::to_string(fd.get());
}

bool exists(const std::string& path, struct stat* st) { return ::stat(path.c_str(), st) == 0; }

// Binds host `source` (absolute host path) at `target` (absolute sandbox path).
Result<void> bind_into_root(int root, const std::string& source, const std::string& target,
                            bool readonly, uint64_t extra_attrs) {
  const std::string src = std::string(kOld) + source;
  struct stat st {};
  if (!exists(src, &st)) {
    return Error::from_errno("bind " + source + " -> " + target + ": source " + source);
  }
  CORRAL_ASSIGN_OR_RETURN(UniqueFd point, mount_point_in_root(root, target, !S_ISDIR(st.st_mode)));
  const std::string dst = fd_path(point);
  CORRAL_TRY(do_mount(src, dst, nullptr, MS_BIND | MS_REC));
  // Re-resolve: the fd still names the directory under the new mount.
  UniqueFd mounted = openat2_in_root(root, target.substr(1), O_PATH);
  if (!mounted) return Error::from_errno("reopen " + target + " after binding it");
  uint64_t attrs = MOUNT_ATTR_NOSUID | extra_attrs | (readonly ? MOUNT_ATTR_RDONLY : 0);
  return set_attrs(fd_path(mounted), attrs, true);
}

Result<void> setup_host_root(const SandboxSpec& spec) {
  CORRAL_TRY(do_mount("tmpfs", kNew, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m"));
  UniqueFd root(::open(kNew, O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return Error::from_errno(std::string("open ") + kNew);
  for (const char* top : {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
    const std::string host = std::string(kOld) + "/" + top;
    struct stat st {};
    if (::lstat(host.c_str(), &st) != 0) continue;  // not every host has lib32 etc.
    if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t n = ::readlink(host.c_str(), target, sizeof target - 1);
      if (n < 0) return Error::from_errno("readlink /" + std::string(top));
      CORRAL_TRY(
          make_symlink(std::string(target, static_cast<size_t>(n)), std::string(kNew) + "/" + top));
    } else if (S_ISDIR(st.st_mode)) {
      CORRAL_TRY(bind_into_root(root.get(), std::string("/") + top, std::string("/") + top, true,
                                MOUNT_ATTR_NODEV));
    }
  }
  CORRAL_TRY(make_dir(std::string(kNew) + "/etc"));
  for (const auto& name : spec.rootfs.host_etc) {
    struct stat st {};
    if (!exists(std::string(kOld) + "/etc/" + name, &st)) continue;  // optional by design
    CORRAL_TRY(bind_into_root(root.get(), "/etc/" + name, "/etc/" + name, true, MOUNT_ATTR_NODEV));
  }
  CORRAL_TRY(write_small_file(std::string(kNew) + "/etc/hostname", spec.hostname + "\n"));
  for (const char* dir : {"/root", "/run", "/var", "/var/tmp", "/home"}) {
    CORRAL_TRY(make_dir(std::string(kNew) + dir));
  }
  return {};
}

Result<void> setup_dev(int root, const SandboxSpec& spec) {
  CORRAL_ASSIGN_OR_RETURN(UniqueFd dev, mount_point_in_root(root, "/dev", false));
  CORRAL_TRY(do_mount("tmpfs", fd_path(dev), "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME,
                      "mode=0755,size=65536k"));
  const std::string d = std::string(kNew) + "/dev";
  for (const char* node : {"null", "zero", "full", "random", "urandom", "tty"}) {
    const std::string target = d + "/" + node;
    CORRAL_TRY(make_file(target));
    CORRAL_TRY(do_mount(std::string(kOld) + "/dev/" + node, target, nullptr, MS_BIND));
    CORRAL_TRY(set_attrs(target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, false));
  }
  CORRAL_TRY(make_dir(d + "/pts"));
  std::string pts = "newinstance,ptmxmode=0666,mode=0620";
  // gid 5 is "tty" on Debian; only name it when it is mapped in the task's user namespace.
  if (!spec.namespaces.user || spec.namespaces.user->count > 5) pts += ",gid=5";
  CORRAL_TRY(do_mount("devpts", d + "/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts));
  CORRAL_TRY(make_symlink("pts/ptmx", d + "/ptmx"));
  CORRAL_TRY(make_dir(d + "/shm", 01777));
  CORRAL_TRY(do_mount("shm", d + "/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      "mode=1777,size=" + std::to_string(spec.rootfs.shm_size_bytes)));
  CORRAL_TRY(make_dir(d + "/mqueue"));
  CORRAL_TRY(do_mount("mqueue", d + "/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC));
  CORRAL_TRY(make_symlink("/proc/self/fd", d + "/fd"));
  CORRAL_TRY(make_symlink("/proc/self/fd/0", d + "/stdin"));
  CORRAL_TRY(make_symlink("/proc/self/fd/1", d + "/stdout"));
  CORRAL_TRY(make_symlink("/proc/self/fd/2", d + "/stderr"));
  return {};
}

Result<void> setup_sys(int root, const SandboxSpec& spec) {
  CORRAL_ASSIGN_OR_RETURN(UniqueFd sys, mount_point_in_root(root, "/sys", false));
  const std::string target = std::string(kNew) + "/sys";
  const unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY;
  if (::mount("sysfs", fd_path(sys).c_str(), "sysfs", flags, nullptr) != 0) {
    // A fresh sysfs needs a network namespace owned by our user namespace; without one, show
    // the host's /sys read-only instead.
    if (errno != EPERM) return Error::from_errno("mount sysfs on /sys");
    CORRAL_TRY(bind_into_root(root, "/sys", "/sys", true, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
    return {};
  }
  if (spec.namespaces.cgroup) {
    CORRAL_TRY(do_mount("cgroup2", target + "/fs/cgroup", "cgroup2", flags));
  }
  return {};
}

Result<void> mask_paths() {
  const std::string null = std::string(kNew) + "/dev/null";
  for (const auto& path : masked_paths()) {
    const std::string target = std::string(kNew) + path;
    struct stat st {};
    if (::lstat(target.c_str(), &st) != 0) continue;  // not on this kernel
    if (S_ISDIR(st.st_mode)) {
      CORRAL_TRY(do_mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                          "size=0,mode=0555"));
    } else {
      CORRAL_TRY(do_mount(null, target, nullptr, MS_BIND));
    }
  }
  for (const auto& path : readonly_proc_paths()) {
    const std::string target = std::string(kNew) + path;
    struct stat st {};
    if (::lstat(target.c_str(), &st) != 0) continue;
    CORRAL_TRY(do_mount(target, target, nullptr, MS_BIND | MS_REC));
    CORRAL_TRY(set_attrs(
        target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        true));
  }
  return {};
}

}  // namespace

const std::vector<std::string>& masked_paths() {
  static const std::vector<std::string> paths = {
      "/proc/acpi",       "/proc/asound",      "/proc/interrupts",
      "/proc/kcore",      "/proc/keys",        "/proc/latency_stats",
      "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
      "/proc/scsi",       "/sys/firmware",     "/sys/devices/virtual/powercap"};
  return paths;
}

const std::vector<std::string>& readonly_proc_paths() {
  static const std::vector<std::string> paths = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                                 "/proc/sysrq-trigger"};
  return paths;
}

namespace {

long sys_open_tree(int dfd, const char* path, unsigned flags) {
  return ::syscall(SYS_open_tree, dfd, path, flags);
}

Result<void> fs_config(int fsfd, unsigned cmd, const char* key, const std::string& value) {
  if (::syscall(SYS_fsconfig, fsfd, cmd, key, value.empty() ? nullptr : value.c_str(), 0) != 0) {
    return Error::from_errno(std::string("overlay option ") + (key ? key : "create") +
                             (value.empty() ? "" : "=" + value));
  }
  return {};
}

}  // namespace

Result<UniqueFd> make_idmapped_overlay(const SandboxSpec& spec, int userns_fd) {
  if (spec.rootfs.mode != RootfsMode::overlay || !spec.namespaces.user) {
    return Error(EINVAL,
                 "an idmapped overlay is only built for an overlay rootfs with a user "
                 "namespace");
  }
  const UserNamespaceSpec& user = *spec.namespaces.user;
  // The merged root shows the upper dir's owner: give it the image root's owner as the task's
  // user namespace sees it (an upper dir created by the host's root would be "nobody" inside).
  struct stat top {};
  if (::stat(spec.rootfs.lower_dirs.front().c_str(), &top) != 0) {
    return Error::from_errno("stat the top layer " + spec.rootfs.lower_dirs.front());
  }
  UniqueFd upper(
      ::open(spec.rootfs.upper_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!upper) return Error::from_errno("open rootfs.upper_dir " + spec.rootfs.upper_dir);
  struct stat up {};
  if (::fstat(upper.get(), &up) != 0) return Error::from_errno("stat " + spec.rootfs.upper_dir);
  auto mapped = [&](uint32_t id, uint32_t host) { return id >= host && id - host < user.count; };
  if (!mapped(up.st_uid, user.host_uid) || !mapped(up.st_gid, user.host_gid)) {
    uint32_t uid = top.st_uid < user.count ? user.host_uid + top.st_uid : user.host_uid;
    uint32_t gid = top.st_gid < user.count ? user.host_gid + top.st_gid : user.host_gid;
    if (::fchown(upper.get(), uid, gid) != 0 || ::fchmod(upper.get(), top.st_mode & 07777) != 0) {
      return Error::from_errno("give rootfs.upper_dir " + spec.rootfs.upper_dir +
                               " to the user namespace's root");
    }
  }

  // Each layer: a private clone of its directory, read-only, with the image's ids shifted into
  // the task's user namespace (image uid N is shown as host_uid + N, i.e. N inside). The store's
  // files are not touched.
  std::vector<UniqueFd> layers;
  std::string lowerdir;
  for (const auto& dir : spec.rootfs.lower_dirs) {
    UniqueFd tree(static_cast<int>(
        sys_open_tree(AT_FDCWD, dir.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)));
    if (!tree) return Error::from_errno("open_tree (clone) of the layer " + dir);
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    attr.userns_fd = static_cast<uint64_t>(userns_fd);
    if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
      int e = errno;
      return Error(e, "cannot idmap the image layer " + dir +
                          " for the task's user namespace (mount_setattr MOUNT_ATTR_IDMAP: " +
                          std::strerror(e) +
                          "; the store's file system must support idmapped mounts, Linux 5.19 "
                          "or newer for overlay over idmapped layers); run the task without a "
                          "user namespace, or give it a dir rootfs flattened from the image "
                          "(flatten_layers) and chowned into the namespace's range");
    }
    lowerdir +=
        (lowerdir.empty() ? "" : ":") + std::string("/proc/self/fd/") + std::to_string(tree.get());
    layers.push_back(std::move(tree));
  }
  UniqueFd fs(static_cast<int>(::syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC)));
  if (!fs) return Error::from_errno("fsopen overlay (is the overlay module loaded?)");
  CORRAL_TRY(fs_config(fs.get(), FSCONFIG_SET_STRING, "lowerdir", lowerdir));
  CORRAL_TRY(fs_config(fs.get(), FSCONFIG_SET_STRING, "upperdir", spec.rootfs.upper_dir));
  CORRAL_TRY(fs_config(fs.get(), FSCONFIG_SET_STRING, "workdir", spec.rootfs.work_dir));
  if (auto r = fs_config(fs.get(), FSCONFIG_CMD_CREATE, nullptr, ""); !r) {
    return std::move(r).error().context(
        "mount the overlay of idmapped layers (the kernel must accept detached idmapped mounts "
        "as overlay layers: Linux 6.15 or newer)");
  }
  UniqueFd mnt(static_cast<int>(
      ::syscall(SYS_fsmount, fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID)));
  if (!mnt) return Error::from_errno("fsmount the overlay rootfs");
  return mnt;  // the overlay keeps its own private clones of the layers
}

Result<void> enter_sandbox_root(const SandboxSpec& spec, int rootfs_mount_fd) {
  // Nothing done below may propagate to the host.
  CORRAL_TRY(do_mount("", "/", nullptr, MS_REC | MS_PRIVATE));
  CORRAL_TRY(do_mount("tmpfs", kBase, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=1m"));
  CORRAL_TRY(make_dir(std::string(kBase) + kOld));
  CORRAL_TRY(make_dir(std::string(kBase) + kNew));
  if (::chdir(kBase) != 0) return Error::from_errno(std::string("chdir ") + kBase);
  // The host's root moves to /oldroot; /oldroot/tmp shows the host's real /tmp again.
  if (::syscall(SYS_pivot_root, ".", kOld + 1) != 0) {
    return Error::from_errno("pivot_root into the staging tmpfs");
  }
  if (::chdir("/") != 0) return Error::from_errno("chdir /");

  if (spec.rootfs.mode == RootfsMode::host) {
    CORRAL_TRY(setup_host_root(spec));
  } else if (spec.rootfs.mode == RootfsMode::overlay && rootfs_mount_fd >= 0) {
    // Built by the launcher on the host side (make_idmapped_overlay); attach it here.
    if (::syscall(SYS_move_mount, rootfs_mount_fd, "", AT_FDCWD, kNew, MOVE_MOUNT_F_EMPTY_PATH) !=
        0) {
      return Error::from_errno("attach the idmapped overlay rootfs");
    }
  } else if (spec.rootfs.mode == RootfsMode::overlay) {
    // Mounted in this (the task's) mount namespace only: it goes away with the task.
    std::string lower;
    for (const auto& d : spec.rootfs.lower_dirs) {
      lower += (lower.empty() ? "" : ":") + std::string(kOld) + d;
    }
    CORRAL_TRY(do_mount("overlay", kNew, "overlay", MS_NODEV,
                        "lowerdir=" + lower + ",upperdir=" + kOld + spec.rootfs.upper_dir +
                            ",workdir=" + kOld + spec.rootfs.work_dir));
  } else {
    CORRAL_TRY(do_mount(std::string(kOld) + spec.rootfs.path, kNew, nullptr, MS_BIND | MS_REC));
  }
  UniqueFd root(::open(kNew, O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return Error::from_errno(std::string("open ") + kNew);

  CORRAL_TRY(setup_dev(root.get(), spec));
  CORRAL_ASSIGN_OR_RETURN(UniqueFd proc, mount_point_in_root(root.get(), "/proc", false));
  CORRAL_TRY(do_mount("proc", fd_path(proc), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC));
  CORRAL_TRY(setup_sys(root.get(), spec));
  CORRAL_ASSIGN_OR_RETURN(UniqueFd tmp, mount_point_in_root(root.get(), "/tmp", false));
  CORRAL_TRY(do_mount("tmpfs", fd_path(tmp), "tmpfs", MS_NOSUID | MS_NODEV,
                      "mode=1777,size=" + std::to_string(spec.rootfs.tmp_size_bytes)));
  CORRAL_TRY(
      bind_into_root(root.get(), spec.sandbox_dir, spec.sandbox_mount, false, MOUNT_ATTR_NODEV));
  for (const auto& volume : spec.volumes) {
    auto r = bind_into_root(root.get(), volume.host_path, volume.container_path, volume.readonly,
                            MOUNT_ATTR_NODEV);
    if (!r) return std::move(r).error().context("volume " + volume.host_path);
  }
  CORRAL_TRY(mask_paths());
  if (spec.rootfs.mode == RootfsMode::host || spec.rootfs.readonly) {
    CORRAL_TRY(set_attrs(kNew, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, false));
  }

  // Enter the new root and drop the staging tmpfs together with the host's tree.
  if (::chdir(kNew) != 0) return Error::from_errno(std::string("chdir ") + kNew);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return Error::from_errno("pivot_root into rootfs");
  if (::umount2(".", MNT_DETACH) != 0) return Error::from_errno("detach the host's root");
  if (::chdir("/") != 0) return Error::from_errno("chdir / in the sandbox");
  return {};
}

}  // namespace corral::isolator
