#include "corral/agent/config.hpp"

#include <arpa/inet.h>
#include <sched.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cmath>
#include <regex>

#include "corral/common/config.hpp"
#include "corral/common/fd.hpp"
#include "corral/common/http.hpp"
#ifdef CORRAL_HAVE_NETWORK
#include "corral/network/network.hpp"
#endif

namespace corral::agent {
namespace fs = std::filesystem;

namespace {

void absolute_path(ConfigTable& t, std::string_view key, fs::path* out) {
  std::string value;
  if (!t.get(key, &value)) return;
  if (value.empty() || value.front() != '/') {
    t.fail(key, "must be an absolute path");
    return;
  }
  *out = value;
}

Result<AgentConfig> read(ConfigFile file) {
  AgentConfig c;
  ConfigTable root = file.root();
  if (root.get("master", &c.master) && !c.master.empty()) {
    if (auto ep = http::parse_endpoint(c.master); !ep) root.fail("master", ep.error().message());
  }
  root.get("hostname", &c.hostname);
  if (root.get("listen", &c.listen) && !c.listen.empty()) {
    if (auto ep = http::parse_endpoint(c.listen); !ep) root.fail("listen", ep.error().message());
  }
  if (root.get("socket", &c.socket) && !c.socket.empty() && c.socket.front() != '/')
    root.fail("socket", "must be an absolute path such as \"/run/corral/agent.sock\"");
  absolute_path(root, "api_token_file", &c.api_token_file);
  absolute_path(root, "work_dir", &c.work_dir);
  absolute_path(root, "policy_dir", &c.policy_dir);
  root.get("launcher_path", &c.launcher_path);
  root.get_enum("cgroup_backend", &c.cgroup_backend, {"auto", "systemd", "cgroupfs", "none"});
  root.get_enum("log_level", &c.log_level, {"debug", "info", "notice", "warning", "error"});
  root.get("dbus", &c.dbus);
  root.get_enum("discovery", &c.discovery, {"avahi", "none"});

  ConfigTable res = root.table("resources");
  double cpus = 0;
  if (res.get("cpus", &cpus)) {
    if (!(cpus > 0) || cpus > 100000) {
      res.fail("cpus", "must be a positive number of CPUs, e.g. 4 or 3.5");
    } else {
      c.resources.cpus = cpus;
    }
  }
  uint64_t bytes = 0;
  if (res.get_bytes("memory", &bytes)) c.resources.memory = bytes;
  if (res.get_bytes("disk", &bytes)) c.resources.disk = bytes;
  uint64_t gpus = 0;
  if (res.get_int("gpus", &gpus, 0, 1024)) c.resources.gpus = gpus;
  std::string ports;
  if (res.get("ports", &ports)) {
    static const std::regex re(R"(^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$)");
    std::smatch m;
    if (!std::regex_match(ports, m, re) || std::stoul(m[1]) > std::stoul(m[2]) ||
        std::stoul(m[2]) > 65535 || std::stoul(m[1]) == 0) {
      res.fail("ports", "must be a range \"BEGIN-END\" within 1-65535, e.g. \"31000-32000\"");
    } else {
      c.resources.ports = {std::stoul(m[1]), std::stoul(m[2])};
    }
  }
  root.get_string_map("attributes", &c.attributes);
  ConfigTable reservations = root.table("reservations");
  for (const auto& role : reservations.keys()) {
    ConfigTable t = reservations.table(role);
    RoleReservation r;
    r.role = role;
    double rc = 0;
    if (t.get("cpus", &rc)) {
      if (!(rc > 0)) {
        t.fail("cpus", "must be a positive number");
      } else {
        r.cpus = rc;
      }
    }
    if (t.get_bytes("memory", &bytes)) r.memory = bytes;
    if (t.get_bytes("disk", &bytes)) r.disk = bytes;
    c.reservations.push_back(r);
  }
  ConfigTable tasks = root.table("tasks");
  tasks.get_duration("kill_grace", &c.kill_grace);
  tasks.get_bytes("output_max_bytes", &c.output_max_bytes);
  tasks.get_int("output_keep", &c.output_keep, 0, 100);
  tasks.get_bytes("fetch_max_bytes", &c.fetch_max_bytes);
  ConfigTable gc = root.table("gc");
  gc.get_duration("max_age", &c.gc_max_age);
  gc.get_duration("interval", &c.gc_interval);
  if (gc.get("disk_watermark", &c.gc_disk_watermark) &&
      (c.gc_disk_watermark <= 0 || c.gc_disk_watermark > 1)) {
    gc.fail("disk_watermark", "must be a fraction in (0, 1], e.g. 0.9");
  }
  ConfigTable images = root.table("images");
  absolute_path(images, "store", &c.image_store);
  images.get("insecure_registries", &c.insecure_registries);
  absolute_path(images, "credentials", &c.registry_credentials);
  absolute_path(images, "ca_file", &c.registry_ca_file);
  images.get_string_map("ca_files", &c.registry_ca_files);
  if (root.has("network")) {
    ConfigTable net = root.table("network");
    NetworkSettings& n = c.network;
    n.enabled = true;
    net.get("enabled", &n.enabled);
    static const std::regex bridge_name(R"(^[a-z0-9_-]{1,15}$)");
    if (net.get("bridge", &n.bridge) && !std::regex_match(n.bridge, bridge_name))
      net.fail("bridge", "must be 1-15 characters of a-z, 0-9, _ and -, e.g. \"corral0\"");
#ifdef CORRAL_HAVE_NETWORK
    if (net.get("subnet", &n.subnet)) {
      if (auto s = network::parse_subnet(n.subnet); !s)
        net.fail("subnet", s.error().message() + "; e.g. \"10.88.0.0/16\"");
    }
#else
    net.get("subnet", &n.subnet);
#endif
    net.get_int("mtu", &n.mtu, 576, 65535);
    if (net.get("nameservers", &n.nameservers)) {
      for (const auto& ns : n.nameservers) {
        in6_addr buf{};
        if (::inet_pton(AF_INET, ns.c_str(), &buf) != 1 &&
            ::inet_pton(AF_INET6, ns.c_str(), &buf) != 1) {
          net.fail("nameservers", "\"" + ns + "\" is not an IP address such as \"192.0.2.53\"");
          break;
        }
      }
    }
    if (net.get("search", &n.search)) {
      static const std::regex domain(R"(^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$)");
      for (const auto& d : n.search) {
        if (!std::regex_match(d, domain)) {
          net.fail("search", "\"" + d + "\" is not a domain name such as \"example.org\"");
          break;
        }
      }
    }
    net.get("ip_forward", &n.ip_forward);
    net.get("masquerade", &n.masquerade);
    absolute_path(net, "netns_dir", &n.netns_dir);
    absolute_path(net, "cni_config_dir", &n.cni_config_dir);
    std::vector<std::string> dirs;
    if (net.get("cni_plugin_dirs", &dirs)) {
      n.cni_plugin_dirs.clear();
      for (const auto& d : dirs) {
        if (d.empty() || d.front() != '/') {
          net.fail("cni_plugin_dirs",
                   "\"" + d + "\" must be an absolute path such as /usr/lib/cni");
          break;
        }
        n.cni_plugin_dirs.emplace_back(d);
      }
    }
  }
  ConfigTable link = root.table("master_link");
  link.get_duration("backoff_min", &c.backoff_min);
  link.get_duration("backoff_max", &c.backoff_max);
  link.get_duration("update_retry_min", &c.update_retry_min);
  link.get_duration("update_retry_max", &c.update_retry_max);
  if (c.backoff_min.count() <= 0 || c.backoff_max < c.backoff_min)
    link.fail("backoff_max", "backoff_min must be positive and backoff_max >= backoff_min");
  CORRAL_TRY(file.finish());
  return c;
}

v1::Resource scalar(const std::string& name, double value, const std::string& role) {
  v1::Resource r;
  r.set_name(name);
  r.set_type(v1::Value::SCALAR);
  // Mesos keeps scalars at 3 decimal places.
  r.mutable_scalar()->set_value(std::floor(value * 1000.0 + 0.5) / 1000.0);
  if (role != "*") {
    auto* res = r.add_reservations();
    res->set_type(v1::Resource::ReservationInfo::STATIC);
    res->set_role(role);
  }
  return r;
}

}  // namespace

Result<AgentConfig> load_agent_config(const fs::path& path) {
  CORRAL_ASSIGN_OR_RETURN(ConfigFile file, ConfigFile::load(path));
  return read(std::move(file));
}

Result<AgentConfig> parse_agent_config(std::string_view text, std::string name) {
  CORRAL_ASSIGN_OR_RETURN(ConfigFile file, ConfigFile::parse(text, std::move(name)));
  return read(std::move(file));
}

Result<std::vector<v1::Resource>> discover_resources(const AgentConfig& config) {
  double cpus = 0;
  if (config.resources.cpus) {
    cpus = *config.resources.cpus;
  } else {
    cpu_set_t set;
    CPU_ZERO(&set);
    cpus = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                         : ::sysconf(_SC_NPROCESSORS_ONLN);
  }
  uint64_t mem = 0;
  if (config.resources.memory) {
    mem = *config.resources.memory;
  } else {
    CORRAL_ASSIGN_OR_RETURN(std::string meminfo, read_file("/proc/meminfo", 1 << 16));
    uint64_t kib = 0;
    std::sscanf(meminfo.c_str(), "MemTotal: %lu kB", &kib);
    uint64_t total = kib * 1024;
    uint64_t reserve = std::min<uint64_t>(total / 10, 1ull << 30);
    mem = total - reserve;
  }
  uint64_t disk = 0;
  if (config.resources.disk) {
    disk = *config.resources.disk;
  } else {
    fs::path probe = config.work_dir;
    while (!probe.empty() && !fs::exists(probe) && probe != probe.parent_path())
      probe = probe.parent_path();
    struct statvfs st {};
    if (::statvfs(probe.c_str(), &st) != 0)
      return Error::from_errno("statvfs " + probe.string() + " (the agent's work_dir)");
    uint64_t total = static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
    disk = total - total / 20;
  }
  uint64_t gpus = 0;
  if (config.resources.gpus) {
    gpus = *config.resources.gpus;
  } else {
    std::error_code ec;
    static const std::regex nvidia(R"(^nvidia[0-9]+$)");
    for (const auto& e : fs::directory_iterator("/dev", ec)) {
      if (std::regex_match(e.path().filename().string(), nvidia)) ++gpus;
    }
  }
  auto ports = config.resources.ports.value_or(std::pair<uint64_t, uint64_t>{31000, 32000});

  // Static reservations come out of the totals.
  double free_cpus = cpus;
  double free_mem = static_cast<double>(mem) / (1 << 20);
  double free_disk = static_cast<double>(disk) / (1 << 20);
  std::vector<v1::Resource> out;
  for (const auto& r : config.reservations) {
    if (r.cpus) {
      free_cpus -= *r.cpus;
      out.push_back(scalar("cpus", *r.cpus, r.role));
    }
    if (r.memory) {
      free_mem -= static_cast<double>(*r.memory) / (1 << 20);
      out.push_back(scalar("mem", static_cast<double>(*r.memory) / (1 << 20), r.role));
    }
    if (r.disk) {
      free_disk -= static_cast<double>(*r.disk) / (1 << 20);
      out.push_back(scalar("disk", static_cast<double>(*r.disk) / (1 << 20), r.role));
    }
  }
  if (free_cpus < -1e-9 || free_mem < -1e-9 || free_disk < -1e-9) {
    return Error(EINVAL, "the [reservations.*] sections reserve more than the agent has (cpus " +
                             std::to_string(cpus) + ", memory " + std::to_string(mem >> 20) +
                             " MiB, disk " + std::to_string(disk >> 20) +
                             " MiB); lower the reservations or set [resources] explicitly");
  }
  if (free_cpus > 1e-9) out.push_back(scalar("cpus", free_cpus, "*"));
  if (free_mem > 1e-9) out.push_back(scalar("mem", free_mem, "*"));
  if (free_disk > 1e-9) out.push_back(scalar("disk", free_disk, "*"));
  if (gpus > 0) out.push_back(scalar("gpus", static_cast<double>(gpus), "*"));
  v1::Resource p;
  p.set_name("ports");
  p.set_type(v1::Value::RANGES);
  auto* range = p.mutable_ranges()->add_range();
  range->set_begin(ports.first);
  range->set_end(ports.second);
  out.push_back(p);
  return out;
}

std::vector<v1::Attribute> attributes_of(const AgentConfig& config) {
  std::vector<v1::Attribute> out;
  for (const auto& [k, v] : config.attributes) {
    v1::Attribute a;
    a.set_name(k);
    a.set_type(v1::Value::TEXT);
    a.mutable_text()->set_value(v);
    out.push_back(a);
  }
  return out;
}

std::map<std::string, double> scalar_totals(const std::vector<v1::Resource>& resources) {
  std::map<std::string, double> out;
  for (const auto& r : resources) {
    if (r.type() == v1::Value::SCALAR) out[r.name()] += r.scalar().value();
  }
  return out;
}

}  // namespace corral::agent
