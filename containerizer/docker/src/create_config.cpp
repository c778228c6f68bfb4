// The pure parts of the Docker containerizer: which tasks go to dockerd, the body of
// POST /containers/create, stats mapping and exit-state mapping.
#include <pwd.h>
#include <sys/stat.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "corral/docker/docker_containerizer.hpp"

namespace corral::docker {

namespace v1 = corral::v1;
using containerizer::LaunchRequest;
using containerizer::Termination;

std::string task_image(const v1::TaskInfo& task) {
  if (!task.has_container()) return {};
  const auto& c = task.container();
  if (c.type() == v1::ContainerInfo::DOCKER) return c.docker().image();
  if (c.has_mesos() && c.mesos().has_image() && c.mesos().image().has_docker()) {
    return c.mesos().image().docker().name();
  }
  return {};
}

bool should_delegate_to_docker(const isolator::Policy& policy, const v1::TaskInfo& task) {
  if (!task.has_container()) return false;
  if (task.container().type() == v1::ContainerInfo::DOCKER) return true;
  return isolator::docker_delegates_image(policy.docker, task_image(task));
}

DockerOptions docker_options_from_policy(const isolator::Policy& policy) {
  DockerOptions o;
  const std::string& s = policy.docker.socket.value;
  o.endpoint = (!s.empty() && s[0] == '/') ? "unix:" + s : s;
  o.policy = policy.docker;
  return o;
}

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "(none)" : out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// "nobody" -> "65534:65534"; a numeric uid -> "uid:gid-of-its-passwd-entry" or "uid:uid".
Result<std::string> docker_user(const std::string& user) {
  if (user.empty()) return Error(EINVAL, "the task has no user (the policy decides one)");
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[4096];
  const bool numeric = std::all_of(user.begin(), user.end(), ::isdigit);
  if (numeric) {
    uint32_t uid = 0;
    auto parsed = std::from_chars(user.data(), user.data() + user.size(), uid);
    if (parsed.ec != std::errc() || parsed.ptr != user.data() + user.size()) {
      return Error(EINVAL, "uid " + user + " is out of range (0 to 4294967295)");
    }
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) {
      return user + ":" + std::to_string(found->pw_gid);
    }
    return user + ":" + user;
  }
  if (getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found) != 0 || found == nullptr) {
    return Error(ENOENT, "user \"" + user +
                             "\" does not exist on this machine; the policy names users of "
                             "the host, which Docker tasks run as by number");
  }
  return std::to_string(found->pw_uid) + ":" + std::to_string(found->pw_gid);
}

Result<std::string> read_seccomp_profile(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    return Error(ec.value(), "seccomp profile " + path + " (from the policy): " + ec.message());
  }
  if (size > 1024 * 1024) {
    return Error(EFBIG, "seccomp profile " + path + " is larger than 1 MiB");
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  auto j = nlohmann::json::parse(text.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(EINVAL, "seccomp profile " + path + " is not a JSON object");
  }
  return j.dump();
}

std::optional<uint64_t> parse_size(const std::string& text) {
  static const std::regex kSize("^([0-9]+)([bkmgBKMG]?)$");
  std::smatch m;
  if (!std::regex_match(text, m, kSize) || m[1].length() > 15) return std::nullopt;
  uint64_t v = std::stoull(m[1]);
  switch (std::tolower(m[2].str().empty() ? 'b' : m[2].str()[0])) {
    case 'k':
      return v << 10;
    case 'm':
      return v << 20;
    case 'g':
      return v << 30;
    default:
      return v;
  }
}

}  // namespace

