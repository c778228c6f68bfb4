#pragma once
// cgroup v2 for tasks: one cgroup per task, its limits, its events (OOM kills) and usage, its
// teardown. Two backends sit behind CgroupManager; docs/cgroups.md describes the layout under
// /sys/fs/cgroup, which file each limit goes to, the startup check and measured costs.
//
//   cgroupfs  the agent runs in a unit with Delegate=yes; it moves itself into <base>/supervisor
//             and creates <base>/task-<id> beside it.
//   systemd   the agent asks systemd (sd-bus StartTransientUnit) ONCE for a delegated scope,
//             corral.slice/corral-tasks.scope, and then creates task-<id> cgroups inside it the
//             same way. One D-Bus round trip per agent start instead of one per task (~400 ms
//             under TCG, see docs/cgroups.md): the scope is kept alive between tasks by a tiny
//             "keeper" process in <scope>/supervisor.
//
// Task cgroups outlive the manager and the agent: they are removed by TaskCgroup::destroy(), by
// a handle's destructor (unless released), or by CgroupManager::cleanup_stale() after a crash.
// Every call is synchronous and short (file writes in cgroupfs), except open_systemd_manager()
// (one D-Bus round trip) and destroy() (waits for the processes to die); use them off the loop
// or at start. EventWatch gives an fd to poll from an Asio loop.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "corral/common/fd.hpp"
#include "corral/common/result.hpp"
#include "corral/isolator/limits.hpp"

namespace corral::isolator {

enum class CgroupBackend { kCgroupfs, kSystemd };
std::string_view to_string(CgroupBackend backend);

// ---- startup check ----

// What the host offers; gathered without judging (probe never fails because the host is "bad").
struct CgroupHostInfo {
  std::filesystem::path root;               // normally /sys/fs/cgroup
  std::string root_fs_type;                 // "cgroup2fs" on a unified host, "tmpfs" on v1/hybrid
  bool unified = false;                     // root is cgroup2fs
  std::vector<std::string> v1_hierarchies;  // controllers of cgroup v1 mounts (hybrid)
  std::optional<std::filesystem::path> v2_mount;  // where cgroup2 is mounted, if anywhere
  std::set<std::string> v2_root_controllers;      // cgroup.controllers of the v2 root
  std::filesystem::path own_cgroup;               // "0::<path>" of /proc/self/cgroup
  std::set<std::string> own_controllers;          // cgroup.controllers of own_cgroup
  bool systemd_pid1 = false;
  bool has_cgroup_kill = false;  // kernel >= 5.14
};

// Reads /proc/self/mounts, /proc/self/cgroup, /proc/1/comm and cgroup.controllers files.
Result<CgroupHostInfo> probe_cgroup_host(const std::filesystem::path& root = "/sys/fs/cgroup");

// The controllers Corral needs for every task; hugetlb is used when present.
const std::set<std::string>& required_cgroup_controllers();

// Ok when `backend` can isolate tasks on this host. Otherwise an ENOTSUP Error that says what
// was found (file system type, v1 hierarchies, controllers present and missing) and how to fix
// it (boot with systemd.unified_cgroup_hierarchy=1; run the agent under a unit with
// Delegate=yes).
Result<void> check_cgroup_host(const CgroupHostInfo& info, CgroupBackend backend);

// ---- events and usage ----

struct CgroupEvents {
  // memory.events (hierarchical: counts include descendants)
  uint64_t memory_low = 0, memory_high = 0, memory_max = 0, oom = 0, oom_kill = 0,
           oom_group_kill = 0;
  uint64_t pids_max = 0;   // pids.events "max": forks refused at pids.max
  bool populated = false;  // cgroup.events: some process is still in the cgroup (or below)
  bool frozen = false;
  // What the agent reports as REASON_CONTAINER_LIMITATION_MEMORY.
  bool oom_killed() const { return oom_kill > 0 || oom_group_kill > 0; }
};

struct PressureStat {
  double avg10 = 0, avg60 = 0, avg300 = 0;
  uint64_t total_usec = 0;
};
struct Pressure {
  PressureStat some, full;
};
struct IoDeviceStat {
  std::string device;  // "major:minor"
  uint64_t rbytes = 0, wbytes = 0, rios = 0, wios = 0, dbytes = 0, dios = 0;
};

struct CgroupStats {
  // cpu.stat
  uint64_t cpu_usage_usec = 0, cpu_user_usec = 0, cpu_system_usec = 0;
  uint64_t cpu_nr_periods = 0, cpu_nr_throttled = 0, cpu_throttled_usec = 0;
  // memory.current, memory.swap.current, memory.stat (all keys, bytes or counts as the kernel
  // gives them: anon, file, kernel_stack, pgfault, ...)
  uint64_t memory_current = 0;
  std::optional<uint64_t> memory_swap_current;
  std::map<std::string, uint64_t> memory_stat;
  uint64_t pids_current = 0;
  std::vector<IoDeviceStat> io;  // io.stat
  // PSI; absent on kernels booted with psi=0
  std::optional<Pressure> cpu_pressure, memory_pressure, io_pressure;
};

// An inotify fd that becomes readable when memory.events, pids.events or cgroup.events of a task
// cgroup change (the kernel emits IN_MODIFY on these files; no sleep-polling). From Asio:
// wrap a dup() of fd() in a posix::stream_descriptor, async_wait(wait_read), then drain() and
// TaskCgroup::events().
class EventWatch {
 public:
  EventWatch() = default;
  explicit EventWatch(UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }
  // Consumes pending notifications (non-blocking); true if there were any.
  bool drain() const;
  // Waits up to `timeout` for a notification; true if one came.
  Result<bool> wait(std::chrono::milliseconds timeout) const;

