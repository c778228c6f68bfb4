#pragma once
// Linux capabilities of the task process: names, the bounding set and the effective/permitted/
// inheritable sets, through the capget/capset and prctl system calls directly (the whole job is
// two syscalls; libcap would add a runtime dependency for nothing).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "corral/common/result.hpp"

namespace corral::isolator {

// "CAP_SYS_ADMIN" (also "SYS_ADMIN", any case) to its number; the error lists how to spell one.
Result<int> capability_from_name(std::string_view name);
// 21 -> "CAP_SYS_ADMIN"; "CAP_<n>" for numbers this build does not know.
std::string capability_name(int cap);
// Bit mask (bit n = capability n) of the named capabilities.
Result<uint64_t> capability_mask(const std::vector<std::string>& names);
// The highest capability the running kernel knows (/proc/sys/kernel/cap_last_cap).
int last_capability();

// Drops every capability not in `keep` from the bounding set (needs CAP_SETPCAP, so call it
// before drop_capabilities).
Result<void> limit_bounding_set(uint64_t keep);
// Sets effective, permitted and inheritable to `keep` and clears the ambient set. Call after the
// user switch (which runs with PR_SET_KEEPCAPS).
Result<void> set_capabilities(uint64_t keep);
// The calling thread's effective set.
Result<uint64_t> effective_capabilities();

}  // namespace corral::isolator
