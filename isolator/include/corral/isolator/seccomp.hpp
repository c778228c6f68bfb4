#pragma once
// Seccomp filters for tasks, built and loaded with libseccomp.
//
// Two sources of a filter: Corral's default profile (a deny list with EPERM, equivalent in effect
// to Docker's default profile: keyctl/add_key/request_key, bpf, mount and friends, unshare/setns,
// clone with namespace flags, ptrace, module loading, kexec, open_by_handle_at, reboot, swapon/off,
// perf_event_open, userfaultfd, ... are refused unless the capability Docker ties them to is kept),
// and profiles in the OCI / Docker seccomp JSON format (defaultAction, defaultErrnoRet,
// architectures or archMap, syscalls[{names, action, args, errnoRet, includes, excludes}]).

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "corral/common/result.hpp"

namespace corral::isolator {

enum class SeccompAction { allow, errno_ret, kill_thread, kill_process, trap, log };

struct SeccompArg {
  unsigned index = 0;  // 0..5
  uint64_t value = 0;
  uint64_t value_two = 0;          // the mask's value for masked_eq
  std::string op = "SCMP_CMP_EQ";  // SCMP_CMP_{NE,LT,LE,EQ,GE,GT,MASKED_EQ}
};

struct SeccompRule {
  std::vector<std::string> names;  // syscall names known to libseccomp on this architecture
  SeccompAction action = SeccompAction::allow;
  uint32_t errno_ret = 1;  // EPERM
  std::vector<SeccompArg> args;
};

struct SeccompProfile {
  SeccompAction default_action = SeccompAction::allow;
  uint32_t default_errno_ret = 1;          // EPERM
  std::vector<std::string> architectures;  // libseccomp names ("x86_64"); empty = native only
  std::vector<SeccompRule> rules;
  // Syscall names in the profile that libseccomp does not know here (skipped, as runc does).
  std::vector<std::string> unknown_syscalls;
};

// Corral's default profile for a task keeping the capabilities in `capability_mask`.
SeccompProfile default_seccomp_profile(uint64_t capability_mask);

// Parses an OCI/Docker JSON profile. Rules with includes/excludes ("caps", "arches",
// "minKernel") are kept or dropped for a task keeping `capability_mask` on this machine, as
// Docker does. Errors name the field: "syscalls[3].action: unknown action 'SCMP_ACT_FOO' ...".
Result<SeccompProfile> parse_seccomp_profile(const nlohmann::json& j, uint64_t capability_mask);

// Builds the filter and loads it into the calling process (it stays across execve). The caller
// must have set no_new_privs or hold CAP_SYS_ADMIN.
Result<void> load_seccomp(const SeccompProfile& profile);

}  // namespace corral::isolator