 private:
  UniqueFd fd_;
};

// ---- task cgroups ----

class TaskCgroup {
 public:
  virtual ~TaskCgroup() = default;
  virtual const std::string& task_id() const = 0;
  // Absolute path, e.g. /sys/fs/cgroup/corral.slice/corral-tasks.scope/task-web.1
  virtual const std::filesystem::path& path() const = 0;
  // An O_DIRECTORY fd of the cgroup for clone3(CLONE_INTO_CGROUP): the launcher starts inside.
  virtual Result<UniqueFd> open_directory() const = 0;
  // Moves process `pid` (all its threads) into the cgroup.
  virtual Result<void> attach(pid_t pid) = 0;
  virtual Result<std::vector<pid_t>> pids() const = 0;
  // Rewrites the limits (e.g. a task's resources were changed).
  virtual Result<void> update(const ResourceLimits& limits) = 0;
  virtual Result<CgroupStats> stats() const = 0;
  virtual Result<CgroupEvents> events() const = 0;
  virtual Result<EventWatch> watch_events() const = 0;
  // SIGKILLs every process in the cgroup (cgroup.kill; freeze + kill on kernels without it).
  // Returns without waiting.
  virtual Result<void> kill() = 0;
  // kill(), wait until the cgroup is empty (up to `timeout`), remove it. After success the
  // handle owns nothing.
  virtual Result<void> destroy(std::chrono::milliseconds timeout = std::chrono::seconds(10)) = 0;
  // Gives up ownership: the destructor will leave the cgroup (and its processes) alone. The agent
  // does this on a clean shutdown that keeps tasks running; a later adopt() takes it back.
  virtual void release() = 0;
};

struct TaskCgroupInfo {
  std::string task_id;
  std::filesystem::path path;
  bool populated = false;  // false: every process of the task is gone
};

class CgroupManager {
 public:
  virtual ~CgroupManager() = default;
  virtual CgroupBackend backend() const = 0;
  // The directory that holds supervisor/ and the task-<id> cgroups.
  virtual const std::filesystem::path& base() const = 0;
  // Controllers enabled for task cgroups (a subset of cpu cpuset io memory pids hugetlb).
  virtual const std::set<std::string>& controllers() const = 0;
  // Creates task-<id> with `limits` applied. EEXIST if a cgroup for task_id exists already.
  // The returned handle removes the cgroup when it dies unless release()d.
  virtual Result<std::unique_ptr<TaskCgroup>> create(const std::string& task_id,
                                                     const ResourceLimits& limits) = 0;
  // A handle on an existing task cgroup (after an agent restart). ENOENT if there is none.
  virtual Result<std::unique_ptr<TaskCgroup>> adopt(const std::string& task_id) = 0;
  virtual Result<std::vector<TaskCgroupInfo>> list() const = 0;
  // Removes the task cgroups whose processes are all gone (left behind by a crashed agent) and
  // returns their task ids. Populated ones (running tasks) are left for adopt().
  virtual Result<std::vector<std::string>> cleanup_stale() = 0;
};

struct CgroupfsOptions {
  // The delegated cgroup to manage (absolute path under the v2 mount). Default: the cgroup this
  // process is in, or its parent when that is already a "supervisor" leaf (a restarted agent).
  std::optional<std::filesystem::path> base;
  // Move this process into <base>/supervisor (needed before controllers can be enabled in
  // <base>/cgroup.subtree_control: "no internal processes"). Default on.
  bool move_self_to_supervisor = true;
  // Tests: tear down by freeze + SIGKILL even where cgroup.kill exists.
  bool force_freeze_kill = false;
};
Result<std::unique_ptr<CgroupManager>> open_cgroupfs_manager(const CgroupfsOptions& options = {});

struct SystemdOptions {
  std::string slice = "corral.slice";
  std::string scope = "corral-tasks.scope";
  std::chrono::milliseconds job_timeout = std::chrono::seconds(30);
  bool force_freeze_kill = false;  // tests, as in CgroupfsOptions
};
// Connects to the system bus; reuses the scope if it exists (agent restart: running tasks stay),
// otherwise starts it with StartTransientUnit and waits for its job (JobRemoved).
Result<std::unique_ptr<CgroupManager>> open_systemd_manager(const SystemdOptions& options = {});

// ---- transient scopes (sd-bus) ----

// StartTransientUnit for a scope holding `pid`: Slice=, Delegate=yes, CPU/Memory/IO/Tasks
// accounting, CollectMode=inactive-or-failed, PIDFDs= (PIDs= on systemd < 253); waits for the
// job's JobRemoved signal. Used once by the systemd backend; exposed so the per-task alternative
// can be measured (docs/cgroups.md).
struct TransientScope {
  std::string name;   // "x.scope"
  std::string slice;  // "corral.slice"
  pid_t pid = -1;
  std::string description;
  std::chrono::milliseconds job_timeout = std::chrono::seconds(30);
};
Result<void> start_transient_scope(const TransientScope& scope);

// ---- pure helpers (exposed for tests and fakes) ----

// One value for one cgroup interface file, e.g. {"memory", "memory.max", "268435456"}.
struct CgroupFileValue {
  std::string controller;
  std::string file;
  std::string value;
  bool operator==(const CgroupFileValue&) const = default;
};
// The files and values that implement `limits` (docs/cgroups.md has the table).
std::vector<CgroupFileValue> cgroup_files_for(const ResourceLimits& limits);

// Task ids are arbitrary strings; cgroup names may not contain '/' and must not look like
// interface files. task-<escaped>: bytes outside [A-Za-z0-9.-] become _XX (hex).
std::string task_cgroup_name(std::string_view task_id);
// Inverse of task_cgroup_name; nullopt for names that are not task cgroups.
std::optional<std::string> task_id_from_cgroup_name(std::string_view name);

// Parsers of the kernel's formats.
Result<std::map<std::string, uint64_t>> parse_flat_keyed(std::string_view text);  // "key value\n"
CgroupEvents events_from(const std::map<std::string, uint64_t>& memory_events,
                         const std::map<std::string, uint64_t>& pids_events,
                         const std::map<std::string, uint64_t>& cgroup_events);
Result<Pressure> parse_pressure(std::string_view text);
Result<std::vector<IoDeviceStat>> parse_io_stat(std::string_view text);
// "0::/system.slice/x.service\n" -> "/system.slice/x.service"
Result<std::filesystem::path> parse_proc_self_cgroup(std::string_view text);

}  // namespace corral::isolator
