#include "corral/common/sd_notify.hpp"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <string>

namespace corral::notify {
namespace {

void send(const std::string& message) {
  if (!enabled()) return;
  // A failure to notify is not the daemon's failure: systemd times the start out by itself.
  (void)sd_notify(0, message.c_str());
}

// STATUS= ends at a newline: keep a status to its first line.
std::string status_field(std::string_view text) {
  std::string line(text.substr(0, text.find('\n')));
  return "STATUS=" + line;
}

}  // namespace

bool enabled() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  return socket != nullptr && *socket != '\0';
}

void ready(std::string_view text) { send("READY=1\n" + status_field(text)); }

void status(std::string_view text) { send(status_field(text)); }

void stopping(std::string_view text) {
  send(text.empty() ? std::string("STOPPING=1") : "STOPPING=1\n" + status_field(text));
}

void reloading(std::string_view text) {
  send(text.empty() ? std::string("RELOADING=1") : "RELOADING=1\n" + status_field(text));
}

void extend_timeout(std::chrono::microseconds extra) {
  send("EXTEND_TIMEOUT_USEC=" + std::to_string(extra.count()));
}

std::chrono::microseconds watchdog_interval() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) return std::chrono::microseconds(0);
  return std::chrono::microseconds(usec);
}

Heartbeat::Heartbeat(boost::asio::io_context& io, std::function<std::string()> status_line)
    : timer_(io), status_line_(std::move(status_line)) {
  if (!enabled()) return;
  auto wd = watchdog_interval();
  watchdog_ = wd.count() > 0;
  period_ = watchdog_ ? wd / 2 : std::chrono::microseconds(0);
  if (status_line_ && (period_.count() == 0 || period_ > std::chrono::seconds(5)))
    period_ = std::chrono::seconds(5);
  if (period_.count() > 0) arm();
}

Heartbeat::~Heartbeat() { timer_.cancel(); }

void Heartbeat::refresh_status() {
  if (!enabled() || !status_line_) return;
  std::string now = status_line_();
  if (now == last_status_) return;
  last_status_ = now;
  status(now);
}

void Heartbeat::arm() {
  timer_.expires_after(period_);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    tick();
  });
}

void Heartbeat::tick() {
  if (watchdog_) send("WATCHDOG=1");
  refresh_status();
  arm();
}

}  // namespace corral::notify
