#include "corral/native/native.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"
#include "corral/launcher/exit_status.hpp"

namespace corral::native {
namespace fs = std::filesystem;
using containerizer::LaunchRequest;
using containerizer::Termination;
using v1::TaskStatus;

nlohmann::json to_json(const NativeCheckpoint& c) {
  return {{"pid", c.pid},
          {"start_time", c.start_time},
          {"cgroup", c.cgroup},
          {"exit_status_path", c.exit_status_path},
          {"run_dir", c.run_dir}};
}

Result<NativeCheckpoint> native_checkpoint_from_json(const nlohmann::json& j) {
  if (!j.is_object()) return Error(EINVAL, "native checkpoint: not a JSON object");
  NativeCheckpoint c;
  try {
    c.pid = j.at("pid").get<pid_t>();
    c.start_time = j.at("start_time").get<uint64_t>();
    c.cgroup = j.value("cgroup", "");
    c.exit_status_path = j.at("exit_status_path").get<std::string>();
    c.run_dir = j.value("run_dir", "");
  } catch (const std::exception& e) {
    return Error(EINVAL, std::string("native checkpoint: ") + e.what());
  }
  if (c.pid <= 1) return Error(EINVAL, "native checkpoint: invalid pid " + std::to_string(c.pid));
  return c;
}

Result<uint64_t> process_start_time(pid_t pid) {
  CORRAL_ASSIGN_OR_RETURN(std::string stat,
                          read_file("/proc/" + std::to_string(pid) + "/stat", 4096));
  // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  auto close = stat.rfind(')');
  if (close == std::string::npos) return Error(EINVAL, "unparsable /proc/<pid>/stat");
  std::string rest = stat.substr(close + 2);
  // rest starts at field 3 (state); start_time is field 22, i.e. the 20th token of rest.
  size_t pos = 0;
  for (int field = 3; field < 22; ++field) {
    pos = rest.find(' ', pos);
    if (pos == std::string::npos) return Error(EINVAL, "short /proc/<pid>/stat");
    ++pos;
  }
  return std::strtoull(rest.c_str() + pos, nullptr, 10);
}

namespace {

bool has_ports(const v1::TaskInfo& task) {
  for (const auto& r : task.resources()) {
    if (r.name() == "ports" && r.ranges().range_size() > 0) return true;
  }
  return false;
}

std::string sanitize_hostname(std::string_view name) {
  std::string h;
  for (char c : name) {
    if (h.size() >= 63) break;
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-') {
      h += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!h.empty() && h.back() != '-') {
      h += '-';
    }
  }
  while (!h.empty() && h.back() == '-') h.pop_back();
  return h.empty() ? "corral" : h;
}

}  // namespace

Result<TaskNetwork> task_network(const v1::TaskInfo& task, bool bridge_available) {
  TaskNetwork n;
  for (const auto& r : task.resources()) {
    if (r.name() != "ports") continue;
    for (const auto& range : r.ranges().range())
      n.offered_ports.emplace_back(range.begin(), range.end());
  }
  const bool has_container = task.has_container();
  if (has_container && task.container().network_infos_size() > 1)
    return Error(EINVAL, "the task names " + std::to_string(task.container().network_infos_size()) +
                             " networks; a native task joins at most one");
  const v1::NetworkInfo* info = has_container && task.container().network_infos_size() == 1
                                    ? &task.container().network_infos(0)
                                    : nullptr;
  if (info && !info->name().empty()) {
    n.mode = info->name();
    if (n.mode != "host" && n.mode != "none" && n.mode != "bridge") {
      // Any other name is a CNI network (as in Mesos), configured in the agent's CNI dir.
      const bool valid_name =
          n.mode.size() <= 64 && n.mode.front() != '.' &&
          n.mode.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") == std::string::npos;
      if (!valid_name)
        return Error(EINVAL, "network \"" + n.mode +
                                 "\" is neither host, none, bridge nor a CNI network name "
                                 "(1-64 of [a-z0-9._-])");
      if (!bridge_available)
        return Error(ENOTSUP, "the task asks for CNI network \"" + n.mode +
                                  "\" but this agent has no [network] section in agent.toml "
                                  "(networking is off); use host or none, or configure it");
      n.cni_network = n.mode;
      n.mode = "cni";
    }
  } else if (!task_image_name(task).empty() && bridge_available) {
    n.mode = "bridge";
  } else {
    n.mode = has_ports(task) ? "host" : "none";
  }
  if (n.mode == "bridge" && !bridge_available)
    return Error(ENOTSUP,
                 "the task asks for network bridge but this agent has no [network] section "
                 "in agent.toml (bridge networking is off); use host or none, or configure it");
  if (!info) return n;
  for (const auto& m : info->port_mappings()) {
    const std::string proto = m.protocol().empty() ? "tcp" : m.protocol();
    const std::string what = "port mapping " + std::to_string(m.host_port()) + " -> " +
                             std::to_string(m.container_port());
    if (n.mode != "bridge")
      return Error(
          EINVAL, what + ": port mappings need network bridge (the task's mode is " + n.mode + ")");
    if (proto != "tcp" && proto != "udp")
      return Error(EINVAL, what + ": protocol \"" + proto + "\" is not tcp or udp");
    if (m.host_port() == 0 || m.host_port() > 65535 || m.container_port() == 0 ||
        m.container_port() > 65535)
      return Error(EINVAL, what + ": ports must be 1-65535");
    n.ports.emplace_back(static_cast<uint16_t>(m.host_port()),
                         static_cast<uint16_t>(m.container_port()), proto);
  }
  return n;
}

