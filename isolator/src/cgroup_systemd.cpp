// The systemd backend: one delegated transient scope for all of an agent's tasks.
//
// Why one scope and not one per task: a StartTransientUnit round trip (D-Bus call, systemd
// creating the unit and its cgroup, the job finishing, JobRemoved) costs about 400 ms per task
// under TCG (the runc/crun measurements; docs/cgroups.md has ours), more than the whole
// launch budget. So the agent pays it once, at start: corral.slice/corral-tasks.scope with
// Delegate=yes, and then makes task-<id> cgroups inside it with plain cgroupfs operations, exactly
// like the cgroupfs backend does in its delegated unit. systemd still accounts, shows and can stop
// the whole set (systemctl status corral-tasks.scope); per-task units are what we give up.
//
// A scope needs a process when it is started and is stopped by systemd when it becomes empty, so
// a tiny "keeper" process (double-forked, all fds closed, pause() forever) lives in
// <scope>/supervisor. It keeps the scope, and with it the running tasks' cgroups, alive across an
// agent crash; a restarted agent finds the scope and reuses it (a new keeper if the old one died).
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "cgroup_internal.hpp"
#include "corral/common/log.hpp"
#include "corral/common/sd_bus_raii.hpp"

namespace corral::isolator {
namespace fs = std::filesystem;

namespace {

using sdbus::BusError;
using sdbus::BusPtr;
using sdbus::MessagePtr;
using sdbus::SlotPtr;

Error bus_error(int r, const std::string& what, const BusError* err = nullptr) {
  std::string msg = what + ": ";
  if (err && sd_bus_error_is_set(&err->e)) {
    msg += std::string(err->e.message ? err->e.message : "") + " [" + err->e.name + "]";
  } else {
    msg += std::strerror(-r);
  }
  return Error(-r, msg);
}

struct JobWait {
  std::string job;
  std::string result;
  bool done = false;
};

int on_job_removed(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* w = static_cast<JobWait*>(userdata);
  uint32_t id = 0;
  const char *path = nullptr, *unit = nullptr, *result = nullptr;
  if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0) return 0;
  if (!w->job.empty() && w->job == path) {
    w->result = result;
    w->done = true;
  }
  return 0;
}

// systemd < 253 has no PIDFDs= property (Debian 12 ships 252); remember once we learnt that.
std::atomic<bool> g_pidfds_unsupported{false};

Result<MessagePtr> build_start(sd_bus* bus, const TransientScope& s, bool use_pidfd, int pidfd) {
  sd_bus_message* raw = nullptr;
  int r = sd_bus_message_new_method_call(bus, &raw, "org.freedesktop.systemd1",
                                         "/org/freedesktop/systemd1",
                                         "org.freedesktop.systemd1.Manager", "StartTransientUnit");
  if (r < 0) return bus_error(r, "building StartTransientUnit");
  MessagePtr m(raw);
  std::string desc = s.description.empty() ? "Corral tasks" : s.description;
  r = sd_bus_message_append(m.get(), "ss", s.name.c_str(), "fail");
  if (r >= 0) r = sd_bus_message_open_container(m.get(), 'a', "(sv)");
  if (r >= 0) r = sd_bus_message_append(m.get(), "(sv)", "Description", "s", desc.c_str());
  if (r >= 0 && !s.slice.empty()) {
    r = sd_bus_message_append(m.get(), "(sv)", "Slice", "s", s.slice.c_str());
  }
  for (const char* p :
       {"Delegate", "CPUAccounting", "MemoryAccounting", "IOAccounting", "TasksAccounting"}) {
    if (r >= 0) r = sd_bus_message_append(m.get(), "(sv)", p, "b", 1);
  }
  if (r >= 0) {
    r = sd_bus_message_append(m.get(), "(sv)", "CollectMode", "s", "inactive-or-failed");
  }
  if (r >= 0) {
    r = use_pidfd
            ? sd_bus_message_append(m.get(), "(sv)", "PIDFDs", "ah", 1, pidfd)
            : sd_bus_message_append(m.get(), "(sv)", "PIDs", "au", 1, static_cast<uint32_t>(s.pid));
  }
  if (r >= 0) r = sd_bus_message_close_container(m.get());
  if (r >= 0) r = sd_bus_message_append(m.get(), "a(sa(sv))", 0);
  if (r < 0) return bus_error(r, "building StartTransientUnit");
  return m;
}

// Forks a keeper: a process that only waits, with no fds of ours, reparented away from us (double
// fork) so that we never have to reap it. Returns its pid.
Result<pid_t> spawn_keeper() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Error::from_errno("pipe2");
  UniqueFd rd(fds[0]), wr(fds[1]);
  pid_t mid = ::fork();
  if (mid < 0) return Error::from_errno("fork (scope keeper)");
  if (mid == 0) {
    // Only async-signal-safe calls below: the agent may have threads.
    ::setsid();
    pid_t keeper = ::fork();
    if (keeper == 0) {
      sigset_t all;
      sigemptyset(&all);
      sigprocmask(SIG_SETMASK, &all, nullptr);
      for (int sig : {SIGTERM, SIGINT, SIGHUP}) signal(sig, SIG_DFL);
      prctl(PR_SET_NAME, "corral-keeper", 0, 0, 0);
      ::syscall(SYS_close_range, 0U, ~0U, 0U);
      for (;;) ::pause();
    }
    (void)!::write(fds[1], &keeper, sizeof keeper);
    ::_exit(keeper > 0 ? 0 : 1);
  }
  wr.reset();
  int status = 0;
  ::waitpid(mid, &status, 0);
  pid_t keeper = -1;
  if (::read(rd.get(), &keeper, sizeof keeper) != sizeof keeper || keeper <= 0) {
    return Error(ECHILD, "could not start the scope keeper process");
  }
  return keeper;
}

}  // namespace

