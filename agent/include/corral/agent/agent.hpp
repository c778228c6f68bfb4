#pragma once
// corral-agent as a library object (tests run it in-process). One io_context thread runs all of
// the agent's logic; blocking work (launching, killing, fetching, SQLite commits, health checks)
// runs on a small worker pool and posts its results back.
//
// What it does (docs/agent.md):
//  * accepts tasks from the master (agent link, docs/api/agent-link.md) or locally (unix socket
//    API), checks them against the isolation policy, fetches their URIs into the sandbox and runs
//    them through a Containerizer (native, or docker when the task asks and dockerd is there);
//  * reports status updates STARTING -> RUNNING -> terminal, each checkpointed before it is sent
//    and resent until acknowledged, in order per task (at least once);
//  * checkpoints every task in SQLite (<work_dir>/agent.db), so a restarted agent adopts running
//    tasks, reports those that ended while it was away with their real exit status, and resends
//    unacknowledged updates;
//  * runs health checks (command, HTTP, TCP) and kills a task that fails too many in a row;
//  * serves the agent API (Mesos v1 agent API shape) on a unix socket (all calls) and on TCP
//    (reads; the calls that change the agent with the bearer token of api_token_file).

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>

#include "corral/agent/config.hpp"
#include "corral/common/result.hpp"
#include "corral/containerizer/containerizer.hpp"

namespace corral::agent {

struct AgentDeps {
  // Tests inject containerizers; empty = the agent opens the native one (and docker if it can).
  std::unique_ptr<containerizer::Containerizer> native;
  std::unique_ptr<containerizer::Containerizer> docker;
};

class AgentImpl;

class Agent {
 public:
  // Opens the checkpoint, recovers tasks, starts the APIs and the master link. Errors name what
  // to fix (no cgroup v2 while the policy requires it, unreadable work dir, busy port).
  static Result<std::unique_ptr<Agent>> start(boost::asio::io_context& io, AgentConfig config,
                                              AgentDeps deps = {});
  ~Agent();

  // Stops serving. Tasks keep running (the next agent adopts them) unless kill_tasks is set.
  // `done` runs on the io_context.
  void stop(bool kill_tasks, std::function<void()> done = {});
  // SIGHUP: reloads policy files; a broken file keeps the last good policy (error returned).
  Result<void> reload_policy();

  // org.corral.Agent1 on the system bus (agent/src/dbus_glue.cpp, docs/dbus.md). An error says
  // why (no system bus, name taken, policy); the agent runs on without it.
  Result<void> start_dbus();
  // For systemd's STATUS=: "registered with master http://m:5050 as <id>, 12 tasks".
  std::string status_line() const;
  // "standalone", "connecting", "registered", "draining" or "stopping".
  std::string state() const;
  size_t task_count() const;  // tasks not yet terminal

  std::string agent_id() const;
  std::string tcp_address() const;  // "127.0.0.1:PORT", empty when not listening on TCP
  std::string socket_path() const;

 private:
  explicit Agent(std::unique_ptr<AgentImpl> impl);
  std::unique_ptr<AgentImpl> impl_;
  friend struct AgentInternalsAccess;  // tests and bench/agent drive the internals directly
};

}  // namespace corral::agent
