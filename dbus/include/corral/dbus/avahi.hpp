#pragma once
// Master discovery over DNS-SD (docs/dbus.md, "Discovery"): the master publishes
// `_corral-master._tcp` through Avahi's D-Bus API (org.freedesktop.Avahi.Server: EntryGroupNew,
// AddService, Commit); agents without a static master address browse for it (ServiceBrowserNew
// -> ItemNew -> ResolveService) and follow a master that moves (ItemRemove, a new ItemNew).
// Talks to avahi-daemon over sd-bus on the daemon's loop; no libavahi-client. IPv4 for now.
//
// MasterLocator is the interface the agent uses, so other ways to find the master (a static
// address today, etcd for HA masters later) plug in beside Avahi.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "corral/common/result.hpp"
#include "corral/dbus/bus.hpp"

namespace corral::dbus {

inline constexpr const char* kMasterServiceType = "_corral-master._tcp";

// Where the master is: `on_change` runs on the loop with "http://host:port" whenever the chosen
// master changes, and with "" when none is known any more.
class MasterLocator {
 public:
  using OnChange = std::function<void(const std::string& address)>;
  virtual ~MasterLocator() = default;
  virtual Result<void> start(OnChange on_change) = 0;
  virtual std::string describe() const = 0;  // for logs and STATUS=
};

// A fixed address (agent.toml `master = "host:port"`): reported once, never changes.
class StaticMasterLocator : public MasterLocator {
 public:
  explicit StaticMasterLocator(std::string address) : address_(std::move(address)) {}
  Result<void> start(OnChange on_change) override;
  std::string describe() const override { return "static " + address_; }

 private:
  std::string address_;
};

// The choice among the masters seen on the network, kept apart from D-Bus so it is tested
// alone: the current master stays chosen while it is announced (no flapping between two);
// when it goes, the one announced most recently is taken; none left -> "".
class MasterChoice {
 public:
  // Returns true when chosen() changed.
  bool add(const std::string& instance, const std::string& address);
  bool remove(const std::string& instance);
  const std::string& chosen() const { return chosen_; }

 private:
  bool choose();
  std::map<std::string, std::pair<uint64_t, std::string>> seen_;  // instance -> (order, address)
  uint64_t order_ = 0;
  std::string chosen_instance_, chosen_;
};

// Formats a resolved service as the agent's master address: "http://10.0.0.5:5050".
std::string master_address(const std::string& address, uint16_t port);

// Calls `cb(true)` when org.freedesktop.Avahi gets an owner on `bus` (avahi-daemon started or
// restarted) and `cb(false)` when it loses it: what Avahi held for a client (entry groups,
// browsers) is gone then and must be made again.
class AvahiPresence {
 public:
  static Result<std::unique_ptr<AvahiPresence>> watch(Bus& bus, std::function<void(bool)> cb);

 private:
  static int on_owner(sd_bus_message* m, void* userdata, sd_bus_error* error);
  std::function<void(bool)> cb_;
  SlotPtr match_;
};

// Browses `_corral-master._tcp` through avahi-daemon on `bus`. Browses again whenever
// avahi-daemon restarts (the master chosen stays meanwhile).
class AvahiMasterLocator : public MasterLocator {
 public:
  explicit AvahiMasterLocator(Bus& bus, std::string domain = "local")
      : bus_(bus), domain_(std::move(domain)) {}
  ~AvahiMasterLocator() override;
  // Errors: avahi-daemon not on the bus (org.freedesktop.Avahi missing): install and start
  // avahi-daemon, or set a static master. With `wait_for_avahi`, that case is not an error: the
  // locator starts browsing when avahi-daemon appears (the caller logs the message of
  // absent_reason()).
  Result<void> start(OnChange on_change) override { return start(std::move(on_change), false); }
  Result<void> start(OnChange on_change, bool wait_for_avahi);
  // Why browsing has not started ("" once it has).
  const std::string& absent_reason() const { return absent_reason_; }
  std::string describe() const override {
    return "Avahi browsing " + std::string(kMasterServiceType);
  }

 private:
  struct Resolve {  // one ResolveService call in flight
    AvahiMasterLocator* owner;
    std::string name;
    SlotPtr call;
  };
  static int on_item(sd_bus_message* m, void* userdata, sd_bus_error* error);
  static int on_resolved(sd_bus_message* m, void* userdata, sd_bus_error* error);
  void resolve(int32_t interface, int32_t protocol, const std::string& name);
  void changed();
  Result<void> browse();
  void avahi_changed(bool present);

  Bus& bus_;
  std::string domain_;
  OnChange on_change_;
  std::string browser_path_, absent_reason_;
  SlotPtr match_;
  std::unique_ptr<AvahiPresence> presence_;
  std::vector<std::unique_ptr<Resolve>> resolving_;
  MasterChoice choice_;
  std::string reported_;
};

// Publishes one service through avahi-daemon on `bus`; withdrawn (EntryGroup.Free) when
// destroyed. On a name collision Avahi's alternative name ("name #2") is taken. Published again
// whenever avahi-daemon restarts.
class AvahiPublisher {
 public:
  // Blocking D-Bus calls, at start-up. `txt`: "key=value" records. Errors as
  // AvahiMasterLocator::start; with `wait_for_avahi`, an absent avahi-daemon is not an error:
  // the service is published when it appears (absent_reason() says why it is not yet).
  static Result<std::unique_ptr<AvahiPublisher>> publish(Bus& bus, const std::string& name,
                                                         const std::string& type, uint16_t port,
                                                         const std::vector<std::string>& txt,
                                                         bool wait_for_avahi = false);
  ~AvahiPublisher();
  const std::string& name() const { return name_; }
  bool published() const { return !group_path_.empty(); }
  const std::string& absent_reason() const { return absent_reason_; }

 private:
  explicit AvahiPublisher(Bus& bus) : bus_(bus) {}
  Result<void> publish_now();
  Result<void> add_and_commit();
  void avahi_changed(bool present);
  static int on_state(sd_bus_message* m, void* userdata, sd_bus_error* error);

  Bus& bus_;
  std::string group_path_;
  std::string name_, type_;
  uint16_t port_ = 0;
  std::vector<std::string> txt_;
  std::string absent_reason_;
  SlotPtr state_match_;
  std::unique_ptr<AvahiPresence> presence_;
};

}  // namespace corral::dbus
