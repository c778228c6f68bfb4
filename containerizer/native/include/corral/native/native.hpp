#pragma once
// The native containerizer: runs a task with Corral's own isolators. Per container it creates a
// cgroup (through a CgroupManager, when the host has cgroup v2), writes a SandboxSpec and execs
// `corral-launcher --spec`, which builds the namespaces and stays as the task's supervisor. The
// launcher runs in its own session, so it survives the agent (crash, restart, upgrade);
// recover() finds it again by pid + start time and reads its exit status file if it ended
// while the agent was away.
//
// Task -> sandbox mapping (docs/agent.md has the table): CommandInfo.shell (default true) runs
// `/bin/sh -c value`, otherwise `value` with `arguments` as argv; CommandInfo.environment is
// added to the agent's variables. Network (docs/network.md): ContainerInfo.network_infos[0].name
// picks the mode ("host", "none", "bridge"); without one, image tasks get "bridge" when the agent
// has a NetworkManager, tasks that hold `ports` resources share the host's network, others get a
// private network namespace with loopback only. Bridge-mode port_mappings must use host ports of
// the task's `ports` resources.

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "corral/containerizer/containerizer.hpp"
#include "corral/isolator/cgroup.hpp"
#include "corral/isolator/sandbox_spec.hpp"

#ifdef CORRAL_HAVE_IMAGE_STORE
#include "corral/image/store.hpp"
#endif
#ifdef CORRAL_HAVE_NETWORK
#include "corral/network/network.hpp"
#endif

namespace corral::native {

struct NativeOptions {
  // corral-launcher; its corral-launcher-init must sit beside it.
  std::string launcher_path;
  // Null: resource limits are not enforced (the policy allowed running without cgroup v2; the
  // agent says so loudly). Shared with the agent, which reports the backend in its state.
  std::shared_ptr<isolator::CgroupManager> cgroups;
  // User namespace for every task (policy [user_namespace]); absent = none.
  std::optional<isolator::UserNamespaceSpec> user_namespace;
  // Wait at most this long for the launcher to start the task.
  std::chrono::milliseconds launch_timeout{std::chrono::seconds(60)};
  // Output rotation of the task's stdout/stderr files.
  uint64_t output_max_bytes = 10ull << 20;
  uint32_t output_keep = 3;
#ifdef CORRAL_HAVE_IMAGE_STORE
  // Tasks with ContainerInfo{type: MESOS, mesos: {image: {type: DOCKER, docker: {name}}}} run in
  // that image (overlayfs of its layers + a per-task upper dir); missing images are pulled with
  // `pull`. Null: such tasks fail with a message saying images are not configured.
  std::shared_ptr<image::ImageStore> images;
  image::PullOptions pull;
#endif
#ifdef CORRAL_HAVE_NETWORK
  // Builds bridge-mode networks (the agent's [network] section). Null: a task asking for bridge
  // mode fails with a message saying so; image tasks default to none instead of bridge.
  std::shared_ptr<network::NetworkManager> network;
#endif
};

// The network a task asks for (pure; exposed for tests).
struct TaskNetwork {
  std::string mode;         // "host", "none", "bridge", "cni"
  std::string cni_network;  // mode cni: the network's name (NetworkInfo.name)
  std::vector<std::tuple<uint16_t, uint16_t, std::string>> ports;  // host, container, tcp|udp
  std::vector<std::pair<uint64_t, uint64_t>> offered_ports;        // the task's ports resources
};
Result<TaskNetwork> task_network(const v1::TaskInfo& task, bool bridge_available);

// The root filesystem and defaults an image gives a task.
struct ImageRootfs {
  std::vector<std::string> lower_dirs;  // top first
  std::vector<std::string> entrypoint, cmd, env;
  std::string working_dir;
  std::optional<uint32_t> uid, gid;
  std::vector<uint32_t> supplementary_gids;
};

// What recover() needs, as launch() checkpoints it (also readable by operators in the agent's
// state: "pid", "start_time", "cgroup", "exit_status_path").
struct NativeCheckpoint {
  pid_t pid = -1;
  uint64_t start_time = 0;  // /proc/<pid>/stat field 22: tells a reused pid from ours
  std::string cgroup;       // host path of the task cgroup, empty without cgroups
  std::string exit_status_path;
  std::string run_dir;
};
nlohmann::json to_json(const NativeCheckpoint& c);
Result<NativeCheckpoint> native_checkpoint_from_json(const nlohmann::json& j);

// The SandboxSpec for a launch request (pure; exposed for tests).
// With an image: argv defaults to Entrypoint + Cmd (a shell command runs /bin/sh of the image),
// env is the image's then the agent's then the task's, cwd is WorkingDir, the user is the
// image's User unless the task names one.
Result<isolator::SandboxSpec> sandbox_spec_for(const containerizer::LaunchRequest& request,
                                               const NativeOptions& options,
                                               const std::string& cgroup_dir,
                                               const ImageRootfs* image = nullptr);
// The image a task asks for (mesos.image.docker.name); empty when none.
std::string task_image_name(const v1::TaskInfo& task);

// Start time of a process in clock ticks since boot (/proc/<pid>/stat field 22).
Result<uint64_t> process_start_time(pid_t pid);

Result<std::unique_ptr<containerizer::Containerizer>> open_native_containerizer(
    NativeOptions options);

}  // namespace corral::native
