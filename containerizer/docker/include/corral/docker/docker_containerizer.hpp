#pragma once
// The Docker containerizer: runs a task's container through dockerd over the Engine API
// (v1.41+), the way Mesos's Docker containerizer did, for sites that already run dockerd.
// docs/docker.md is the operator reference.
//
// What it does with a LaunchRequest:
//   image    ContainerInfo.docker.image (type DOCKER), or ContainerInfo.mesos.image.docker.name
//            when the policy's [docker] delegate_images matches it; pulled when missing or when
//            force_pull_image is set, with credentials from [docker] config
//   create   the policy Decision's limits (NanoCpus, CpuShares, Memory, MemorySwap, PidsLimit),
//            capabilities (CapDrop ALL + CapAdd), seccomp profile, user (as uid:gid), volumes,
//            the sandbox bind-mounted at /mnt/mesos/sandbox (the working directory), env,
//            network mode and port mappings, labels tying the container to its task
//   run      start; stdout/stderr streamed into <sandbox>/stdout and <sandbox>/stderr; one wait
//            request per container on an event loop thread (no thread per container)
//   end      exit code, OOMKilled (REASON_CONTAINER_LIMITATION_MEMORY), kill with grace
//            (POST /stop?t=grace) reported once through the callback
//   recover  finds containers again by label; labelled containers of no known task (orphans)
//            are stopped and removed after orphan_grace
//   dockerd  down or restarting: tasks wait up to daemon_down_grace for it to come back (their
//            containers are adopted again if they survived, e.g. with live-restore), then are
//            reported lost; daemon_condition() says what is wrong meanwhile
//
// Labels on every container: org.corral.agent=<agent_label>, org.corral.container-id,
// org.corral.task-id, org.corral.framework-id. Name: <name_prefix><container_id>.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "corral/containerizer/containerizer.hpp"
#include "corral/docker/engine.hpp"
#include "corral/isolator/policy.hpp"

namespace corral::docker {

inline constexpr const char* kLabelAgent = "org.corral.agent";
inline constexpr const char* kLabelContainerId = "org.corral.container-id";
inline constexpr const char* kLabelTaskId = "org.corral.task-id";
inline constexpr const char* kLabelFrameworkId = "org.corral.framework-id";
inline constexpr const char* kSandboxMountPoint = "/mnt/mesos/sandbox";

struct DockerOptions {
  // "unix:/run/docker.sock" (the policy's [docker] socket) or "host:port".
  std::string endpoint = kDefaultSocket;
  // Ties containers to this agent: two agents (or tests) on one dockerd never adopt each
  // other's containers. [A-Za-z0-9._-]+.
  std::string agent_label = "corral";
  // Container name = name_prefix + container_id.
  std::string name_prefix = "corral-";
  // The policy's [docker] section: networks, privileged, devices, registry credentials.
  isolator::DockerPolicy policy;
  // Labelled containers that no checkpoint names are stopped and removed this long after
  // recover().
  std::chrono::milliseconds orphan_grace{std::chrono::seconds(60)};
  // SIGTERM-to-SIGKILL grace when an orphan is stopped.
  std::chrono::milliseconds orphan_stop_grace{std::chrono::seconds(10)};
  // How long running tasks wait for a dockerd that stopped answering before they are reported
  // lost.
  std::chrono::milliseconds daemon_down_grace{std::chrono::seconds(60)};
  // After a container exited, how long to wait for the rest of its output.
  std::chrono::milliseconds log_drain{std::chrono::seconds(5)};
  std::chrono::milliseconds request_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds pull_timeout{std::chrono::minutes(30)};
  // Pull progress lines, for the agent's log (may be empty).
  PullProgress pull_progress;
};

// What the containerizer remembers about dockerd being unreachable.
struct DaemonCondition {
  bool reachable = true;
  std::string message;  // "dockerd at unix:/run/docker.sock is not answering since ...: ..."
  std::chrono::system_clock::time_point since{};
};

class DockerContainerizer : public containerizer::Containerizer {
 public:
  // dockerd's state as seen by the last exchange; the agent reports it as an agent condition.
  virtual DaemonCondition daemon_condition() const = 0;
  // How many containers it follows now.
  virtual std::size_t tracked() const = 0;
};

// Checks that dockerd answers and speaks API >= 1.41 (an Error says what to fix otherwise),
// then starts the event loop thread.
Result<std::unique_ptr<DockerContainerizer>> open_docker_containerizer(DockerOptions options);

// True when this task goes to dockerd: ContainerInfo.type is DOCKER, or it is MESOS with a
// Docker image that the policy's [docker] delegate_images matches.
bool should_delegate_to_docker(const isolator::Policy& policy, const corral::v1::TaskInfo& task);

// DockerOptions from the policy's [docker] section.
DockerOptions docker_options_from_policy(const isolator::Policy& policy);

// The image a task asks for (docker.image, or mesos.image.docker.name); empty when none.
std::string task_image(const corral::v1::TaskInfo& task);

// Builds the body of POST /containers/create for a launch: pure, for unit tests. Refusals
// (EPERM: privileged, network, device not allowed by the policy; EINVAL: unknown docker
// parameter, bad port mapping, secret env) name the field and the fix.
Result<nlohmann::json> build_create_config(const containerizer::LaunchRequest& request,
                                           const DockerOptions& options);

// Maps GET /containers/{id}/stats (cgroup v1 or v2 layout) to ResourceStatistics.
corral::v1::ResourceStatistics stats_to_resource_statistics(const nlohmann::json& stats);

// The Termination for a container's final State (from inspect), given whether Corral asked it
// to stop. Exit codes 128+N are reported as signal N only when Corral stopped the container or
// the OOM killer acted (dockerd cannot tell "exit 137" from "killed by SIGKILL").
containerizer::Termination termination_from_state(const nlohmann::json& state, bool stop_requested,
                                                  std::optional<uint64_t> memory_limit);

}  // namespace corral::docker
