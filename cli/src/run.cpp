#include "corral/cli/run.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "corral/common/fd.hpp"
#include "corral/isolator/cgroup.hpp"
#include "corral/isolator/sandbox_spec.hpp"
#include "corral/launcher/exit_status.hpp"

namespace corral::cli {
namespace fs = std::filesystem;
namespace {

constexpr int kCorralFailed = 125;

void say(const RunOptions& o, const std::string& line) {
  if (!o.quiet) std::fprintf(stderr, "corral: %s\n", line.c_str());
}

int fail(const std::string& message) {
  std::fprintf(stderr, "corral: %s\n", message.c_str());
  return kCorralFailed;
}

Result<std::string> find_launcher(const std::string& configured) {
  if (!configured.empty()) return configured;
  if (const char* env = std::getenv("CORRAL_LAUNCHER"); env != nullptr && *env != '\0')
    return std::string(env);
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> candidates;
  if (!ec) {
    candidates.push_back(self.parent_path() / "corral-launcher");  // installed side by side
    candidates.push_back(self.parent_path().parent_path() / "launcher" /
                         "corral-launcher");  // build tree
  }
  candidates.push_back("/usr/sbin/corral-launcher");
  candidates.push_back("/usr/lib/corral/corral-launcher");
  for (const auto& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c.string();
  }
  return Error(ENOENT,
               "cannot find corral-launcher (looked beside corral, in the build tree, "
               "/usr/sbin and /usr/lib/corral); pass --launcher or set CORRAL_LAUNCHER");
}

struct Identity {
  uint32_t uid = 0, gid = 0;
  std::vector<uint32_t> groups;
  std::string home = "/";
};

Result<Identity> resolve_user(const std::string& user) {
  Identity id;
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[8192];
  bool numeric = !user.empty() && user.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) {
    id.uid = static_cast<uint32_t>(std::stoul(user));
    getpwuid_r(id.uid, &pw, buf, sizeof buf, &found);
  } else {
    getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found);
    if (found == nullptr)
      return Error(ENOENT, "user \"" + user + "\" does not exist on this machine");
    id.uid = found->pw_uid;
  }
  if (found != nullptr) {
    id.gid = found->pw_gid;
    id.home = found->pw_dir;
    int n = 64;
    std::vector<gid_t> groups(static_cast<size_t>(n));
    if (getgrouplist(found->pw_name, found->pw_gid, groups.data(), &n) >= 0) {
      for (int i = 0; i < n; ++i) {
        if (groups[static_cast<size_t>(i)] != found->pw_gid)
          id.groups.push_back(groups[static_cast<size_t>(i)]);
      }
    }
  } else {
    id.gid = id.uid;  // a bare uid without a passwd entry gets the same gid, no extra groups
  }
  return id;
}

std::string new_run_id() {
  auto uuid = read_file("/proc/sys/kernel/random/uuid", 64);
  std::string id = uuid ? uuid->substr(0, 8) : std::to_string(::getpid());
  return "run-" + id;
}

// Follows a file the launcher appends to (and rotates: path -> path.1), copying new bytes to fd.
class Follower {
 public:
  Follower(fs::path path, int out) : path_(std::move(path)), out_(out) {}
  void pump() {
    for (int round = 0; round < 2; ++round) {
      if (!fd_) {
        fd_.reset(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd_) return;
        struct stat st {};
        ::fstat(fd_.get(), &st);
        ino_ = st.st_ino;
      }
      copy_available();
      // Rotated (the path now names a new file) or truncated in place: start over.
      struct stat now {};
      if (::stat(path_.c_str(), &now) == 0 && now.st_ino != ino_) {
        fd_.reset();
        continue;
      }
      struct stat mine {};
      if (::fstat(fd_.get(), &mine) == 0 && mine.st_size < ::lseek(fd_.get(), 0, SEEK_CUR)) {
        ::lseek(fd_.get(), 0, SEEK_SET);
        copy_available();
      }
      return;
    }
  }

 private:
  void copy_available() {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      if (n <= 0) return;
      ssize_t off = 0;
      while (off < n) {
        ssize_t w = ::write(out_, buf + off, static_cast<size_t>(n - off));
        if (w <= 0) return;
        off += w;
      }
    }
  }
  fs::path path_;
  int out_;
  UniqueFd fd_;
  ino_t ino_ = 0;
};

volatile sig_atomic_t g_forward_signal = 0;
void on_signal(int sig) { g_forward_signal = sig; }

std::string describe_limits(const isolator::ResourceLimits& l) {
  std::string s;
  auto add = [&](const std::string& part) { s += (s.empty() ? "" : ", ") + part; };
  if (l.cpus) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", *l.cpus);
    add(std::string("cpus ") + b);
  }
  if (l.memory_max) add("memory " + isolator::format_bytes(*l.memory_max));
  if (l.pids_max) add("pids " + std::to_string(*l.pids_max));
  if (l.cpu_weight) add("cpu weight " + std::to_string(*l.cpu_weight));
  return s.empty() ? "none" : s;
}

}  // namespace

