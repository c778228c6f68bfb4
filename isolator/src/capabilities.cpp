#include "corral/isolator/capabilities.hpp"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>

namespace corral::isolator {
namespace {

// Indexed by capability number (linux/capability.h, up to CAP_CHECKPOINT_RESTORE = 40).
constexpr std::array<std::string_view, 41> kNames = {"CAP_CHOWN",
                                                     "CAP_DAC_OVERRIDE",
                                                     "CAP_DAC_READ_SEARCH",
                                                     "CAP_FOWNER",
                                                     "CAP_FSETID",
                                                     "CAP_KILL",
                                                     "CAP_SETGID",
                                                     "CAP_SETUID",
                                                     "CAP_SETPCAP",
                                                     "CAP_LINUX_IMMUTABLE",
                                                     "CAP_NET_BIND_SERVICE",
                                                     "CAP_NET_BROADCAST",
                                                     "CAP_NET_ADMIN",
                                                     "CAP_NET_RAW",
                                                     "CAP_IPC_LOCK",
                                                     "CAP_IPC_OWNER",
                                                     "CAP_SYS_MODULE",
                                                     "CAP_SYS_RAWIO",
                                                     "CAP_SYS_CHROOT",
                                                     "CAP_SYS_PTRACE",
                                                     "CAP_SYS_PACCT",
                                                     "CAP_SYS_ADMIN",
                                                     "CAP_SYS_BOOT",
                                                     "CAP_SYS_NICE",
                                                     "CAP_SYS_RESOURCE",
                                                     "CAP_SYS_TIME",
                                                     "CAP_SYS_TTY_CONFIG",
                                                     "CAP_MKNOD",
                                                     "CAP_LEASE",
                                                     "CAP_AUDIT_WRITE",
                                                     "CAP_AUDIT_CONTROL",
                                                     "CAP_SETFCAP",
                                                     "CAP_MAC_OVERRIDE",
                                                     "CAP_MAC_ADMIN",
                                                     "CAP_SYSLOG",
                                                     "CAP_WAKE_ALARM",
                                                     "CAP_BLOCK_SUSPEND",
                                                     "CAP_AUDIT_READ",
                                                     "CAP_PERFMON",
                                                     "CAP_BPF",
                                                     "CAP_CHECKPOINT_RESTORE"};

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

Result<int> capability_from_name(std::string_view name) {
  std::string n = upper(name);
  if (n.rfind("CAP_", 0) != 0) n = "CAP_" + n;
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == n) return static_cast<int>(i);
  }
  return Error(EINVAL, "unknown capability '" + std::string(name) +
                           "': use a name from capabilities(7) such as CAP_NET_BIND_SERVICE");
}

std::string capability_name(int cap) {
  if (cap >= 0 && static_cast<size_t>(cap) < kNames.size()) return std::string(kNames[cap]);
  return "CAP_" + std::to_string(cap);
}

Result<uint64_t> capability_mask(const std::vector<std::string>& names) {
  uint64_t mask = 0;
  for (const auto& name : names) {
    auto cap = capability_from_name(name);
    if (!cap) return cap.error();
    mask |= uint64_t{1} << *cap;
  }
  return mask;
}

int last_capability() {
  // Read with stdio rather than read_file: this runs in the forked task process.
  int last = CAP_LAST_CAP;
  if (FILE* f = std::fopen("/proc/sys/kernel/cap_last_cap", "re")) {
    int v = 0;
    if (std::fscanf(f, "%d", &v) == 1 && v > 0 && v < 64) last = v;
    std::fclose(f);
  }
  return last;
}

Result<void> limit_bounding_set(uint64_t keep) {
  int last = last_capability();
  for (int cap = 0; cap <= last; ++cap) {
    if (keep & (uint64_t{1} << cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      return Error::from_errno("prctl(PR_CAPBSET_DROP, " + capability_name(cap) + ")");
    }
  }
  return {};
}

Result<void> set_capabilities(uint64_t keep) {
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return Error::from_errno("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  for (int i = 0; i < 2; ++i) {
    auto word = static_cast<uint32_t>(keep >> (32 * i));
    data[i].effective = word;
    data[i].permitted = word;
    data[i].inheritable = word;
  }
  if (::syscall(SYS_capset, &header, data) != 0) {
    return Error::from_errno("capset");
  }
  return {};
}

Result<uint64_t> effective_capabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) {
    return Error::from_errno("capget");
  }
  return uint64_t{data[0].effective} | (uint64_t{data[1].effective} << 32);
}

}  // namespace corral::isolator
