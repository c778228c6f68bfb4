#pragma once
// `corral run`: runs one task locally, without a master or an agent, through the same isolation
// libraries the agent uses (policy -> cgroup -> corral-launcher). It is how an operator tries a
// policy: the limits flags are checked against /etc/corral/policy.d like a real task's.

#include <optional>
#include <string>
#include <vector>

#include "corral/isolator/policy.hpp"

namespace corral::cli {

struct RunOptions {
  isolator::TaskRequest request;  // limits, user, capabilities, seccomp, volumes, role
  std::vector<std::string> argv;  // the command
  std::vector<std::string> env;   // extra "KEY=value" (PATH and HOME are always set)
  std::string policy_dir = isolator::kDefaultPolicyDir;
  std::string rootfs;  // empty: the host's (read-only)
  std::string hostname = "corral";
  std::string network = "none";  // "none" (loopback only) or "host"
  std::string workdir;           // inside the sandbox; default: the sandbox mount
  uint32_t grace_ms = 10000;
  std::string state_dir = "/var/lib/corral/run";  // where sandboxes are made
  bool keep = false;                              // keep the sandbox directory afterwards
  std::string launcher;  // path of corral-launcher; default: found beside corral
  bool quiet = false;    // no "corral: ..." status lines
};

// Runs the task to completion, streaming its stdout/stderr to ours. Returns the exit code for
// the CLI: the task's, 128+signal when it was killed (137 for an OOM kill, reported as such),
// 125 when Corral refused or failed to start it (with the reason on stderr).
int run_task(const RunOptions& options);

}  // namespace corral::cli