std::string task_image_name(const v1::TaskInfo& task) {
  if (!task.has_container() || task.container().type() != v1::ContainerInfo::MESOS) return {};
  const auto& m = task.container().mesos();
  if (!m.has_image() || m.image().type() != v1::Image::DOCKER) return {};
  return m.image().docker().name();
}

Result<isolator::SandboxSpec> sandbox_spec_for(const LaunchRequest& request,
                                               const NativeOptions& options,
                                               const std::string& cgroup_dir,
                                               const ImageRootfs* image) {
  const v1::TaskInfo& task = request.task;
  if (image && (!task.has_command() || (task.command().value().empty() &&
                                        (task.command().has_shell() && !task.command().shell())))) {
    // The image's Entrypoint + Cmd (the task's arguments replace Cmd).
    isolator::SandboxSpec spec;
    spec.argv = image->entrypoint;
    if (task.command().arguments_size() > 0) {
      spec.argv.insert(spec.argv.end(), task.command().arguments().begin(),
                       task.command().arguments().end());
    } else {
      spec.argv.insert(spec.argv.end(), image->cmd.begin(), image->cmd.end());
    }
    if (spec.argv.empty())
      return Error(EINVAL, "the task has no command and its image has neither Entrypoint nor Cmd");
    v1::TaskInfo copy = task;
    copy.mutable_command()->set_shell(false);
    copy.mutable_command()->set_value(spec.argv[0]);
    copy.mutable_command()->clear_arguments();
    for (const auto& a : spec.argv) copy.mutable_command()->add_arguments(a);
    LaunchRequest r2 = request;
    r2.task = copy;
    return sandbox_spec_for(r2, options, cgroup_dir, image);
  }
  if (!task.has_command()) {
    return Error(EINVAL, "task " + task.task_id().value() +
                             " has no command; the native containerizer runs CommandInfo tasks "
                             "(executors and task groups are not supported)");
  }
  const v1::CommandInfo& command = task.command();
  isolator::SandboxSpec spec;
  bool shell = !command.has_shell() || command.shell();
  if (shell) {
    if (command.value().empty())
      return Error(EINVAL, "task command is empty; set command.value (run by /bin/sh -c)");
    spec.argv = {"/bin/sh", "-c", command.value()};
  } else {
    if (command.value().empty())
      return Error(EINVAL, "task command has shell=false but no value (the program to run)");
    if (command.arguments_size() > 0) {
      spec.argv.assign(command.arguments().begin(), command.arguments().end());
      spec.argv[0] = command.value();
    } else {
      spec.argv = {command.value()};
    }
  }
  spec.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  if (image) {
    for (const auto& e : image->env) spec.env.push_back(e);
  }
  for (const auto& e : request.env) spec.env.push_back(e);
  for (const auto& v : command.environment().variables()) {
    if (v.name().empty() || v.name().find('=') != std::string::npos) {
      return Error(EINVAL, "task environment variable name \"" + v.name() +
                               "\" is invalid (empty or contains '=')");
    }
    spec.env.push_back(v.name() + "=" + v.value());
  }
  spec.hostname = sanitize_hostname(task.has_container() && task.container().has_hostname()
                                        ? task.container().hostname()
                                        : task.name());
  spec.namespaces.net = !has_ports(task);
  spec.namespaces.cgroup = !cgroup_dir.empty();
  spec.namespaces.user = options.user_namespace;
  spec.sandbox_dir = request.sandbox_dir.string();
  spec.cwd = spec.sandbox_mount;
  for (const auto& v : request.decision.volumes)
    spec.volumes.push_back({v.host_path, v.container_path, !v.writable});
  // The user the policy decided on (name or uid, as on the host; inside a user namespace the
  // same ids are container ids).
  if (!request.decision.user.empty()) {
    const std::string& user = request.decision.user;
    struct passwd pw {};
    struct passwd* found = nullptr;
    char buf[8192];
    if (user.find_first_not_of("0123456789") == std::string::npos && user.size() <= 9) {
      spec.uid = static_cast<uint32_t>(std::stoul(user));
      ::getpwuid_r(spec.uid, &pw, buf, sizeof buf, &found);
      spec.gid = found ? found->pw_gid : spec.uid;
    } else {
      ::getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found);
      if (!found) return Error(ENOENT, "user \"" + user + "\" does not exist on this agent");
      spec.uid = found->pw_uid;
      spec.gid = found->pw_gid;
    }
    if (found && !options.user_namespace) {
      int n = 64;
      std::vector<gid_t> groups(static_cast<size_t>(n));
      if (::getgrouplist(found->pw_name, found->pw_gid, groups.data(), &n) >= 0) {
        for (int i = 0; i < n; ++i) {
          if (groups[static_cast<size_t>(i)] != found->pw_gid)
            spec.supplementary_gids.push_back(groups[static_cast<size_t>(i)]);
        }
      }
    }
  }
  spec.capabilities = request.decision.capabilities;
  if (request.decision.seccomp == "unconfined") {
    spec.seccomp.mode = isolator::SeccompMode::unconfined;
  } else if (request.decision.seccomp != "default" && !request.decision.seccomp.empty()) {
    CORRAL_ASSIGN_OR_RETURN(std::string text, read_file(request.decision.seccomp, 4 << 20));
    spec.seccomp.mode = isolator::SeccompMode::profile;
    spec.seccomp.profile = nlohmann::json::parse(text, nullptr, false);
    if (spec.seccomp.profile.is_discarded())
      return Error(EINVAL, "seccomp profile " + request.decision.seccomp + " is not valid JSON");
  }
  spec.kill_grace_ms =
      static_cast<uint32_t>(std::clamp<int64_t>(request.kill_grace.count(), 0, 24 * 3600 * 1000));
  spec.stdout_spec.path = (request.sandbox_dir / "stdout").string();
  spec.stderr_spec.path = (request.sandbox_dir / "stderr").string();
  spec.stdout_spec.max_bytes = spec.stderr_spec.max_bytes = options.output_max_bytes;
  spec.stdout_spec.keep = spec.stderr_spec.keep = options.output_keep;
  spec.exit_status_path = (request.run_dir / "exit.json").string();
  spec.cgroup_dir = cgroup_dir;
  if (image) {
    spec.rootfs.mode = isolator::RootfsMode::overlay;
    spec.rootfs.lower_dirs = image->lower_dirs;
    spec.rootfs.upper_dir = (request.run_dir / "rootfs-upper").string();
    spec.rootfs.work_dir = (request.run_dir / "rootfs-work").string();
    if (!image->working_dir.empty()) spec.cwd = image->working_dir;
    if (image->uid) {
      spec.uid = *image->uid;
      spec.gid = image->gid.value_or(*image->uid);
      spec.supplementary_gids = image->supplementary_gids;
    }
  }
  return spec;
}

