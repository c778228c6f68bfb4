#pragma once
// The Containerizer interface: how corral-agent runs one task's container, whichever runtime does
// the work. Two implementations:
//   native  (containerizer/native)  Corral's own isolators + corral-launcher, optionally in an
//                                    image's root filesystem (containerizer/image)
//   docker  (containerizer/docker)  hands the task to dockerd over the Engine API
//
// Threading: every method may block (fork/exec, HTTP to dockerd, image provisioning) and is
// called from the agent's worker threads, never from its event loop; implementations are
// thread-safe. Terminations are reported through the TerminationCallback, from any thread.
//
// Lifecycle of one container, as the agent drives it:
//   launch()            -> the task runs (TASK_RUNNING) or an Error (TASK_FAILED, with reason)
//   ... usage(), kill() ...
//   callback(Termination)  exactly once per launched or recovered container
//   destroy()           -> frees what is left (cgroup, rootfs, stopped docker container)
// After an agent restart: recover() with what launch() returned (the checkpoint), then the same.

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "corral/common/result.hpp"
#include "corral/isolator/policy.hpp"
#include "corral/v1/mesos.pb.h"

namespace corral::containerizer {

struct LaunchRequest {
  // Agent-unique, [A-Za-z0-9._-], at most 200 characters; also the cgroup / docker name part.
  std::string container_id;
  corral::v1::FrameworkInfo framework;
  corral::v1::TaskInfo task;  // command, container info (type MESOS or DOCKER, image), resources
  // The task's sandbox on the host (exists; the task's working directory). The container's
  // stdout and stderr go to <sandbox_dir>/stdout and <sandbox_dir>/stderr.
  std::filesystem::path sandbox_dir;
  // Agent-private directory for this container (exists, not visible to the task): specs, exit
  // files, anything the implementation needs to find the container again after a restart.
  std::filesystem::path run_dir;
  // The policy's decision for this task: limits, capabilities, seccomp, user, volumes.
  isolator::Decision decision;
  // Environment the agent adds (MESOS_SANDBOX, CORRAL_TASK_ID, ...), "KEY=value".
  std::vector<std::string> env;
  // SIGTERM-to-SIGKILL grace period used when the container is killed without an explicit one.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(10)};
};

// What launch() returns: persisted by the agent with the task and handed back to recover().
struct Launched {
  std::optional<pid_t> pid;   // the supervising process on the host, when there is one
  nlohmann::json checkpoint;  // implementation-defined; enough to find the container again
};

struct Termination {
  enum class Kind {
    exited,    // the task's process exited with `code`
    signaled,  // killed by `signal`
    failed,    // it never started properly (setup error, image missing, ...)
    lost,      // the container vanished without a readable exit (e.g. its supervisor died)
  };
  Kind kind = Kind::lost;
  int code = 0;
  int signal = 0;
  bool oom_killed = false;          // the kernel's OOM killer acted in the container
  bool killed_after_grace = false;  // SIGKILL was needed after SIGTERM's grace period
  // Mesos reason for the terminal update when there is one (REASON_CONTAINER_LIMITATION_MEMORY,
  // REASON_CONTAINER_LAUNCH_FAILED, REASON_EXECUTOR_TERMINATED for `lost`, ...); a plain exit
  // has none.
  std::optional<corral::v1::TaskStatus::Reason> reason;
  std::string message;  // for people: "exited with 3", "out of memory (limit 64MiB)", ...
};

struct Recovered {
  std::string container_id;
  bool running = false;  // false: it ended while the agent was away (a Termination follows)
};

using TerminationCallback =
    std::function<void(const std::string& container_id, const Termination& termination)>;

class Containerizer {
 public:
  virtual ~Containerizer() = default;
  virtual std::string name() const = 0;  // "native", "docker"

  // Set once, before launch() or recover(). Called exactly once per container.
  virtual void set_termination_callback(TerminationCallback callback) = 0;

  // Starts the task. Returns when its process runs; an Error means it did not start and no
  // Termination will follow (the message says why and what to do).
  virtual Result<Launched> launch(const LaunchRequest& request) = 0;

  // Asks the container to stop: SIGTERM, then SIGKILL after `grace`. Returns at once; the
  // Termination comes through the callback. Killing a container that already ended is OK.
  virtual Result<void> kill(const std::string& container_id, std::chrono::milliseconds grace) = 0;

  // Resource usage now (cpus_*_time_secs, mem_*_bytes, processes, ...).
  virtual Result<corral::v1::ResourceStatistics> usage(const std::string& container_id) = 0;

  // Releases what is left of an ended container (cgroup, rootfs, docker container).
  virtual Result<void> destroy(const std::string& container_id) = 0;

  // Finds containers again after an agent restart from their checkpoints (container_id ->
  // Launched::checkpoint). Containers that ended meanwhile get their Termination through the
  // callback (with their real exit status when it can be read). Implementations also clean up
  // what belongs to no known container (orphans), after `orphan_grace` where they say so.
  virtual Result<std::vector<Recovered>> recover(
      const std::vector<std::pair<std::string, nlohmann::json>>& checkpoints) = 0;
};

}  // namespace corral::containerizer
