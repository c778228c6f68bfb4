#include "corral/launcher/launcher.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "corral/common/fd.hpp"
#include "corral/isolator/capabilities.hpp"
#include "corral/isolator/mounts.hpp"
#include "corral/isolator/process.hpp"
#include "corral/isolator/seccomp.hpp"

namespace corral::launcher {
namespace {

using isolator::SandboxSpec;

// The fd PID 1 keeps for reporting to the supervisor once it has exec'd the init helper.
constexpr int kInitStatusFd = 3;

struct Pipe {
  UniqueFd read, write;
};

Result<Pipe> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Error::from_errno("pipe2");
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Everything the child needs, prepared before clone3 so that the child does no parsing.
struct ChildContext {
  const SandboxSpec* spec = nullptr;
  int init_exe = -1;
  int sync_read = -1;
  int error_write = -1;
  int status_write = -1;
  int stdout_write = -1;
  int stderr_write = -1;
  int rootfs_socket = -1;  // overlay + user namespace: receives the idmapped overlay's mount fd
  uint64_t capabilities = 0;
  const isolator::SeccompProfile* seccomp = nullptr;  // null: unconfined
  std::vector<std::string> exec_candidates;           // argv[0] resolved against PATH
};

// Reports an error to the parent (one write, atomic below PIPE_BUF) and exits.
[[noreturn]] void child_fail(int error_fd, int exit_code, const Error& error) {
  std::string msg =
      std::to_string(exit_code) + " " + std::to_string(error.code()) + " " + error.message();
  if (msg.size() > 4000) msg.resize(4000);
  (void)!::write(error_fd, msg.data(), msg.size());
  ::_exit(exit_code);
}

// One fd over a unix socket (SCM_RIGHTS).
Result<void> send_fd(int sock, int fd) {
  char byte = 'm';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  if (::sendmsg(sock, &msg, MSG_NOSIGNAL) != 1) return Error::from_errno("sendmsg (SCM_RIGHTS)");
  return {};
}

Result<UniqueFd> receive_fd(int sock) {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  if (::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) return Error::from_errno("recvmsg");
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
    return Error(EPROTO, "no fd in the message");
  }
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(cm), sizeof fd);
  return UniqueFd(fd);
}

[[noreturn]] void run_task(const ChildContext& c) {
  const SandboxSpec& spec = *c.spec;
  auto fail = [&](const Error& e) { child_fail(c.error_write, kExitSetupFailed, e); };
  if (::setsid() < 0) fail(Error::from_errno("setsid"));
  sigset_t empty;
  sigemptyset(&empty);
  for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);

  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) fail(Error::from_errno("open /dev/null in the sandbox"));
  if (::dup2(null.get(), 0) < 0 || ::dup2(c.stdout_write, 1) < 0 || ::dup2(c.stderr_write, 2) < 0) {
    fail(Error::from_errno("dup2 stdio"));
  }
  // Whatever the agent leaked into us must not reach the task.
  if (::syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    fail(Error::from_errno("close_range"));
  }
  if (::chdir(spec.cwd.c_str()) != 0) {
    fail(Error::from_errno("chdir to the working directory " + spec.cwd));
  }
  if (auto r = isolator::apply_rlimits(spec.rlimits); !r) fail(r.error());
  if (auto r = isolator::limit_bounding_set(c.capabilities); !r) fail(r.error());
  if (auto r = isolator::switch_user(spec.uid, spec.gid, spec.supplementary_gids); !r) {
    fail(r.error());
  }
  if (auto r = isolator::set_capabilities(c.capabilities); !r) fail(r.error());
  if (auto r = isolator::set_no_new_privs(); !r) fail(r.error());

  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  if (c.seccomp) {
    if (auto r = isolator::load_seccomp(*c.seccomp); !r) fail(r.error().context("seccomp"));
  }
  int last_errno = ENOENT;
  for (const auto& path : c.exec_candidates) {
    ::execve(path.c_str(), argv.data(), envp.data());
    // Like execvp: keep looking after ENOENT/ENOTDIR, remember a more telling error.
    if (errno != ENOENT && errno != ENOTDIR) last_errno = errno;
  }
  child_fail(c.error_write, last_errno == ENOENT ? kExitNotFound : kExitCannotExec,
             Error::from_errno("exec " + spec.argv[0], last_errno));
}

