// Task cgroups in a delegated directory, and the cgroupfs backend.
//
// libcgroup 2.0 does the parts it does correctly on cgroup v2: creating a group with its
// controllers, writing limit values (cgroup_modify_cgroup), attaching a process, reading
// controller files (cgroup_read_value_*), removing a group. Written directly against cgroupfs,
// because libcgroup 2.0's public API has no call for them:
//   - cgroup.kill and cgroup.freeze (teardown),
//   - cgroup.events / memory.events / pids.events and their inotify notification,
//   - cgroup.subtree_control of the base (libcgroup only enables controllers as a side effect of
//     creating a child, walking from the hierarchy root down - see lcg_create),
//   - cgroup.procs listing and the directory scan of list()/cleanup_stale(),
//   - making and joining supervisor/, a cgroup without controllers: libcgroup 2.0.2 silently does
//     nothing for those (see lcg_attach).
#include <fcntl.h>
#include <libcgroup.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <sstream>

#include "cgroup_internal.hpp"
#include "corral/common/log.hpp"

namespace corral::isolator {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace detail {
namespace {

const std::set<std::string>& supported_controllers() {
  static const std::set<std::string> kSupported{"cpu", "cpuset", "io", "memory", "pids", "hugetlb"};
  return kSupported;
}

struct CgroupFree {
  void operator()(struct cgroup* cg) const { cgroup_free(&cg); }
};
using CgroupPtr = std::unique_ptr<struct cgroup, CgroupFree>;

Error lcg_error(int rc, const std::string& what) {
  int err = rc == ECGOTHER ? cgroup_get_last_errno() : 0;
  std::string msg = what + ": " + cgroup_strerror(rc);
  if (err != 0) msg += " (" + std::string(std::strerror(err)) + ")";
  return Error(err != 0 ? err : EIO, msg);
}

std::string lcg_name(const fs::path& mount, const fs::path& dir) {
  return "/" + dir.lexically_relative(mount).string();
}

// Writes one value to one cgroup interface file (no temp file + rename: cgroupfs has none).
Result<void> write_cg(const fs::path& file, std::string_view value) {
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return Error::from_errno("open " + file.string());
  if (::write(fd.get(), value.data(), value.size()) < 0) {
    return Error::from_errno("write \"" + std::string(value) + "\" to " + file.string());
  }
  return ok();
}

Result<std::set<std::string>> read_words(const fs::path& file) {
  CORRAL_ASSIGN_OR_RETURN(auto text, read_file(file));
  std::set<std::string> out;
  std::istringstream in(text);
  std::string w;
  while (in >> w) out.insert(w);
  return out;
}

Result<std::map<std::string, uint64_t>> read_keyed(const fs::path& file) {
  auto text = read_file(file);
  if (!text.ok()) {
    if (text.error().code() == ENOENT) return std::map<std::string, uint64_t>{};
    return std::move(text).error();
  }
  auto parsed = parse_flat_keyed(*text);
  if (!parsed.ok()) return std::move(parsed).error().context(file.string());
  return parsed;
}

}  // namespace

Result<void> libcgroup_init() {
  static std::once_flag once;
  static int rc = 0;
  std::call_once(once, [] {
    // libcgroup logs to stdout by default; Corral logs its own errors.
    cgroup_set_logger(nullptr, 0, nullptr);
    rc = cgroup_init();
  });
  if (rc != 0) return lcg_error(rc, "libcgroup cgroup_init");
  return ok();
}

// libcgroup 2.0's cgroup_create_cgroup() enables each controller in cgroup.subtree_control of
// EVERY ancestor from the hierarchy root down to the parent (cgroupv2_subtree_control_recursive),
// not just in the delegated base. As root with controllers the base already has, these writes are
// no-ops (the ancestors must have them enabled for the base to list them); an unprivileged
// delegated agent could not create groups with it at all. prepare_base() enables the base's
// controllers itself, so that libcgroup's walk only confirms them.
Result<void> lcg_create(const fs::path& mount, const fs::path& dir,
                        const std::set<std::string>& controllers) {
  CORRAL_TRY(libcgroup_init());
  CgroupPtr cg(cgroup_new_cgroup(lcg_name(mount, dir).c_str()));
  if (!cg) return Error(ENOMEM, "cgroup_new_cgroup " + dir.string());
  for (const auto& c : controllers) {
    if (!cgroup_add_controller(cg.get(), c.c_str())) {
      return Error(EINVAL, "cgroup_add_controller " + c + " for " + dir.string());
    }
  }
  int rc = cgroup_create_cgroup(cg.get(), /*ignore_ownership=*/1);
  if (rc != 0) return lcg_error(rc, "creating cgroup " + dir.string());
  return ok();
}

// `controllers` must be the cgroup's controllers. libcgroup 2.0.2 (Debian 12) works per
// controller of the struct cgroup: cgroup_create_cgroup(), cgroup_attach_task_pid() and
// cgroup_delete_cgroup_ext() on a struct with no controllers do nothing and return 0 (guest test
// LibcgroupQuirks.GroupWithoutControllersIsASilentNoOp), although such cgroups are normal on v2.
// So supervisor/ (no controllers) is made with mkdir() and joined with move_to_cgroup().
Result<void> lcg_attach(const fs::path& mount, const fs::path& dir, pid_t pid,
                        const std::set<std::string>& controllers) {
  if (controllers.empty()) return move_to_cgroup(dir, pid);
  CORRAL_TRY(libcgroup_init());
  CgroupPtr cg(cgroup_new_cgroup(lcg_name(mount, dir).c_str()));
  if (!cg) return Error(ENOMEM, "cgroup_new_cgroup " + dir.string());
  for (const auto& c : controllers) {
    if (!cgroup_add_controller(cg.get(), c.c_str())) {
      return Error(EINVAL, "cgroup_add_controller " + c + " for " + dir.string());
    }
  }
  int rc = cgroup_attach_task_pid(cg.get(), pid);
  if (rc != 0) {
    return lcg_error(rc, "moving process " + std::to_string(pid) + " into " + dir.string());
  }
  return ok();
}

Result<void> move_to_cgroup(const fs::path& dir, pid_t pid) {
  return write_cg(dir / "cgroup.procs", std::to_string(pid));
}

Result<std::string> lcg_read(const fs::path& mount, const fs::path& dir,
                             const std::string& controller, const std::string& file) {
  CORRAL_TRY(libcgroup_init());
  std::string rel = lcg_name(mount, dir);
  std::string name = file;
  void* handle = nullptr;
  char buf[4096];
  std::string out;
  int rc = cgroup_read_value_begin(controller.c_str(), rel.c_str(), name.data(), &handle, buf,
                                   sizeof buf);
  while (rc == 0) {
    out += buf;
    rc = cgroup_read_value_next(&handle, buf, sizeof buf);
  }
  if (handle) cgroup_read_value_end(&handle);
  if (rc != ECGEOF) return lcg_error(rc, "reading " + (dir / file).string());
  return out;
}

Result<std::vector<pid_t>> read_procs(const fs::path& dir) {
  CORRAL_ASSIGN_OR_RETURN(auto text, read_file(dir / "cgroup.procs"));
  std::vector<pid_t> out;
  std::istringstream in(text);
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

Result<CgroupEvents> read_events_of(const fs::path& dir) {
  CORRAL_ASSIGN_OR_RETURN(auto mem, read_keyed(dir / "memory.events"));
  CORRAL_ASSIGN_OR_RETURN(auto pids, read_keyed(dir / "pids.events"));
  CORRAL_ASSIGN_OR_RETURN(auto cg, read_keyed(dir / "cgroup.events"));
  if (cg.empty()) return Error(ENOENT, "no cgroup.events in " + dir.string());
  return events_from(mem, pids, cg);
}

Result<std::set<std::string>> prepare_base(const fs::path& base, pid_t move_pid) {
  const fs::path supervisor = base / "supervisor";
  // supervisor/ has no controllers, which libcgroup 2.0.2 cannot create (see lcg_attach).
  if (::mkdir(supervisor.c_str(), 0755) != 0 && errno != EEXIST) {
    return Error::from_errno("mkdir " + supervisor.string());
  }
  if (move_pid > 0) {
    auto r = move_to_cgroup(supervisor, move_pid);
    if (!r.ok()) return std::move(r).error().context("moving into the supervisor leaf");
  }
  CORRAL_ASSIGN_OR_RETURN(auto offered, read_words(base / "cgroup.controllers"));
  std::set<std::string> use;
  std::string enable;
  for (const auto& c : offered) {
    if (!supported_controllers().count(c)) continue;
    use.insert(c);
    enable += (enable.empty() ? "+" : " +") + c;
  }
  if (!enable.empty()) {
    auto r = write_cg(base / "cgroup.subtree_control", enable);
    if (!r.ok()) {
      std::string msg = r.error().message();
      if (r.error().code() == EBUSY) {
        auto procs = read_procs(base);
        std::string list;
        if (procs.ok()) {
          for (pid_t p : *procs) list += " " + std::to_string(p);
        }
        msg += ": processes are still in " + base.string() + " itself (pids" + list +
               "); cgroup v2 allows no processes beside child cgroups that use controllers. Run "
               "the agent as the only process of its Delegate=yes unit";
      }
      return Error(r.error().code(), msg);
    }
  }
  return use;
}

namespace {

class FsTaskCgroup final : public TaskCgroup {
 public:
  FsTaskCgroup(const TreeConfig& config, std::string task_id, fs::path path)
      : mount_(config.mount),
        controllers_(config.controllers),
        force_freeze_kill_(config.force_freeze_kill),
        task_id_(std::move(task_id)),
        path_(std::move(path)) {}

  ~FsTaskCgroup() override {
    if (!owned_) return;
    if (auto r = destroy(10s); !r.ok()) {
      log::error("cannot remove task cgroup: " + r.error().to_string(),
                 {{"CORRAL_TASK_ID", task_id_}});
    }
  }

  const std::string& task_id() const override { return task_id_; }
  const fs::path& path() const override { return path_; }

  Result<UniqueFd> open_directory() const override {
    UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return Error::from_errno("open " + path_.string());
    return fd;
  }

  Result<void> attach(pid_t pid) override { return lcg_attach(mount_, path_, pid, controllers_); }

  Result<std::vector<pid_t>> pids() const override { return read_procs(path_); }

  Result<void> update(const ResourceLimits& limits) override {
    CORRAL_TRY(libcgroup_init());
    // One cgroup_modify_cgroup() per file, so that an error names the file and the value.
    // Several values for one file (io.max: one line per device) are written one by one.
    for (const auto& v : cgroup_files_for(limits)) {
      if (!controllers_.count(v.controller)) {
        return Error(ENOTSUP, "cannot set " + v.file + ": the " + v.controller +
                                  " controller is not enabled for task cgroups (enabled: " +
                                  join_set(controllers_) + ")");
      }
      CgroupPtr cg(cgroup_new_cgroup(lcg_name(mount_, path_).c_str()));
      if (!cg) return Error(ENOMEM, "cgroup_new_cgroup");
      struct cgroup_controller* ctrl = cgroup_add_controller(cg.get(), v.controller.c_str());
      if (!ctrl) return Error(EINVAL, "cgroup_add_controller " + v.controller);
      int rc = cgroup_add_value_string(ctrl, v.file.c_str(), v.value.c_str());
      if (rc == 0) rc = cgroup_modify_cgroup(cg.get());
      if (rc != 0) {
        return lcg_error(rc, "setting " + v.file + " = \"" + v.value + "\" in " + path_.string());
      }
    }
    return ok();
  }

  Result<CgroupStats> stats() const override {
    CgroupStats s;
    auto keyed = [&](const std::string& controller,
                     const std::string& file) -> Result<std::map<std::string, uint64_t>> {
      CORRAL_ASSIGN_OR_RETURN(auto text, lcg_read(mount_, path_, controller, file));
      auto m = parse_flat_keyed(text);
      if (!m.ok()) return std::move(m).error().context(file);
      return m;
    };
    CORRAL_ASSIGN_OR_RETURN(auto cpu, keyed("cpu", "cpu.stat"));
    auto g = [](const std::map<std::string, uint64_t>& m, const char* k) {
      auto it = m.find(k);
      return it == m.end() ? uint64_t{0} : it->second;
    };
    s.cpu_usage_usec = g(cpu, "usage_usec");
    s.cpu_user_usec = g(cpu, "user_usec");
    s.cpu_system_usec = g(cpu, "system_usec");
    s.cpu_nr_periods = g(cpu, "nr_periods");
    s.cpu_nr_throttled = g(cpu, "nr_throttled");
    s.cpu_throttled_usec = g(cpu, "throttled_usec");
    if (controllers_.count("memory")) {
      CORRAL_ASSIGN_OR_RETURN(auto cur, lcg_read(mount_, path_, "memory", "memory.current"));
      s.memory_current = std::strtoull(cur.c_str(), nullptr, 10);
      if (auto sw = lcg_read(mount_, path_, "memory", "memory.swap.current"); sw.ok()) {
        s.memory_swap_current = std::strtoull(sw->c_str(), nullptr, 10);
      }
      CORRAL_ASSIGN_OR_RETURN(s.memory_stat, keyed("memory", "memory.stat"));
    }
    if (controllers_.count("pids")) {
      CORRAL_ASSIGN_OR_RETURN(auto cur, lcg_read(mount_, path_, "pids", "pids.current"));
      s.pids_current = std::strtoull(cur.c_str(), nullptr, 10);
    }
    if (controllers_.count("io")) {
      CORRAL_ASSIGN_OR_RETURN(auto text, lcg_read(mount_, path_, "io", "io.stat"));
      CORRAL_ASSIGN_OR_RETURN(s.io, parse_io_stat(text));
    }
    // PSI files are core cgroup files (present without their controllers); read directly.
    auto psi = [&](const char* file) -> std::optional<Pressure> {
      auto text = read_file(path_ / file);
      if (!text.ok()) return std::nullopt;
      auto p = parse_pressure(*text);
      return p.ok() ? std::optional<Pressure>(*p) : std::nullopt;
    };
    s.cpu_pressure = psi("cpu.pressure");
    s.memory_pressure = psi("memory.pressure");
    s.io_pressure = psi("io.pressure");
    return s;
  }

  Result<CgroupEvents> events() const override { return read_events_of(path_); }

  Result<EventWatch> watch_events() const override {
    UniqueFd fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!fd) return Error::from_errno("inotify_init1");
    for (const char* f : {"cgroup.events", "memory.events", "pids.events"}) {
      fs::path p = path_ / f;
      if (::inotify_add_watch(fd.get(), p.c_str(), IN_MODIFY) < 0 &&
          (errno != ENOENT || std::strcmp(f, "cgroup.events") == 0)) {
        return Error::from_errno("inotify_add_watch " + p.string());
      }
    }
    return EventWatch(std::move(fd));
  }

  Result<void> kill() override {
    if (!force_freeze_kill_) {
      // cgroup.kill (Linux 5.14): one write SIGKILLs every process in the subtree, race-free
      // against forks. Not in libcgroup 2.0's API.
      auto r = write_cg(path_ / "cgroup.kill", "1");
      if (r.ok() || r.error().code() != ENOENT) return r;
    }
    return freeze_and_kill();
  }

  Result<void> destroy(std::chrono::milliseconds timeout) override {
    if (!fs::exists(path_)) {
      owned_ = false;
      return ok();
    }
    CORRAL_TRY(kill());
    CORRAL_TRY(wait_empty(timeout));
    CORRAL_TRY(remove());
    owned_ = false;
    return ok();
  }

  void release() override { owned_ = false; }

 private:
  static std::string join_set(const std::set<std::string>& s) {
    std::string out;
    for (const auto& x : s) out += (out.empty() ? "" : " ") + x;
    return out;
  }

  // Kernels before 5.14: freeze the cgroup so nothing forks while we look, SIGKILL every pid
  // (a fatal signal reaches frozen processes), thaw.
  Result<void> freeze_and_kill() {
    CORRAL_TRY(write_cg(path_ / "cgroup.freeze", "1"));
    auto watch = watch_events();
    auto deadline = std::chrono::steady_clock::now() + 2s;
    while (true) {
      auto e = events();
      if (!e.ok() || e->frozen || !e->populated) break;
      if (std::chrono::steady_clock::now() > deadline) break;
      if (watch.ok()) {
        (void)watch->wait(100ms);
        watch->drain();
      }
    }
    for (const auto& entry : fs::recursive_directory_iterator(path_)) {
      if (entry.is_directory()) kill_procs_in(entry.path());
    }
    kill_procs_in(path_);
    return write_cg(path_ / "cgroup.freeze", "0");
  }

  static void kill_procs_in(const fs::path& dir) {
    auto procs = read_procs(dir);
    if (!procs.ok()) return;
    for (pid_t p : *procs) ::kill(p, SIGKILL);
  }

  Result<void> wait_empty(std::chrono::milliseconds timeout) {
    CORRAL_ASSIGN_OR_RETURN(auto watch, watch_events());
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      CORRAL_ASSIGN_OR_RETURN(auto e, events());
      if (!e.populated) return ok();
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left <= 0ms) {
        auto procs = read_procs(path_);
        std::string list;
        if (procs.ok()) {
          for (pid_t p : *procs) list += " " + std::to_string(p);
        }
        return Error(ETIMEDOUT, "processes of task " + task_id_ + " still in " + path_.string() +
                                    " " + std::to_string(timeout.count()) +
                                    " ms after SIGKILL (pids" + list +
                                    "; stuck in uninterruptible sleep?)");
      }
      CORRAL_TRY(watch.wait(std::min(left, 200ms)));
      watch.drain();
    }
  }

