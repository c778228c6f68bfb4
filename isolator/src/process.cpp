#include "corral/isolator/process.hpp"

#include <grp.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cstring>
#include <utility>

#include "corral/common/fd.hpp"

namespace corral::isolator {
namespace {

constexpr std::array<std::pair<std::string_view, int>, 16> kRlimits = {{
    {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_CORE", RLIMIT_CORE},
    {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
}};

}  // namespace

Result<int> rlimit_from_name(std::string_view name) {
  std::string n(name);
  for (char& c : n) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (n.rfind("RLIMIT_", 0) != 0) n = "RLIMIT_" + n;
  for (const auto& [known, resource] : kRlimits) {
    if (known == n) return resource;
  }
  return Error(EINVAL, "unknown resource limit '" + std::string(name) +
                           "': use a name from setrlimit(2) such as RLIMIT_NOFILE");
}

Result<void> apply_rlimits(const std::vector<RlimitSpec>& limits) {
  for (const auto& limit : limits) {
    rlimit value{};
    value.rlim_cur = limit.soft == UINT64_MAX ? RLIM_INFINITY : limit.soft;
    value.rlim_max = limit.hard == UINT64_MAX ? RLIM_INFINITY : limit.hard;
    if (::setrlimit(static_cast<__rlimit_resource_t>(limit.resource), &value) != 0) {
      return Error::from_errno("setrlimit(" + limit.name + ", soft " + std::to_string(limit.soft) +
                               ", hard " + std::to_string(limit.hard) +
                               ") (raising a hard limit needs CAP_SYS_RESOURCE in the launcher)");
    }
  }
  return {};
}

Result<void> switch_user(uid_t uid, gid_t gid, const std::vector<uint32_t>& supplementary_gids) {
  if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) {
    return Error::from_errno("prctl(PR_SET_KEEPCAPS)");
  }
  std::vector<gid_t> groups(supplementary_gids.begin(), supplementary_gids.end());
  if (::setgroups(groups.size(), groups.data()) != 0) {
    return Error::from_errno("setgroups (" + std::to_string(groups.size()) + " groups)");
  }
  if (::setresgid(gid, gid, gid) != 0) {
    return Error::from_errno("setresgid(" + std::to_string(gid) + ")");
  }
  if (::setresuid(uid, uid, uid) != 0) {
    return Error::from_errno("setresuid(" + std::to_string(uid) + ")");
  }
  return {};
}

Result<void> set_no_new_privs() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return Error::from_errno("prctl(PR_SET_NO_NEW_PRIVS)");
  }
  return {};
}

Result<void> set_hostname(std::string_view hostname) {
  if (::sethostname(hostname.data(), hostname.size()) != 0) {
    return Error::from_errno("sethostname(" + std::string(hostname) + ")");
  }
  return {};
}

Result<void> bring_up_loopback() {
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return Error::from_errno("socket(AF_INET) to configure loopback");
  ifreq req{};
  std::strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &req) != 0) {
    return Error::from_errno("SIOCGIFFLAGS lo");
  }
  req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &req) != 0) {
    return Error::from_errno("SIOCSIFFLAGS lo up");
  }
  return {};
}

}  // namespace corral::isolator