Result<void> start_transient_scope(const TransientScope& s) {
  sd_bus* raw = nullptr;
  int r = sd_bus_open_system(&raw);
  if (r < 0) {
    return bus_error(r,
                     "connecting to the system bus (is dbus running? the systemd backend "
                     "needs it; the cgroupfs backend does not)");
  }
  BusPtr bus(raw);
  JobWait wait;
  sd_bus_slot* slot_raw = nullptr;
  // Match before the call: the job can finish before StartTransientUnit's reply is read.
  r = sd_bus_match_signal(bus.get(), &slot_raw, "org.freedesktop.systemd1",
                          "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                          "JobRemoved", on_job_removed, &wait);
  if (r < 0) return bus_error(r, "subscribing to JobRemoved");
  SlotPtr slot(slot_raw);

  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, s.pid, 0)));
  sd_bus_message* reply_raw = nullptr;
  BusError err;
  bool use_pidfd = pidfd.valid() && !g_pidfds_unsupported.load();
  while (true) {
    CORRAL_ASSIGN_OR_RETURN(auto m, build_start(bus.get(), s, use_pidfd, pidfd.get()));
    r = sd_bus_call(bus.get(), m.get(), 0, &err.e, &reply_raw);
    if (r >= 0) break;
    if (use_pidfd && (sd_bus_error_has_name(&err.e, SD_BUS_ERROR_PROPERTY_READ_ONLY) ||
                      sd_bus_error_has_name(&err.e, SD_BUS_ERROR_INVALID_ARGS) ||
                      sd_bus_error_has_name(&err.e, SD_BUS_ERROR_UNKNOWN_PROPERTY))) {
      g_pidfds_unsupported = true;
      use_pidfd = false;
      sd_bus_error_free(&err.e);
      continue;
    }
    return bus_error(r, "StartTransientUnit " + s.name, &err);
  }
  MessagePtr reply(reply_raw);
  const char* job = nullptr;
  r = sd_bus_message_read(reply.get(), "o", &job);
  if (r < 0) return bus_error(r, "reading StartTransientUnit's reply");
  wait.job = job;

  auto deadline = std::chrono::steady_clock::now() + s.job_timeout;
  while (!wait.done) {
    r = sd_bus_process(bus.get(), nullptr);
    if (r < 0) return bus_error(r, "waiting for the job of " + s.name);
    if (r > 0) continue;
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Error(ETIMEDOUT, "systemd did not finish the start job of " + s.name + " within " +
                                  std::to_string(s.job_timeout.count()) + " ms");
    }
    r = sd_bus_wait(bus.get(), static_cast<uint64_t>(left.count()));
    if (r < 0) return bus_error(r, "waiting for the job of " + s.name);
  }
  if (wait.result != "done") {
    return Error(EIO, "systemd's start job for " + s.name + " ended with result \"" + wait.result +
                          "\"; see journalctl -u " + s.name);
  }
  return ok();
}

Result<std::unique_ptr<CgroupManager>> open_systemd_manager(const SystemdOptions& options) {
  CORRAL_ASSIGN_OR_RETURN(auto info, probe_cgroup_host());
  CORRAL_TRY(check_cgroup_host(info, CgroupBackend::kSystemd));
  if (!info.systemd_pid1) {
    return Error(ENOTSUP, "the systemd cgroup backend needs systemd as PID 1 (found \"" +
                              read_file("/proc/1/comm").value_or("?") +
                              "\"); use the cgroupfs backend");
  }
  const fs::path mount = *info.v2_mount;
  const fs::path scope_dir = mount / options.slice / options.scope;
  bool reuse = false;
  if (fs::is_directory(scope_dir)) {
    auto e = detail::read_events_of(scope_dir);
    reuse = e.ok() && e->populated;
  }
  pid_t keeper_to_move = 0;
  if (!reuse) {
    CORRAL_ASSIGN_OR_RETURN(pid_t keeper, spawn_keeper());
    TransientScope scope{options.scope, options.slice, keeper, "Corral tasks", options.job_timeout};
    if (auto r = start_transient_scope(scope); !r.ok()) {
      ::kill(keeper, SIGKILL);
      return std::move(r).error().context("starting " + options.scope);
    }
    keeper_to_move = keeper;
  } else {
    // A restarted agent: the scope lives on. Give it a new keeper if the old one is gone.
    auto procs = detail::read_procs(scope_dir / "supervisor");
    if (!procs.ok() || procs->empty()) {
      CORRAL_ASSIGN_OR_RETURN(keeper_to_move, spawn_keeper());
    }
    log::info("reusing " + scope_dir.string() + " (tasks of a previous agent may still run)");
  }
  CORRAL_ASSIGN_OR_RETURN(auto controllers, detail::prepare_base(scope_dir, keeper_to_move));
  return detail::make_tree_manager({CgroupBackend::kSystemd, mount, scope_dir,
                                    std::move(controllers), options.force_freeze_kill});
}

}  // namespace corral::isolator