  Result<void> remove() {
    CORRAL_TRY(libcgroup_init());
    CgroupPtr cg(cgroup_new_cgroup(lcg_name(mount_, path_).c_str()));
    if (!cg) return Error(ENOMEM, "cgroup_new_cgroup");
    // Exactly one controller: with none libcgroup 2.0.2 deletes nothing (see lcg_attach); with
    // several it removes the directory for the first and then fails with ENOENT for the next,
    // because it treats each controller as its own v1 hierarchy although on v2 they share one
    // directory (guest test LibcgroupQuirks.DeleteWithSeveralControllersFailsAfterRemoving).
    const std::string one = controllers_.count("memory") ? "memory" : *controllers_.begin();
    if (!cgroup_add_controller(cg.get(), one.c_str())) {
      return Error(EINVAL, "cgroup_add_controller " + one);
    }
    // IGNORE_MIGRATION: on v1 libcgroup moves remaining tasks to the parent first; on v2 there
    // are none left (and no "tasks" file). RECURSIVE: a task may have made sub-cgroups.
    int rc = cgroup_delete_cgroup_ext(cg.get(),
                                      CGFLAG_DELETE_IGNORE_MIGRATION | CGFLAG_DELETE_RECURSIVE);
    if (rc != 0) return lcg_error(rc, "removing cgroup " + path_.string());
    if (fs::exists(path_)) {
      return Error(EIO, "libcgroup reported " + path_.string() + " removed but it still exists");
    }
    return ok();
  }

