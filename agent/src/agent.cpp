#include "corral/agent/agent.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <deque>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "agent_internal.hpp"
#include "checkpoint.hpp"
#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/http_server.hpp"
#include "corral/common/log.hpp"
#include "corral/common/metrics.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/common/recordio.hpp"
#include "corral/common/sd_notify.hpp"
#include "corral/common/version.hpp"
#include "corral/isolator/cgroup.hpp"
#include "corral/isolator/policy.hpp"
#include "corral/native/native.hpp"
#ifdef CORRAL_HAVE_DOCKER
#include "corral/docker/docker_containerizer.hpp"
#endif
#include "corral/agent/checkpoint.pb.h"
#include "corral/v1/agent.pb.h"
#include "corral/v1/internal.pb.h"
#include "wire_format.hpp"

namespace corral::agent {
namespace fs = std::filesystem;
namespace asio = boost::asio;
using v1::TaskState;
using v1::TaskStatus;

std::string random_hex(size_t bytes) {
  std::string raw = random_bytes(bytes);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r > 0) got += static_cast<size_t>(r);
  }
  return out;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Result<void> check_id(std::string_view what, const std::string& id) {
  if (id.empty()) return Error(EINVAL, std::string(what) + " is missing");
  if (id.size() > 255) return Error(EINVAL, std::string(what) + " is longer than 255 bytes");
  if (id == "." || id == "..")
    return Error(EINVAL, std::string(what) + " \"" + id + "\" is not allowed");
  for (unsigned char c : id) {
    if (c == '/' || c < 0x20 || c == 0x7f) {
      return Error(EINVAL, std::string(what) + " \"" + id +
                               "\" contains '/' or a control character; use letters, digits "
                               "and . _ - :");
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------

Result<isolator::TaskRequest> policy_request_for(const v1::FrameworkInfo& framework,
                                                 const v1::TaskInfo& task) {
  isolator::TaskRequest r;
  std::string role;
  for (const auto& res : task.resources()) {
    if (res.has_allocation_info() && res.allocation_info().has_role()) {
      role = res.allocation_info().role();
    }
    if (res.type() != v1::Value::SCALAR) continue;
    double v = res.scalar().value();
    if (res.name() == "cpus") r.cpus = r.cpus.value_or(0) + v;
    if (res.name() == "mem")
      r.memory = r.memory.value_or(0) + static_cast<uint64_t>(v * 1024.0 * 1024.0);
  }
  if (role.empty()) {
    if (framework.roles_size() > 0) {
      role = framework.roles(0);
    } else if (framework.has_role()) {
      role = framework.role();
    }
  }
  r.role = role.empty() ? "*" : role;
  if (task.command().has_user()) {
    r.user = task.command().user();
  } else if (framework.has_user() && !framework.user().empty()) {
    r.user = framework.user();
  }
  if (task.has_container()) {
    for (const auto& v : task.container().volumes()) {
      isolator::Volume vol;
      vol.host_path = v.host_path();
      vol.container_path = v.container_path();
      vol.writable = v.mode() == v1::Volume::RW;
      r.volumes.push_back(vol);
    }
  }
  return r;
}

// ---------------------------------------------------------------------------------------------

nlohmann::json TaskRecord::to_json() const {
  nlohmann::json j;
  j["container_id"] = container_id;
  j["framework"] = corral::to_json_value(framework);
  j["task"] = corral::to_json_value(info);
  j["state"] = v1::TaskState_Name(state);
  j["containerizer"] = containerizer;
  j["checkpoint"] = checkpoint;
  j["sandbox"] = sandbox;
  j["run_dir"] = run_dir;
  j["kill_requested"] = kill_requested;
  j["local"] = local;
  j["launched"] = launched;
  j["created_at"] = created_at;
  j["user"] = user;
  nlohmann::json updates = nlohmann::json::array();
  for (const auto& u : pending) updates.push_back(corral::to_json_value(u));
  j["updates"] = updates;
  nlohmann::json recent = nlohmann::json::array();
  for (const auto& st : statuses) recent.push_back(corral::to_json_value(st));
  j["statuses"] = recent;
  return j;
}

Result<TaskRecord> TaskRecord::from_json(std::string_view text) {
  auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Error(EINVAL, "not a JSON object");
  TaskRecord t;
  try {
    t.container_id = j.at("container_id").get<std::string>();
    CORRAL_TRY(parse_json_value(j.at("framework"), &t.framework));
    CORRAL_TRY(parse_json_value(j.at("task"), &t.info));
    if (!v1::TaskState_Parse(j.at("state").get<std::string>(), &t.state))
      return Error(EINVAL, "unknown state " + j.at("state").dump());
    t.containerizer = j.value("containerizer", "native");
    t.checkpoint = j.value("checkpoint", nlohmann::json());
    t.sandbox = j.at("sandbox").get<std::string>();
    t.run_dir = j.at("run_dir").get<std::string>();
    t.kill_requested = j.value("kill_requested", false);
    t.local = j.value("local", false);
    t.launched = j.value("launched", false);
    t.created_at = j.value("created_at", 0.0);
    t.user = j.value("user", "");
    for (const auto& u : j.at("updates")) {
      internal::StatusUpdate su;
      CORRAL_TRY(parse_json_value(u, &su));
      t.pending.push_back(su);
    }
    if (j.contains("statuses")) {
      for (const auto& st : j.at("statuses")) {
        v1::TaskStatus status;
        CORRAL_TRY(parse_json_value(st, &status));
        t.statuses.push_back(status);
      }
    }
  } catch (const std::exception& e) {
    return Error(EINVAL, e.what());
  }
  return t;
}

namespace {
constexpr char kRecordVersion = 0x01;
}

std::string TaskRecord::to_record() const {
  // The small fields through the generated code; the framework, task, updates and statuses (most
  // of the bytes, written on every change of the task) appended as their wire fields of
  // corral.agent.checkpoint.TaskRecord (2, 3, 14, 15) without copying them into it.
  checkpoint::TaskRecord r;
  r.set_container_id(container_id);
  r.set_state(state);
  r.set_containerizer(containerizer);
  if (!checkpoint.is_null()) r.set_containerizer_checkpoint(checkpoint.dump());
  r.set_sandbox(sandbox);
  r.set_run_dir(run_dir);
  r.set_kill_requested(kill_requested);
  r.set_local(local);
  r.set_launched(launched);
  r.set_created_at(created_at);
  r.set_user(user);
  std::string out(1, kRecordVersion);
  r.AppendToString(&out);
  wire::put_message(out, checkpoint::TaskRecord::kFrameworkFieldNumber, framework);
  wire::put_message(out, checkpoint::TaskRecord::kTaskFieldNumber, info);
  for (const auto& u : pending)
    wire::put_message(out, checkpoint::TaskRecord::kUpdatesFieldNumber, u);
  for (const auto& st : statuses)
    wire::put_message(out, checkpoint::TaskRecord::kStatusesFieldNumber, st);
  return out;
}

Result<TaskRecord> TaskRecord::from_record(std::string_view bytes) {
  if (bytes.empty()) return Error(EINVAL, "empty record");
  if (bytes.front() == '{') return from_json(bytes);  // a JSON record of an older agent
  if (bytes.front() != kRecordVersion) {
    return Error(EINVAL, "unknown record format (first byte " +
                             std::to_string(static_cast<unsigned char>(bytes.front())) +
                             "; this agent reads version 1 and JSON): written by a newer agent?");
  }
  checkpoint::TaskRecord r;
  if (!r.ParseFromArray(bytes.data() + 1, static_cast<int>(bytes.size() - 1)))
    return Error(EINVAL, "the binary record does not parse (truncated or corrupt)");
  if (r.container_id().empty() || !r.has_framework() || !r.has_task() || !r.has_state())
    return Error(EINVAL, "the binary record lacks its container id, framework, task or state");
  TaskRecord t;
  t.container_id = r.container_id();
  t.framework = std::move(*r.mutable_framework());
  t.info = std::move(*r.mutable_task());
  t.state = r.state();
  t.containerizer = r.has_containerizer() ? r.containerizer() : "native";
  if (r.has_containerizer_checkpoint()) {
    t.checkpoint = nlohmann::json::parse(r.containerizer_checkpoint(), nullptr, false);
    if (t.checkpoint.is_discarded())
      return Error(EINVAL, "the containerizer checkpoint in the record is not JSON");
  }
  t.sandbox = r.sandbox();
  t.run_dir = r.run_dir();
  t.kill_requested = r.kill_requested();
  t.local = r.local();
  t.launched = r.launched();
  t.created_at = r.created_at();
  t.user = r.user();
  for (auto& u : *r.mutable_updates()) t.pending.push_back(std::move(u));
  t.statuses.reserve(static_cast<size_t>(r.statuses_size()));
  for (auto& st : *r.mutable_statuses()) t.statuses.push_back(std::move(st));
  return t;
}

v1::Task TaskRecord::to_task(const std::string& agent_id) const {
  v1::Task t;
  t.set_name(info.name());
  *t.mutable_task_id() = info.task_id();
  *t.mutable_framework_id() = framework.id();
  t.mutable_agent_id()->set_value(agent_id);
  t.set_state(state);
  *t.mutable_resources() = info.resources();
  if (info.has_labels()) *t.mutable_labels() = info.labels();
  if (info.has_container()) *t.mutable_container() = info.container();
  if (info.has_health_check()) *t.mutable_health_check() = info.health_check();
  if (info.has_kill_policy()) *t.mutable_kill_policy() = info.kill_policy();
  if (!user.empty()) t.set_user(user);
  for (const auto& s : statuses) *t.add_statuses() = s;
  if (!pending.empty()) {
    t.set_status_update_state(pending.front().status().state());
    t.set_status_update_uuid(pending.front().uuid());
  }
  return t;
}

// ---------------------------------------------------------------------------------------------

AgentImpl::AgentImpl(asio::io_context& io, AgentConfig config)
    : io_(io),
      config_(std::move(config)),
      pool_(4),
      db_strand_(asio::make_strand(pool_)),
      policy_(config_.policy_dir),
      link_timer_(io),
      gc_timer_(io) {}

AgentImpl::~AgentImpl() {
  stopped_ = true;
  if (link_stream_) link_stream_->cancel();
  pool_.join();
}

Result<void> AgentImpl::init(AgentDeps deps) {
  std::error_code ec;
  for (const auto& d :
       {config_.work_dir, config_.work_dir / "sandboxes", config_.work_dir / "runs"}) {
    fs::create_directories(d, ec);
    if (ec) {
      return Error(ec.value(), "cannot create " + d.string() + ": " + ec.message() +
                                   " (set work_dir in agent.toml to a writable directory)");
    }
  }
  ::chmod(config_.work_dir.c_str(), 0711);
  ::chmod((config_.work_dir / "runs").c_str(), 0700);
  ::chmod((config_.work_dir / "sandboxes").c_str(), 0711);

  // Policy first: it decides whether running without cgroup v2 is allowed.
  if (auto p = policy_.reload(); !p.ok()) {
    return Error(p.error().code(), "the isolation policy in " + config_.policy_dir.string() +
                                       " is invalid:\n" + p.error().message());
  }
  CORRAL_ASSIGN_OR_RETURN(resources_, discover_resources(config_));
  hostname_ = config_.hostname;
  if (hostname_.empty()) {
    char buf[256] = {};
    ::gethostname(buf, sizeof buf - 1);
    hostname_ = buf;
  }

  const bool deps_injected = deps.native != nullptr;
  if (deps.native) {
    native_ = std::move(deps.native);
  } else {
    CORRAL_TRY(open_native());
  }
  docker_ = std::move(deps.docker);
#ifdef CORRAL_HAVE_DOCKER
  if (!docker_ && !deps_injected) {
    // Docker delegation is optional: without a reachable dockerd, DOCKER tasks fail with a
    // message saying so and everything else runs natively.
    auto options = docker::docker_options_from_policy(policy_.current());
    options.agent_label = "corral-agent";
    // Pull progress in the agent's log: one line per layer event dockerd reports as done.
    options.pull_progress = [](const nlohmann::json& line) {
      std::string status = line.value("status", "");
      if (status == "Pull complete" || status == "Already exists" ||
          status.rfind("Status:", 0) == 0 || status.rfind("Digest:", 0) == 0)
        log::info("docker pull: " + (line.contains("id") ? line.value("id", "") + ": " : "") +
                  status);
    };
    auto d = docker::open_docker_containerizer(options);
    if (d) {
      docker_ = std::move(*d);
      log::notice("Docker delegation available through " + options.endpoint);
    } else {
      log::info("Docker delegation unavailable (" + d.error().message() +
                "); tasks asking for Docker will fail with that reason");
      docker_unavailable_ = d.error().message();
    }
  }
#endif
  auto on_end = [this](const std::string& id, const containerizer::Termination& t) {
    asio::post(io_, [this, id, t] { on_terminated(id, t); });
  };
  native_->set_termination_callback(on_end);
  if (docker_) docker_->set_termination_callback(on_end);

  // The checkpoint: load synchronously at start (nothing else runs yet).
  auto store = CheckpointStore::open((config_.work_dir / "agent.db").string());
  if (!store) {
    return Error(store.error().code(), "opening the agent's checkpoint " +
                                           (config_.work_dir / "agent.db").string() + ": " +
                                           store.error().message());
  }
  store_ = std::make_unique<CheckpointStore>(std::move(*store));
  CORRAL_ASSIGN_OR_RETURN(CheckpointContents contents, store_->load());
  CORRAL_TRY(recover(contents));

  CORRAL_TRY(start_api());
  schedule_gc();
  if (!config_.master.empty()) connect_master();
  log::notice("corral-agent " + std::string(kVersion) + " started: agent id " + agent_id_ + ", " +
              std::to_string(tasks_.size()) + " task(s) recovered, master " +
              (config_.master.empty() ? std::string("none (standalone)") : config_.master));
  return {};
}

Result<void> AgentImpl::open_native() {
  native::NativeOptions o;
  o.launcher_path = config_.launcher_path;
  if (o.launcher_path.empty()) {
    std::error_code ec;
    fs::path self = fs::read_symlink("/proc/self/exe", ec);
    std::vector<fs::path> candidates;
    if (!ec) {
      candidates.push_back(self.parent_path() / "corral-launcher");
      candidates.push_back(self.parent_path().parent_path() / "launcher" / "corral-launcher");
    }
    candidates.push_back("/usr/lib/corral/corral-launcher");
    candidates.push_back("/usr/sbin/corral-launcher");
    for (const auto& c : candidates) {
      if (::access(c.c_str(), X_OK) == 0) {
        o.launcher_path = c.string();
        break;
      }
    }
    if (o.launcher_path.empty()) {
      return Error(ENOENT,
                   "cannot find corral-launcher (looked beside corral-agent, in the build tree, "
                   "/usr/lib/corral and /usr/sbin); set launcher_path in agent.toml");
    }
  }
  o.output_max_bytes = config_.output_max_bytes;
  o.output_keep = config_.output_keep;
  const isolator::Policy& policy = policy_.current();
  if (policy.userns_enabled.value) {
    isolator::UserNamespaceSpec u;
    u.host_uid = u.host_gid = static_cast<uint32_t>(policy.userns_start.value);
    u.count = static_cast<uint32_t>(policy.userns_count.value);
    o.user_namespace = u;
  }
  // cgroup v2: required unless the policy explicitly allows running without it.
  Result<void> usable;
  if (config_.cgroup_backend == "none") {
    usable = Error(ENOTSUP, "cgroup_backend = \"none\" in agent.toml");
  } else {
    auto host = isolator::probe_cgroup_host();
    if (!host) {
      usable = host.error();
    } else {
      isolator::CgroupBackend backend =
          config_.cgroup_backend == "systemd"    ? isolator::CgroupBackend::kSystemd
          : config_.cgroup_backend == "cgroupfs" ? isolator::CgroupBackend::kCgroupfs
          : host->systemd_pid1                   ? isolator::CgroupBackend::kSystemd
                                                 : isolator::CgroupBackend::kCgroupfs;
      usable = isolator::check_cgroup_host(*host, backend);
      if (usable.ok()) {
        auto m = backend == isolator::CgroupBackend::kSystemd
                     ? isolator::open_systemd_manager(
                           isolator::SystemdOptions{"corral.slice", "corral-tasks.scope"})
                     : isolator::open_cgroupfs_manager();
        if (m) {
          o.cgroups = std::shared_ptr<isolator::CgroupManager>(std::move(*m));
          cgroup_backend_ = backend == isolator::CgroupBackend::kSystemd ? "systemd" : "cgroupfs";
        } else {
          usable = m.error();
        }
      }
    }
  }
  if (!usable.ok()) {
    if (policy.require_cgroup_v2.value) {
      return Error(ENOTSUP,
                   "refusing to start: tasks cannot be isolated on this host.\n" +
                       usable.error().message() +
                       "\nFix the host (boot with systemd.unified_cgroup_hierarchy=1 and run the "
                       "agent as corral-agent.service with Delegate=yes), or, to run tasks "
                       "WITHOUT resource limits, set [cgroups] require_v2 = false in a policy "
                       "file (now " +
                       policy.require_cgroup_v2.origin + ").");
    }
    limits_warning_ =
        "resource limits are NOT enforced on this agent (cgroups.require_v2 = false, " +
        policy.require_cgroup_v2.origin + "): " + usable.error().message();
    log::warning("WARNING: " + limits_warning_);
    cgroup_backend_ = "none";
  }
#ifdef CORRAL_HAVE_IMAGE_STORE
  {
    image::StoreOptions so;
    so.root = !config_.image_store.empty()                 ? config_.image_store
              : config_.work_dir == AgentConfig{}.work_dir ? fs::path(image::kDefaultStoreRoot)
                                                           : config_.work_dir / "images";
    so.policy = image::image_policy_from(policy.images);
    auto store = image::ImageStore::open(so);
    if (!store) {
      return Error(store.error().code(), "opening the image store " + so.root.string() + ": " +
                                             store.error().message() +
                                             " (set [images] store in agent.toml)");
    }
    o.images = std::shared_ptr<image::ImageStore>(std::move(*store));
    o.pull.insecure_registries = config_.insecure_registries;
    o.pull.credentials_file = config_.registry_credentials;
    o.pull.ca_bundle = config_.registry_ca_file;
    for (const auto& [registry, file] : config_.registry_ca_files) {
      o.pull.registry_ca_files[registry] = file;
    }
  }
#endif
#ifdef CORRAL_HAVE_NETWORK
  // [network]: bridge networks for tasks; the manager's leases live in <work_dir>/network and
  // the containerizer's recover() reconciles them with the running tasks (docs/network.md).
  if (config_.network.enabled) {
    const NetworkSettings& n = config_.network;
    network::NetworkConfig nc;
    nc.bridge = n.bridge;
    nc.subnet = n.subnet;
    nc.mtu = n.mtu;
    nc.state_dir = config_.work_dir / "network";
    nc.netns_dir = n.netns_dir;
    nc.nameservers = n.nameservers;
    nc.search = n.search;
    nc.ip_forward = n.ip_forward;
    nc.masquerade = n.masquerade;
    nc.cni_config_dir = n.cni_config_dir;
    nc.cni_plugin_dirs = n.cni_plugin_dirs;
    auto m = network::NetworkManager::open(std::move(nc));
    if (!m) {
      std::string why = "setting up task networking ([network] in agent.toml): ";
      why += m.error().message();
      why += " (fix the key, or remove [network] to run tasks without bridge networking)";
      return Error(m.error().code(), why);
    }
    o.network = std::shared_ptr<network::NetworkManager>(std::move(*m));
    log::info("task networking: bridge " + n.bridge + ", subnet " + n.subnet);
  }
#endif
  CORRAL_ASSIGN_OR_RETURN(native_, native::open_native_containerizer(std::move(o)));
  return {};
}

// ---- recovery --------------------------------------------------------------------------------

Result<void> AgentImpl::recover(const CheckpointContents& contents) {
  if (auto it = contents.meta.find("agent_id"); it != contents.meta.end()) agent_id_ = it->second;
  if (auto it = contents.meta.find("registered"); it != contents.meta.end())
    registered_before_ = it->second == "true";
  if (agent_id_.empty()) {
    agent_id_ = "local-" + random_hex(8);
    CheckpointBatch b;
    b.meta["agent_id"] = agent_id_;
    CORRAL_TRY(store_->commit(b));
  }
  for (const auto& [path, finished] : contents.gc) gc_[path] = finished;

  log::set_process_field("CORRAL_AGENT_ID", agent_id_);
  if (!contents.tasks.empty()) {
    // systemd: say what takes the time, and ask for more of it when there is much to adopt.
    notify::status("recovering " + std::to_string(contents.tasks.size()) + " tasks");
    notify::extend_timeout(std::chrono::seconds(30) +
                           std::chrono::milliseconds(20) * contents.tasks.size());
  }
  std::vector<std::pair<std::string, nlohmann::json>> native_cps, docker_cps;
  for (const auto& [id, text] : contents.tasks) {
    auto rec = TaskRecord::from_record(text);
    if (!rec) {
      log::error("checkpoint: skipping the unreadable record of container " + id + " in " +
                 (config_.work_dir / "agent.db").string() + ": " + rec.error().message() +
                 " (its task, if still running, is cleaned up as an orphan)");
      ++metrics_.corrupt_records;
      continue;
    }
    auto t = std::make_unique<TaskRecord>(std::move(*rec));
    t->persisted_seq = t->seq = 1;
    frameworks_[t->framework.id().value()] = t->framework;
    if (!is_terminal(t->state)) {
      if (t->launched) {
        (t->containerizer == "docker" ? docker_cps : native_cps)
            .emplace_back(t->container_id, t->checkpoint);
      } else {
        // The agent died before the launch completed: the task never ran.
        pending_failures_.push_back(t->container_id);
      }
    }
    index_[key_of(t->framework.id().value(), t->info.task_id().value())] = t->container_id;
    tasks_[t->container_id] = std::move(t);
  }
  auto report =
      [&](containerizer::Containerizer* c,
          const std::vector<std::pair<std::string, nlohmann::json>>& cps) -> Result<void> {
    if (!c) {
      for (const auto& [id, cp] : cps) pending_failures_.push_back(id);
      return {};
    }
    CORRAL_ASSIGN_OR_RETURN(auto recovered, c->recover(cps));
    for (const auto& r : recovered) {
      if (r.running) ++recovered_running_;
    }
    return {};
  };
  CORRAL_TRY(report(native_.get(), native_cps));
  CORRAL_TRY(report(docker_.get(), docker_cps));
  for (const auto& id : pending_failures_) {
    asio::post(io_, [this, id] {
      auto* t = find(id);
      if (!t || is_terminal(t->state)) return;
      update(*t, v1::TASK_FAILED, TaskStatus::SOURCE_AGENT, TaskStatus::REASON_AGENT_RESTARTED,
             "the agent restarted before the task was launched (or its containerizer is gone)");
    });
  }
  pending_failures_.clear();
  // Send what was unacknowledged (local tasks acknowledge themselves).
  asio::post(io_, [this] {
    for (auto& [id, t] : tasks_) pump(*t);
  });
  return {};
}

// ---- tasks ----------------------------------------------------------------------------------

TaskRecord* AgentImpl::find(const std::string& container_id) {
  auto it = tasks_.find(container_id);
  return it == tasks_.end() ? nullptr : it->second.get();
}

TaskRecord* AgentImpl::find(const std::string& framework_id, const std::string& task_id) {
  auto it = index_.find(key_of(framework_id, task_id));
  return it == index_.end() ? nullptr : find(it->second);
}

Result<std::string> AgentImpl::run_task(const v1::FrameworkInfo& framework_in,
                                        const v1::TaskInfo& task, bool local) {
  v1::FrameworkInfo framework = framework_in;
  CORRAL_TRY(check_id("framework id", framework.id().value()));
  CORRAL_TRY(check_id("task id", task.task_id().value()));
  if (!task.has_command()) {
    return Error(EINVAL, "task " + task.task_id().value() +
                             " has no command: Corral runs command tasks (set task.command.value)");
  }
  if (auto* existing = find(framework.id().value(), task.task_id().value());
      existing && !is_terminal(existing->state)) {
    return Error(EEXIST, "task " + task.task_id().value() + " of framework " +
                             framework.id().value() +
                             " is already running on this agent (container " +
                             existing->container_id + "); task ids must be unique");
  }
  if (drain_) {
    return Error(EBUSY,
                 "the agent is draining: it accepts no new tasks (corral agent drain); "
                 "run the task on another agent");
  }
  frameworks_[framework.id().value()] = framework;
  auto t = std::make_unique<TaskRecord>();
  t->container_id = random_hex(16);
  t->framework = framework;
  t->info = task;
  t->local = local;
  t->state = v1::TASK_STAGING;
  t->created_at = now_seconds();
  t->containerizer = task.has_container() && task.container().type() == v1::ContainerInfo::DOCKER
                         ? "docker"
                         : "native";
#ifdef CORRAL_HAVE_DOCKER
  if (docker::should_delegate_to_docker(policy_.current(), task)) t->containerizer = "docker";
#endif
  t->sandbox = (config_.work_dir / "sandboxes" / framework.id().value() / task.task_id().value() /
                t->container_id)
                   .string();
  t->run_dir = (config_.work_dir / "runs" / t->container_id).string();
  TaskRecord& rec = *t;
  index_[key_of(framework.id().value(), task.task_id().value())] = t->container_id;
  tasks_[t->container_id] = std::move(t);
  ++metrics_.tasks_started;

  // Policy decision: a refusal is the task's TASK_ERROR, naming the rule and its file.
  auto request = policy_request_for(framework, task);
  Result<isolator::Decision> decision = request ? isolator::decide(policy_.current(), *request)
                                                : Result<isolator::Decision>(request.error());
  if (!decision) {
    update(rec, v1::TASK_ERROR, TaskStatus::SOURCE_AGENT, TaskStatus::REASON_TASK_UNAUTHORIZED,
           "refused by the isolation policy: " + decision.error().message());
    return rec.container_id;
  }
  if (rec.containerizer == "docker" && !docker_) {
    update(rec, v1::TASK_FAILED, TaskStatus::SOURCE_AGENT,
           TaskStatus::REASON_CONTAINER_LAUNCH_FAILED,
           "the task asks for Docker (container.type DOCKER, or the policy's "
           "docker.delegate_images) but this agent has no Docker containerizer" +
               (docker_unavailable_.empty() ? std::string(" (see docs/docker.md)")
                                            : ": " + docker_unavailable_));
    return rec.container_id;
  }
  rec.user = decision->user;
  persist(rec);
  update(rec, v1::TASK_STARTING, TaskStatus::SOURCE_AGENT, std::nullopt, "");

  containerizer::LaunchRequest lr;
  lr.container_id = rec.container_id;
  lr.framework = framework;
  lr.task = task;
  lr.sandbox_dir = rec.sandbox;
  lr.run_dir = rec.run_dir;
  lr.decision = *decision;
  lr.kill_grace = config_.kill_grace;
  if (task.has_kill_policy() && task.kill_policy().has_grace_period()) {
    lr.kill_grace =
        std::chrono::milliseconds(task.kill_policy().grace_period().nanoseconds() / 1'000'000);
  }
  lr.env = {"MESOS_SANDBOX=/mnt/sandbox",
            "MESOS_TASK_ID=" + task.task_id().value(),
            "MESOS_FRAMEWORK_ID=" + framework.id().value(),
            "MESOS_AGENT_ID=" + agent_id_,
            "CORRAL_TASK_ID=" + task.task_id().value(),
            "CORRAL_CONTAINER_ID=" + rec.container_id,
            "HOST=" + hostname_};
  for (const auto& r : task.resources()) {
    if (r.name() == "ports" && r.ranges().range_size() > 0) {
      int n = 0;
      for (const auto& range : r.ranges().range()) {
        for (uint64_t p = range.begin(); p <= range.end() && n < 100; ++p, ++n)
          lr.env.push_back("PORT" + std::to_string(n) + "=" + std::to_string(p));
      }
      if (n > 0) lr.env.push_back("PORT=" + std::to_string(r.ranges().range(0).begin()));
    }
  }
  containerizer::Containerizer* c = rec.containerizer == "docker" ? docker_.get() : native_.get();
  const std::string id = rec.container_id;
  const uint64_t fetch_max = config_.fetch_max_bytes;
  const isolator::Policy policy = policy_.current();
  asio::post(pool_, [this, c, lr, id, fetch_max, policy, task]() {
    // Sandbox, then URIs, then the container; every failure is the task's TASK_FAILED.
    Result<void> prepared = prepare_sandbox(lr, policy, fetch_max);
    if (!prepared.ok()) {
      asio::post(io_, [this, id, e = prepared.error()] { on_launch_failed(id, e, true); });
      return;
    }
    auto launched = c->launch(lr);
    asio::post(io_, [this, id, launched = std::move(launched)]() mutable {
      if (!launched) {
        on_launch_failed(id, launched.error(), false);
      } else {
        on_launched(id, std::move(*launched));
      }
    });
  });
  return rec.container_id;
}

void AgentImpl::on_launch_failed(const std::string& id, const Error& e, bool fetch) {
  auto* t = find(id);
  if (!t) return;
  ++metrics_.tasks_failed_launch;
  update(*t, v1::TASK_FAILED, TaskStatus::SOURCE_AGENT, TaskStatus::REASON_CONTAINER_LAUNCH_FAILED,
         (fetch ? "preparing the sandbox failed: " : "") + e.message());
}

void AgentImpl::on_launched(const std::string& id, containerizer::Launched launched) {
  auto* t = find(id);
  if (!t) return;
  t->launched = true;
  t->checkpoint = std::move(launched.checkpoint);
  if (t->kill_requested) {
    // Killed while it was starting.
    kill_container(*t, std::chrono::milliseconds(0));
  }
  std::string message;
  if (!limits_warning_.empty()) message = "WARNING: " + limits_warning_;
  update(*t, v1::TASK_RUNNING, TaskStatus::SOURCE_EXECUTOR, std::nullopt, message);
  start_health_checks(*t);
}

void AgentImpl::on_terminated(const std::string& id, const containerizer::Termination& term) {
  auto* t = find(id);
  if (!t || is_terminal(t->state)) return;
  stop_health_checks(*t);
  TaskState state = v1::TASK_FAILED;
  std::optional<TaskStatus::Reason> reason = term.reason;
  std::string message = term.message;
  TaskStatus::Source source = TaskStatus::SOURCE_EXECUTOR;
  if (term.oom_killed) {
    state = v1::TASK_FAILED;
    reason = TaskStatus::REASON_CONTAINER_LIMITATION_MEMORY;
    source = TaskStatus::SOURCE_AGENT;
  } else if (t->health_killed) {
    state = v1::TASK_FAILED;
    reason = TaskStatus::REASON_TASK_HEALTH_CHECK_STATUS_UPDATED;
    message = "killed after failing " + std::to_string(t->health_failures) +
              " consecutive health checks (" + t->health_message + ")";
  } else if (t->kill_requested) {
    state = v1::TASK_KILLED;
    reason.reset();
    message = term.kind == containerizer::Termination::Kind::exited
                  ? "killed: exited with status " + std::to_string(term.code) + " after SIGTERM"
                  : "killed" + std::string(term.killed_after_grace
                                               ? " with SIGKILL after its grace period"
                                               : "");
  } else if (term.kind == containerizer::Termination::Kind::exited && term.code == 0) {
    state = v1::TASK_FINISHED;
  } else if (term.kind == containerizer::Termination::Kind::failed ||
             term.kind == containerizer::Termination::Kind::lost) {
    source = TaskStatus::SOURCE_AGENT;
  }
  update(*t, state, source, reason, message,
         t->health_known ? std::optional<bool>(t->healthy) : std::nullopt);
  // Free what is left of the container on the pool.
  containerizer::Containerizer* c = t->containerizer == "docker" ? docker_.get() : native_.get();
  if (c) {
    asio::post(pool_, [c, id] {
      if (auto d = c->destroy(id); !d.ok())
        log::warning("destroying container " + id + ": " + d.error().message());
    });
  }
}

void AgentImpl::kill_task(const std::string& framework_id, const std::string& task_id,
                          std::optional<std::chrono::milliseconds> grace) {
  auto* t = find(framework_id, task_id);
  if (!t) {
    log::info("KILL_TASK for unknown task " + task_id + " of framework " + framework_id +
                  " (already gone)",
              {{"CORRAL_TASK_ID", task_id}, {"CORRAL_FRAMEWORK_ID", framework_id}});
    return;
  }
  kill(*t, grace);
}

void AgentImpl::kill(TaskRecord& t, std::optional<std::chrono::milliseconds> grace) {
  if (is_terminal(t.state)) return;
  std::chrono::milliseconds g = grace.value_or(config_.kill_grace);
  if (!grace && t.info.has_kill_policy() && t.info.kill_policy().has_grace_period())
    g = std::chrono::milliseconds(t.info.kill_policy().grace_period().nanoseconds() / 1'000'000);
  bool first = !t.kill_requested;
  t.kill_requested = true;
  if (!t.launched) {
    // Not running yet: on_launched kills it at once.
    if (t.state == v1::TASK_STAGING) {
      update(t, v1::TASK_KILLED, TaskStatus::SOURCE_AGENT, std::nullopt, "killed before launch");
    } else {
      persist(t);
    }
    return;
  }
  if (first && !t.local) update(t, v1::TASK_KILLING, TaskStatus::SOURCE_AGENT, std::nullopt, "");
  if (first && t.local) persist(t);
  kill_container(t, g);
}

void AgentImpl::kill_container(TaskRecord& t, std::chrono::milliseconds grace) {
  containerizer::Containerizer* c = t.containerizer == "docker" ? docker_.get() : native_.get();
  if (!c) return;
  std::string id = t.container_id;
  asio::post(pool_, [c, id, grace] {
    if (auto k = c->kill(id, grace); !k.ok())
      log::warning("killing container " + id + ": " + k.error().message());
  });
}

// ---- status updates ---------------------------------------------------------------------------

void AgentImpl::update(TaskRecord& t, TaskState state, TaskStatus::Source source,
                       std::optional<TaskStatus::Reason> reason, const std::string& message,
                       std::optional<bool> healthy) {
  // Built in place in the task's pending list (no copy of the update).
  internal::StatusUpdate& u = t.pending.emplace_back();
  *u.mutable_framework_id() = t.framework.id();
  u.mutable_agent_id()->set_value(agent_id_);
  u.set_timestamp(now_seconds());
  std::string uuid = random_bytes(16);
  u.set_uuid(uuid);
  v1::TaskStatus* s = u.mutable_status();
  *s->mutable_task_id() = t.info.task_id();
  s->set_state(state);
  s->set_source(source);
  if (reason) s->set_reason(*reason);
  if (!message.empty()) s->set_message(message);
  s->mutable_agent_id()->set_value(agent_id_);
  s->set_timestamp(u.timestamp());
  s->set_uuid(uuid);
  if (healthy) s->set_healthy(*healthy);
  if (state == v1::TASK_RUNNING) {
    auto* cs = s->mutable_container_status();
    cs->mutable_container_id()->set_value(t.container_id);
    if (t.checkpoint.is_object() && t.checkpoint.contains("pid") &&
        t.checkpoint["pid"].is_number_integer())
      cs->set_executor_pid(t.checkpoint["pid"].get<uint32_t>());
  }
  t.state = state;
  if (t.statuses.size() >= 8) t.statuses.erase(t.statuses.begin());
  t.statuses.push_back(*s);
  ++metrics_.status_updates;
  if (is_terminal(state)) {
    ++metrics_.tasks_terminal;
    if (state == v1::TASK_FINISHED) ++metrics_.tasks_finished;
    if (state == v1::TASK_FAILED) ++metrics_.tasks_failed;
    if (state == v1::TASK_KILLED) ++metrics_.tasks_killed;
    t.finished_at = now_seconds();
    notify_waiters(t);
  }
  if (log::level() >= log::Level::info) {  // not formatted when nobody reads it
    log::info("task " + t.info.task_id().value() + " (framework " + t.framework.id().value() +
                  "): " + v1::TaskState_Name(state) + (message.empty() ? "" : ": " + message),
              {{"CORRAL_TASK_ID", t.info.task_id().value()},
               {"CORRAL_FRAMEWORK_ID", t.framework.id().value()},
               {"CORRAL_CONTAINER_ID", t.container_id}});
  }
  persist(t);
  if (on_task_state_) on_task_state_(t, *s);
}

void AgentImpl::persist(TaskRecord& t) {
  ++t.seq;
  dirty_[t.container_id] = t.seq;
  schedule_flush();
}

void AgentImpl::schedule_flush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  // Everything that changed in this turn of the loop goes into one transaction.
  asio::post(io_, [this] { flush(); });
}

void AgentImpl::flush() {
  flush_scheduled_ = false;
  if (dirty_.empty() && pending_batch_.empty()) return;
  if (flush_in_flight_) {
    flush_again_ = true;
    return;
  }
  CheckpointBatch batch = std::move(pending_batch_);
  pending_batch_ = {};
  std::map<std::string, uint64_t> seqs;
  for (const auto& [id, seq] : dirty_) {
    auto* t = find(id);
    if (!t) {
      batch.tasks[id] = std::nullopt;
      continue;
    }
    if (t->erase) {
      batch.tasks[id] = std::nullopt;
    } else {
      batch.tasks[id] = t->to_record();
    }
    seqs[id] = seq;
  }
  dirty_.clear();
  flush_in_flight_ = true;
  auto started = std::chrono::steady_clock::now();
  asio::post(db_strand_, [this, batch = std::move(batch), seqs = std::move(seqs), started] {
    Result<void> r = store_->commit(batch);
    asio::post(io_, [this, r, seqs, started] {
      flush_in_flight_ = false;
      ++metrics_.checkpoint_commits;
      metrics_.checkpoint_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      if (!r.ok()) {
        // Not durable: keep the updates unsent and retry; the task goes on running.
        log::error("checkpoint commit failed (will retry): " + r.error().message());
        ++metrics_.checkpoint_failures;
        for (const auto& [id, seq] : seqs) dirty_[id] = std::max(dirty_[id], seq);
        auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(1));
        timer->async_wait([this, timer](boost::system::error_code) { schedule_flush(); });
        return;
      }
      for (const auto& [id, seq] : seqs) {
        auto* t = find(id);
        if (!t) continue;
        t->persisted_seq = std::max(t->persisted_seq, seq);
        if (t->erase && t->persisted_seq >= t->seq) {
          forget(id);
          continue;
        }
        pump(*t);
      }
      if (flush_again_ || !dirty_.empty()) {
        flush_again_ = false;
        schedule_flush();
      }
    });
  });
}

void AgentImpl::pump(TaskRecord& t) {
  if (t.pending.empty() || t.erase) return;
  const internal::StatusUpdate& front = t.pending.front();
  // Only what is durable leaves the agent.
  if (t.persisted_seq < t.seq) return;
  if (t.local || t.framework.id().value() == kLocalFramework) {
    // Local tasks: nobody to acknowledge; the agent acknowledges for itself.
    std::string uuid = front.uuid();
    asio::post(io_, [this, id = t.container_id, uuid] {
      if (auto* tt = find(id)) acknowledge(*tt, uuid);
    });
    return;
  }
  if (!link_registered_) return;
  if (t.inflight_uuid == front.uuid() && std::chrono::steady_clock::now() < t.retry_at) {
    return;
  }
  send_update(t);
}

void AgentImpl::send_update(TaskRecord& t) {
  internal::StatusUpdate& front = t.pending.front();
  front.set_latest_state(t.state);
  bool resend = t.inflight_uuid == front.uuid();
  t.inflight_uuid = front.uuid();
  t.retry_backoff =
      resend ? std::min(t.retry_backoff * 2, config_.update_retry_max) : config_.update_retry_min;
  t.retry_at = std::chrono::steady_clock::now() + t.retry_backoff;
  if (resend) ++metrics_.status_update_retries;
  ++metrics_.status_updates_sent;
  post_update(front.SerializeAsString());
  // Retry if no ACKNOWLEDGE arrives in time.
  auto timer = std::make_shared<asio::steady_timer>(io_, t.retry_backoff);
  std::string id = t.container_id, uuid = front.uuid();
  timer->async_wait([this, timer, id, uuid](boost::system::error_code ec) {
    if (ec || stopped_) return;
    auto* tt = find(id);
    if (!tt || tt->pending.empty() || tt->pending.front().uuid() != uuid) return;
    if (link_registered_) send_update(*tt);
  });
}

void AgentImpl::acknowledge(TaskRecord& t, const std::string& uuid) {
  if (t.pending.empty() || t.pending.front().uuid() != uuid) {
    ++metrics_.stale_acks;
    return;  // a duplicate or stale acknowledgement
  }
  t.pending.pop_front();
  t.inflight_uuid.clear();
  ++metrics_.status_updates_acked;
  if (t.pending.empty() && is_terminal(t.state)) {
    // Done: the task's record goes; its sandbox waits for garbage collection.
    t.erase = true;
    pending_batch_.gc[t.sandbox] = now_seconds();
    gc_[t.sandbox] = now_seconds();
    completed_.push_back(t.to_task(agent_id_));
    if (completed_.size() > 1000) completed_.pop_front();
    completed_sandboxes_[t.container_id] = t.sandbox;
    completed_order_.push_back(t.container_id);
    if (completed_order_.size() > 1000) {
      completed_sandboxes_.erase(completed_order_.front());
      completed_order_.pop_front();
    }
    persist(t);
    return;
  }
  persist(t);
}

void AgentImpl::forget(const std::string& id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  auto key = key_of(it->second->framework.id().value(), it->second->info.task_id().value());
  auto idx = index_.find(key);
  if (idx != index_.end() && idx->second == id) index_.erase(idx);
  std::error_code ec;
  fs::remove_all(it->second->run_dir, ec);
  tasks_.erase(it);
}

// ---- stop / reload ----------------------------------------------------------------------------

void AgentImpl::stop(bool kill_tasks, std::function<void()> done) {
  if (kill_tasks) {
    for (auto& [id, t] : tasks_) kill(*t, std::chrono::seconds(5));
  }
  stopped_ = true;
  link_registered_ = false;
  if (link_stream_) link_stream_->cancel();
  link_timer_.cancel();
  gc_timer_.cancel();
  for (auto& [id, t] : tasks_) stop_health_checks(*t);
  auto remaining = std::make_shared<int>(0);
  auto finish = [this, done, remaining] {
    if (--*remaining > 0) return;
    // Let the last checkpoint commit land.
    asio::post(db_strand_, [this, done] {
      asio::post(io_, [done] {
        if (done) done();
      });
    });
  };
  for (auto* s : {unix_server_.get(), tcp_server_.get()}) {
    if (s) {
      ++*remaining;
      s->stop(finish);
    }
  }
  if (*remaining == 0) {
    ++*remaining;
    finish();
  }
}

}  // namespace corral::agent

