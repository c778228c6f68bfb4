#pragma once
// org.corral.Agent1 at /org/corral/Agent1 on the system bus (docs/dbus.md):
//   properties  State s, Resources a{sd}, TaskCount u   (PropertiesChanged on change; anyone reads)
//   methods     ListTasks() -> a(ssss) (task_id, framework_id, state, container_id)
//               KillTask(s task_id)            "framework_id/task_id" when the id is ambiguous
//               Drain(u timeout_seconds)       0: wait for tasks to end; else kill at the deadline
//               ReloadPolicy()                 a broken policy file keeps the old policy
//   signal      TaskStateChanged(s task_id, s state, s reason)
// Methods: root and group `corral` only (policy file and check_caller()).
//
// The daemon implements AgentBackend; Agent1Service exports it on a Bus.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "corral/common/result.hpp"
#include "corral/dbus/bus.hpp"

namespace corral::dbus {

inline constexpr const char* kAgentBusName = "org.corral.Agent1";
inline constexpr const char* kAgentObjectPath = "/org/corral/Agent1";
inline constexpr const char* kAgentInterface = "org.corral.Agent1";
// Error names the methods return besides AccessDenied.
inline constexpr const char* kErrorNotFound = "org.corral.Error.NotFound";
inline constexpr const char* kErrorInvalid = "org.corral.Error.InvalidArgument";
inline constexpr const char* kErrorFailed = "org.corral.Error.Failed";

struct AgentTask {
  std::string task_id;
  std::string framework_id;
  std::string state;  // TASK_RUNNING, ...
  std::string container_id;
};

class AgentBackend {
 public:
  virtual ~AgentBackend() = default;
  // "standalone", "connecting", "registered", "draining", "stopping"
  virtual std::string state() const = 0;
  virtual std::map<std::string, double> resources() const = 0;  // cpus, mem (MB), disk (MB)...
  virtual uint32_t task_count() const = 0;                      // tasks not yet terminal
  virtual std::vector<AgentTask> list_tasks() const = 0;
  // Errors: ENOENT unknown task, EINVAL ambiguous/invalid id; message for the caller.
  virtual Result<void> kill_task(const std::string& task_id) = 0;
  virtual Result<void> drain(uint32_t timeout_seconds) = 0;
  virtual Result<void> reload_policy() = 0;
};

class Agent1Service {
 public:
  // Exports the object on `bus` (does not take the name; call bus.request_name()).
  static Result<std::unique_ptr<Agent1Service>> start(Bus& bus, AgentBackend& backend);
  ~Agent1Service();

  // Emits TaskStateChanged.
  void task_state_changed(const std::string& task_id, const std::string& state,
                          const std::string& reason);
  // Emits PropertiesChanged for the properties whose value differs from the last emitted one.
  void refresh_properties();

 private:
  Agent1Service(Bus& bus, AgentBackend& backend) : bus_(bus), backend_(backend) {}
  friend struct Agent1Vtable;
  Bus& bus_;
  AgentBackend& backend_;
  SlotPtr slot_;
  std::string last_state_;
  uint32_t last_count_ = 0;
  std::map<std::string, double> last_resources_;
};

// Maps a Result error to a D-Bus error (ENOENT NotFound, EINVAL InvalidArgument, else Failed).
int set_bus_error(const Error& e, sd_bus_error* error);

}  // namespace corral::dbus
