#pragma once
// corral-master's internals: one object on the daemon's event loop (single-threaded: every
// handler, timer and stream callback runs on the io_context's one thread, so nothing here is
// locked). Split over master.cpp (start, timers, registry), agent_link.cpp (POST
// /api/v1/agent), scheduler_api.cpp (POST /api/v1/scheduler) and operator_api.cpp (POST
// /api/v1, /state, /metrics/snapshot).

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "corral/common/http_server.hpp"
#include "corral/common/metrics.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/common/sqlite.hpp"
#include "corral/common/task_state.hpp"
#include "corral/master/allocator.hpp"
#include "corral/master/config.hpp"
#include "corral/v1/internal.pb.h"
#include "corral/v1/master.pb.h"
#include "corral/v1/mesos.pb.h"
#include "corral/v1/scheduler.pb.h"

namespace corral::master {

class JsonWriter;
namespace internal = v1::internal;
using SteadyClock = std::chrono::steady_clock;
using TaskKey = std::pair<std::string, std::string>;  // (framework id, task id)

// Scalar and range resources (ports) of a proto list in the allocator's pools (sets are not
// allocated by Corral yet and are left out).
Resources to_pools(const google::protobuf::RepeatedPtrField<v1::Resource>& resources);
// The pools back as Mesos resources; `allocation_role` sets allocation_info when non-empty.
google::protobuf::RepeatedPtrField<v1::Resource> to_proto(const Resources& pools,
                                                          const std::string& allocation_role);
// The reservation role of one resource ("" when unreserved).
std::string reservation_role(const v1::Resource& r);
double unix_now();

struct AgentRec {
  enum class State { kRecovered, kReachable, kDisconnected, kUnreachable, kGone };
  v1::AgentInfo info;
  State state = State::kRecovered;
  std::string version;
  std::vector<v1::AgentInfo::Capability> capabilities;
  std::shared_ptr<http::StreamWriter> stream;
  std::string stream_id;
  WireFormat format = WireFormat::kProtobuf;
  SteadyClock::time_point last_contact;  // last PONG or (re)registration
  SteadyClock::time_point state_since;   // when the current state began
  double registered_time = 0;
  double reregistered_time = 0;
  double unreachable_time = 0;  // unix seconds, persisted
  uint64_t ping_sequence = 0;
  bool deactivated = false;  // maintenance / operator
  std::set<TaskKey> tasks;
  std::set<std::string> offers;
  // GET_STATE's JSON of this agent (operator_api.cpp), reused while what it was written from is
  // unchanged: the resources (compared), and the connection and (re)registration that any
  // change of `info` comes with (Debug builds check every reuse against a fresh write).
  struct JsonCache {
    std::string json;
    std::string stream_id;
    State state = State::kRecovered;
    bool deactivated = false;
    double registered_time = 0;
    double reregistered_time = 0;
    Resources total, allocated, offered;
  };
  mutable JsonCache json_cache;
};

struct FrameworkRec {
  v1::FrameworkInfo info;
  std::vector<std::string> roles;
  bool partition_aware = false;
  bool multi_role = false;
  bool connected = false;
  bool recovered = false;  // loaded from the registry, not yet re-subscribed
  std::shared_ptr<http::StreamWriter> stream;
  std::string stream_id;
  WireFormat format = WireFormat::kJson;
  SteadyClock::time_point disconnected_at;
  double registered_time = 0;
  double reregistered_time = 0;
  std::set<TaskKey> tasks;
  std::set<std::string> offers;
};

struct TaskRec {
  v1::Task task;
  std::string role;
  Resources resources;
  bool resources_released = false;  // given back to the allocator (terminal, or agent lost)
  // The task's JSON (json_writer.hpp), built by the first GET_STATE/GET_TASKS after a change
  // and copied as is by the next ones. Whoever changes `task` calls changed() (Debug builds
  // check every cached fragment against a fresh one).
  mutable std::string json;
  void changed() {
    json.clear();
    json.shrink_to_fit();
  }
};

struct OfferRec {
  v1::Offer offer;
  std::string framework_id;
  std::string agent_id;
  std::string role;
  Resources resources;
  SteadyClock::time_point created;
  // The offer's JSON, written by the first GET_STATE that lists it (an offer does not change
  // once made; Debug builds check every reuse against a fresh write).
  mutable std::string json;
};

class MasterImpl {
 public:
  MasterImpl(boost::asio::io_context& io, MasterConfig config);
  ~MasterImpl();