Result<nlohmann::json> build_create_config(const LaunchRequest& request,
                                           const DockerOptions& options) {
  const v1::TaskInfo& task = request.task;
  const std::string image = task_image(task);
  if (image.empty()) {
    return Error(EINVAL, "task " + task.task_id().value() +
                             " names no Docker image: set container.docker.image (type DOCKER)");
  }
  CORRAL_ASSIGN_OR_RETURN(ImageRef ref, parse_image_ref(image));
  const v1::ContainerInfo& ci = task.container();
  const v1::ContainerInfo::DockerInfo& di = ci.docker();
  const bool docker_type = ci.type() == v1::ContainerInfo::DOCKER;

  nlohmann::json config;
  config["Image"] = ref.full();
  nlohmann::json host;

  // Command, Mesos style: shell=true runs `value` with /bin/sh -c; shell=false overrides the
  // entrypoint with `value` (when set) and passes `arguments`.
  if (task.has_command()) {
    const v1::CommandInfo& cmd = task.command();
    if (cmd.shell()) {
      if (cmd.has_value() && !cmd.value().empty()) {
        config["Entrypoint"] = {"/bin/sh", "-c"};
        config["Cmd"] = {cmd.value()};
      }
    } else {
      if (cmd.has_value() && !cmd.value().empty()) config["Entrypoint"] = {cmd.value()};
      if (cmd.arguments_size() > 0) {
        config["Cmd"] = std::vector<std::string>(cmd.arguments().begin(), cmd.arguments().end());
      }
    }
  }

  // Environment: the agent's, then the task's (a task's variable wins), sandbox path last.
  std::vector<std::string> env;
  std::set<std::string> seen;
  auto add_env = [&](const std::string& kv) {
    const std::string key = kv.substr(0, kv.find('='));
    if (seen.count(key)) {
      std::erase_if(env, [&](const std::string& e) { return e.substr(0, e.find('=')) == key; });
    }
    seen.insert(key);
    env.push_back(kv);
  };
  for (const auto& e : request.env) add_env(e);
  if (task.has_command() && task.command().has_environment()) {
    for (const auto& var : task.command().environment().variables()) {
      if (var.type() == v1::Environment::Variable::SECRET) {
        return Error(EINVAL, "environment variable " + var.name() +
                                 " is a secret; the Docker containerizer does not resolve "
                                 "secrets yet: pass it as a VALUE");
      }
      if (var.name().empty() || var.name().find('=') != std::string::npos) {
        return Error(EINVAL, "environment variable name \"" + var.name() + "\" is not valid");
      }
      add_env(var.name() + "=" + var.value());
    }
  }
  add_env(std::string("MESOS_SANDBOX=") + kSandboxMountPoint);
  config["Env"] = env;
  config["WorkingDir"] = kSandboxMountPoint;

  CORRAL_ASSIGN_OR_RETURN(std::string user, docker_user(request.decision.user));
  config["User"] = user;

  config["Labels"] = {{kLabelAgent, options.agent_label},
                      {kLabelContainerId, request.container_id},
                      {kLabelTaskId, task.task_id().value()},
                      {kLabelFrameworkId, request.framework.id().value()}};

  // Limits, from the policy's decision.
  const isolator::ResourceLimits& lim = request.decision.limits;
  if (lim.cpus) host["NanoCpus"] = static_cast<int64_t>(std::llround(*lim.cpus * 1e9));
  if (lim.cpu_weight) {
    // cgroup v2 weight 1..10000 (default 100) -> v1 shares 2..262144 (default 1024), as runc.
    host["CpuShares"] = static_cast<int64_t>(
        std::max<uint64_t>(2, (static_cast<uint64_t>(*lim.cpu_weight) * 1024 + 50) / 100));
  }
  if (lim.memory_max) {
    host["Memory"] = static_cast<int64_t>(*lim.memory_max);
    // Docker's MemorySwap is memory + swap; without a swap limit a task gets no swap at all.
    host["MemorySwap"] = static_cast<int64_t>(*lim.memory_max + lim.memory_swap_max.value_or(0));
  }
  if (lim.pids_max) host["PidsLimit"] = static_cast<int64_t>(*lim.pids_max);
  if (lim.cpuset_cpus) host["CpusetCpus"] = *lim.cpuset_cpus;
  if (lim.cpuset_mems) host["CpusetMems"] = *lim.cpuset_mems;
  if (lim.io_weight) {
    // blkio weight 10..1000
    host["BlkioWeight"] = std::clamp<int64_t>(static_cast<int64_t>(*lim.io_weight) / 10, 10, 1000);
  }
  host["OomKillDisable"] = false;

  // Security: exactly the decided capabilities, the decided seccomp profile.
  host["CapDrop"] = {"ALL"};
  host["CapAdd"] = request.decision.capabilities;
  std::vector<std::string> security_opt = {"no-new-privileges"};
  if (request.decision.seccomp == "unconfined") {
    security_opt.push_back("seccomp=unconfined");
  } else if (!request.decision.seccomp.empty() && request.decision.seccomp[0] == '/') {
    CORRAL_ASSIGN_OR_RETURN(std::string profile, read_seccomp_profile(request.decision.seccomp));
    security_opt.push_back("seccomp=" + profile);
  }
  if (docker_type && di.privileged()) {
    if (!options.policy.allow_privileged.value) {
      return Error(EPERM,
                   "privileged Docker containers are not allowed by the policy: "
                   "docker.allow_privileged = false (" +
                       options.policy.allow_privileged.origin +
                       "); drop privileged from the task or set allow_privileged = true");
    }
    host["Privileged"] = true;
    security_opt.erase(security_opt.begin());  // privileged and no-new-privileges conflict
  }
  host["SecurityOpt"] = security_opt;

  // Volumes: the sandbox, then what the policy allowed.
  std::vector<std::string> binds;
  binds.push_back(request.sandbox_dir.string() + ":" + kSandboxMountPoint + ":rw");
  for (const auto& v : request.decision.volumes) {
    for (const auto& p : {v.host_path, v.container_path}) {
      if (p.find(':') != std::string::npos || p.find(',') != std::string::npos) {
        return Error(EINVAL, "volume path \"" + p +
                                 "\" contains ':' or ','; Docker binds cannot "
                                 "express it");
      }
    }
    binds.push_back(v.host_path + ":" + v.container_path + (v.writable ? ":rw" : ":ro"));
  }
  host["Binds"] = binds;

  // Network.
  std::string network = "host";
  if (docker_type && di.has_network()) {
    switch (di.network()) {
      case v1::ContainerInfo::DockerInfo::HOST:
        network = "host";
        break;
      case v1::ContainerInfo::DockerInfo::BRIDGE:
        network = "bridge";
        break;
      case v1::ContainerInfo::DockerInfo::NONE:
        network = "none";
        break;
      case v1::ContainerInfo::DockerInfo::USER:
        network = "user";
        break;
    }
  } else if (!docker_type) {
    network = "none";  // a delegated MESOS task: no network unless the task says DOCKER
    if (contains(options.policy.networks.value, "host")) network = "host";
  }
  if (!contains(options.policy.networks.value, network)) {
    return Error(EPERM,
                 "network mode " + network + " is not allowed by the policy: docker.networks = [" +
                     join(options.policy.networks.value) + "] (" + options.policy.networks.origin +
                     "); ask for one of those or add it there");
  }
  const bool user_network = network == "user";
  if (user_network) {
    if (ci.network_infos_size() != 1 || ci.network_infos(0).name().empty()) {
      return Error(EINVAL,
                   "network USER needs exactly one network_infos entry with a name "
                   "(the Docker network to join)");
    }
    network = ci.network_infos(0).name();
  }
  host["NetworkMode"] = network;
  if (docker_type && di.port_mappings_size() > 0) {
    if (network != "bridge" && !user_network) {
      return Error(EINVAL,
                   "port mappings need network BRIDGE (or USER); this task asks for " + network);
    }
    nlohmann::json exposed = nlohmann::json::object();
    nlohmann::json bindings = nlohmann::json::object();
    for (const auto& pm : di.port_mappings()) {
      std::string proto = pm.protocol().empty() ? "tcp" : pm.protocol();
      if (proto != "tcp" && proto != "udp" && proto != "sctp") {
        return Error(EINVAL,
                     "port mapping protocol \"" + pm.protocol() + "\" is not tcp, udp or sctp");
      }
      if (pm.container_port() == 0 || pm.container_port() > 65535 || pm.host_port() > 65535) {
        return Error(EINVAL, "port mapping " + std::to_string(pm.host_port()) + ":" +
                                 std::to_string(pm.container_port()) +
                                 " is out of range (1-65535)");
      }
      const std::string key = std::to_string(pm.container_port()) + "/" + proto;
      exposed[key] = nlohmann::json::object();
      bindings[key].push_back({{"HostIp", ""}, {"HostPort", std::to_string(pm.host_port())}});
    }
    config["ExposedPorts"] = exposed;
    host["PortBindings"] = bindings;
  }
  if (ci.has_hostname() && network != "host") config["Hostname"] = ci.hostname();

  // Extra `docker run` options by long name: the ones that map onto the Engine API and that
  // the policy can vouch for.
  std::vector<std::string> devices;
  for (const auto& p :
       docker_type ? di.parameters() : google::protobuf::RepeatedPtrField<v1::Parameter>()) {
    const std::string& k = p.key();
    const std::string& val = p.value();
    if (k == "label") {
      auto eq = val.find('=');
      std::string lk = val.substr(0, eq);
      if (lk.empty() || lk.rfind("org.corral.", 0) == 0) {
        return Error(EINVAL, "docker parameter label=\"" + val +
                                 "\": keys must be non-empty and not start with org.corral.");
      }
      config["Labels"][lk] = eq == std::string::npos ? "" : val.substr(eq + 1);
    } else if (k == "read-only") {
      host["ReadonlyRootfs"] = (val.empty() || val == "true");
    } else if (k == "init") {
      host["Init"] = (val.empty() || val == "true");
    } else if (k == "workdir") {
      if (val.empty() || val[0] != '/') {
        return Error(EINVAL, "docker parameter workdir=\"" + val + "\" must be absolute");
      }
      config["WorkingDir"] = val;
    } else if (k == "shm-size") {
      auto size = parse_size(val);
      if (!size) return Error(EINVAL, "docker parameter shm-size=\"" + val + "\" is not a size");
      host["ShmSize"] = static_cast<int64_t>(*size);
    } else if (k == "stop-signal") {
      config["StopSignal"] = val;
    } else if (k == "device") {
      std::string dev = val.substr(0, val.find(':'));
      if (!contains(options.policy.devices.value, dev)) {
        return Error(EPERM, "device " + dev + " is not allowed by the policy: docker.devices = [" +
                                join(options.policy.devices.value) + "] (" +
                                options.policy.devices.origin +
                                "); drop it from the task or add it there");
      }
      std::string in_container = dev;
      std::string perms = "rwm";
      auto first = val.find(':');
      if (first != std::string::npos) {
        auto second = val.find(':', first + 1);
        in_container = val.substr(
            first + 1, second == std::string::npos ? std::string::npos : second - first - 1);
        if (second != std::string::npos) perms = val.substr(second + 1);
      }
      host["Devices"].push_back(
          {{"PathOnHost", dev}, {"PathInContainer", in_container}, {"CgroupPermissions", perms}});
    } else {
      return Error(EINVAL, "docker parameter \"" + k +
                               "\" is not supported (supported: label, read-only, init, workdir, "
                               "shm-size, stop-signal, device; limits, user, capabilities, "
                               "volumes and seccomp come from resources and the policy)");
    }
  }

  host["LogConfig"] = {{"Type", "json-file"}, {"Config", nlohmann::json::object()}};
  host["RestartPolicy"] = {{"Name", "no"}};
  config["HostConfig"] = host;
  config["AttachStdout"] = false;
  config["AttachStderr"] = false;
  config["Tty"] = false;
  config["OpenStdin"] = false;
  return config;
}

