#pragma once
// Simulated agents and frameworks that speak the real protocols (the agent link of
// docs/api/agent-link.md, the Mesos v1 scheduler API) over HTTP to a real corral-master. Used
// by the master's integration tests and by the scale tool in bench/master/.
//
// Threading: each object lives on the io_context given to it, which the caller runs on ONE
// thread. Public methods may be called from any thread (they post onto the io_context);
// accessors return snapshots under a lock. Callbacks run on the io_context's thread.

#include <boost/asio/io_context.hpp>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "corral/common/http_client.hpp"
#include "corral/v1/internal.pb.h"
#include "corral/v1/scheduler.pb.h"

namespace corral::master::sim {

struct AgentOptions {
  std::string hostname = "sim-agent";
  double cpus = 4;
  double mem = 4096;
  double disk = 10240;
  // "ports" ranges the agent offers, e.g. {{31000, 31009}} (none by default).
  std::vector<std::pair<uint64_t, uint64_t>> ports;
  // RUN_TASK is answered with TASK_RUNNING (and KILL_TASK with TASK_KILLED) at once.
  bool auto_run = true;
  bool auto_pong = true;
  bool protobuf = true;  // wire format of the link (the real agent uses protobuf)
  // Keep every event for events() (tests); the scale tool turns it off (memory and CPU of the
  // load generator, which shares the machine with the master it measures).
  bool record_events = true;
};

class Agent {
 public:
  Agent(boost::asio::io_context& io, http::Endpoint master, AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // REGISTER when it has no id yet, else REREGISTER with every task it runs.
  void connect();
  // Drops the stream (as a crashed or partitioned agent would).
  void disconnect();
  // Sends a STATUS_UPDATE with a fresh uuid for a task it runs.
  void send_status(const std::string& framework_id, const std::string& task_id,
                   v1::TaskState state);

  std::string id() const;
  bool connected() const;
  // Every event received, in order.
  std::vector<v1::internal::AgentEvent> events() const;
  // Tasks as the agent knows them.
  std::map<std::pair<std::string, std::string>, v1::Task> tasks() const;
  size_t acknowledged() const;
  std::string last_error() const;
  // Forget everything (as a fresh work directory would).
  void set_id(const std::string& id);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

struct FrameworkOptions {
  std::string name = "sim-framework";
  std::string user = "root";
  std::vector<std::string> roles = {"*"};
  double failover_timeout = 0;
  bool partition_aware = false;
  bool protobuf = false;      // JSON by default, like most Mesos client libraries
  bool record_events = true;  // as AgentOptions::record_events
};

class Framework {
 public:
  using EventHandler = std::function<void(Framework&, const v1::scheduler::Event&)>;
  Framework(boost::asio::io_context& io, http::Endpoint master, FrameworkOptions options);
  ~Framework();
  Framework(const Framework&) = delete;
  Framework& operator=(const Framework&) = delete;

  // SUBSCRIBE (with the framework id once it has one: a failover).
  void subscribe();
  void disconnect();
  // Called on the io thread for every event, after it is recorded.
  void on_event(EventHandler handler);
  // Sends a call (framework_id filled in) with the stream id; the HTTP status of the answer is
  // recorded in statuses().
  void call(v1::scheduler::Call call);

  std::string id() const;
  void set_id(const std::string& id);
  bool subscribed() const;
  std::vector<v1::scheduler::Event> events() const;
  std::vector<int> statuses() const;
  std::string last_error() const;

  // Helpers for handlers (io thread): launch one task of cpus/mem on the offer; decline.
  static v1::scheduler::Call launch(const v1::Offer& offer, const std::string& task_id, double cpus,
                                    double mem);
  static v1::scheduler::Call decline(const v1::Offer& offer, double refuse_seconds);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace corral::master::sim
