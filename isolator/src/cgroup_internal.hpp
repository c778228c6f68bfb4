#pragma once
// Shared by the cgroupfs and systemd backends: both end with a delegated directory (the "base")
// that holds supervisor/ and the task-<id> cgroups, managed the same way.

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "corral/isolator/cgroup.hpp"

namespace corral::isolator::detail {

struct TreeConfig {
  CgroupBackend backend = CgroupBackend::kCgroupfs;
  std::filesystem::path mount;  // the cgroup2 mount, /sys/fs/cgroup
  std::filesystem::path base;   // absolute
  std::set<std::string> controllers;
  bool force_freeze_kill = false;
};

// create/adopt/list/cleanup_stale over a prepared base.
std::unique_ptr<CgroupManager> make_tree_manager(TreeConfig config);

// Makes <base>/supervisor, moves `move_pid` (if > 0) into it, and enables every supported
// controller that <base>/cgroup.controllers offers in <base>/cgroup.subtree_control.
// Returns the enabled controllers.
Result<std::set<std::string>> prepare_base(const std::filesystem::path& base, pid_t move_pid);

// libcgroup wrappers (paths are absolute; libcgroup wants them relative to the mount).
Result<void> libcgroup_init();
Result<void> lcg_create(const std::filesystem::path& mount, const std::filesystem::path& dir,
                        const std::set<std::string>& controllers);
Result<void> lcg_attach(const std::filesystem::path& mount, const std::filesystem::path& dir,
                        pid_t pid, const std::set<std::string>& controllers);
// Writes `pid` to <dir>/cgroup.procs directly (for cgroups without controllers, see lcg_attach).
Result<void> move_to_cgroup(const std::filesystem::path& dir, pid_t pid);
// Reads a whole interface file through libcgroup's value iterator.
Result<std::string> lcg_read(const std::filesystem::path& mount, const std::filesystem::path& dir,
                             const std::string& controller, const std::string& file);

// Pids in cgroup.procs of `dir` (not descendants).
Result<std::vector<pid_t>> read_procs(const std::filesystem::path& dir);
Result<CgroupEvents> read_events_of(const std::filesystem::path& dir);

}  // namespace corral::isolator::detail
