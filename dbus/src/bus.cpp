#include "corral/dbus/bus.hpp"

#include <poll.h>
#include <time.h>

#include <boost/asio/post.hpp>
#include <cstring>

#include "corral/common/log.hpp"

namespace corral::dbus {
namespace asio = boost::asio;

Bus::Bus(asio::io_context& io, BusPtr bus) : io_(io), bus_(std::move(bus)), fd_(io), timer_(io) {}

Bus::~Bus() {
  *alive_ = false;
  boost::system::error_code ec;
  fd_.cancel(ec);
  // sd-bus owns the fd: give it back without closing it.
  if (fd_.is_open()) (void)fd_.release();
  timer_.cancel();
}

Result<std::unique_ptr<Bus>> Bus::open_system(asio::io_context& io,
                                              const std::string& description) {
  sd_bus* raw = nullptr;
  int r = sd_bus_open_system_with_description(&raw, description.c_str());
  BusPtr bus(raw);
  if (r < 0) {
    const char* env = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
    return Error(-r, std::string("cannot connect to the D-Bus system bus (") +
                         (env ? env : "unix:path=/run/dbus/system_bus_socket") +
                         "): " + std::strerror(-r) +
                         " (start dbus-daemon --system, or set dbus = false in the daemon's "
                         "configuration to run without the D-Bus API)");
  }
  std::unique_ptr<Bus> b(new Bus(io, std::move(bus)));
  CORRAL_TRY(b->attach());
  return b;
}

Result<std::unique_ptr<Bus>> Bus::open_address(asio::io_context& io, const std::string& address,
                                               const std::string& description) {
  sd_bus* raw = nullptr;
  int r = sd_bus_new(&raw);
  BusPtr bus(raw);
  if (r < 0) return Error(-r, "sd_bus_new failed");
  (void)sd_bus_set_description(bus.get(), description.c_str());
  if ((r = sd_bus_set_address(bus.get(), address.c_str())) < 0 ||
      (r = sd_bus_set_bus_client(bus.get(), 1)) < 0 || (r = sd_bus_start(bus.get())) < 0) {
    return Error(-r, "cannot connect to the D-Bus at " + address + ": " + std::strerror(-r));
  }
  std::unique_ptr<Bus> b(new Bus(io, std::move(bus)));
  CORRAL_TRY(b->attach());
  return b;
}

Result<void> Bus::attach() {
  int fd = sd_bus_get_fd(bus_.get());
  if (fd < 0) return Error(-fd, "sd_bus_get_fd failed");
  boost::system::error_code ec;
  fd_.assign(fd, ec);
  if (ec) return Error(ec.value(), "watching the bus fd: " + ec.message());
  // Nothing may be pending yet, but the queue may hold Hello: process from the loop.
  kick();
  return {};
}

Result<void> Bus::request_name(const std::string& name) {
  int r = sd_bus_request_name(bus_.get(), name.c_str(), 0);
  kick();
  if (r == -EEXIST || r == -EALREADY) {
    return Error(EEXIST, "the D-Bus name " + name +
                             " is owned by another process (is another instance running?)");
  }
  if (r == -EACCES || r == -EPERM) {
    return Error(EACCES, "the bus policy does not allow this user to own " + name +
                             " (install dbus/policy/" + name +
                             ".conf into /usr/share/dbus-1/system.d/ and reload dbus)");
  }
  if (r < 0) return Error(-r, "requesting the D-Bus name " + name + ": " + std::strerror(-r));
  return {};
}

void Bus::kick() {
  if (kicked_) return;
  kicked_ = true;
  asio::post(io_, [this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.expired()) return;
    kicked_ = false;
    process();
  });
}

void Bus::process() {
  if (!connected_) return;
  for (;;) {
    int r = sd_bus_process(bus_.get(), nullptr);
    if (r < 0) {
      if (connected_) {
        connected_ = false;
        log::warning(std::string("D-Bus connection lost: ") + std::strerror(-r) +
                     "; the D-Bus API is off until the daemon restarts");
        boost::system::error_code ec;
        fd_.cancel(ec);
        timer_.cancel();
        if (on_disconnect_) {
          auto cb = on_disconnect_;
          asio::post(io_, [cb, alive = std::weak_ptr<bool>(alive_)] {
            if (!alive.expired()) cb();
          });
        }
      }
      return;
    }
    if (r == 0) break;
  }
  arm();
}

void Bus::arm() {
  int events = sd_bus_get_events(bus_.get());
  if (events < 0) return;
  std::weak_ptr<bool> alive = alive_;
  if (!reading_) {
    reading_ = true;
    fd_.async_wait(asio::posix::stream_descriptor::wait_read,
                   [this, alive](boost::system::error_code ec) {
                     if (alive.expired()) return;
                     reading_ = false;
                     if (ec) return;
                     process();
                   });
  }
  if ((events & POLLOUT) && !writing_) {
    writing_ = true;
    fd_.async_wait(asio::posix::stream_descriptor::wait_write,
                   [this, alive](boost::system::error_code ec) {
                     if (alive.expired()) return;
                     writing_ = false;
                     if (ec) return;
                     process();
                   });
  }
  uint64_t until = 0;
  timer_.cancel();
  if (sd_bus_get_timeout(bus_.get(), &until) >= 0 && until != UINT64_MAX) {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t now_us = static_cast<uint64_t>(now.tv_sec) * 1'000'000 + now.tv_nsec / 1000;
    uint64_t wait = until > now_us ? until - now_us : 0;
    timer_.expires_after(std::chrono::microseconds(wait));
    timer_.async_wait([this, alive](boost::system::error_code ec) {
      if (alive.expired() || ec) return;
      process();
    });
  }
}

}  // namespace corral::dbus