namespace corral::agent {

Agent::Agent(std::unique_ptr<AgentImpl> impl) : impl_(std::move(impl)) {}
Agent::~Agent() = default;

Result<std::unique_ptr<Agent>> Agent::start(boost::asio::io_context& io, AgentConfig config,
                                            AgentDeps deps) {
  auto impl = std::make_unique<AgentImpl>(io, std::move(config));
  CORRAL_TRY(impl->init(std::move(deps)));
  return std::unique_ptr<Agent>(new Agent(std::move(impl)));
}

void Agent::stop(bool kill_tasks, std::function<void()> done) {
  impl_->stop(kill_tasks, std::move(done));
}

Result<void> Agent::reload_policy() {
  auto r = impl_->policy_.reload();
  if (r.ok()) {
    log::notice("policy reloaded from " + impl_->config_.policy_dir.string());
  } else {
    log::error("policy NOT reloaded (the last good policy stays in force): " + r.error().message());
  }
  return r;
}

std::string Agent::agent_id() const { return impl_->agent_id_; }

std::string Agent::tcp_address() const {
  if (!impl_->tcp_server_ || impl_->tcp_server_->tcp_port() == 0) return {};
  auto eps = impl_->tcp_server_->endpoints();
  return eps.empty() ? std::string() : eps.front().to_string();
}

std::string Agent::socket_path() const { return impl_->config_.socket; }

}  // namespace corral::agent
