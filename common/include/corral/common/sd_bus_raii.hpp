#pragma once
// RAII for sd-bus handles, shared by the D-Bus library (dbus/) and the systemd cgroup backend
// (isolator/src/cgroup_systemd.cpp). Header-only: whoever includes it links libsystemd.

#include <systemd/sd-bus.h>

#include <cstring>
#include <memory>
#include <string>

namespace corral::sdbus {

struct BusUnref {
  void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
};
struct SlotUnref {
  void operator()(sd_bus_slot* s) const { sd_bus_slot_unref(s); }
};
struct MessageUnref {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};
struct CredsUnref {
  void operator()(sd_bus_creds* c) const { sd_bus_creds_unref(c); }
};
using BusPtr = std::unique_ptr<sd_bus, BusUnref>;
using SlotPtr = std::unique_ptr<sd_bus_slot, SlotUnref>;
using MessagePtr = std::unique_ptr<sd_bus_message, MessageUnref>;
using CredsPtr = std::unique_ptr<sd_bus_creds, CredsUnref>;

// An sd_bus_error freed at scope exit.
struct BusError {
  sd_bus_error e = SD_BUS_ERROR_NULL;
  BusError() = default;
  BusError(const BusError&) = delete;
  BusError& operator=(const BusError&) = delete;
  ~BusError() { sd_bus_error_free(&e); }
  // "<name>: <message>" when the error is set, else strerror of the sd-bus return value `r`.
  std::string text(int r) const {
    if (sd_bus_error_is_set(&e))
      return std::string(e.name) + (e.message ? std::string(": ") + e.message : std::string());
    return std::strerror(r < 0 ? -r : r);
  }
};

}  // namespace corral::sdbus
