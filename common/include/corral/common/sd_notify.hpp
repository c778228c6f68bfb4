#pragma once
// The daemons' side of systemd's service protocol (sd_notify(3)): READY=1, STATUS=, STOPPING=1,
// RELOADING=1, EXTEND_TIMEOUT_USEC= and WATCHDOG=1. Every call is a no-op when the process was
// not started by systemd with a notify socket (NOTIFY_SOCKET unset), so the daemons call these
// unconditionally. docs/dbus.md ("systemd integration") lists what each daemon says and when.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace corral::notify {

// True when NOTIFY_SOCKET is set (started by systemd as Type=notify, or a test's socket).
bool enabled();

// READY=1 with a STATUS= line: the daemon serves and has finished its start-up work.
void ready(std::string_view status);
// STATUS=<text>: what the daemon is doing ("recovering 37 tasks").
void status(std::string_view text);
// STOPPING=1 (with a STATUS= line when given).
void stopping(std::string_view status = {});
// RELOADING=1 (with a STATUS= line when given); send ready() when done.
void reloading(std::string_view status = {});
// EXTEND_TIMEOUT_USEC=: asks systemd for `extra` more time for the current start-up/shutdown
// step (long recoveries), counted from now.
void extend_timeout(std::chrono::microseconds extra);

// The watchdog interval systemd asked for (WatchdogSec=, via WATCHDOG_USEC/WATCHDOG_PID for this
// process), or zero when there is none.
std::chrono::microseconds watchdog_interval();

// Pings the watchdog from the event loop: a timer on `io` fires at half the watchdog interval
// and sends WATCHDOG=1, so a hung loop stops pinging and systemd restarts the daemon. The same
// tick refreshes STATUS= from `status_line` when its text changed (at least every 5 s when there
// is no watchdog). Does nothing when enabled() is false. Stops when destroyed.
class Heartbeat {
 public:
  Heartbeat(boost::asio::io_context& io, std::function<std::string()> status_line = {});
  ~Heartbeat();
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  // Sends the current STATUS= at once if it changed (call after an event worth reporting).
  void refresh_status();
  // The tick period in use (zero when inactive).
  std::chrono::microseconds period() const { return period_; }

 private:
  void arm();
  void tick();

  boost::asio::steady_timer timer_;
  std::function<std::string()> status_line_;
  std::string last_status_;
  std::chrono::microseconds period_{0};
  bool watchdog_ = false;
};

}  // namespace corral::notify