namespace {

Result<void> check_container_id(const std::string& id) {
  if (id.empty() || id.size() > 200 ||
      id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
          std::string::npos ||
      id == "." || id == "..") {
    return Error(EINVAL, "container id \"" + id + "\" is invalid: use 1-200 of [A-Za-z0-9._-]");
  }
  return {};
}

Termination termination_from(const Result<launcher::ExitStatus>& status, bool oom,
                             bool agent_killed, pid_t pid) {
  Termination t;
  t.oom_killed = oom;
  if (!status) {
    t.kind = Termination::Kind::lost;
    t.reason = TaskStatus::REASON_EXECUTOR_TERMINATED;
    t.message = "the task's supervisor (corral-launcher, pid " + std::to_string(pid) +
                ") ended without writing an exit status (" + status.error().message() + ")";
    if (oom) {
      t.reason = TaskStatus::REASON_CONTAINER_LIMITATION_MEMORY;
      t.message = "out of memory: the kernel killed the task and its supervisor";
    } else if (agent_killed) {
      t.kind = Termination::Kind::signaled;
      t.signal = SIGKILL;
      t.message = "killed by SIGKILL";
    }
    return t;
  }
  switch (status->state) {
    case launcher::ExitStatus::State::failed:
      t.kind = Termination::Kind::failed;
      t.code = status->code;
      t.reason = TaskStatus::REASON_CONTAINER_LAUNCH_FAILED;
      t.message = "the task could not be started: " + status->error;
      break;
    case launcher::ExitStatus::State::signaled:
      t.kind = Termination::Kind::signaled;
      t.signal = status->signal;
      t.killed_after_grace = status->killed_after_grace;
      t.message = "killed by " + status->signal_name +
                  (status->killed_after_grace ? " after its grace period" : "");
      break;
    case launcher::ExitStatus::State::exited:
      t.kind = Termination::Kind::exited;
      t.code = status->code;
      t.message = "exited with status " + std::to_string(status->code);
      break;
  }
  if (oom) {
    t.reason = TaskStatus::REASON_CONTAINER_LIMITATION_MEMORY;
    t.message =
        "out of memory: the kernel's OOM killer acted in the task (memory limit reached); " +
        t.message;
  }
  return t;
}

// A zombie (state Z) has ended: it only waits for its parent to reap it.
bool is_zombie(pid_t pid) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!stat) return true;
  auto close = stat->rfind(')');
  return close == std::string::npos || close + 2 >= stat->size() || (*stat)[close + 2] == 'Z' ||
         (*stat)[close + 2] == 'X';
}

