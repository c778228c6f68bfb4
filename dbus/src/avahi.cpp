#include "corral/dbus/avahi.hpp"

#include <boost/asio/post.hpp>
#include <cstring>

#include "corral/common/log.hpp"

namespace corral::dbus {
namespace {

constexpr const char* kAvahi = "org.freedesktop.Avahi";
constexpr const char* kServer = "org.freedesktop.Avahi.Server";
constexpr const char* kEntryGroup = "org.freedesktop.Avahi.EntryGroup";
constexpr const char* kServiceBrowser = "org.freedesktop.Avahi.ServiceBrowser";
constexpr int32_t kIfUnspec = -1;
constexpr int32_t kProtoInet = 0;  // IPv4
// EntryGroup states (avahi-common/defs.h)
constexpr int32_t kGroupEstablished = 2, kGroupCollision = 3, kGroupFailure = 4;

Error avahi_error(const std::string& what, int r, const BusError& err) {
  std::string text = err.text(r);
  if (sd_bus_error_has_name(&err.e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
      sd_bus_error_has_name(&err.e, SD_BUS_ERROR_NAME_HAS_NO_OWNER)) {
    return Error(ENOENT, what + ": avahi-daemon is not on the system bus (" + text +
                             "); install and start avahi-daemon, or set a static master "
                             "address");
  }
  return Error(r < 0 ? -r : EIO, what + ": " + text);
}

}  // namespace

// ---- MasterChoice ---------------------------------------------------------------------------

bool MasterChoice::add(const std::string& instance, const std::string& address) {
  seen_[instance] = {++order_, address};
  return choose();
}

bool MasterChoice::remove(const std::string& instance) {
  seen_.erase(instance);
  return choose();
}

bool MasterChoice::choose() {
  std::string before = chosen_;
  auto current = seen_.find(chosen_instance_);
  if (current != seen_.end()) {
    chosen_ = current->second.second;  // the same master may have a new address
  } else {
    chosen_instance_.clear();
    chosen_.clear();
    uint64_t newest = 0;
    for (const auto& [instance, entry] : seen_) {
      if (entry.first > newest) {
        newest = entry.first;
        chosen_instance_ = instance;
        chosen_ = entry.second;
      }
    }
  }
  return chosen_ != before;
}

std::string master_address(const std::string& address, uint16_t port) {
  bool v6 = address.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

Result<void> StaticMasterLocator::start(OnChange on_change) {
  on_change(address_);
  return {};
}

// ---- AvahiMasterLocator ---------------------------------------------------------------------

AvahiMasterLocator::~AvahiMasterLocator() {
  presence_.reset();
  resolving_.clear();
  match_.reset();
  if (!browser_path_.empty() && bus_.connected()) {
    (void)sd_bus_call_method_async(bus_.get(), nullptr, kAvahi, browser_path_.c_str(),
                                   kServiceBrowser, "Free", nullptr, nullptr, "");
    bus_.kick();
  }
}

// ---- AvahiPresence --------------------------------------------------------------------------

Result<std::unique_ptr<AvahiPresence>> AvahiPresence::watch(Bus& bus,
                                                            std::function<void(bool)> cb) {
  std::unique_ptr<AvahiPresence> p(new AvahiPresence());
  p->cb_ = std::move(cb);
  sd_bus_slot* slot = nullptr;
  int r = sd_bus_add_match(bus.get(), &slot,
                           "type='signal',sender='org.freedesktop.DBus',"
                           "path='/org/freedesktop/DBus',interface='org.freedesktop.DBus',"
                           "member='NameOwnerChanged',arg0='org.freedesktop.Avahi'",
                           &AvahiPresence::on_owner, p.get());
  if (r < 0) return Error(-r, "watching for avahi-daemon on the bus failed");
  p->match_.reset(slot);
  bus.kick();
  return p;
}

int AvahiPresence::on_owner(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* self = static_cast<AvahiPresence*>(userdata);
  const char *name = nullptr, *old_owner = nullptr, *new_owner = nullptr;
  if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0) return 0;
  if (!name || std::strcmp(name, kAvahi) != 0) return 0;
  bool present = new_owner && *new_owner;
  // A restart seen as one change (old owner to new owner) is "gone" and then "back".
  if (present && old_owner && *old_owner) self->cb_(false);
  self->cb_(present);
  return 0;
}

Result<void> AvahiMasterLocator::start(OnChange on_change, bool wait_for_avahi) {
  on_change_ = std::move(on_change);
  // Subscribe before the browser exists (any path): its first ItemNew may come at once.
  sd_bus_slot* slot = nullptr;
  int r = sd_bus_match_signal(bus_.get(), &slot, kAvahi, nullptr, kServiceBrowser, nullptr,
                              &AvahiMasterLocator::on_item, this);
  if (r < 0) return Error(-r, "subscribing to Avahi's ServiceBrowser signals failed");
  match_.reset(slot);
  CORRAL_ASSIGN_OR_RETURN(
      presence_, AvahiPresence::watch(bus_, [this](bool present) { avahi_changed(present); }));
  auto b = browse();
  if (!b.ok()) {
    if (!wait_for_avahi || b.error().code() != ENOENT) {
      presence_.reset();
      match_.reset();
      return b;
    }
    absent_reason_ = b.error().message();
  }
  return {};
}

Result<void> AvahiMasterLocator::browse() {
  BusError err;
  sd_bus_message* raw = nullptr;
  int r =
      sd_bus_call_method(bus_.get(), kAvahi, "/", kServer, "ServiceBrowserNew", &err.e, &raw,
                         "iissu", kIfUnspec, kProtoInet, kMasterServiceType, domain_.c_str(), 0u);
  MessagePtr reply(raw);
  if (r < 0) return avahi_error("browsing for " + std::string(kMasterServiceType), r, err);
  const char* path = nullptr;
  if ((r = sd_bus_message_read(reply.get(), "o", &path)) < 0)
    return Error(-r, "unreadable answer to ServiceBrowserNew");
  browser_path_ = path;
  absent_reason_.clear();
  bus_.kick();
  return {};
}

// avahi-daemon went away (its browser with it) or came (back): browse again. The master chosen so
// far stays reported until the new browser's answers say otherwise, so a restart of avahi-daemon
// does not move the agent.
void AvahiMasterLocator::avahi_changed(bool present) {
  if (!present) {
    if (!browser_path_.empty())
      log::warning("avahi-daemon left the system bus: master discovery paused until it is back");
    browser_path_.clear();
    resolving_.clear();
    choice_ = MasterChoice();
    return;
  }
  if (!browser_path_.empty()) return;
  if (auto b = browse(); !b.ok()) {
    log::warning("avahi-daemon is back, but browsing for the master failed: " +
                 b.error().message());
    return;
  }
  log::notice("avahi-daemon is on the system bus: browsing for " + std::string(kMasterServiceType));
}

int AvahiMasterLocator::on_item(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* self = static_cast<AvahiMasterLocator*>(userdata);
  const char* path = sd_bus_message_get_path(m);
  if (!path || self->browser_path_ != path) return 0;
  const char* member = sd_bus_message_get_member(m);
  if (!member) return 0;
  if (std::strcmp(member, "Failure") == 0) {
    const char* why = nullptr;
    (void)sd_bus_message_read(m, "s", &why);
    log::warning(std::string("Avahi browsing for the master failed: ") + (why ? why : "?"));
    return 0;
  }
  bool added = std::strcmp(member, "ItemNew") == 0;
  if (!added && std::strcmp(member, "ItemRemove") != 0) return 0;  // AllForNow, CacheExhausted
  int32_t interface = 0, protocol = 0;
  const char *name = nullptr, *type = nullptr, *domain = nullptr;
  uint32_t flags = 0;
  if (sd_bus_message_read(m, "iisssu", &interface, &protocol, &name, &type, &domain, &flags) < 0)
    return 0;
  // One master is seen once per interface; key by name and interface.
  std::string instance = std::string(name) + "%" + std::to_string(interface);
  if (added) {
    self->resolve(interface, protocol, name);
  } else {
    log::info(std::string("master ") + name + " withdrawn from DNS-SD");
    if (self->choice_.remove(instance)) self->changed();
  }
  return 0;
}

void AvahiMasterLocator::resolve(int32_t interface, int32_t protocol, const std::string& name) {
  auto res = std::make_unique<Resolve>();
  res->owner = this;
  res->name = name + "%" + std::to_string(interface);
  sd_bus_slot* slot = nullptr;
  int r = sd_bus_call_method_async(bus_.get(), &slot, kAvahi, "/", kServer, "ResolveService",
                                   &AvahiMasterLocator::on_resolved, res.get(), "iisssiu",
                                   interface, protocol, name.c_str(), kMasterServiceType,
                                   domain_.c_str(), kProtoInet, 0u);
  if (r < 0) {
    log::warning("resolving master " + name + " failed: " + std::strerror(-r));
    return;
  }
  res->call.reset(slot);
  resolving_.push_back(std::move(res));
  bus_.kick();
}

int AvahiMasterLocator::on_resolved(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* res = static_cast<Resolve*>(userdata);
  AvahiMasterLocator* self = res->owner;
  std::string instance = res->name;
  if (sd_bus_message_is_method_error(m, nullptr)) {
    const sd_bus_error* e = sd_bus_message_get_error(m);
    log::warning("resolving master " + instance +
                 " failed: " + (e && e->message ? e->message : "unknown error"));
  } else {
    int32_t interface = 0, protocol = 0, aprotocol = 0;
    const char *name = nullptr, *type = nullptr, *domain = nullptr, *host = nullptr,
               *address = nullptr;
    uint16_t port = 0;
    if (sd_bus_message_read(m, "iissssisq", &interface, &protocol, &name, &type, &domain, &host,
                            &aprotocol, &address, &port) >= 0) {
      std::string where = master_address(address, port);
      log::info(std::string("master ") + name + " found through DNS-SD at " + where + " (" + host +
                ")");
      if (self->choice_.add(instance, where)) self->changed();
    }
  }
  // Done with this call: drop its record and slot (sd-bus holds its own reference to the slot
  // while this callback runs).
  auto& list = self->resolving_;
  for (auto it = list.begin(); it != list.end(); ++it) {
    if (it->get() == res) {
      list.erase(it);
      break;
    }
  }
  return 0;
}

void AvahiMasterLocator::changed() {
  if (choice_.chosen() == reported_) return;
  reported_ = choice_.chosen();
  if (on_change_) on_change_(reported_);
}

// ---- AvahiPublisher -------------------------------------------------------------------------

Result<std::unique_ptr<AvahiPublisher>> AvahiPublisher::publish(Bus& bus, const std::string& name,
                                                                const std::string& type,
                                                                uint16_t port,
                                                                const std::vector<std::string>& txt,
                                                                bool wait_for_avahi) {
  std::unique_ptr<AvahiPublisher> p(new AvahiPublisher(bus));
  p->name_ = name;
  p->type_ = type;
  p->port_ = port;
  p->txt_ = txt;
  AvahiPublisher* raw = p.get();
  CORRAL_ASSIGN_OR_RETURN(p->presence_, AvahiPresence::watch(bus, [raw](bool present) {
                            raw->avahi_changed(present);
                          }));
  if (auto r = p->publish_now(); !r.ok()) {
    if (!wait_for_avahi || r.error().code() != ENOENT) return r.error();
    p->absent_reason_ = r.error().message();
  }
  return p;
}

Result<void> AvahiPublisher::publish_now() {
  BusError err;
  sd_bus_message* raw = nullptr;
  int r = sd_bus_call_method(bus_.get(), kAvahi, "/", kServer, "EntryGroupNew", &err.e, &raw, "");
  MessagePtr reply(raw);
  if (r < 0) return avahi_error("publishing " + type_, r, err);
  const char* path = nullptr;
  if ((r = sd_bus_message_read(reply.get(), "o", &path)) < 0)
    return Error(-r, "unreadable answer to EntryGroupNew");
  group_path_ = path;
  sd_bus_slot* slot = nullptr;
  r = sd_bus_match_signal(bus_.get(), &slot, kAvahi, group_path_.c_str(), kEntryGroup,
                          "StateChanged", &AvahiPublisher::on_state, this);
  if (r < 0) return Error(-r, "subscribing to Avahi's EntryGroup signals failed");
  state_match_.reset(slot);
  CORRAL_TRY(add_and_commit());
  absent_reason_.clear();
  return {};
}

// avahi-daemon went away (with the entry group) or came (back): publish again.
void AvahiPublisher::avahi_changed(bool present) {
  if (!present) {
    if (!group_path_.empty())
      log::warning("avahi-daemon left the system bus: " + name_ +
                   " is not announced until it is back");
    group_path_.clear();
    state_match_.reset();
    return;
  }
  if (!group_path_.empty()) return;
  if (auto r = publish_now(); !r.ok()) {
    log::warning("avahi-daemon is back, but publishing " + name_ +
                 " failed: " + r.error().message());
    group_path_.clear();
    state_match_.reset();
    return;
  }
  log::notice("avahi-daemon is on the system bus: publishing " + name_ + " (" + type_ + ")");
}

Result<void> AvahiPublisher::add_and_commit() {
  sd_bus_message* raw = nullptr;
  int r = sd_bus_message_new_method_call(bus_.get(), &raw, kAvahi, group_path_.c_str(), kEntryGroup,
                                         "AddService");
  MessagePtr call(raw);
  if (r < 0) return Error(-r, "building AddService failed");
  r = sd_bus_message_append(call.get(), "iiussssq", kIfUnspec, kProtoInet, 0u, name_.c_str(),
                            type_.c_str(), "", "", port_);
  if (r >= 0) r = sd_bus_message_open_container(call.get(), 'a', "ay");
  for (const auto& t : txt_) {
    if (r >= 0) r = sd_bus_message_append_array(call.get(), 'y', t.data(), t.size());
  }
  if (r >= 0) r = sd_bus_message_close_container(call.get());
  if (r < 0) return Error(-r, "building AddService failed");
  BusError err;
  sd_bus_message* reply = nullptr;
  r = sd_bus_call(bus_.get(), call.get(), 0, &err.e, &reply);
  sd_bus_message_unref(reply);
  if (r < 0) return avahi_error("publishing " + name_ + " (" + type_ + ")", r, err);
  reply = nullptr;
  BusError err2;
  r = sd_bus_call_method(bus_.get(), kAvahi, group_path_.c_str(), kEntryGroup, "Commit", &err2.e,
                         &reply, "");
  sd_bus_message_unref(reply);
  if (r < 0) return avahi_error("committing the DNS-SD entry " + name_, r, err2);
  bus_.kick();
  return {};
}

int AvahiPublisher::on_state(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto* self = static_cast<AvahiPublisher*>(userdata);
  int32_t state = 0;
  const char* error = nullptr;
  if (sd_bus_message_read(m, "is", &state, &error) < 0) return 0;
  if (state == kGroupEstablished) {
    log::info("published " + self->name_ + " (" + self->type_ + ") through Avahi");
  } else if (state == kGroupCollision) {
    // Another host uses the name: take Avahi's alternative and publish again (off this callback).
    BusError err;
    sd_bus_message* raw = nullptr;
    int r = sd_bus_call_method(self->bus_.get(), kAvahi, "/", kServer, "GetAlternativeServiceName",
                               &err.e, &raw, "s", self->name_.c_str());
    MessagePtr reply(raw);
    const char* alt = nullptr;
    if (r >= 0 && sd_bus_message_read(reply.get(), "s", &alt) >= 0) {
      log::notice("DNS-SD name " + self->name_ + " is taken; publishing as " + alt);
      self->name_ = alt;
      BusError e2;
      sd_bus_message* rr = nullptr;
      (void)sd_bus_call_method(self->bus_.get(), kAvahi, self->group_path_.c_str(), kEntryGroup,
                               "Reset", &e2.e, &rr, "");
      sd_bus_message_unref(rr);
      if (auto a = self->add_and_commit(); !a.ok())
        log::warning("publishing " + self->name_ + ": " + a.error().message());
    }
  } else if (state == kGroupFailure) {
    log::warning("Avahi could not publish " + self->name_ + ": " + (error ? error : "?"));
  }
  return 0;
}

AvahiPublisher::~AvahiPublisher() {
  presence_.reset();
  state_match_.reset();
  if (!group_path_.empty() && bus_.connected()) {
    (void)sd_bus_call_method_async(bus_.get(), nullptr, kAvahi, group_path_.c_str(), kEntryGroup,
                                   "Free", nullptr, nullptr, "");
    bus_.kick();
  }
}

}  // namespace corral::dbus
