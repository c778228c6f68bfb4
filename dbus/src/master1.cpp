#include "corral/dbus/master1.hpp"

#include "corral/dbus/access.hpp"

namespace corral::dbus {

struct Master1Vtable {
  static Master1Service& self(void* userdata) { return *static_cast<Master1Service*>(userdata); }
  static const MasterBackend& backend(void* userdata) { return self(userdata).backend_; }

  static int get_state(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                       void* u, sd_bus_error*) {
    return sd_bus_message_append(reply, "s", backend(u).state().c_str());
  }
  static int get_leader(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                        void* u, sd_bus_error*) {
    return sd_bus_message_append(reply, "s", backend(u).leader().c_str());
  }
  static int get_address(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                         void* u, sd_bus_error*) {
    return sd_bus_message_append(reply, "s", backend(u).address().c_str());
  }
  static int get_agents(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                        void* u, sd_bus_error*) {
    return sd_bus_message_append(reply, "u", backend(u).agent_count());
  }
  static int get_frameworks(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                            void* u, sd_bus_error*) {
    return sd_bus_message_append(reply, "u", backend(u).framework_count());
  }

  static int reply_entries(sd_bus_message* m, const std::vector<MasterEntry>& entries) {
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_return(m, &raw);
    MessagePtr reply(raw);
    if (r < 0) return r;
    if ((r = sd_bus_message_open_container(reply.get(), 'a', "(sss)")) < 0) return r;
    for (const auto& e : entries) {
      r = sd_bus_message_append(reply.get(), "(sss)", e.id.c_str(), e.name.c_str(),
                                e.state.c_str());
      if (r < 0) return r;
    }
    if ((r = sd_bus_message_close_container(reply.get())) < 0) return r;
    return sd_bus_send(nullptr, reply.get(), nullptr);
  }
  static int list_agents(sd_bus_message* m, void* u, sd_bus_error* error) {
    if (int r = check_caller(m, error); r < 0) return r;
    return reply_entries(m, backend(u).list_agents());
  }
  static int list_frameworks(sd_bus_message* m, void* u, sd_bus_error* error) {
    if (int r = check_caller(m, error); r < 0) return r;
    return reply_entries(m, backend(u).list_frameworks());
  }
};

namespace {

const sd_bus_vtable kMasterVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("State", "s", Master1Vtable::get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("AgentCount", "u", Master1Vtable::get_agents, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("FrameworkCount", "u", Master1Vtable::get_frameworks, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("Leader", "s", Master1Vtable::get_leader, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("Address", "s", Master1Vtable::get_address, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_METHOD_WITH_NAMES("ListAgents", "", , "a(sss)", SD_BUS_PARAM(agents),
                             Master1Vtable::list_agents, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("ListFrameworks", "", , "a(sss)", SD_BUS_PARAM(frameworks),
                             Master1Vtable::list_frameworks, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END};

}  // namespace

Result<std::unique_ptr<Master1Service>> Master1Service::start(Bus& bus, MasterBackend& backend) {
  std::unique_ptr<Master1Service> s(new Master1Service(bus, backend));
  sd_bus_slot* slot = nullptr;
  int r = sd_bus_add_object_vtable(bus.get(), &slot, kMasterObjectPath, kMasterInterface,
                                   kMasterVtable, s.get());
  if (r < 0) return Error(-r, std::string("exporting ") + kMasterInterface + " failed");
  s->slot_.reset(slot);
  s->last_state_ = backend.state();
  s->last_leader_ = backend.leader();
  s->last_address_ = backend.address();
  s->last_agents_ = backend.agent_count();
  s->last_frameworks_ = backend.framework_count();
  return s;
}

Master1Service::~Master1Service() = default;

void Master1Service::refresh_properties() {
  if (!bus_.connected()) return;
  std::vector<char*> changed;
  auto check = [&](auto now, auto& last, const char* name) {
    if (now == last) return;
    last = now;
    changed.push_back(const_cast<char*>(name));
  };
  check(backend_.state(), last_state_, "State");
  check(backend_.leader(), last_leader_, "Leader");
  check(backend_.address(), last_address_, "Address");
  check(backend_.agent_count(), last_agents_, "AgentCount");
  check(backend_.framework_count(), last_frameworks_, "FrameworkCount");
  if (changed.empty()) return;
  changed.push_back(nullptr);
  (void)sd_bus_emit_properties_changed_strv(bus_.get(), kMasterObjectPath, kMasterInterface,
                                            changed.data());
  bus_.kick();
}

}  // namespace corral::dbus
