#pragma once
// Isolation policy: what tasks on this agent may ask for, and what they get when they ask for
// nothing. Operators write it as TOML files in /etc/corral/policy.d/*.toml, read in lexical
// order; a later file overrides the keys it sets. Per-role sections ([role.<name>...]) override
// the base policy for tasks of that role. docs/policy.md is the reference.
//
// Every effective value remembers where it came from ("/etc/corral/policy.d/20-web.toml:4" or
// "built-in default"), so a refused task is told which rule refused it and in which file.

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "corral/common/result.hpp"
#include "corral/isolator/limits.hpp"

namespace corral::isolator {

inline constexpr const char* kDefaultPolicyDir = "/etc/corral/policy.d";

template <typename T>
struct Rule {
  T value{};
  std::string origin;  // "file:line" of the key that set it, or "built-in default"
};

// Limits named the way operators and `corral run` flags name them.
struct LimitRules {
  std::optional<Rule<double>> cpus;           // cpu.max, in CPUs
  std::optional<Rule<uint64_t>> cpu_weight;   // cpu.weight
  std::optional<Rule<uint64_t>> memory;       // memory.max, bytes
  std::optional<Rule<uint64_t>> memory_swap;  // memory.swap.max, bytes
  std::optional<Rule<uint64_t>> pids;         // pids.max
  std::optional<Rule<uint64_t>> io_weight;    // io.weight
};

struct PolicySection {
  LimitRules defaults;  // [limits.default]: applied when a task does not ask
  LimitRules max;       // [limits.max]: a task asking for more is refused
  // [security]
  std::optional<Rule<std::vector<std::string>>> capabilities;          // the most a task may have
  std::optional<Rule<std::vector<std::string>>> default_capabilities;  // what it gets by default
  std::optional<Rule<std::string>> seccomp;    // "default", "unconfined" or an absolute JSON path
  std::optional<Rule<bool>> allow_unconfined;  // may a task ask for seccomp "unconfined"?
  std::optional<Rule<std::vector<std::string>>> users;  // names or uid ranges "1000-1999"
  std::optional<Rule<std::string>> default_user;
  // [volumes]
  std::optional<Rule<std::vector<std::string>>> volume_paths;  // allowed host path prefixes
  std::optional<Rule<bool>> allow_writable_volumes;
  // [network] (docs/network.md): the modes a task may use, and whether bridge-mode tasks may
  // reach anything beyond the agent's bridge.
  std::optional<Rule<std::vector<std::string>>> network_modes;  // "host", "none", "bridge", "cni"
  std::optional<Rule<bool>> network_egress;
};

// [docker]: delegation of tasks to dockerd (docs/docker.md, docs/policy.md).
struct DockerPolicy {
  // The Engine API socket (an absolute path) or "host:port".
  Rule<std::string> socket{"/run/docker.sock", "built-in default"};
  // Tasks whose Docker image matches one of these glob patterns (fnmatch, e.g.
  // "registry.example:5000/*", "nginx:*") run through dockerd even when ContainerInfo.type is
  // MESOS. Empty: only tasks that say type DOCKER go to dockerd.
  Rule<std::vector<std::string>> delegate_images{{}, "built-in default"};
  // Network modes a Docker task may ask for ("none", "host", "bridge", "user").
  Rule<std::vector<std::string>> networks{{"none", "host", "bridge"}, "built-in default"};
  Rule<bool> allow_privileged{false, "built-in default"};
  // Host device paths a task may get through the "device" parameter.
  Rule<std::vector<std::string>> devices{{}, "built-in default"};
  // A Docker config.json holding registry credentials ("auths"); "" = pull anonymously.
  Rule<std::string> config{"", "built-in default"};
};

// True when the policy's [docker] delegate_images matches `image`.
bool docker_delegates_image(const DockerPolicy& policy, const std::string& image);

// [images]: which Docker/OCI images tasks may run in with the native containerizer (agent-wide;
// docs/policy.md, docs/images.md). Empty lists allow everything.
struct ImagesPolicy {
  Rule<std::vector<std::string>> registries{{}, "built-in default"};  // "host:port", "docker.io"
  // Globs over "registry/repository:tag" ('*' within a path component, "**" across them).
  Rule<std::vector<std::string>> patterns{{}, "built-in default"};
  Rule<bool> require_digest{false, "built-in default"};  // pulls must name @sha256:...
  Rule<uint64_t> max_size{0, "built-in default"};        // sum of layer blobs; 0 = no limit
};

struct Policy {
  PolicySection base;
  std::map<std::string, PolicySection> roles;
  // [cgroups] require_v2: refuse to run without cgroup v2 controllers (false = run without
  // resource isolation, loudly).
  Rule<bool> require_cgroup_v2{true, "built-in default"};
  // [user_namespace]
  Rule<bool> userns_enabled{false, "built-in default"};
  Rule<uint64_t> userns_start{100000, "built-in default"};
  Rule<uint64_t> userns_count{65536, "built-in default"};
  DockerPolicy docker;
  ImagesPolicy images;
  std::vector<std::string> files;  // files read, in order

