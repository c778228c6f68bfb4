#pragma once
// SandboxSpec: everything corral-launcher needs to build one task's sandbox and supervise it.
// The agent (or `corral run`) writes it as JSON (format in docs/launcher.md) and execs
// `corral-launcher --spec FILE`. Parsing validates every field and names the offending one
// ("spec.volumes[1].container_path: must be an absolute path ..."). Policy decisions (which
// capabilities, which seccomp profile, which host paths) are made before a spec is written; the
// spec only says what to build.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "corral/common/result.hpp"

namespace corral::isolator {

// Optional user namespace: container ids [0, count) map to host ids [host_uid, host_uid+count)
// (and likewise for gids), so "root" in the task is an unprivileged subuid on the host.
struct UserNamespaceSpec {
  uint32_t host_uid = 0;
  uint32_t host_gid = 0;
  uint32_t count = 65536;
};

// pid, mount, uts and ipc namespaces are always new (the sandbox relies on them); net and cgroup
// can be turned off (host networking, host cgroup view); the user namespace is opt-in.
struct NamespacesSpec {
  bool net = true;  // new network namespace with only loopback, brought up
  // When set (absolute path of a bind-mounted nsfs file, e.g. /run/corral/netns/<id>, prepared
  // by the agent's NetworkManager): the task joins that network namespace instead of a new one
  // (net must be true). The launcher setns()es into it before clone3; its loopback is up already.
  std::string netns_path;
  bool cgroup = true;  // new cgroup namespace rooted at the task's cgroup
  std::optional<UserNamespaceSpec> user;
};

enum class RootfsMode {
  host,  // the host's /usr, /lib*, /bin, /sbin and selected /etc files, read-only
  dir,   // a prepared root filesystem directory (an image's), entered with pivot_root
  // overlayfs of an image's read-only layer dirs (lower_dirs) and a per-task upper_dir and
  // work_dir, mounted inside the task's mount namespace (it vanishes with the task), then
  // entered like dir mode. upper_dir and work_dir: existing, empty, same file system.
  overlay,
};

struct RootfsSpec {
  RootfsMode mode = RootfsMode::host;
  std::string path;       // dir mode: host path of the root filesystem
  bool readonly = false;  // dir/overlay mode: mount the rootfs read-only (host mode always is)
  std::vector<std::string> lower_dirs;  // overlay mode: host paths, TOP layer first
  std::string upper_dir;                // overlay mode: host path, the task's writable layer
  std::string work_dir;                 // overlay mode: host path, overlayfs's work dir
  // host mode: files and directories under /etc bound read-only into the sandbox (when present).
  std::vector<std::string> host_etc;
  uint64_t tmp_size_bytes = 64ull << 20;  // size of the private /tmp (tmpfs)
  uint64_t shm_size_bytes = 64ull << 20;  // size of /dev/shm (tmpfs)
};

struct VolumeSpec {
  std::string host_path;       // absolute, existing file or directory on the host
  std::string container_path;  // absolute path inside the sandbox
  bool readonly = true;
};

struct RlimitSpec {
  std::string name;  // "RLIMIT_NOFILE", ...
  int resource = 0;  // the RLIMIT_* value for name (filled in by parsing)
  uint64_t soft = 0;
  uint64_t hard = 0;  // UINT64_MAX = unlimited ("unlimited" in JSON)
};

enum class SeccompMode {
  default_profile,  // Corral's built-in profile, equivalent in effect to Docker's default
  profile,          // an OCI/Docker seccomp JSON profile (inline in the spec)
  unconfined,       // no filter; only when policy allows it
};

struct SeccompSpec {
  SeccompMode mode = SeccompMode::default_profile;
  nlohmann::json profile;  // profile mode: the OCI/Docker JSON profile, validated on parse
};

// A task's output stream written to a file with size-based rotation: when the file would exceed
// max_bytes it is renamed to path.1 (path.1 to path.2, ... up to path.<keep>, the oldest dropped).
struct OutputSpec {
  std::string path;  // host path; its directory must exist
  uint64_t max_bytes = 10ull << 20;
  uint32_t keep = 3;  // rotated files kept; 0 = truncate in place instead
};

struct SandboxSpec {
  std::vector<std::string> argv;  // argv[0] is searched in PATH (of env) unless it has a '/'
  std::vector<std::string> env;   // "KEY=value"
  std::string cwd;                // inside the sandbox; default: sandbox_mount
  std::string hostname = "corral";
  NamespacesSpec namespaces;
  RootfsSpec rootfs;
  std::string sandbox_dir;                     // host path of the task's sandbox directory
  std::string sandbox_mount = "/mnt/sandbox";  // where it appears inside (read-write)
  std::vector<VolumeSpec> volumes;
  uint32_t uid = 0;  // inside the sandbox (inside the user namespace when there is one)
  uint32_t gid = 0;
  std::vector<uint32_t> supplementary_gids;
  std::vector<std::string> capabilities;  // "CAP_NET_BIND_SERVICE", ...; kept for uid 0
  SeccompSpec seccomp;
  // no_new_privs is always set; it is not a field on purpose.
  std::vector<RlimitSpec> rlimits;
  uint32_t kill_grace_ms = 10000;  // SIGTERM to SIGKILL on kill
  OutputSpec stdout_spec;
  OutputSpec stderr_spec;
  std::string exit_status_path;  // host path, outside sandbox_dir; written atomically as JSON
  std::string cgroup_dir;        // host cgroup v2 dir to start the task in; empty: launcher's
};

// Docker's default capability set.
const std::vector<std::string>& default_capabilities();
// The /etc entries bound into host-mode sandboxes by default.
const std::vector<std::string>& default_host_etc();

// Parses and validates a spec. Missing optional fields take the defaults above (capabilities:
// default_capabilities(), host_etc: default_host_etc(), cwd: sandbox_mount, output paths:
// <sandbox_dir>/stdout and <sandbox_dir>/stderr). Unknown fields are errors (typos must not be
// silently ignored).
Result<SandboxSpec> sandbox_spec_from_json(const nlohmann::json& j);
Result<SandboxSpec> parse_sandbox_spec(std::string_view text);
// The full spec with every default spelled out; parses back to an equal spec.
nlohmann::json to_json(const SandboxSpec& spec);
// Checks a spec built in code (what sandbox_spec_from_json checks after filling defaults).
Result<void> validate(const SandboxSpec& spec);

}  // namespace corral::isolator
