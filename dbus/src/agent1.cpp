#include "corral/dbus/agent1.hpp"

#include "corral/dbus/access.hpp"

namespace corral::dbus {

int set_bus_error(const Error& e, sd_bus_error* error) {
  const char* name = e.code() == ENOENT   ? kErrorNotFound
                     : e.code() == EINVAL ? kErrorInvalid
                     : e.code() == EACCES ? SD_BUS_ERROR_ACCESS_DENIED
                                          : kErrorFailed;
  sd_bus_error_set(error, name, e.message().c_str());
  return -(e.code() > 0 ? e.code() : EIO);
}

namespace {

int append_resources(sd_bus_message* reply, const std::map<std::string, double>& resources) {
  int r = sd_bus_message_open_container(reply, 'a', "{sd}");
  if (r < 0) return r;
  for (const auto& [name, value] : resources) {
    r = sd_bus_message_append(reply, "{sd}", name.c_str(), value);
    if (r < 0) return r;
  }
  return sd_bus_message_close_container(reply);
}

}  // namespace

struct Agent1Vtable {
  static Agent1Service& self(void* userdata) { return *static_cast<Agent1Service*>(userdata); }

  static int get_state(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                       void* userdata, sd_bus_error*) {
    return sd_bus_message_append(reply, "s", self(userdata).backend_.state().c_str());
  }
  static int get_resources(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                           void* userdata, sd_bus_error*) {
    return append_resources(reply, self(userdata).backend_.resources());
  }
  static int get_task_count(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply,
                            void* userdata, sd_bus_error*) {
    return sd_bus_message_append(reply, "u", self(userdata).backend_.task_count());
  }

  static int list_tasks(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    if (int r = check_caller(m, error); r < 0) return r;
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_return(m, &raw);
    MessagePtr reply(raw);
    if (r < 0) return r;
    if ((r = sd_bus_message_open_container(reply.get(), 'a', "(ssss)")) < 0) return r;
    for (const auto& t : self(userdata).backend_.list_tasks()) {
      r = sd_bus_message_append(reply.get(), "(ssss)", t.task_id.c_str(), t.framework_id.c_str(),
                                t.state.c_str(), t.container_id.c_str());
      if (r < 0) return r;
    }
    if ((r = sd_bus_message_close_container(reply.get())) < 0) return r;
    return sd_bus_send(nullptr, reply.get(), nullptr);
  }

  static int kill_task(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    if (int r = check_caller(m, error); r < 0) return r;
    const char* task_id = nullptr;
    int r = sd_bus_message_read(m, "s", &task_id);
    if (r < 0) return r;
    auto k = self(userdata).backend_.kill_task(task_id);
    if (!k.ok()) return set_bus_error(k.error(), error);
    return sd_bus_reply_method_return(m, "");
  }

  static int drain(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    if (int r = check_caller(m, error); r < 0) return r;
    uint32_t timeout = 0;
    int r = sd_bus_message_read(m, "u", &timeout);
    if (r < 0) return r;
    auto d = self(userdata).backend_.drain(timeout);
    if (!d.ok()) return set_bus_error(d.error(), error);
    self(userdata).refresh_properties();
    return sd_bus_reply_method_return(m, "");
  }

  static int reload_policy(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    if (int r = check_caller(m, error); r < 0) return r;
    auto p = self(userdata).backend_.reload_policy();
    if (!p.ok()) return set_bus_error(p.error(), error);
    return sd_bus_reply_method_return(m, "");
  }
};

namespace {

const sd_bus_vtable kAgentVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("State", "s", Agent1Vtable::get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("Resources", "a{sd}", Agent1Vtable::get_resources, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_PROPERTY("TaskCount", "u", Agent1Vtable::get_task_count, 0,
                    SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_METHOD_WITH_NAMES("ListTasks", "", , "a(ssss)", SD_BUS_PARAM(tasks),
                             Agent1Vtable::list_tasks, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("KillTask", "s", SD_BUS_PARAM(task_id), "", , Agent1Vtable::kill_task,
                             SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD_WITH_NAMES("Drain", "u", SD_BUS_PARAM(timeout_seconds), "", , Agent1Vtable::drain,
                             SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("ReloadPolicy", "", "", Agent1Vtable::reload_policy, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_SIGNAL_WITH_NAMES("TaskStateChanged", "sss",
                             SD_BUS_PARAM(task_id) SD_BUS_PARAM(state) SD_BUS_PARAM(reason), 0),
    SD_BUS_VTABLE_END};

}  // namespace

Result<std::unique_ptr<Agent1Service>> Agent1Service::start(Bus& bus, AgentBackend& backend) {
  std::unique_ptr<Agent1Service> s(new Agent1Service(bus, backend));
  sd_bus_slot* slot = nullptr;
  int r = sd_bus_add_object_vtable(bus.get(), &slot, kAgentObjectPath, kAgentInterface,
                                   kAgentVtable, s.get());
  if (r < 0) return Error(-r, std::string("exporting ") + kAgentInterface + " failed");
  s->slot_.reset(slot);
  s->last_state_ = backend.state();
  s->last_count_ = backend.task_count();
  s->last_resources_ = backend.resources();
  return s;
}

Agent1Service::~Agent1Service() = default;

void Agent1Service::task_state_changed(const std::string& task_id, const std::string& state,
                                       const std::string& reason) {
  if (!bus_.connected()) return;
  (void)sd_bus_emit_signal(bus_.get(), kAgentObjectPath, kAgentInterface, "TaskStateChanged", "sss",
                           task_id.c_str(), state.c_str(), reason.c_str());
  bus_.kick();
}

void Agent1Service::refresh_properties() {
  if (!bus_.connected()) return;
  std::vector<const char*> changed;
  if (auto s = backend_.state(); s != last_state_) {
    last_state_ = s;
    changed.push_back("State");
  }
  if (auto c = backend_.task_count(); c != last_count_) {
    last_count_ = c;
    changed.push_back("TaskCount");
  }
  if (auto res = backend_.resources(); res != last_resources_) {
    last_resources_ = res;
    changed.push_back("Resources");
  }
  if (changed.empty()) return;
  std::vector<char*> names;
  for (const char* n : changed) names.push_back(const_cast<char*>(n));
  names.push_back(nullptr);
  (void)sd_bus_emit_properties_changed_strv(bus_.get(), kAgentObjectPath, kAgentInterface,
                                            names.data());
  bus_.kick();
}

}  // namespace corral::dbus