  // The base section overlaid with the role's section (role "" or "*" = base only).
  PolicySection effective(const std::string& role) const;
};

// The policy with no files at all.
Policy builtin_policy();
// Reads every *.toml in `dir` in lexical order over the built-in policy. A missing directory is
// the built-in policy when `dir` is the default, an error otherwise. All mistakes of all files
// are reported at once, each naming file:line and the key.
Result<Policy> load_policy_dir(const std::filesystem::path& dir);
// One file's text over `base` (for tests and API-provided policy).
Result<Policy> load_policy_text(Policy base, std::string_view text, const std::string& name);

// What a task asks for.
struct Volume {
  std::string host_path;
  std::string container_path;
  bool writable = false;
};
struct TaskRequest {
  std::string role = "*";
  std::optional<double> cpus;
  std::optional<uint64_t> memory;
  std::optional<uint64_t> memory_swap;
  std::optional<uint64_t> pids;
  std::optional<uint64_t> cpu_weight;
  std::optional<uint64_t> io_weight;
  std::optional<std::string> user;        // name or numeric uid
  std::vector<std::string> capabilities;  // requested set; empty = the default set
  std::optional<std::string> seccomp;     // "default", "unconfined" or a path
  std::vector<Volume> volumes;
};

// What the task gets.
struct Decision {
  ResourceLimits limits;
  std::vector<std::string> capabilities;
  std::string seccomp;  // "default", "unconfined" or an absolute path
  std::string user;     // as asked or defaulted (name or uid), checked against the policy
  std::vector<Volume> volumes;
  // [network]: the containerizer refuses a mode outside network_modes, naming the rule.
  std::vector<std::string> network_modes{"host", "none", "bridge", "cni"};
  std::string network_modes_origin = "built-in default";
  bool network_egress = true;
};

// Applies defaults and checks maxima and allow-lists. A refusal (EPERM) names the request, the
// rule, its value and its file:line, and what to do, e.g.
//   "memory 1GiB is more than the policy allows: limits.max.memory = 512MiB
//    (/etc/corral/policy.d/20-web.toml:4, role web); ask for less or raise that limit"
Result<Decision> decide(const Policy& policy, const TaskRequest& request);

// The effective policy for a role, with origins, as JSON (for `corral policy check --json`).
nlohmann::json policy_to_json(const Policy& policy);
// Human-readable effective policy, one "key = value    # origin" line each.
std::string policy_to_text(const Policy& policy);

// Holds the current policy; reload() swaps in a new one only if it loads cleanly, so the agent
// keeps its last good policy when an operator saves a broken file.
class PolicyHolder {
 public:
  explicit PolicyHolder(std::filesystem::path dir) : dir_(std::move(dir)) {}
  // Loads the directory; on error the previous policy stays in force and the error is returned.
  Result<void> reload();
  const Policy& current() const { return policy_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  Policy policy_ = builtin_policy();
};

std::string format_bytes(uint64_t bytes);

}  // namespace corral::isolator
