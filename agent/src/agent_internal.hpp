#pragma once
// The agent's internals, shared by agent.cpp (tasks, updates, recovery), link.cpp (master link),
// api.cpp (HTTP API), health.cpp (health checks) and sandbox.cpp (sandboxes, URIs, GC).

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "checkpoint.hpp"
#include "corral/agent/agent.hpp"
#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/http_server.hpp"
#include "corral/common/task_state.hpp"
#include "corral/isolator/policy.hpp"
#include "corral/v1/agent.pb.h"
#include "corral/v1/internal.pb.h"

namespace corral::agent {

namespace internal = corral::v1::internal;

inline constexpr const char* kLocalFramework = "local";

std::string random_bytes(size_t n);
std::string random_hex(size_t bytes);
double now_seconds();
Result<void> check_id(std::string_view what, const std::string& id);
Result<isolator::TaskRequest> policy_request_for(const v1::FrameworkInfo& framework,
                                                 const v1::TaskInfo& task);

// Fetches one CommandInfo.URI into `dir` (docs/agent.md: file paths allowed by the policy's
// volume paths, http:// URLs; "#sha256=<hex>" checks the content; archives are extracted
// safely when extract is set). Blocking.
Result<void> fetch_uri(const v1::CommandInfo::URI& uri, const std::filesystem::path& dir,
                       const isolator::Policy& policy, uint64_t max_bytes);
// Opens `relative` (no leading '/') beneath the directory fd `root` without leaving it: `..`,
// absolute symlinks and symlinks pointing outside are refused (openat2 RESOLVE_BENEATH).
Result<UniqueFd> open_beneath(int root, const std::string& relative, int flags);

struct TaskRecord {
  std::string container_id;
  v1::FrameworkInfo framework;
  v1::TaskInfo info;
  v1::TaskState state = v1::TASK_STAGING;
  std::string containerizer = "native";
  nlohmann::json checkpoint;
  std::string sandbox;
  std::string run_dir;
  std::string user;
  bool kill_requested = false;
  bool local = false;
  bool launched = false;
  double created_at = 0;
  double finished_at = 0;
  std::deque<internal::StatusUpdate> pending;  // unacknowledged, oldest first

  // Not persisted.
  std::vector<v1::TaskStatus> statuses;  // recent, for GET_TASKS
  uint64_t seq = 0;                      // bumped on every change
  uint64_t persisted_seq = 0;            // the newest seq that is durable
  bool erase = false;                    // acknowledged terminal: remove once durable
  std::string inflight_uuid;
  std::chrono::milliseconds retry_backoff{0};
  std::chrono::steady_clock::time_point retry_at;
  // health
  std::shared_ptr<boost::asio::steady_timer> health_timer;
  bool health_known = false;
  bool healthy = false;
  int health_failures = 0;
  bool health_killed = false;
  std::string health_message;
  double health_started = 0;
  bool health_check_running = false;

  // The checkpoint record: the version byte 0x01, then corral.agent.checkpoint.TaskRecord in
  // binary protobuf (agent/proto/corral/agent/checkpoint.proto).
  std::string to_record() const;
  // Reads a record: binary (version 1), or the JSON text older agents wrote. A record that is
  // neither, or does not parse, is an EINVAL error saying which.
  static Result<TaskRecord> from_record(std::string_view bytes);
  // The JSON record of agents before the binary format (read for compatibility; written only by
  // tests).
  nlohmann::json to_json() const;
  static Result<TaskRecord> from_json(std::string_view text);
  v1::Task to_task(const std::string& agent_id) const;
};

struct AgentMetrics {
  uint64_t tasks_started = 0, tasks_terminal = 0, tasks_finished = 0, tasks_failed = 0,
           tasks_killed = 0, tasks_failed_launch = 0;
  uint64_t status_updates = 0, status_updates_sent = 0, status_updates_acked = 0,
           status_update_retries = 0, stale_acks = 0, status_update_calls = 0,
           status_update_batch_fallbacks = 0;
  uint64_t checkpoint_commits = 0, checkpoint_failures = 0, corrupt_records = 0;
  double checkpoint_seconds = 0;
  uint64_t master_connects = 0, master_disconnects = 0, health_checks = 0,
           health_check_failures = 0;
  uint64_t sandboxes_collected = 0;
};

struct DrainState {
  double started = 0;
  double deadline = 0;  // seconds since epoch; 0 = wait forever
  bool kill_at_deadline = true;
  bool killed = false;
};

class AgentImpl {
 public:
  AgentImpl(boost::asio::io_context& io, AgentConfig config);
  ~AgentImpl();
  Result<void> init(AgentDeps deps);
  void stop(bool kill_tasks, std::function<void()> done);

  // agent.cpp
  Result<std::string> run_task(const v1::FrameworkInfo& framework, const v1::TaskInfo& task,
                               bool local);
  void kill_task(const std::string& framework_id, const std::string& task_id,
                 std::optional<std::chrono::milliseconds> grace);
  void kill(TaskRecord& t, std::optional<std::chrono::milliseconds> grace);
  void acknowledge(TaskRecord& t, const std::string& uuid);
  TaskRecord* find(const std::string& container_id);
  TaskRecord* find(const std::string& framework_id, const std::string& task_id);
  void update(TaskRecord& t, v1::TaskState state, v1::TaskStatus::Source source,
              std::optional<v1::TaskStatus::Reason> reason, const std::string& message,
              std::optional<bool> healthy = std::nullopt);