  Result<void> start();
  void stop(std::function<void()> on_stopped);
  std::string address() const;

  const std::string& master_id() const { return master_id_; }
  int64_t start_count() const { return start_count_; }

 private:
  friend class Master;
  friend class MasterDbusGlue;  // dbus_glue.cpp: org.corral.Master1 reads the registry
  // --- master.cpp
  http::Router routes();
  void tick();
  void schedule_tick();
  void request_allocation();
  void run_allocation();
  Result<void> load_registry();
  // With next_agent_seq >= 0, the agent id counter is written in the same transaction (one
  // fsync per registration).
  void persist_agent(const AgentRec& agent, int64_t next_agent_seq = -1);
  void persist_framework(const std::string& id, const FrameworkRec& fw);
  void erase_framework_record(const std::string& id);
  Result<std::string> next_id(const std::string& counter, const std::string& prefix, int width);
  v1::MasterInfo master_info() const;
  http::Response version() const;
  void check_agent_timeouts(SteadyClock::time_point now);
  void check_framework_timeouts(SteadyClock::time_point now);
  void check_offer_timeouts(SteadyClock::time_point now);

  // --- agent_link.cpp
  void agent_api(const std::shared_ptr<http::Exchange>& ex);
  void agent_register(const std::shared_ptr<http::Exchange>& ex, WireFormat in, WireFormat out,
                      internal::AgentCall& call);
  void agent_status_update(AgentRec& agent, const internal::StatusUpdate& update);
  void send_agent(AgentRec& agent, const internal::AgentEvent& event);
  void agent_disconnected(const std::string& agent_id, const std::string& stream_id);
  void mark_unreachable(const std::string& agent_id);
  void mark_gone(const std::string& agent_id, bool by_operator);
  void remove_agent_offers(AgentRec& agent);
  void add_agent_to_allocator(const std::string& id, AgentRec& agent,
                              const google::protobuf::RepeatedPtrField<v1::Resource>& checkpointed);
  void release_task_resources(TaskRec& task);

  // --- scheduler_api.cpp
  void scheduler_api(const std::shared_ptr<http::Exchange>& ex);
  void subscribe(const std::shared_ptr<http::Exchange>& ex, WireFormat out,
                 v1::scheduler::Call& call);
  http::Response handle_call(FrameworkRec& fw, const std::string& fw_id, v1::scheduler::Call& call);
  void accept(FrameworkRec& fw, const std::string& fw_id,
              const v1::scheduler::Call::Accept& accept);
  void decline(FrameworkRec& fw, const std::string& fw_id,
               const google::protobuf::RepeatedPtrField<v1::OfferID>& ids, double refuse_seconds);
  void reconcile(FrameworkRec& fw, const std::string& fw_id,
                 const v1::scheduler::Call::Reconcile& reconcile);
  void send_framework(FrameworkRec& fw, const v1::scheduler::Event& event);
  void send_update(FrameworkRec& fw, const v1::TaskStatus& status);
  v1::TaskStatus master_status(const v1::TaskID& task_id, const std::string& agent_id,
                               v1::TaskState state, v1::TaskStatus::Reason reason,
                               const std::string& message);
  v1::TaskState visible_state(const FrameworkRec& fw, v1::TaskState state) const;
  void rescind_offer(const std::string& offer_id, bool notify);
  void framework_disconnected(const std::string& fw_id, const std::string& stream_id);
  void remove_framework(const std::string& fw_id, const std::string& why);