class NativeContainerizer final : public containerizer::Containerizer {
 public:
  explicit NativeContainerizer(NativeOptions options) : options_(std::move(options)) {}
  ~NativeContainerizer() override {
    stopping_ = true;
    wake();
    if (reaper_.joinable()) reaper_.join();
    // Containers keep running: an agent that stops leaves its tasks to the next one.
    std::lock_guard lock(mu_);
    for (auto& [id, c] : containers_) {
      if (c->cgroup) c->cgroup->release();
    }
  }

  Result<void> init() {
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) return Error::from_errno("epoll_create1");
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) return Error::from_errno("eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0)
      return Error::from_errno("epoll_ctl");
    if (::access(options_.launcher_path.c_str(), X_OK) != 0) {
      return Error(ENOENT, "corral-launcher not found or not executable at " +
                               options_.launcher_path +
                               " (set launcher_path in agent.toml or reinstall corral-agent)");
    }
    reaper_ = std::thread([this] { reap_loop(); });
    return {};
  }

  std::string name() const override { return "native"; }

  void set_termination_callback(containerizer::TerminationCallback callback) override {
    std::lock_guard lock(mu_);
    callback_ = std::move(callback);
  }

  Result<containerizer::Launched> launch(const LaunchRequest& request) override {
    CORRAL_TRY(check_container_id(request.container_id));
    {
      std::lock_guard lock(mu_);
      if (containers_.count(request.container_id))
        return Error(EEXIST, "container " + request.container_id + " exists already");
    }
    auto c = std::make_unique<Container>();
    c->id = request.container_id;
    c->run_dir = request.run_dir;
    c->exit_status_path = (request.run_dir / "exit.json").string();
    c->limits = request.decision.limits;
    std::string cgroup_dir;
    if (options_.cgroups) {
      auto cg = options_.cgroups->create(request.container_id, request.decision.limits);
      if (!cg)
        return Error(cg.error().code(), "creating the task's cgroup: " + cg.error().message());
      c->cgroup = std::move(*cg);
      cgroup_dir = c->cgroup->path().string();
    }
    auto fail = [&](Error e) -> Error {
#ifdef CORRAL_HAVE_NETWORK
      if (options_.network) (void)options_.network->detach(request.container_id);
#endif
      if (c->cgroup) (void)c->cgroup->destroy(std::chrono::seconds(5));
#ifdef CORRAL_HAVE_IMAGE_STORE
      if (c->image && options_.images) (void)options_.images->release(request.container_id);
#endif
      return e;
    };
    std::optional<ImageRootfs> rootfs;
    const std::string image_name = task_image_name(request.task);
    if (!image_name.empty()) {
      auto r = provision_image(image_name, request);
      if (!r) return fail(r.error());
      rootfs = std::move(*r);
      c->image = true;
    }
    auto spec = sandbox_spec_for(request, options_, cgroup_dir, rootfs ? &*rootfs : nullptr);
    if (!spec) return fail(spec.error());
#ifdef CORRAL_HAVE_NETWORK
    if (auto r = setup_network(request, *spec); !r) return fail(r.error());
#endif
    if (auto v = isolator::validate(*spec); !v.ok()) return fail(v.error());
    const fs::path spec_path = request.run_dir / "spec.json";
    if (auto w = write_file_atomic(spec_path, isolator::to_json(*spec).dump(), 0600); !w.ok())
      return fail(w.error());
    std::error_code ec;
    fs::remove(c->exit_status_path, ec);

    // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
    const std::string launcher = options_.launcher_path;
    const std::string spec_arg = spec_path.string();
    const std::string log_path = (request.run_dir / "launcher.log").string();
    const std::string procs = cgroup_dir.empty() ? std::string() : cgroup_dir + "/cgroup.procs";
    const char* argv[] = {"corral-launcher", "--spec", spec_arg.c_str(),
                          "--ready-fd",      "3",      nullptr};
    const char* envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", nullptr};
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) return fail(Error::from_errno("pipe2"));
    UniqueFd ready_read(ready[0]), ready_write(ready[1]);
    UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!log || !devnull) return fail(Error::from_errno("open " + log_path));

    pid_t pid = ::fork();
    if (pid < 0) return fail(Error::from_errno("fork"));
    if (pid == 0) {
      // Own session: a terminal's Ctrl-C or the agent's death does not reach the task.
      ::setsid();
      // The supervisor lives with its task (accounted to it, independent of the agent's unit).
      if (!procs.empty()) {
        int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
          (void)!::write(fd, "0", 1);
          ::close(fd);
        }
      }
      ::dup2(devnull.get(), 0);
      ::dup2(log.get(), 1);
      ::dup2(log.get(), 2);
      ::dup2(ready_write.get(), 3);  // dup2 clears close-on-exec on 3
      ::syscall(SYS_close_range, 4u, ~0u, 0u);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execve(launcher.c_str(), const_cast<char**>(argv), const_cast<char**>(envp));
      _exit(127);
    }
    ready_write.reset();
    auto pidfd = Pidfd::open(pid);
    if (!pidfd) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return fail(pidfd.error());
    }
    c->pid = pid;
    c->child = true;
    c->start_time = process_start_time(pid).value_or(0);

    // Wait for EOF on the ready pipe: the task exec'd, or the launcher gave up.
    pollfd p{ready_read.get(), POLLIN, 0};
    auto deadline = std::chrono::steady_clock::now() + options_.launch_timeout;
    bool ready_eof = false;
    while (!ready_eof) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      if (n < 0 && errno == EINTR) continue;
      if (n > 0) {
        char buf[64];
        ssize_t r = ::read(ready_read.get(), buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) ready_eof = true;
      }
    }
    if (!ready_eof) {
      (void)pidfd->send_signal(SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return fail(Error(ETIMEDOUT, "the launcher did not start the task within " +
                                       std::to_string(options_.launch_timeout.count()) +
                                       " ms (see " + log_path + ")"));
    }
    // A launcher that failed has written its exit status before closing the pipe.
    if (auto st = launcher::read_exit_status(c->exit_status_path);
        st && st->state == launcher::ExitStatus::State::failed) {
      ::waitpid(pid, nullptr, 0);
      Error e(EINVAL, "the task could not be started: " + st->error);
      return fail(e);
    }
    if (auto exited = pidfd->wait_exit(std::chrono::milliseconds(0));
        exited && *exited && !fs::exists(c->exit_status_path)) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      std::string log_text = read_file(log_path, 4096).value_or("");
      return fail(Error(
          ECHILD, "corral-launcher exited (" +
                      std::string(WIFEXITED(status) ? "status " : "signal ") +
                      std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)) +
                      ") before starting the task: " + log_text));
    }
    c->pidfd = std::move(*pidfd);

    NativeCheckpoint cp;
    cp.pid = pid;
    cp.start_time = c->start_time;
    cp.cgroup = cgroup_dir;
    cp.exit_status_path = c->exit_status_path;
    cp.run_dir = request.run_dir.string();
    containerizer::Launched launched;
    launched.pid = pid;
    launched.checkpoint = to_json(cp);
    watch(std::move(c));
    return launched;
  }

  Result<void> kill(const std::string& container_id, std::chrono::milliseconds grace) override {
    std::lock_guard lock(mu_);
    auto it = containers_.find(container_id);
    if (it == containers_.end())
      return Error(ENOENT, "no container " + container_id + " on this agent");
    Container& c = *it->second;
    if (c.terminated) return {};
    c.kill_requested = true;
    if (grace.count() <= 0) {
      force_kill(c);
      return {};
    }
    // The supervisor forwards SIGTERM to the task and starts its own grace period; the agent
    // SIGKILLs through the cgroup when the requested grace runs out first.
    if (c.pidfd.valid()) (void)c.pidfd.send_signal(SIGTERM);
    // One second after the supervisor's own deadline, so that normally the supervisor does it
    // (and records that SIGKILL was needed).
    auto when = std::chrono::steady_clock::now() + grace + std::chrono::seconds(1);
    if (!c.force_at || when < *c.force_at) c.force_at = when;
    wake();
    return {};
  }

  Result<v1::ResourceStatistics> usage(const std::string& container_id) override {
    std::lock_guard lock(mu_);
    auto it = containers_.find(container_id);
    if (it == containers_.end())
      return Error(ENOENT, "no container " + container_id + " on this agent");
    const Container& c = *it->second;
    v1::ResourceStatistics s;
    s.set_timestamp(static_cast<double>(std::time(nullptr)));
    if (c.limits.cpus) s.set_cpus_limit(*c.limits.cpus);
    if (c.limits.memory_max) s.set_mem_limit_bytes(*c.limits.memory_max);
    if (c.limits.memory_high) s.set_mem_soft_limit_bytes(*c.limits.memory_high);
    if (!c.cgroup) return s;
    CORRAL_ASSIGN_OR_RETURN(isolator::CgroupStats st, c.cgroup->stats());
    s.set_processes(static_cast<uint32_t>(st.pids_current));
    s.set_cpus_user_time_secs(static_cast<double>(st.cpu_user_usec) / 1e6);
    s.set_cpus_system_time_secs(static_cast<double>(st.cpu_system_usec) / 1e6);
    s.set_cpus_nr_periods(static_cast<uint32_t>(st.cpu_nr_periods));
    s.set_cpus_nr_throttled(static_cast<uint32_t>(st.cpu_nr_throttled));
    s.set_cpus_throttled_time_secs(static_cast<double>(st.cpu_throttled_usec) / 1e6);
    s.set_mem_total_bytes(st.memory_current);
    auto stat = [&](const char* key) -> uint64_t {
      auto f = st.memory_stat.find(key);
      return f == st.memory_stat.end() ? 0 : f->second;
    };
    s.set_mem_anon_bytes(stat("anon"));
    s.set_mem_rss_bytes(stat("anon"));
    s.set_mem_file_bytes(stat("file"));
    s.set_mem_cache_bytes(stat("file"));
    s.set_mem_mapped_file_bytes(stat("file_mapped"));
    s.set_mem_unevictable_bytes(stat("unevictable"));
    if (st.memory_swap_current) s.set_mem_swap_bytes(*st.memory_swap_current);
    return s;
  }