  fs::path mount_;
  std::set<std::string> controllers_;
  bool force_freeze_kill_;
  std::string task_id_;
  fs::path path_;
  bool owned_ = true;
};

class TreeManager final : public CgroupManager {
 public:
  explicit TreeManager(TreeConfig config) : config_(std::move(config)) {}

  CgroupBackend backend() const override { return config_.backend; }
  const fs::path& base() const override { return config_.base; }
  const std::set<std::string>& controllers() const override { return config_.controllers; }

  Result<std::unique_ptr<TaskCgroup>> create(const std::string& task_id,
                                             const ResourceLimits& limits) override {
    if (task_id.empty()) return Error(EINVAL, "a task cgroup needs a non-empty task id");
    fs::path dir = config_.base / task_cgroup_name(task_id);
    if (fs::exists(dir)) {
      return Error(EEXIST, "a cgroup for task " + task_id + " exists already (" + dir.string() +
                               "): adopt() it, or cleanup_stale() if its task is gone");
    }
    auto created = lcg_create(config_.mount, dir, config_.controllers);
    if (!created.ok()) {
      ::rmdir(dir.c_str());
      return std::move(created).error();
    }
    auto cg = std::make_unique<FsTaskCgroup>(config_, task_id, dir);
    if (auto r = cg->update(limits); !r.ok()) return std::move(r).error();  // cg's dtor removes
    return std::unique_ptr<TaskCgroup>(std::move(cg));
  }

