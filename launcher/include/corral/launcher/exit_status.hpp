#pragma once
// The exit status file corral-launcher writes (atomically, as one JSON object) when a task ends,
// for the agent to read even if it restarted meanwhile. Format in docs/launcher.md.

#include <string>
#include <string_view>

#include "corral/common/result.hpp"

namespace corral::launcher {

struct ExitStatus {
  enum class State { exited, signaled, failed };
  State state = State::failed;
  int code = 0;             // exited: the exit code; failed: corral-launcher's exit code
  int signal = 0;           // signaled: the signal number
  std::string signal_name;  // signaled: "SIGKILL", ...
  bool core_dumped = false;
  bool killed_after_grace = false;  // SIGKILL sent because SIGTERM's grace period ran out
  std::string error;                // failed: what went wrong
};

Result<ExitStatus> parse_exit_status(std::string_view text);
Result<ExitStatus> read_exit_status(const std::string& path);

}  // namespace corral::launcher