#ifdef CORRAL_HAVE_NETWORK
  // Applies the task's network mode to its spec; bridge mode builds the network now.
  Result<void> setup_network(const LaunchRequest& request, isolator::SandboxSpec& spec) {
    CORRAL_ASSIGN_OR_RETURN(TaskNetwork net,
                            task_network(request.task, options_.network != nullptr));
    const auto& allowed = request.decision.network_modes;
    if (std::find(allowed.begin(), allowed.end(), net.mode) == allowed.end()) {
      std::string list;
      for (const auto& m : allowed) list += (list.empty() ? "\"" : ", \"") + m + "\"";
      return Error(EPERM, "network mode " + net.mode +
                              " is not allowed by the policy: network.modes = [" + list + "] (" +
                              request.decision.network_modes_origin +
                              "); use one of those or add it there");
    }
    if (net.mode == "host") {
      spec.namespaces.net = false;
      return {};
    }
    spec.namespaces.net = true;
    if (net.mode != "bridge" && net.mode != "cni") return {};
    network::NetworkRequest nr;
    nr.cni_network = net.cni_network;
    nr.container_id = request.container_id;
    nr.hostname = spec.hostname;
    nr.allowed_host_ports = net.offered_ports;
    for (const auto& [host, container, proto] : net.ports) {
      nr.ports.push_back(
          {host, container, proto == "udp" ? network::Protocol::udp : network::Protocol::tcp});
    }
    nr.egress = request.decision.network_egress;
    const fs::path etc = request.run_dir / "net";
    std::error_code ec;
    fs::create_directories(etc, ec);
    if (ec) return Error(ec.value(), "create " + etc.string() + ": " + ec.message());
    CORRAL_ASSIGN_OR_RETURN(network::Attachment a, options_.network->attach(nr, etc));
    spec.namespaces.netns_path = a.netns_path;
    for (const char* f : {"hosts", "resolv.conf", "hostname"}) {
      spec.volumes.push_back({(etc / f).string(), std::string("/etc/") + f, true});
    }
    spec.env.push_back("CORRAL_CONTAINER_IP=" + network::format_ipv4(a.address));
    return {};
  }