[[noreturn]] void run_sandbox_init(const ChildContext& c) {
  const SandboxSpec& spec = *c.spec;
  auto fail = [&](const Error& e) { child_fail(c.error_write, kExitSetupFailed, e); };
  char go = 0;
  if (::read(c.sync_read, &go, 1) != 1) ::_exit(kExitSetupFailed);  // the launcher died
  if (spec.namespaces.user) {
    if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) {
      fail(Error::from_errno("become root of the user namespace"));
    }
  }
  if (auto r = isolator::set_hostname(spec.hostname); !r) fail(r.error());
  if (spec.namespaces.net && spec.namespaces.netns_path.empty()) {
    if (auto r = isolator::bring_up_loopback(); !r) fail(r.error());
  }
  UniqueFd rootfs_mount;
  if (c.rootfs_socket >= 0) {
    auto fd = receive_fd(c.rootfs_socket);
    if (!fd) fail(fd.error().context("receive the overlay rootfs from the launcher"));
    rootfs_mount = std::move(fd).value();
  }
  if (auto r = isolator::enter_sandbox_root(spec, rootfs_mount.get()); !r)
    fail(
        r.error().context("building the "
                          "sandbox"));
  rootfs_mount.reset();
  pid_t task = ::fork();
  if (task < 0) fail(Error::from_errno("fork the task"));
  if (task == 0) run_task(c);

  // Become the small init: keep only the status pipe (as fd 3) besides stdio.
  if (::dup2(c.status_write, kInitStatusFd) < 0) fail(Error::from_errno("dup2 status fd"));
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (null) {
    ::dup2(null.get(), 0);
    ::dup2(null.get(), 1);
  }
  std::string task_pid = std::to_string(task), status_fd = std::to_string(kInitStatusFd);
  char* argv[] = {const_cast<char*>("corral-launcher-init"), const_cast<char*>("init"),
                  task_pid.data(), status_fd.data(), nullptr};
  char* envp[] = {nullptr};
  ::syscall(SYS_execveat, c.init_exe, "", argv, envp, AT_EMPTY_PATH);
  Error e = Error::from_errno("exec the init helper");
  ::kill(task, SIGKILL);
  child_fail(c.error_write, kExitSetupFailed, e);
}

std::vector<std::string> exec_candidates(const SandboxSpec& spec) {
  const std::string& prog = spec.argv[0];
  if (prog.find('/') != std::string::npos) return {prog};
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const auto& e : spec.env) {
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  }
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";
    out.push_back(dir + "/" + prog);
    start = end + 1;
  }
  return out;
}