  Result<std::unique_ptr<TaskCgroup>> adopt(const std::string& task_id) override {
    fs::path dir = config_.base / task_cgroup_name(task_id);
    if (!fs::is_directory(dir)) {
      return Error(ENOENT, "no cgroup for task " + task_id + " (" + dir.string() + ")");
    }
    return std::unique_ptr<TaskCgroup>(std::make_unique<FsTaskCgroup>(config_, task_id, dir));
  }

  Result<std::vector<TaskCgroupInfo>> list() const override {
    std::vector<TaskCgroupInfo> out;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(config_.base, ec)) {
      if (!entry.is_directory()) continue;
      auto id = task_id_from_cgroup_name(entry.path().filename().string());
      if (!id) continue;
      TaskCgroupInfo info{*id, entry.path(), false};
      if (auto e = read_events_of(entry.path()); e.ok()) info.populated = e->populated;
      out.push_back(std::move(info));
    }
    if (ec) return Error(ec.value(), "listing " + config_.base.string() + ": " + ec.message());
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.task_id < b.task_id; });
    return out;
  }

  Result<std::vector<std::string>> cleanup_stale() override {
    CORRAL_ASSIGN_OR_RETURN(auto all, list());
    std::vector<std::string> removed;
    for (const auto& t : all) {
      if (t.populated) continue;
      FsTaskCgroup cg(config_, t.task_id, t.path);
      auto r = cg.destroy(1s);
      if (!r.ok()) {
        cg.release();
        return std::move(r).error().context("removing the stale cgroup of task " + t.task_id);
      }
      removed.push_back(t.task_id);
    }
    return removed;
  }

 private:
  TreeConfig config_;
};

}  // namespace

