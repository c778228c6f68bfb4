#pragma once
// An sd-bus connection driven by a daemon's boost::asio event loop: the bus fd is watched with a
// posix::stream_descriptor (read, and write while sd-bus has queued output), sd-bus's own
// timeouts (method call timeouts, Hello) with a steady_timer, and sd_bus_process() runs until it
// has nothing left to do. Everything runs on the io_context's thread; nothing blocks it except
// the synchronous calls documented as such below (made once at start-up).
//
// RAII: Bus owns the sd_bus (flushed and closed when destroyed), SlotPtr owns object vtables,
// matches and pending calls.

#include <systemd/sd-bus.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <string>

#include "corral/common/result.hpp"
#include "corral/common/sd_bus_raii.hpp"

namespace corral::dbus {

using sdbus::BusError;
using sdbus::BusPtr;
using sdbus::CredsPtr;
using sdbus::MessagePtr;
using sdbus::SlotPtr;

class Bus {
 public:
  // Connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS when set, else
  // /run/dbus/system_bus_socket). Blocks until the bus said Hello. The error says that there is
  // no system bus and how to turn the D-Bus API off.
  static Result<std::unique_ptr<Bus>> open_system(boost::asio::io_context& io,
                                                  const std::string& description);
  // Connects to the bus at `address` ("unix:path=/run/x"), as a bus client (tests, tools).
  static Result<std::unique_ptr<Bus>> open_address(boost::asio::io_context& io,
                                                   const std::string& address,
                                                   const std::string& description);
  ~Bus();
  Bus(const Bus&) = delete;
  Bus& operator=(const Bus&) = delete;

  sd_bus* get() const { return bus_.get(); }
  // Takes a well-known name (blocking call, at start-up). EEXIST names the other owner's
  // situation; EACCES means the bus policy does not let this user own it (install the policy
  // file from dbus/policy/).
  Result<void> request_name(const std::string& name);
  // Call after sending messages from outside a bus callback: writes what sd-bus queued and
  // re-arms the waits (cheap; coalesced into one post).
  void kick();
  // Called once when the connection is lost (bus daemon gone).
  void on_disconnect(std::function<void()> cb) { on_disconnect_ = std::move(cb); }
  bool connected() const { return connected_; }

 private:
  Bus(boost::asio::io_context& io, BusPtr bus);
  Result<void> attach();
  void process();
  void arm();

  boost::asio::io_context& io_;
  BusPtr bus_;
  boost::asio::posix::stream_descriptor fd_;
  boost::asio::steady_timer timer_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool reading_ = false, writing_ = false, kicked_ = false, connected_ = true;
  std::function<void()> on_disconnect_;
};

}  // namespace corral::dbus