Result<void> write_id_maps(pid_t pid, const isolator::UserNamespaceSpec& user) {
  const std::string base = "/proc/" + std::to_string(pid);
  auto write = [&](const std::string& file, uint32_t host) -> Result<void> {
    const std::string line = "0 " + std::to_string(host) + " " + std::to_string(user.count) + "\n";
    UniqueFd fd(::open((base + "/" + file).c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return Error::from_errno("open " + base + "/" + file);
    if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      return Error::from_errno("write " + file + " '" + line.substr(0, line.size() - 1) +
                               "' (is the range free and within /etc/subuid?)");
    }
    return {};
  };
  CORRAL_TRY(write("uid_map", user.host_uid));
  return write("gid_map", user.host_gid);
}

std::string default_init_path() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "corral-launcher-init";
  std::string self(buf, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/') + 1) + "corral-launcher-init";
}

// PID 1 execs the init helper after the host's tree has been detached, and the kernel refuses
// to exec from a detached mount; so it execs a sealed in-memory copy (a static binary of a few
// hundred KiB, which also works inside any rootfs).
Result<UniqueFd> sealed_copy(const std::string& path) {
  UniqueFd src(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!src) return Error::from_errno("open " + path);
  UniqueFd mem(::memfd_create("corral-launcher-init", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!mem) return Error::from_errno("memfd_create");
  struct stat st {};
  if (::fstat(src.get(), &st) != 0) return Error::from_errno("stat " + path);
  off_t offset = 0;
  while (offset < st.st_size) {
    ssize_t n = ::sendfile(mem.get(), src.get(), &offset, static_cast<size_t>(st.st_size - offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error::from_errno("copy " + path + " into a memfd");
  }
  if (::fcntl(mem.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) !=
      0) {
    return Error::from_errno("seal the init helper's memfd");
  }
  return mem;
}

Result<void> clear_cloexec(int fd) {
  if (::fcntl(fd, F_SETFD, 0) != 0) return Error::from_errno("fcntl F_SETFD");
  return {};
}

}  // namespace

Result<void> write_failed_status(const std::string& path, const Error& error, int exit_code) {
  nlohmann::json j = {{"state", "failed"}, {"code", exit_code}, {"error", error.to_string()}};
  return write_file_atomic(path, j.dump() + "\n");
}

Result<void> launch(const SandboxSpec& spec, const LaunchOptions& options, int* exit_code) {
  *exit_code = kExitSetupFailed;
  auto fail = [&](Error e, int code = kExitSetupFailed) -> Result<void> {
    *exit_code = code;
    (void)write_failed_status(spec.exit_status_path, e, code);
    return e;
  };
  if (auto v = isolator::validate(spec); !v) return fail(v.error(), kExitUsage);

  const std::string init_path = options.init_path.empty() ? default_init_path() : options.init_path;
  auto init_exe = sealed_copy(init_path);
  if (!init_exe) {
    return fail(
        init_exe.error().context("the init helper (install corral-launcher-init beside "
                                 "corral-launcher or pass --init)"));
  }
  struct stat st {};
  if (::stat(spec.sandbox_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail(Error(ENOENT, "sandbox_dir " + spec.sandbox_dir +
                                  " is not an existing directory; create it first"));
  }

  auto caps = isolator::capability_mask(spec.capabilities);
  if (!caps) return fail(caps.error(), kExitUsage);
  isolator::SeccompProfile seccomp;
  if (spec.seccomp.mode == isolator::SeccompMode::default_profile) {
    seccomp = isolator::default_seccomp_profile(*caps);
  } else if (spec.seccomp.mode == isolator::SeccompMode::profile) {
    auto parsed = isolator::parse_seccomp_profile(spec.seccomp.profile, *caps);
    if (!parsed) return fail(parsed.error().context("spec.seccomp.profile"), kExitUsage);
    seccomp = std::move(parsed).value();
  }

  UniqueFd cgroup;
  if (!spec.cgroup_dir.empty()) {
    cgroup.reset(::open(spec.cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cgroup) return fail(Error::from_errno("open cgroup_dir " + spec.cgroup_dir));
  }

  auto sync = make_pipe();
  auto errors = make_pipe();
  auto status = make_pipe();
  auto out = make_pipe();
  auto err = make_pipe();
  for (auto* p : {&sync, &errors, &status, &out, &err}) {
    if (!*p) return fail(p->error());
  }

  // An overlay rootfs in a user namespace is built here, on the host side, with idmapped layers
  // (isolator::make_idmapped_overlay) and handed to the sandbox's PID 1 over this socket.
  const bool idmapped_rootfs =
      spec.namespaces.user && spec.rootfs.mode == isolator::RootfsMode::overlay;
  UniqueFd rootfs_parent, rootfs_child;
  if (idmapped_rootfs) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      return fail(Error::from_errno("socketpair for the rootfs"));
    }
    rootfs_parent.reset(sv[0]);
    rootfs_child.reset(sv[1]);
  }

  ChildContext c;
  c.spec = &spec;
  c.rootfs_socket = rootfs_child ? rootfs_child.get() : -1;
  c.init_exe = init_exe->get();
  c.sync_read = sync->read.get();
  c.error_write = errors->write.get();
  c.status_write = status->write.get();
  c.stdout_write = out->write.get();
  c.stderr_write = err->write.get();
  c.capabilities = *caps;
  c.seccomp = spec.seccomp.mode == isolator::SeccompMode::unconfined ? nullptr : &seccomp;
  c.exec_candidates = exec_candidates(spec);

  // Blocked from here on so the supervisor (which inherits the mask across exec) misses none.
  sigset_t block;
  sigemptyset(&block);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&block, sig);
  ::sigprocmask(SIG_BLOCK, &block, nullptr);

  uint64_t flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_PIDFD;
  if (!spec.namespaces.netns_path.empty()) {
    // A network namespace prepared by the agent (docs/network.md): the launcher joins it
    // itself, before clone3, so that the task (even in a user namespace, which could not
    // setns into a namespace owned by the host's) starts inside it.
    UniqueFd netns(::open(spec.namespaces.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!netns || ::setns(netns.get(), CLONE_NEWNET) != 0) {
      Error e =
          Error::from_errno("join the task's network namespace " + spec.namespaces.netns_path);
      ::sigprocmask(SIG_UNBLOCK, &block, nullptr);
      return fail(e);
    }
  } else if (spec.namespaces.net) {
    flags |= CLONE_NEWNET;
  }
  if (spec.namespaces.cgroup) flags |= CLONE_NEWCGROUP;
  if (spec.namespaces.user) flags |= CLONE_NEWUSER;
  if (cgroup) flags |= CLONE_INTO_CGROUP;
  int pidfd_value = -1;
  clone_args args{};
  args.flags = flags;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd_value);
  args.exit_signal = SIGCHLD;
  args.cgroup = cgroup ? static_cast<uint64_t>(cgroup.get()) : 0;
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0) {
    Error e = Error::from_errno("clone3 with new namespaces");
    ::sigprocmask(SIG_UNBLOCK, &block, nullptr);
    return fail(e);
  }
  if (pid == 0) run_sandbox_init(c);  // does not return

  UniqueFd pidfd(pidfd_value);
  rootfs_child.reset();
  sync->read.reset();
  errors->write.reset();
  status->write.reset();
  out->write.reset();
  err->write.reset();
  auto abort_child = [&](Error e, int code) -> Result<void> {
    ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    ::sigprocmask(SIG_UNBLOCK, &block, nullptr);
    return fail(std::move(e), code);
  };
  if (spec.namespaces.user) {
    if (auto r = write_id_maps(static_cast<pid_t>(pid), *spec.namespaces.user); !r) {
      return abort_child(r.error().context("user namespace"), kExitSetupFailed);
    }
  }
  if (idmapped_rootfs) {
    const std::string ns_path = "/proc/" + std::to_string(pid) + "/ns/user";
    UniqueFd userns(::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!userns) return abort_child(Error::from_errno("open " + ns_path), kExitSetupFailed);
    auto overlay = isolator::make_idmapped_overlay(spec, userns.get());
    if (!overlay) {
      return abort_child(overlay.error().context("overlay rootfs in a user namespace"),
                         kExitSetupFailed);
    }
    if (auto r = send_fd(rootfs_parent.get(), overlay->get()); !r) {
      return abort_child(r.error().context("hand the overlay rootfs to the sandbox"),
                         kExitSetupFailed);
    }
    rootfs_parent.reset();
  }
  if (::write(sync->write.get(), "g", 1) != 1) {
    return abort_child(Error::from_errno("start the sandbox"), kExitSetupFailed);
  }
  sync->write.reset();
  // EOF once both PID 1 and the task have exec'd; anything else is "<exit code> <message>".
  std::string message;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(errors->read.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    message.append(buf, static_cast<size_t>(n));
  }
  if (!message.empty()) {
    // "<exit code> <errno> <message>" from child_fail.
    int code = kExitSetupFailed, err = EINVAL;
    std::istringstream in(message);
    in >> code >> err;
    std::string text;
    std::getline(in >> std::ws, text, '\0');
    if (code != kExitNotFound && code != kExitCannotExec) code = kExitSetupFailed;
    return abort_child(Error(err, text.empty() ? message : text), code);
  }

  // Become the supervisor.
  for (int fd : {pidfd.get(), status->read.get(), out->read.get(), err->read.get()}) {
    if (auto r = clear_cloexec(fd); !r) return abort_child(r.error(), kExitSetupFailed);
  }
  std::vector<std::string> sargs = {
      "corral-launcher-init",
      "supervise",
      "pidfd=" + std::to_string(pidfd.get()),
      "init-pid=" + std::to_string(pid),
      "status-fd=" + std::to_string(status->read.get()),
      "stdout-fd=" + std::to_string(out->read.get()),
      "stderr-fd=" + std::to_string(err->read.get()),
      "grace-ms=" + std::to_string(spec.kill_grace_ms),
      "stdout=" + spec.stdout_spec.path,
      "stdout-max=" + std::to_string(spec.stdout_spec.max_bytes),
      "stdout-keep=" + std::to_string(spec.stdout_spec.keep),
      "stderr=" + spec.stderr_spec.path,
      "stderr-max=" + std::to_string(spec.stderr_spec.max_bytes),
      "stderr-keep=" + std::to_string(spec.stderr_spec.keep),
      "exit-file=" + spec.exit_status_path,
  };
  std::vector<char*> argv;
  for (auto& a : sargs) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execve(init_path.c_str(), argv.data(), environ);
  return abort_child(Error::from_errno("exec the supervisor " + init_path), kExitSetupFailed);
}

}  // namespace corral::launcher