int run_task(const RunOptions& o) {
  if (o.argv.empty())
    return fail("no command given; usage: corral run [options] -- COMMAND [ARGS...]");

  // 1. Policy: defaults, maxima, allow-lists. A refusal names the rule and its file.
  auto policy = isolator::load_policy_dir(o.policy_dir);
  if (!policy)
    return fail("the policy in " + o.policy_dir + " is invalid:\n" + policy.error().message());
  auto decision = isolator::decide(*policy, o.request);
  if (!decision) return fail("task refused: " + decision.error().message());

  // 2. cgroup v2: required unless the policy explicitly allows running without it.
  std::unique_ptr<isolator::CgroupManager> manager;
  std::unique_ptr<isolator::TaskCgroup> cgroup;
  const std::string run_id = new_run_id();
  auto host = isolator::probe_cgroup_host();
  Result<void> usable = host ? Result<void>() : Result<void>(host.error());
  isolator::CgroupBackend backend = host && host->systemd_pid1 ? isolator::CgroupBackend::kSystemd
                                                               : isolator::CgroupBackend::kCgroupfs;
  if (usable.ok()) usable = isolator::check_cgroup_host(*host, backend);
  if (usable.ok()) {
    Result<std::unique_ptr<isolator::CgroupManager>> m =
        backend == isolator::CgroupBackend::kSystemd
            ? isolator::open_systemd_manager(
                  isolator::SystemdOptions{"corral.slice", "corral-run.scope"})
            : isolator::open_cgroupfs_manager();
    if (m) {
      manager = std::move(*m);
    } else {
      usable = m.error();
    }
  }
  if (!usable.ok()) {
    if (policy->require_cgroup_v2.value) {
      return fail("cannot isolate resources on this host:\n" + usable.error().message() +
                  "\nTo run WITHOUT resource limits anyway, set [cgroups] require_v2 = false in a "
                  "policy file (currently " +
                  policy->require_cgroup_v2.origin + ").");
    }
    std::fprintf(
        stderr,
        "corral: WARNING: resource limits are NOT enforced for this task (cgroups.require_v2 = "
        "false, %s): %s\n",
        policy->require_cgroup_v2.origin.c_str(), usable.error().message().c_str());
  } else {
    auto c = manager->create(run_id, decision->limits);
    if (!c) return fail("creating the task's cgroup: " + c.error().message());
    cgroup = std::move(*c);
  }

  // 3. The sandbox directory and the spec.
  std::error_code ec;
  fs::path run_dir = fs::path(o.state_dir) / run_id;
  fs::create_directories(run_dir / "sandbox", ec);
  if (ec) {
    return fail("cannot create " + run_dir.string() + ": " + ec.message() +
                " (pass --state-dir to use another directory)");
  }
  ::chmod(run_dir.c_str(), 0711);
  auto cleanup_dir = [&] {
    if (!o.keep) fs::remove_all(run_dir, ec);
  };
  auto identity = resolve_user(decision->user);
  if (!identity) {
    cleanup_dir();
    return fail(identity.error().message());
  }
  // With a user namespace (policy [user_namespace]), ids inside map to a subuid range outside:
  // "root" in the task is an unprivileged uid on the host.
  std::optional<isolator::UserNamespaceSpec> userns;
  if (policy->userns_enabled.value) {
    isolator::UserNamespaceSpec u;
    u.host_uid = static_cast<uint32_t>(policy->userns_start.value);
    u.host_gid = static_cast<uint32_t>(policy->userns_start.value);
    u.count = static_cast<uint32_t>(policy->userns_count.value);
    if (identity->uid >= u.count || identity->gid >= u.count) {
      cleanup_dir();
      return fail("user \"" + decision->user + "\" (uid " + std::to_string(identity->uid) +
                  ") lies outside the user namespace's " + std::to_string(u.count) +
                  " ids (user_namespace.subuid_count, " + policy->userns_count.origin +
                  "); run as a lower uid or widen the range");
    }
    identity->groups.clear();  // host groups mean nothing inside the namespace
    userns = u;
  }
  // the task writes its sandbox as its own user (as seen from the host)
  const uint32_t host_offset = userns ? userns->host_uid : 0;
  ::chown((run_dir / "sandbox").c_str(), identity->uid + host_offset, identity->gid + host_offset);

  isolator::SandboxSpec spec;
  spec.argv = o.argv;
  spec.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "HOME=" + std::string(identity->uid == 0 ? "/root" : "/"),
              "CORRAL_TASK_ID=" + run_id};
  for (const auto& e : o.env) spec.env.push_back(e);
  spec.hostname = o.hostname;
  spec.namespaces.net = o.network != "host";
  spec.namespaces.cgroup = cgroup != nullptr;
  spec.namespaces.user = userns;
  if (!o.rootfs.empty()) {
    spec.rootfs.mode = isolator::RootfsMode::dir;
    spec.rootfs.path = o.rootfs;
  }
  spec.sandbox_dir = (run_dir / "sandbox").string();
  spec.cwd = o.workdir.empty() ? spec.sandbox_mount : o.workdir;
  for (const auto& v : decision->volumes)
    spec.volumes.push_back({v.host_path, v.container_path, !v.writable});
  spec.uid = identity->uid;
  spec.gid = identity->gid;
  spec.supplementary_gids = identity->groups;
  spec.capabilities = decision->capabilities;
  if (decision->seccomp == "unconfined") {
    spec.seccomp.mode = isolator::SeccompMode::unconfined;
  } else if (decision->seccomp != "default") {
    auto text = read_file(decision->seccomp, 4 << 20);
    if (!text) {
      cleanup_dir();
      return fail("reading seccomp profile: " + text.error().message());
    }
    spec.seccomp.mode = isolator::SeccompMode::profile;
    spec.seccomp.profile = nlohmann::json::parse(*text, nullptr, false);
  }
  spec.kill_grace_ms = o.grace_ms;
  spec.stdout_spec.path = (run_dir / "stdout").string();
  spec.stderr_spec.path = (run_dir / "stderr").string();
  spec.exit_status_path = (run_dir / "exit.json").string();
  if (cgroup) spec.cgroup_dir = cgroup->path().string();
  if (auto v = isolator::validate(spec); !v.ok()) {
    cleanup_dir();
    return fail("invalid task: " + v.error().message());
  }
  auto launcher = find_launcher(o.launcher);
  if (!launcher) {
    cleanup_dir();
    return fail(launcher.error().message());
  }
  const fs::path spec_path = run_dir / "spec.json";
  if (auto w = write_file_atomic(spec_path, isolator::to_json(spec).dump(2), 0600); !w.ok()) {
    cleanup_dir();
    return fail(w.error().message());
  }
  say(o, "running " + run_id + " as " + decision->user + " (limits: " +
             (cgroup ? describe_limits(decision->limits) : std::string("NOT ENFORCED")) + ")");

  // 4. Launch and follow the output until the launcher (the task's supervisor) exits.
  pid_t pid = ::fork();
  if (pid < 0) {
    cleanup_dir();
    return fail(Error::from_errno("fork").message());
  }
  if (pid == 0) {
    ::execl(launcher->c_str(), launcher->c_str(), "--spec", spec_path.c_str(), nullptr);
    std::fprintf(stderr, "corral: exec %s: %s\n", launcher->c_str(), std::strerror(errno));
    _exit(kCorralFailed);
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  auto pidfd = Pidfd::open(pid);
  Follower out(run_dir / "stdout", STDOUT_FILENO);
  Follower err(run_dir / "stderr", STDERR_FILENO);
  for (;;) {
    out.pump();
    err.pump();
    if (g_forward_signal != 0) {
      ::kill(pid, g_forward_signal);  // the launcher forwards it, then SIGKILLs after the grace
      g_forward_signal = 0;
    }
    bool exited = pidfd ? pidfd->wait_exit(std::chrono::milliseconds(20)).value_or(false)
                        : ::waitpid(pid, nullptr, WNOHANG) == pid;
    if (exited) break;
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  out.pump();
  err.pump();

  // 5. Outcome: the exit file, then the cgroup's OOM counter.
  int code = kCorralFailed;
  auto exit_status = launcher::read_exit_status(spec_path.parent_path() / "exit.json");
  bool oom = false;
  if (cgroup) {
    auto events = cgroup->events();
    oom = events && events->oom_killed();
  }
  if (!exit_status) {
    code = WIFEXITED(status) ? WEXITSTATUS(status) : kCorralFailed;
    std::fprintf(stderr, "corral: the launcher left no exit status (%s); it exited with %d\n",
                 exit_status.error().message().c_str(), code);
  } else if (exit_status->state == launcher::ExitStatus::State::failed) {
    code = exit_status->code;
    std::fprintf(stderr, "corral: the task could not be started: %s\n", exit_status->error.c_str());
  } else if (exit_status->state == launcher::ExitStatus::State::signaled) {
    code = 128 + exit_status->signal;
    if (oom) {
      std::fprintf(stderr,
                   "corral: task %s was killed: out of memory (memory limit %s; "
                   "REASON_CONTAINER_LIMITATION_MEMORY)\n",
                   run_id.c_str(),
                   decision->limits.memory_max
                       ? isolator::format_bytes(*decision->limits.memory_max).c_str()
                       : "none");
    } else {
      say(o, "task " + run_id + " was killed by " + exit_status->signal_name +
                 (exit_status->killed_after_grace ? " after its grace period" : ""));
    }
  } else {
    code = exit_status->code;
    if (oom) {
      std::fprintf(stderr,
                   "corral: task %s hit its memory limit: the kernel OOM-killed a process "
                   "in it (REASON_CONTAINER_LIMITATION_MEMORY); it exited with %d\n",
                   run_id.c_str(), code);
    } else if (code != 0) {
      say(o, "task " + run_id + " exited with " + std::to_string(code));
    }
  }
  if (cgroup) {
    if (auto d = cgroup->destroy(); !d.ok()) {
      std::fprintf(stderr, "corral: removing the task's cgroup: %s\n", d.error().message().c_str());
    }
  }
  cleanup_dir();
  return code;
}

}  // namespace corral::cli
