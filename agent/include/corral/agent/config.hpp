#pragma once
// corral-agent's configuration: /etc/corral/agent.toml over embedded defaults (an agent starts
// with no file at all: standalone, local tasks only). Reference: docs/agent.md.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "corral/common/result.hpp"
#include "corral/v1/mesos.pb.h"

namespace corral::agent {

struct ResourceOverrides {
  std::optional<double> cpus;
  std::optional<uint64_t> memory;                      // bytes
  std::optional<uint64_t> disk;                        // bytes
  std::optional<std::pair<uint64_t, uint64_t>> ports;  // inclusive range
  std::optional<uint64_t> gpus;
};

// [reservations.<role>] static reservations: resources only that role is offered.
struct RoleReservation {
  std::string role;
  std::optional<double> cpus;
  std::optional<uint64_t> memory;
  std::optional<uint64_t> disk;
};

// [network] per-task bridge networks and CNI (docs/network.md). Off unless agent.toml has a
// [network] section (enabled = false turns a present section off).
struct NetworkSettings {
  bool enabled = false;
  std::string bridge = "corral0";        // 1-15 of [a-z0-9_-]
  std::string subnet = "10.88.0.0/16";   // prefix 8-30, host bits zero
  uint32_t mtu = 1500;                   // 576-65535
  std::vector<std::string> nameservers;  // empty: the host's non-loopback ones
  std::vector<std::string> search;
  bool ip_forward = true;
  bool masquerade = true;
  std::filesystem::path netns_dir = "/run/corral/netns";
  std::filesystem::path cni_config_dir = "/etc/corral/cni";  // *.conflist
  std::vector<std::filesystem::path> cni_plugin_dirs = {"/usr/lib/cni"};
};

struct AgentConfig {
  // Master to register with: "http://host:port". Empty: standalone (local tasks only).
  std::string master;
  std::string hostname;  // default: gethostname()
  // TCP API: reads (state, containers, files, logs, metrics) for anyone who can connect; the
  // calls that change the agent only with api_token_file's token. Loopback by default.
  std::string listen = "127.0.0.1:5051";
  // File holding the TCP API's bearer token (one line, at least 16 characters, not readable by
  // others). Set: calls that change the agent (tasks, kill, drain, reload) are served over TCP
  // to requests with "Authorization: Bearer <token>". Empty: TCP stays read-only.
  std::filesystem::path api_token_file;
  // Unix socket API (everything, for the CLI; access by file permission: root and group corral).
  std::string socket = "/run/corral/agent.sock";
  std::filesystem::path work_dir = "/var/lib/corral/agent";
  std::filesystem::path policy_dir = "/etc/corral/policy.d";
  std::string launcher_path;            // default: beside corral-agent, then /usr/lib/corral
  std::string cgroup_backend = "auto";  // auto | systemd | cgroupfs | none
  std::string log_level = "info";
  // org.corral.Agent1 on the system bus (docs/dbus.md); false turns the D-Bus API off.
  bool dbus = true;
  // With no master address: "avahi" looks for `_corral-master._tcp` through avahi-daemon's D-Bus
  // API and follows it (docs/dbus.md); "none" stays standalone. A static master always wins.
  std::string discovery = "avahi";

  ResourceOverrides resources;
  std::map<std::string, std::string> attributes;  // [attributes] rack = "r1"
  std::vector<RoleReservation> reservations;

  // [tasks]
  std::chrono::milliseconds kill_grace{10'000};  // default SIGTERM->SIGKILL grace
  uint64_t output_max_bytes = 10ull << 20;       // stdout/stderr rotation size
  uint32_t output_keep = 3;
  uint64_t fetch_max_bytes = 1ull << 30;  // one fetched URI
  // [gc] sandboxes of finished tasks
  std::chrono::milliseconds gc_max_age{7 * 24 * 3600 * 1000LL};
  double gc_disk_watermark = 0.90;  // above this fraction of the disk used, oldest go first
  std::chrono::milliseconds gc_interval{60'000};
  // [images] the image store for tasks in Docker/OCI images (docs/images.md)
  std::filesystem::path image_store;                     // default /var/lib/corral/images
  std::vector<std::string> insecure_registries;          // "host:port" reached over plain HTTP
  std::filesystem::path registry_credentials;            // Docker config.json style auths
  std::filesystem::path registry_ca_file;                // PEM CAs of TLS registries (else system)
  std::map<std::string, std::string> registry_ca_files;  // [images.ca_files] "host:port" = PEM
  NetworkSettings network;                               // [network]
  // [master_link]
  std::chrono::milliseconds backoff_min{1'000};
  std::chrono::milliseconds backoff_max{60'000};
  std::chrono::milliseconds update_retry_min{10'000};
  std::chrono::milliseconds update_retry_max{600'000};
};

inline constexpr const char* kDefaultAgentConfigPath = "/etc/corral/agent.toml";

Result<AgentConfig> load_agent_config(const std::filesystem::path& path);
Result<AgentConfig> parse_agent_config(std::string_view text, std::string name);

// What the machine has: cpus (affinity), memory (MemTotal minus a reserve for the system: 10 %
// capped at 1 GiB), disk (file system of work_dir minus 5 %), ports 31000-32000, GPUs
// (/dev/nvidia[0-9]+). Overrides replace a discovered value; static reservations split the total
// into role-reserved and unreserved ("*") parts. Errors name the setting (e.g. a reservation
// larger than the total).
Result<std::vector<v1::Resource>> discover_resources(const AgentConfig& config);
// Attributes in Mesos form (text values).
std::vector<v1::Attribute> attributes_of(const AgentConfig& config);

// Sums of scalar resources by name ("cpus", "mem", "disk", "gpus"), ignoring roles.
std::map<std::string, double> scalar_totals(const std::vector<v1::Resource>& resources);

}  // namespace corral::agent