std::unique_ptr<CgroupManager> make_tree_manager(TreeConfig config) {
  return std::make_unique<TreeManager>(std::move(config));
}

}  // namespace detail

Result<std::unique_ptr<CgroupManager>> open_cgroupfs_manager(const CgroupfsOptions& options) {
  CORRAL_ASSIGN_OR_RETURN(auto info, probe_cgroup_host());
  if (!info.unified) CORRAL_TRY(check_cgroup_host(info, CgroupBackend::kCgroupfs));
  const fs::path mount = *info.v2_mount;
  fs::path own = mount / info.own_cgroup.relative_path();
  fs::path base = options.base.value_or(own.filename() == "supervisor" ? own.parent_path() : own);
  // The check looks at the base: what its parent delegated to it.
  CgroupHostInfo at_base = info;
  at_base.own_cgroup = "/" + base.lexically_relative(mount).string();
  if (auto c = read_file(base / "cgroup.controllers"); c.ok()) {
    std::istringstream in(*c);
    at_base.own_controllers.clear();
    std::string w;
    while (in >> w) at_base.own_controllers.insert(w);
  }
  CORRAL_TRY(check_cgroup_host(at_base, CgroupBackend::kCgroupfs));
  pid_t move = options.move_self_to_supervisor && own == base ? ::getpid() : 0;
  CORRAL_ASSIGN_OR_RETURN(auto controllers, detail::prepare_base(base, move));
  return detail::make_tree_manager(
      {CgroupBackend::kCgroupfs, mount, base, std::move(controllers), options.force_freeze_kill});
}

}  // namespace corral::isolator
