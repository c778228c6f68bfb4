#pragma once
// Who may call the daemons' D-Bus methods: root and members of the group `corral` (properties
// are readable by anyone). The bus policy files (dbus/policy/*.conf) say the same to
// dbus-daemon; the daemons check again in code, so a permissive or missing policy file does not
// open the methods to everyone.

#include <sys/types.h>
#include <systemd/sd-bus.h>

#include <optional>
#include <string>
#include <vector>

#include "corral/common/result.hpp"

namespace corral::dbus {

inline constexpr const char* kOperatorGroup = "corral";

struct Caller {
  uid_t uid = static_cast<uid_t>(-1);
  std::vector<gid_t> groups;  // primary and supplementary, of the process or the user database
};

// The decision alone: uid 0, or `operator_gid` among the caller's groups.
bool caller_allowed(const Caller& caller, std::optional<gid_t> operator_gid);

// Asks the bus who sent `m` (sd_bus_query_sender_creds: the uid the bus daemon saw on the
// socket; groups of the process where the bus reports them, plus the user's groups from the
// user database, as dbus-daemon's group= policy does) and checks caller_allowed() against the
// group `corral`. On refusal, sets `error` to org.freedesktop.DBus.Error.AccessDenied with a
// message saying who may call, and returns a negative errno to hand back to sd-bus.
int check_caller(sd_bus_message* m, sd_bus_error* error);

}  // namespace corral::dbus
