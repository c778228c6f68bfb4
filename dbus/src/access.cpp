#include "corral/dbus/access.hpp"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <cerrno>

#include "corral/common/log.hpp"
#include "corral/dbus/bus.hpp"

namespace corral::dbus {

bool caller_allowed(const Caller& caller, std::optional<gid_t> operator_gid) {
  if (caller.uid == 0) return true;
  if (!operator_gid) return false;
  return std::find(caller.groups.begin(), caller.groups.end(), *operator_gid) !=
         caller.groups.end();
}

namespace {

std::optional<gid_t> operator_gid() {
  struct group gr {};
  struct group* found = nullptr;
  std::vector<char> buf(16384);
  if (getgrnam_r(kOperatorGroup, &gr, buf.data(), buf.size(), &found) != 0 || !found)
    return std::nullopt;
  return found->gr_gid;
}

void add_user_database_groups(Caller& caller) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (getpwuid_r(caller.uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return;
  int n = 64;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  if (getgrouplist(found->pw_name, found->pw_gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<size_t>(n));
    if (getgrouplist(found->pw_name, found->pw_gid, groups.data(), &n) < 0) return;
  }
  groups.resize(static_cast<size_t>(n));
  caller.groups.insert(caller.groups.end(), groups.begin(), groups.end());
}

}  // namespace

int check_caller(sd_bus_message* m, sd_bus_error* error) {
  sd_bus_creds* raw = nullptr;
  int r = sd_bus_query_sender_creds(
      m, SD_BUS_CREDS_UID | SD_BUS_CREDS_EUID | SD_BUS_CREDS_GID | SD_BUS_CREDS_SUPPLEMENTARY_GIDS,
      &raw);
  CredsPtr creds(raw);
  Caller caller;
  if (r >= 0) {
    uid_t uid = 0;
    // The uid the bus daemon took from the socket (SO_PEERCRED) comes first; the effective uid
    // read from /proc is only a fallback.
    if (sd_bus_creds_get_uid(creds.get(), &uid) >= 0 ||
        sd_bus_creds_get_euid(creds.get(), &uid) >= 0)
      caller.uid = uid;
    gid_t gid = 0;
    if (sd_bus_creds_get_gid(creds.get(), &gid) >= 0) caller.groups.push_back(gid);
    const gid_t* gids = nullptr;
    int n = sd_bus_creds_get_supplementary_gids(creds.get(), &gids);
    for (int i = 0; i < n; ++i) caller.groups.push_back(gids[i]);
  }
  if (caller.uid != static_cast<uid_t>(-1)) add_user_database_groups(caller);
  if (caller_allowed(caller, operator_gid())) return 0;
  const char* sender = sd_bus_message_get_sender(m);
  const char* member = sd_bus_message_get_member(m);
  if (!member) member = "this method";
  log::warning(std::string("D-Bus call ") + member + " refused: caller " + (sender ? sender : "?") +
                   " (uid " +
                   (caller.uid == static_cast<uid_t>(-1) ? std::string("unknown")
                                                         : std::to_string(caller.uid)) +
                   ") is neither root nor in group " + kOperatorGroup,
               {{"CORRAL_DBUS_SENDER", sender ? sender : ""}});
  sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                    "only root and members of the group '%s' may call %s (uid %d is neither)",
                    kOperatorGroup, member, static_cast<int>(caller.uid));
  return -EACCES;
}

}  // namespace corral::dbus