  // link.cpp
  void connect_master();
  void post_call(const internal::AgentCall& call,
                 std::function<void(const Result<http::Response>&)> done);
  // POSTs an already serialized AgentCall.
  void post_body(std::string body, std::function<void(const Result<http::Response>&)> done);
  // Status updates go through a queue (each entry a serialized internal::StatusUpdate) with at
  // most kMaxUpdatesInFlight requests open at a time, on reused keep-alive connections (a burst
  // of thousands of updates would otherwise open a connection each). What is queued in one turn
  // of the event loop leaves together: one STATUS_UPDATES call of up to kMaxUpdatesPerCall
  // updates when the master announced the call (status_updates_call in REGISTERED /
  // REREGISTERED), else one STATUS_UPDATE call per update (an older master).
  void post_update(std::string serialized_update);
  void send_queued_updates();
  static constexpr int kMaxUpdatesInFlight = 16;
  static constexpr size_t kMaxUpdatesPerCall = 1024;

  // api.cpp
  Result<void> start_api();
  // Reads api_token_file (docs/agent.md, "Agent API"): the SHA-256 of the token is kept.
  Result<void> load_api_token();
  // A 401 for a TCP request without the right "Authorization: Bearer" token; nullopt when the
  // request may change the agent.
  std::optional<http::Response> unauthorized(const http::Request& req) const;
  void api_call(const std::shared_ptr<http::Exchange>& ex, const v1::agent::Call& call, bool full);
  void stream_log(const std::shared_ptr<http::Exchange>& ex);

  // health.cpp
  void start_health_checks(TaskRecord& t);
  void stop_health_checks(TaskRecord& t);

  // sandbox.cpp
  Result<void> prepare_sandbox(const containerizer::LaunchRequest& request,
                               const isolator::Policy& policy, uint64_t fetch_max);
  void schedule_gc();
  void drain(double deadline_seconds, bool kill);
  nlohmann::json drain_progress() const;

  boost::asio::io_context& io_;
  AgentConfig config_;
  boost::asio::thread_pool pool_;
  boost::asio::strand<boost::asio::thread_pool::executor_type> db_strand_;
  isolator::PolicyHolder policy_;
  std::vector<v1::Resource> resources_;
  std::string hostname_;
  std::string agent_id_;
  bool registered_before_ = false;
  std::string cgroup_backend_ = "none";
  std::string limits_warning_;
  std::unique_ptr<containerizer::Containerizer> native_;
  std::unique_ptr<containerizer::Containerizer> docker_;
  std::string docker_unavailable_;
  std::unique_ptr<CheckpointStore> store_;
  std::map<std::string, std::unique_ptr<TaskRecord>> tasks_;  // by container id
  std::map<std::string, std::string> index_;                  // framework/task -> container id
  std::map<std::string, v1::FrameworkInfo> frameworks_;
  std::deque<v1::Task> completed_;
  // Sandboxes of completed tasks by container id (the newest 1,000), so their logs stay readable
  // until garbage collection.
  std::map<std::string, std::string> completed_sandboxes_;
  std::deque<std::string> completed_order_;
  std::map<std::string, double> gc_;  // sandbox -> finished at
  std::vector<std::string> pending_failures_;
  int recovered_running_ = 0;
  AgentMetrics metrics_;
  std::optional<DrainState> drain_;
  bool stopped_ = false;

  // checkpointing
  std::map<std::string, uint64_t> dirty_;
  CheckpointBatch pending_batch_;
  bool flush_scheduled_ = false, flush_in_flight_ = false, flush_again_ = false;

  // master link (link.cpp)
  std::unique_ptr<http::AsyncHttpClient> link_client_;
  std::unique_ptr<http::AsyncHttpClient> call_client_;
  std::shared_ptr<http::ClientStream> link_stream_;
  boost::asio::steady_timer link_timer_;
  bool link_registered_ = false;
  std::string stream_id_;
  std::chrono::milliseconds link_backoff_{0};
  std::chrono::milliseconds heartbeat_{15'000};
  double master_connected_since_ = 0;
  std::string master_id_;
  std::string link_error_;
  std::deque<std::string> update_queue_;  // serialized internal::StatusUpdate, oldest first
  int updates_in_flight_ = 0;
  bool update_send_scheduled_ = false;
  bool master_batches_ = false;   // the master accepts STATUS_UPDATES
  uint64_t link_generation_ = 0;  // bumped when the call client is replaced

  // APIs
  std::unique_ptr<http::Server> unix_server_;
  std::unique_ptr<http::Server> tcp_server_;
  std::string api_token_sha256_;  // empty: no token, the TCP API is read-only
  boost::asio::steady_timer gc_timer_;
  // WAIT_CONTAINER callers, by container id
  std::map<std::string, std::vector<std::shared_ptr<http::Exchange>>> waiters_;

  // systemd/D-Bus (dbus_glue.cpp): told of every status update (TaskStateChanged); the glue is
  // destroyed first (declared last).
  std::function<void(const TaskRecord&, const v1::TaskStatus&)> on_task_state_;
  std::shared_ptr<class DbusGlue> dbus_;

 private:
  Result<void> open_native();
  Result<void> recover(const CheckpointContents& contents);
  void on_launch_failed(const std::string& id, const Error& e, bool fetch);
  void on_launched(const std::string& id, containerizer::Launched launched);
  void on_terminated(const std::string& id, const containerizer::Termination& t);
  void kill_container(TaskRecord& t, std::chrono::milliseconds grace);
  void persist(TaskRecord& t);
  void flush();
  void forget(const std::string& id);

 public:
  void pump(TaskRecord& t);
  void send_update(TaskRecord& t);
  void handle_event(const internal::AgentEvent& event);
  void notify_waiters(TaskRecord& t);
  void schedule_flush();
  static std::string key_of(const std::string& f, const std::string& t) { return f + "\n" + t; }
};

}  // namespace corral::agent