#endif

  Result<ImageRootfs> provision_image(const std::string& name, const LaunchRequest& request) {
#ifdef CORRAL_HAVE_IMAGE_STORE
    if (!options_.images) {
      return Error(ENOTSUP, "the task asks for image " + name +
                                " but this agent has no image store configured");
    }
    auto p = options_.images->provision(name, request.container_id);
    if (!p && p.error().code() == ENOENT) {
      log::info("pulling image " + name + " for container " + request.container_id);
      auto pulled = options_.images->pull(name, options_.pull);
      if (!pulled)
        return Error(pulled.error().code(),
                     "pulling image " + name + ": " + pulled.error().message());
      p = options_.images->provision(name, request.container_id);
    }
    if (!p) return Error(p.error().code(), "image " + name + ": " + p.error().message());
    ImageRootfs r;
    for (const auto& d : p->lower_dirs) r.lower_dirs.push_back(d.string());
    r.entrypoint = p->config.entrypoint;
    r.cmd = p->config.cmd;
    r.env = p->config.env;
    r.working_dir = p->config.working_dir;
    // The task's own user (CommandInfo.user) wins over the image's User.
    if (!request.task.command().has_user() && !p->config.user.empty()) {
      auto u = image::resolve_image_user(p->lower_dirs, p->config.user);
      if (!u) {
        (void)options_.images->release(request.container_id);
        return Error(u.error().code(),
                     "image " + name + " user \"" + p->config.user + "\": " + u.error().message());
      }
      r.uid = u->uid;
      r.gid = u->gid;
      r.supplementary_gids = u->supplementary_gids;
    }
    std::error_code ec;
    std::filesystem::create_directories(request.run_dir / "rootfs-upper", ec);
    std::filesystem::create_directories(request.run_dir / "rootfs-work", ec);
    return r;
#else
    (void)request;
    return Error(ENOTSUP, "this corral-agent was built without image support; image " + name +
                              " cannot be used");
#endif
  }

  Result<void> destroy(const std::string& container_id) override {
    std::unique_ptr<Container> c;
    {
      std::lock_guard lock(mu_);
      auto it = containers_.find(container_id);
      if (it == containers_.end()) return {};
      if (!it->second->terminated)
        return Error(EBUSY, "container " + container_id + " is still running; kill it first");
      c = std::move(it->second);
      by_key_.erase(c->key);
      containers_.erase(it);
    }
#ifdef CORRAL_HAVE_IMAGE_STORE
    if (options_.images) (void)options_.images->release(container_id);
#endif
#ifdef CORRAL_HAVE_NETWORK
    if (options_.network) {
      if (auto d = options_.network->detach(container_id); !d.ok())
        log::warning("removing the network of " + container_id + ": " + d.error().message());
    }
#endif
    if (c->cgroup) {
      if (auto d = c->cgroup->destroy(); !d.ok())
        return Error(d.error().code(),
                     "removing the cgroup of " + container_id + ": " + d.error().message());
    }
    return {};
  }

  Result<std::vector<containerizer::Recovered>> recover(
      const std::vector<std::pair<std::string, nlohmann::json>>& checkpoints) override {
    std::vector<containerizer::Recovered> out;
    std::set<std::string> known;
    for (const auto& [id, json] : checkpoints) {
      known.insert(id);
      containerizer::Recovered r;
      r.container_id = id;
      auto cp = native_checkpoint_from_json(json);
      auto c = std::make_unique<Container>();
      c->id = id;
      if (!cp) {
        // Unreadable checkpoint: nothing to adopt; reported as lost so the task ends cleanly.
        c->terminated = false;
        c->exit_status_path = "";
        c->recovered_dead = true;
        out.push_back(r);
        watch(std::move(c));
        continue;
      }
      c->pid = cp->pid;
      c->start_time = cp->start_time;
      c->exit_status_path = cp->exit_status_path;
      c->run_dir = cp->run_dir;
      if (options_.cgroups && !cp->cgroup.empty()) {
        if (auto cg = options_.cgroups->adopt(id); cg) c->cgroup = std::move(*cg);
      }
      // Same pid AND same start time: our launcher, not a process that reused the pid.
      auto start = process_start_time(cp->pid);
      if (start && *start == cp->start_time && !is_zombie(cp->pid)) {
        if (auto pidfd = Pidfd::open(cp->pid); pidfd) {
          c->pidfd = std::move(*pidfd);
          r.running = true;
        }
      }
      if (!r.running) c->recovered_dead = true;
      out.push_back(r);
      watch(std::move(c));
    }
#ifdef CORRAL_HAVE_NETWORK
    // Networks of tasks that ended while the agent was away, and leftovers of a crash between
    // creating and recording one, go; running tasks keep theirs.
    if (options_.network) {
      std::set<std::string> live;
      for (const auto& r : out)
        if (r.running) live.insert(r.container_id);
      auto rep = options_.network->reconcile(live);
      if (!rep) {
        log::warning("network recovery: " + rep.error().message());
      } else if (!rep->removed_leases.empty() || rep->removed_links || rep->removed_netns) {
        log::info("network recovery: removed " + std::to_string(rep->removed_leases.size()) +
                  " lease(s), " + std::to_string(rep->removed_links) + " veth(s), " +
                  std::to_string(rep->removed_netns) + " netns file(s) of ended tasks");
      }
    }
#endif
    // Task cgroups nobody knows: left by an agent whose checkpoint was lost. Kill and remove.
    if (options_.cgroups) {
      if (auto list = options_.cgroups->list(); list) {
        for (const auto& info : *list) {
          if (known.count(info.task_id)) continue;
          if (auto cg = options_.cgroups->adopt(info.task_id); cg) {
            log::warning("killing and removing orphan task cgroup " + info.path.string() +
                         " (no task of this agent owns it)");
            (void)(*cg)->destroy(std::chrono::seconds(10));
          }
        }
      }
    }
    return out;
  }

 private:
  struct Container {
    std::string id;
    pid_t pid = -1;
    uint64_t start_time = 0;
    Pidfd pidfd;
    bool child = false;           // ours to reap
    bool recovered_dead = false;  // found dead at recovery: report from the exit file
    std::unique_ptr<isolator::TaskCgroup> cgroup;
    std::string exit_status_path;
    std::string run_dir;
    isolator::ResourceLimits limits;
    bool kill_requested = false;
    bool terminated = false;
    bool image = false;
    std::optional<std::chrono::steady_clock::time_point> force_at;
    uint64_t key = 0;
  };

  void wake() {
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }

  void watch(std::unique_ptr<Container> c) {
    std::lock_guard lock(mu_);
    c->key = ++next_key_;
    if (c->pidfd.valid()) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = c->key;
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c->pidfd.fd(), &ev);
    } else {
      pending_dead_.push_back(c->id);
    }
    by_key_[c->key] = c->id;
    containers_[c->id] = std::move(c);
    wake();
  }

  // Called with mu_ held.
  void force_kill(Container& c) {
    if (c.cgroup) {
      (void)c.cgroup->kill();
    } else if (c.pid > 0 && c.pidfd.valid()) {
      // Without a cgroup: SIGKILL the task's PID 1 (its whole pid namespace goes with it), then
      // the supervisor.
      auto children = read_file(
          "/proc/" + std::to_string(c.pid) + "/task/" + std::to_string(c.pid) + "/children", 4096);
      pid_t init = children ? static_cast<pid_t>(std::strtol(children->c_str(), nullptr, 10)) : 0;
      if (init > 0) {
        // The supervisor stays to write the exit status (killed by SIGKILL).
        ::kill(init, SIGKILL);
      } else {
        (void)c.pidfd.send_signal(SIGKILL);
      }
    }
    c.force_at.reset();
  }

  void finish(Container& c, std::vector<std::pair<std::string, Termination>>& out) {
    if (c.terminated) return;
    c.terminated = true;
    if (c.pidfd.valid()) {
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.pidfd.fd(), nullptr);
      if (c.child) {
        siginfo_t info{};
        ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(c.pidfd.fd()), &info,
                 WEXITED | WNOHANG);
      }
    }
    if (!c.child && c.recovered_dead && c.pid > 0) {
      // A launcher started by this very process (tests, or an agent that re-opened its
      // containerizer) stays a zombie until reaped; for anyone else's this is a no-op (ECHILD).
      ::waitpid(c.pid, nullptr, WNOHANG);
    }
    bool oom = false;
    if (c.cgroup) {
      auto ev = c.cgroup->events();
      oom = ev && ev->oom_killed();
      // The supervisor is gone; nothing of the task may outlive it.
      (void)c.cgroup->kill();
    }
