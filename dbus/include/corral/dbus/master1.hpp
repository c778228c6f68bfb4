#pragma once
// org.corral.Master1 at /org/corral/Master1 on the system bus (docs/dbus.md):
//   properties  State s, AgentCount u, FrameworkCount u, Leader s, Address s
//               (PropertiesChanged on change; anyone reads)
//   methods     ListAgents() -> a(sss)      (agent_id, hostname, state)
//               ListFrameworks() -> a(sss)  (framework_id, name, state)
// Methods: root and group `corral` only (policy file and check_caller()).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "corral/common/result.hpp"
#include "corral/dbus/bus.hpp"

namespace corral::dbus {

inline constexpr const char* kMasterBusName = "org.corral.Master1";
inline constexpr const char* kMasterObjectPath = "/org/corral/Master1";
inline constexpr const char* kMasterInterface = "org.corral.Master1";

struct MasterEntry {
  std::string id;
  std::string name;  // agent: hostname; framework: its name
  std::string state;
};

class MasterBackend {
 public:
  virtual ~MasterBackend() = default;
  virtual std::string state() const = 0;    // "leading" (a single master leads), "stopping"
  virtual std::string leader() const = 0;   // master id of the leader
  virtual std::string address() const = 0;  // "http://host:port"
  virtual uint32_t agent_count() const = 0;
  virtual uint32_t framework_count() const = 0;
  virtual std::vector<MasterEntry> list_agents() const = 0;
  virtual std::vector<MasterEntry> list_frameworks() const = 0;
};

class Master1Service {
 public:
  static Result<std::unique_ptr<Master1Service>> start(Bus& bus, MasterBackend& backend);
  ~Master1Service();
  // Emits PropertiesChanged for the properties whose value changed since the last call.
  void refresh_properties();

 private:
  Master1Service(Bus& bus, MasterBackend& backend) : bus_(bus), backend_(backend) {}
  friend struct Master1Vtable;
  Bus& bus_;
  MasterBackend& backend_;
  SlotPtr slot_;
  std::string last_state_, last_leader_, last_address_;
  uint32_t last_agents_ = 0, last_frameworks_ = 0;
};

}  // namespace corral::dbus
