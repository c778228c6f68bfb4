#pragma once
// corral-launcher as a library: builds one task's sandbox from a SandboxSpec, starts the task in
// it and turns the calling process into the task's supervisor. Format and behaviour are
// documented in docs/launcher.md.
//
// Process layout while a task runs:
//   corral-launcher (pid P, the agent's child)  -- exec'd into `corral-launcher-init supervise`:
//     output rotation, signal forwarding, kill grace period, exit status file
//   └─ PID 1 of the task's namespaces           -- exec'd into `corral-launcher-init init`:
//        reaps zombies, forwards signals to the task, reports its wait status
//      └─ the task (PID 2)

#include <string>

#include "corral/common/result.hpp"
#include "corral/isolator/sandbox_spec.hpp"

namespace corral::launcher {

struct LaunchOptions {
  // The static helper binary (corral-launcher-init); default: beside /proc/self/exe.
  std::string init_path;
};

// Exit codes of corral-launcher itself when the task could not be started (otherwise the task's
// exit code, or 128 + its signal number).
inline constexpr int kExitUsage = 2;          // bad command line or spec
inline constexpr int kExitSetupFailed = 125;  // the sandbox could not be built
inline constexpr int kExitCannotExec = 126;   // the program exists but could not be executed
inline constexpr int kExitNotFound = 127;     // the program was not found

// Builds the sandbox and starts the task; on success replaces the calling process with the
// supervisor and does not return. On failure (spec problem, mount error, program not found, ...)
// writes {"state":"failed",...} to spec.exit_status_path when it can and returns the error with
// the exit code to use in *exit_code.
Result<void> launch(const isolator::SandboxSpec& spec, const LaunchOptions& options,
                    int* exit_code);

// Writes the "failed" exit status (atomically) for a task that never started.
Result<void> write_failed_status(const std::string& path, const Error& error, int exit_code);

}  // namespace corral::launcher