  // --- operator_api.cpp
  void operator_api(const std::shared_ptr<http::Exchange>& ex);
  v1::master::Response::GetAgents get_agents() const;
  // One agent of GetAgents.agents from its record and its resources.
  v1::master::Response::GetAgents::Agent agent_message(const AgentRec& a, const Resources& total,
                                                       const Resources& allocated,
                                                       const Resources& offered) const;
  // The resources agent_message() reads: the total, allocated (less offered) and offered.
  void agent_resources(const std::string& id, const AgentRec& a, Resources* total,
                       Resources* allocated, Resources* offered) const;
  void write_agents_json(JsonWriter& w) const;  // GetAgents, as to_json(get_agents())
  v1::master::Response::GetFrameworks get_frameworks() const;
  // The Framework entry of get_frameworks() for one framework, without its offers.
  v1::master::Response::GetFrameworks::Framework framework_message(const std::string& id,
                                                                   const FrameworkRec& f) const;
  void write_frameworks_json(JsonWriter& w) const;  // as to_json(get_frameworks())
  v1::master::Response::GetTasks get_tasks() const;
  v1::master::Response::GetRoles get_roles() const;
  // Streamed answers for the large reads (json_writer.hpp): GetTasks / GetState as JSON, and
  // their binary encodings, without copying the tasks into a Response first.
  void write_tasks_json(JsonWriter& w) const;
  void write_state_json(JsonWriter& w) const;
  std::string tasks_protobuf() const;
  std::string state_protobuf() const;
  std::string state_json() const;  // GET /state
  nlohmann::json metrics_snapshot() const;
  void operator_event(const v1::master::Event& event);

  boost::asio::io_context& io_;
  MasterConfig config_;
  std::unique_ptr<SqliteStateStore> store_;
  MetricsRegistry metrics_;
  std::string master_id_;
  int64_t start_count_ = 0;
  std::chrono::system_clock::time_point started_;
  SteadyClock::time_point started_steady_;
  bool stopping_ = false;

  Allocator allocator_;
  std::map<std::string, AgentRec> agents_;
  std::map<std::string, FrameworkRec> frameworks_;
  std::map<TaskKey, TaskRec> tasks_;
  std::unordered_map<std::string, OfferRec> offers_;
  std::vector<v1::Task> completed_tasks_;  // bounded, newest last
  std::vector<std::pair<std::string, v1::FrameworkInfo>> completed_frameworks_;
  std::map<std::string, std::string> machines_down_;  // hostname -> "DOWN"
  std::vector<std::shared_ptr<http::StreamWriter>> operator_streams_;

  boost::asio::steady_timer tick_timer_;
  boost::asio::steady_timer allocation_timer_;
  bool allocation_scheduled_ = false;
  SteadyClock::time_point next_full_allocation_;
  SteadyClock::time_point next_agent_ping_;
  SteadyClock::time_point next_framework_heartbeat_;
  uint64_t offer_seq_ = 0;

  // Metrics (Prometheus and /metrics/snapshot).
  struct Counters {
    uint64_t tasks_launched = 0;
    uint64_t status_updates = 0;
    uint64_t offers_sent = 0;
    uint64_t offers_declined = 0;
    uint64_t offers_rescinded = 0;
    uint64_t allocation_runs = 0;
    double last_allocation_ms = 0;
    double last_state_write_ms = 0;  // writing the last GET_STATE answer (not sending it)
    size_t last_state_bytes = 0;     // its size, to allocate the next answer's buffer once
    uint64_t invalid_calls = 0;
  } counters_;

  // Declared last: destroyed first, so stream close callbacks never see a half-destroyed
  // master.
  std::unique_ptr<http::Server> server_;
};

}  // namespace corral::master
