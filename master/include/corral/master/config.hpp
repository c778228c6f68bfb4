#pragma once
// corral-master's configuration: /etc/corral/master.toml, overridable on the command line.
// Every key has an embedded default so a master starts with no file at all (single node,
// SQLite state, loopback only). The file format is documented in docs/master.md.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "corral/common/result.hpp"

namespace corral::master {

struct MasterConfig {
  // Where the HTTP API listens: "host:port" or "unix:/path". Loopback by default: opening the
  // API to the network is an operator's explicit choice.
  std::string listen = "127.0.0.1:5050";
  // Durable state (the registry's SQLite database).
  std::filesystem::path work_dir = "/var/lib/corral/master";
  // Cluster name shown by the API and the CLI.
  std::string cluster = "corral";
  std::string log_level = "info";
  // org.corral.Master1 on the system bus (docs/dbus.md); false turns the D-Bus API off.
  bool dbus = true;
  // Publish `_corral-master._tcp` through Avahi (needs dbus; docs/dbus.md).
  bool publish = true;
  // Largest request body the API accepts.
  uint64_t max_request_body = 8 << 20;
  std::chrono::milliseconds idle_timeout{60'000};

  // [agents] The agent link (docs/api/agent-link.md).
  // PING interval on each agent's stream (sent to the agent as heartbeat_interval_seconds).
  std::chrono::milliseconds agent_ping_timeout{15'000};
  // An agent that answers no PING for ping_timeout x max_ping_timeouts is UNREACHABLE.
  int max_agent_ping_timeouts = 5;
  // After a master restart, an agent from the registry that has not re-registered within this
  // long is UNREACHABLE.
  std::chrono::milliseconds agent_reregister_timeout{600'000};
  // An UNREACHABLE agent becomes GONE (its tasks are gone; it may not come back) after this.
  std::chrono::milliseconds agent_removal_timeout{3'600'000};

  // [frameworks] The scheduler API.
  std::chrono::milliseconds framework_heartbeat_interval{15'000};
  // Outstanding offers are rescinded after this long (0: never).
  std::chrono::milliseconds offer_timeout{0};

  // [allocator]
  // A full allocation cycle runs at least this often (filter expiry, offer timeouts) ...
  std::chrono::milliseconds allocation_interval{1'000};
  // ... and events (resources freed, a framework subscribing or reviving) trigger a cycle after
  // this batching delay.
  std::chrono::milliseconds allocation_batch_delay{10};
};

inline constexpr const char* kDefaultMasterConfigPath = "/etc/corral/master.toml";

// Reads `path` over the defaults. Every problem names file:line and key.
Result<MasterConfig> load_master_config(const std::filesystem::path& path);
// Same, from text (for tests).
Result<MasterConfig> parse_master_config(std::string_view text, std::string name);

}  // namespace corral::master