#ifdef CORRAL_HAVE_NETWORK
    // The task is gone: its address and host ports are free for the next one now.
    if (options_.network) {
      if (auto d = options_.network->detach(c.id); !d.ok())
        log::warning("removing the network of " + c.id + ": " + d.error().message());
    }
#endif
    Result<launcher::ExitStatus> status =
        c.exit_status_path.empty()
            ? Result<launcher::ExitStatus>(Error(ENOENT, "no checkpoint to find it"))
            : launcher::read_exit_status(c.exit_status_path);
    out.emplace_back(c.id, termination_from(status, oom, c.kill_requested, c.pid));
  }

  void reap_loop() {
    epoll_event events[64];
    while (!stopping_) {
      int timeout_ms = 1000;
      {
        std::lock_guard lock(mu_);
        auto now = std::chrono::steady_clock::now();
        for (auto& [id, c] : containers_) {
          if (c->force_at && !c->terminated) {
            auto ms =
                std::chrono::duration_cast<std::chrono::milliseconds>(*c->force_at - now).count();
            timeout_ms = static_cast<int>(std::clamp<int64_t>(ms, 0, timeout_ms));
          }
        }
      }
      int n = ::epoll_wait(epoll_.get(), events, 64, timeout_ms);
      if (n < 0 && errno != EINTR) {
        log::error(std::string("native containerizer: epoll_wait: ") + std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      std::vector<std::pair<std::string, Termination>> ended;
      containerizer::TerminationCallback callback;
      {
        std::lock_guard lock(mu_);
        for (int i = 0; i < n; ++i) {
          if (events[i].data.u64 == 0) {
            uint64_t v;
            while (::read(wake_.get(), &v, sizeof v) > 0) {
            }
            continue;
          }
          auto k = by_key_.find(events[i].data.u64);
          if (k == by_key_.end()) continue;
          auto it = containers_.find(k->second);
          if (it != containers_.end()) finish(*it->second, ended);
        }
        for (const auto& id : pending_dead_) {
          auto it = containers_.find(id);
          if (it != containers_.end()) finish(*it->second, ended);
        }
        pending_dead_.clear();
        auto now = std::chrono::steady_clock::now();
        for (auto& [id, c] : containers_) {
          if (c->force_at && !c->terminated && *c->force_at <= now) force_kill(*c);
        }
        callback = callback_;
      }
      for (const auto& [id, t] : ended) {
        if (callback) callback(id, t);
      }
    }
  }

  NativeOptions options_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Container>> containers_;
  std::map<uint64_t, std::string> by_key_;
  std::vector<std::string> pending_dead_;
  uint64_t next_key_ = 0;
  containerizer::TerminationCallback callback_;
  UniqueFd epoll_;
  UniqueFd wake_;
  std::atomic<bool> stopping_{false};
  std::thread reaper_;
};

}  // namespace

Result<std::unique_ptr<containerizer::Containerizer>> open_native_containerizer(
    NativeOptions options) {
  auto c = std::make_unique<NativeContainerizer>(std::move(options));
  CORRAL_TRY(c->init());
  return std::unique_ptr<containerizer::Containerizer>(std::move(c));
}

}  // namespace corral::native
