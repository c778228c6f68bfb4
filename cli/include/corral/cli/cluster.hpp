#pragma once
// `corral agents`, `corral frameworks`, `corral tasks`, `corral quota`, `corral top`: cluster
// views over the master's operator API (POST /api/v1) and /metrics/snapshot, like any other
// HTTP client would read them. Each render_* returns the text to print (a table, or JSON with
// as_json); errors name the master and what to check.

#include <CLI/CLI.hpp>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "corral/common/http_client.hpp"
#include "corral/common/result.hpp"

namespace corral::cli {

Result<std::string> render_agents(http::HttpClient& master, bool as_json);
Result<std::string> render_frameworks(http::HttpClient& master, bool as_json);
// all: include completed and unreachable tasks.
Result<std::string> render_tasks(http::HttpClient& master, bool as_json, bool all);
Result<std::string> render_quota(http::HttpClient& master, bool as_json);
// Sets (replaces) the quota of a role. Amounts like {"cpus": 2, "mem": 1024}.
Result<void> set_quota(http::HttpClient& master, const std::string& role,
                       const std::map<std::string, double>& guarantees,
                       const std::map<std::string, double>& limits);
// One screen of `corral top`: cluster usage, agents, frameworks, tasks, roles.
Result<std::string> render_top(http::HttpClient& master);

// Adds the subcommands to `app`. After parsing, the returned function runs the one that was
// chosen and returns its exit status, or nullopt if none of them was. `master` is read when it
// runs (after --master was parsed).
std::function<std::optional<int>()> add_cluster_commands(CLI::App& app, const std::string* master);

}  // namespace corral::cli