v1::ResourceStatistics stats_to_resource_statistics(const nlohmann::json& s) {
  v1::ResourceStatistics r;
  r.set_timestamp(
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  auto num = [](const nlohmann::json& j,
                std::initializer_list<const char*> path) -> std::optional<double> {
    const nlohmann::json* cur = &j;
    for (const char* k : path) {
      if (!cur->is_object() || !cur->contains(k)) return std::nullopt;
      cur = &(*cur)[k];
    }
    if (!cur->is_number()) return std::nullopt;
    return cur->get<double>();
  };
  if (auto v = num(s, {"cpu_stats", "cpu_usage", "usage_in_usermode"}))
    r.set_cpus_user_time_secs(*v / 1e9);
  if (auto v = num(s, {"cpu_stats", "cpu_usage", "usage_in_kernelmode"}))
    r.set_cpus_system_time_secs(*v / 1e9);
  if (auto v = num(s, {"cpu_stats", "throttling_data", "periods"}))
    r.set_cpus_nr_periods(static_cast<uint32_t>(*v));
  if (auto v = num(s, {"cpu_stats", "throttling_data", "throttled_periods"}))
    r.set_cpus_nr_throttled(static_cast<uint32_t>(*v));
  if (auto v = num(s, {"cpu_stats", "throttling_data", "throttled_time"}))
    r.set_cpus_throttled_time_secs(*v / 1e9);
  if (auto v = num(s, {"memory_stats", "usage"})) r.set_mem_total_bytes(static_cast<uint64_t>(*v));
  if (auto v = num(s, {"memory_stats", "limit"})) r.set_mem_limit_bytes(static_cast<uint64_t>(*v));
  // cgroup v1 names first, then v2's.
  if (auto v = num(s, {"memory_stats", "stats", "rss"})) {
    r.set_mem_rss_bytes(static_cast<uint64_t>(*v));
    r.set_mem_anon_bytes(static_cast<uint64_t>(*v));
  } else if (auto a = num(s, {"memory_stats", "stats", "anon"})) {
    r.set_mem_rss_bytes(static_cast<uint64_t>(*a));
    r.set_mem_anon_bytes(static_cast<uint64_t>(*a));
  }
  if (auto v = num(s, {"memory_stats", "stats", "cache"})) {
    r.set_mem_cache_bytes(static_cast<uint64_t>(*v));
    r.set_mem_file_bytes(static_cast<uint64_t>(*v));
  } else if (auto f = num(s, {"memory_stats", "stats", "file"})) {
    r.set_mem_cache_bytes(static_cast<uint64_t>(*f));
    r.set_mem_file_bytes(static_cast<uint64_t>(*f));
  }
  if (auto v = num(s, {"memory_stats", "stats", "mapped_file"}))
    r.set_mem_mapped_file_bytes(static_cast<uint64_t>(*v));
  if (auto v = num(s, {"memory_stats", "stats", "swap"}))
    r.set_mem_swap_bytes(static_cast<uint64_t>(*v));
  if (auto v = num(s, {"memory_stats", "stats", "unevictable"}))
    r.set_mem_unevictable_bytes(static_cast<uint64_t>(*v));
  if (auto v = num(s, {"pids_stats", "current"})) r.set_processes(static_cast<uint32_t>(*v));
  if (s.contains("networks") && s["networks"].is_object()) {
    uint64_t rxb = 0, rxp = 0, rxe = 0, rxd = 0, txb = 0, txp = 0, txe = 0, txd = 0;
    for (const auto& [name, n] : s["networks"].items()) {
      (void)name;
      rxb += static_cast<uint64_t>(num(n, {"rx_bytes"}).value_or(0));
      rxp += static_cast<uint64_t>(num(n, {"rx_packets"}).value_or(0));
      rxe += static_cast<uint64_t>(num(n, {"rx_errors"}).value_or(0));
      rxd += static_cast<uint64_t>(num(n, {"rx_dropped"}).value_or(0));
      txb += static_cast<uint64_t>(num(n, {"tx_bytes"}).value_or(0));
      txp += static_cast<uint64_t>(num(n, {"tx_packets"}).value_or(0));
      txe += static_cast<uint64_t>(num(n, {"tx_errors"}).value_or(0));
      txd += static_cast<uint64_t>(num(n, {"tx_dropped"}).value_or(0));
    }
    r.set_net_rx_bytes(rxb);
    r.set_net_rx_packets(rxp);
    r.set_net_rx_errors(rxe);
    r.set_net_rx_dropped(rxd);
    r.set_net_tx_bytes(txb);
    r.set_net_tx_packets(txp);
    r.set_net_tx_errors(txe);
    r.set_net_tx_dropped(txd);
  }
  return r;
}

Termination termination_from_state(const nlohmann::json& state, bool stop_requested,
                                   std::optional<uint64_t> memory_limit) {
  Termination t;
  // Mistyped fields of a malformed answer read as absent, never throw.
  const int code =
      state.is_object() && state.contains("ExitCode") && state["ExitCode"].is_number_integer()
          ? state["ExitCode"].get<int>()
          : -1;
  const bool oom = state.is_object() && state.contains("OOMKilled") &&
                   state["OOMKilled"].is_boolean() && state["OOMKilled"].get<bool>();
  const std::string error =
      state.is_object() && state.contains("Error") && state["Error"].is_string()
          ? state["Error"].get<std::string>()
          : std::string();
  t.oom_killed = oom;
  t.code = code;
  if (oom) {
    t.kind = Termination::Kind::signaled;
    t.signal = code > 128 ? code - 128 : 9;
    t.reason = v1::TaskStatus::REASON_CONTAINER_LIMITATION_MEMORY;
    t.message = "out of memory";
    if (memory_limit) t.message += " (limit " + isolator::format_bytes(*memory_limit) + ")";
    t.message += ": the kernel's OOM killer killed the task; ask for more memory";
    return t;
  }
  if (!error.empty() && code != 0) {
    // dockerd could not run the command (e.g. "exec: \"nope\": executable file not found").
    t.kind = Termination::Kind::failed;
    t.reason = v1::TaskStatus::REASON_CONTAINER_LAUNCH_FAILED;
    t.message = "the container did not start: " + error;
    return t;
  }
  if (stop_requested && code > 128 && code < 128 + 65) {
    t.kind = Termination::Kind::signaled;
    t.signal = code - 128;
    t.killed_after_grace = t.signal == 9;
    t.message = t.signal == 9 ? "killed by SIGKILL after the grace period"
                              : "killed by signal " + std::to_string(t.signal);
    return t;
  }
  t.kind = Termination::Kind::exited;
  t.message = "exited with " + std::to_string(code);
  return t;
}

}  // namespace corral::docker
