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
  // Largest request body the API accepts.
  uint64_t max_request_body = 8 << 20;
  std::chrono::milliseconds idle_timeout{60'000};
};

inline constexpr const char* kDefaultMasterConfigPath = "/etc/corral/master.toml";

// Reads `path` over the defaults. Every problem names file:line and key.
Result<MasterConfig> load_master_config(const std::filesystem::path& path);
// Same, from text (for tests).
Result<MasterConfig> parse_master_config(std::string_view text, std::string name);

}  // namespace corral::master
