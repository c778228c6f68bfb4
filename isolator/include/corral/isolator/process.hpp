#pragma once
// Per-process parts of the sandbox applied by the task process just before exec: resource
// limits (setrlimit), the user/group switch with supplementary groups, no_new_privs, the hostname
// and bringing up loopback in a new network namespace.

#include <sys/types.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "corral/common/result.hpp"
#include "corral/isolator/sandbox_spec.hpp"

namespace corral::isolator {

// "RLIMIT_NOFILE" (also "NOFILE", any case) to its resource number.
Result<int> rlimit_from_name(std::string_view name);
Result<void> apply_rlimits(const std::vector<RlimitSpec>& limits);

// setgroups + setresgid + setresuid, keeping capabilities across the switch (PR_SET_KEEPCAPS) so
// set_capabilities can still grant the kept set to a uid 0 task.
Result<void> switch_user(uid_t uid, gid_t gid, const std::vector<uint32_t>& supplementary_gids);

Result<void> set_no_new_privs();
Result<void> set_hostname(std::string_view hostname);
// Brings up "lo" in the current network namespace (SIOCSIFFLAGS; no netlink needed for this).
Result<void> bring_up_loopback();

}  // namespace corral::isolator
