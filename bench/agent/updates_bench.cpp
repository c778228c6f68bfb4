// corral-agent-updates-bench: status-update throughput agent -> master, and checkpoint recovery
// time, of the real agent (docs/benchmarks.md, issue 6).
//
// The agent runs in this process with its real update path: policy decision, sandbox directory,
// the SQLite checkpoint (WAL, synchronous=FULL: every update is durable before it is sent,
// group-committed per turn of the event loop), the agent link over loopback HTTP and the
// acknowledgements. Only the containerizer is replaced by one that "launches" at once, so task
// launches do not bound the rate. The master is a small in-process endpoint speaking the agent
// link: it sends RUN_TASK for every task, acknowledges every STATUS_UPDATE at once on the event
// stream (as a framework's ACKNOWLEDGE forwarded by corral-master would), and sends KILL_TASK
// when a task is RUNNING. Each task thus makes four updates: STARTING, RUNNING, KILLING, KILLED.
//
// Phase 1b (--update-tasks N, --updates-per-task K): the update path alone. N tasks are launched
// and RUNNING (not timed), then the agent's own update manager (AgentImpl::update, as health
// check results use it) makes K TASK_RUNNING updates per task at once; timed until every one is
// durable, sent, at the master, acknowledged and gone from the records. No sandbox, run
// directory or containerizer work is inside this figure (phase 1 has all of it). The tasks are
// killed afterwards, outside the timing.
//
// The in-process master announces STATUS_UPDATES (the batched call) at registration, as
// corral-master does; --no-batch makes it an older master that does not, so the agent sends one
// STATUS_UPDATE per call.
//
// Phase 2 (--recover N): N tasks are left running, the agent is dropped without a clean stop
// (as after kill -9: nothing more is written), and a new agent is started on the same work
// directory; reported: the checkpoint load, the records' parse, Agent::start (load + recovery +
// APIs) and the time until the master has its REREGISTER.
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "agent_internal.hpp"
#include "checkpoint.hpp"
#include "corral/agent/agent.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/http_server.hpp"
#include "corral/common/log.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/common/recordio.hpp"
#include "corral/v1/internal.pb.h"
#include "instant_containerizer.hpp"

namespace corral::agent {
struct AgentInternalsAccess {
  static AgentImpl& impl(Agent& a) { return *a.impl_; }
};
}  // namespace corral::agent

namespace {
namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace internal = corral::v1::internal;
using namespace corral;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The master's side of the agent link, acknowledging at once.
class AckingMaster {
 public:
  explicit AckingMaster(bool batch) : work_(io_.get_executor()), batch_(batch) {
    http::Router r;
    r.add(http::Verb::post, "/api/v1/agent", [this](std::shared_ptr<http::Exchange> ex) {
      internal::AgentCall call;
      if (!parse_binary(ex->request().body(), &call).ok()) {
        ex->respond(http::error_response(http::Status::bad_request, "bad call"));
        return;
      }
      if (call.type() == internal::AgentCall::REGISTER ||
          call.type() == internal::AgentCall::REREGISTER) {
        auto head = http::make_response(http::Status::ok, "", "application/x-protobuf");
        head.set("Corral-Agent-Stream-Id", "bench-stream");
        stream_ = ex->start_stream(head);
        internal::AgentEvent ev;
        if (call.type() == internal::AgentCall::REGISTER) {
          ev.set_type(internal::AgentEvent::REGISTERED);
          ev.mutable_registered()->mutable_agent_id()->set_value("bench-agent");
          ev.mutable_registered()->set_heartbeat_interval_seconds(
              3600);  // this master sends no PINGs
          ev.mutable_registered()->set_status_updates_call(batch_);
        } else {
          ev.set_type(internal::AgentEvent::REREGISTERED);
          *ev.mutable_reregistered()->mutable_agent_id() = call.agent_id();
          ev.mutable_reregistered()->set_heartbeat_interval_seconds(
              3600);  // this master sends no PINGs
          ev.mutable_reregistered()->set_status_updates_call(batch_);
        }
        stream_->write_chunk(recordio_encode(to_binary(ev)));
        signal([&] {
          ++registrations;
          if (call.type() == internal::AgentCall::REREGISTER)
            reregistered_tasks = call.reregister().tasks_size();
        });
        return;
      }
      if (call.type() == internal::AgentCall::STATUS_UPDATES && !batch_) {
        ex->respond(http::error_response(http::Status::bad_request, "AgentCall.type is missing"));
        return;
      }
      if (call.type() == internal::AgentCall::STATUS_UPDATE ||
          call.type() == internal::AgentCall::STATUS_UPDATES) {
        std::string events;
        std::vector<std::pair<std::string, bool>> seen;  // uuid, RUNNING
        auto one = [&](const internal::StatusUpdate& u) {
          internal::AgentEvent ack;
          ack.set_type(internal::AgentEvent::ACKNOWLEDGE);
          *ack.mutable_acknowledge()->mutable_framework_id() = u.framework_id();
          *ack.mutable_acknowledge()->mutable_task_id() = u.status().task_id();
          ack.mutable_acknowledge()->set_uuid(u.uuid());
          events += recordio_encode(to_binary(ack));
          if (u.status().state() == v1::TASK_RUNNING && kill_running_) {
            internal::AgentEvent kill;
            kill.set_type(internal::AgentEvent::KILL_TASK);
            *kill.mutable_kill_task()->mutable_framework_id() = u.framework_id();
            *kill.mutable_kill_task()->mutable_task_id() = u.status().task_id();
            kill.mutable_kill_task()
                ->mutable_kill_policy()
                ->mutable_grace_period()
                ->set_nanoseconds(0);
            events += recordio_encode(to_binary(kill));
          }
          seen.emplace_back(u.uuid(), u.status().state() == v1::TASK_RUNNING);
        };
        if (call.type() == internal::AgentCall::STATUS_UPDATE) {
          one(call.status_update());
        } else {
          for (const auto& u : call.status_updates().updates()) one(u);
        }
        if (stream_) stream_->write_chunk(std::move(events));
        signal([&] {
          ++calls;
          for (const auto& [uuid, running_state] : seen) {
            if (seen_.insert(uuid).second) {
              ++updates;
              if (running_state) ++running;
            }
          }
        });
      }
      ex->respond(http::make_response(http::Status::accepted, ""));
    });
    server_ = std::make_unique<http::Server>(io_, std::move(r));
    if (auto l = server_->listen("127.0.0.1:0"); !l.ok()) {
      std::fprintf(stderr, "master: %s\n", l.error().message().c_str());
      std::exit(1);
    }
    thread_ = std::thread([this] { io_.run(); });
  }
  ~AckingMaster() {
    asio::post(io_, [this] {
      if (stream_) stream_->close();
      server_.reset();
    });
    work_.reset();
    io_.stop();
    thread_.join();
  }
  std::string address() const { return "http://127.0.0.1:" + std::to_string(server_->tcp_port()); }

  // Sends RUN_TASK for tasks [first, first + n) of framework "bench".
  void run_tasks(int first, int n, bool kill_when_running) {
    asio::post(io_, [this, first, n, kill_when_running] {
      kill_running_ = kill_when_running;
      std::string events;
      for (int i = first; i < first + n; ++i) {
        internal::AgentEvent ev;
        ev.set_type(internal::AgentEvent::RUN_TASK);
        auto* f = ev.mutable_run_task()->mutable_framework();
        f->mutable_id()->set_value("bench");
        f->set_name("bench");
        f->set_user("");  // the policy's default user (nobody)
        auto* t = ev.mutable_run_task()->mutable_task();
        t->set_name("t" + std::to_string(i));
        t->mutable_task_id()->set_value("t" + std::to_string(i));
        t->mutable_agent_id()->set_value("bench-agent");
        t->mutable_command()->set_value("true");
        auto* cpus = t->add_resources();
        cpus->set_name("cpus");
        cpus->set_type(v1::Value::SCALAR);
        cpus->mutable_scalar()->set_value(0.01);
        events += recordio_encode(to_binary(ev));
      }
      stream_->write_chunk(std::move(events));
    });
  }

  // Sends KILL_TASK for tasks [first, first + n).
  void kill_tasks(int first, int n) {
    asio::post(io_, [this, first, n] {
      std::string events;
      for (int i = first; i < first + n; ++i) {
        internal::AgentEvent kill;
        kill.set_type(internal::AgentEvent::KILL_TASK);
        kill.mutable_kill_task()->mutable_framework_id()->set_value("bench");
        kill.mutable_kill_task()->mutable_task_id()->set_value("t" + std::to_string(i));
        kill.mutable_kill_task()->mutable_kill_policy()->mutable_grace_period()->set_nanoseconds(0);
        events += recordio_encode(to_binary(kill));
      }
      stream_->write_chunk(std::move(events));
    });
  }

  template <typename Pred>
  bool wait(Pred pred, std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(); });
  }

  std::mutex mu_;
  uint64_t updates = 0, running = 0, calls = 0;
  int registrations = 0, reregistered_tasks = -1;

 private:
  template <typename F>
  void signal(F f) {
    {
      std::lock_guard lock(mu_);
      f();
    }
    cv_.notify_all();
  }
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::unique_ptr<http::Server> server_;
  std::thread thread_;
  std::shared_ptr<http::StreamWriter> stream_;
  std::set<std::string> seen_;
  std::condition_variable cv_;
  bool kill_running_ = true;
  bool batch_ = true;
};

// The agent on its own event-loop thread.
struct RunningAgent {
  asio::io_context io;
  std::unique_ptr<agent::Agent> agent;
  std::thread thread;
  ~RunningAgent() { crash(); }
  // Stops the loop and drops the agent without a clean stop (nothing more is checkpointed).
  void crash() {
    io.stop();
    if (thread.joinable()) thread.join();
    agent.reset();
  }
};

double metric(const std::string& socket, const std::string& name) {
  auto c = http::HttpClient::create("unix:" + socket);
  if (!c) return -1;
  auto r = c->get("/metrics");
  if (!r) return -1;
  const std::string& body = r->body();
  auto pos = body.find("\n" + name + " ");
  if (pos == std::string::npos) return -1;
  return std::stod(body.substr(pos + name.size() + 2));
}

double cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"corral-agent status-update throughput and recovery benchmark"};
  int tasks = 5000;
  int recover_tasks = 1000;
  std::string dir_arg;
  std::string level = "warning";
  int update_tasks = 5000;
  int updates_per_task = 4;
  bool no_batch = false;
  app.add_option("--tasks", tasks, "tasks for the throughput phase (4 updates each)");
  app.add_option("--recover", recover_tasks, "tasks left running for the recovery phase (0: skip)");
  app.add_option("--update-tasks", update_tasks,
                 "running tasks for the update-path-alone phase (0: skip)");
  app.add_option("--updates-per-task", updates_per_task,
                 "updates the agent makes per running task in that phase");
  app.add_flag("--no-batch", no_batch,
               "the master does not announce STATUS_UPDATES (an older master): one update per "
               "call");
  app.add_option("--dir", dir_arg,
                 "work directory on the disk to measure (default: a new one in /var/tmp)");
  app.add_option("--log-level", level, "agent log level (info logs every update)");
  CLI11_PARSE(app, argc, argv);
  log::Level lv;
  if (!log::parse_level(level, &lv)) {
    std::fprintf(stderr, "unknown log level %s\n", level.c_str());
    return 2;
  }
  log::set_level(lv);

  fs::path dir = dir_arg;
  if (dir.empty()) {
    std::string tmpl = "/var/tmp/corral-agent-updates.XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      return 1;
    }
    dir = tmpl;
  }
  fs::create_directories(dir / "policy");

  AckingMaster master(!no_batch);
  agent::AgentConfig config;
  config.master = master.address();
  config.socket = (dir / "agent.sock").string();
  config.listen = "";
  config.work_dir = dir / "work";
  config.policy_dir = dir / "policy";
  config.cgroup_backend = "none";
  config.update_retry_min = std::chrono::seconds(30);

  auto start_agent = [&](RunningAgent& ra) -> bool {
    agent::AgentDeps deps;
    deps.native = std::make_unique<agent::InstantContainerizer>();
    auto a = agent::Agent::start(ra.io, config, std::move(deps));
    if (!a) {
      std::fprintf(stderr, "agent: %s\n", a.error().message().c_str());
      return false;
    }
    ra.agent = std::move(*a);
    ra.thread = std::thread([&ra] {
      auto guard = asio::make_work_guard(ra.io);
      ra.io.run();
    });
    return true;
  };

  std::printf("machine: %u CPUs, load %s", std::thread::hardware_concurrency(),
              read_file("/proc/loadavg", 256).value_or("?\n").c_str());
  std::printf("work dir: %s (SQLite WAL, synchronous=FULL); master %s\n", dir.c_str(),
              no_batch ? "without STATUS_UPDATES (one update per call)"
                       : "announcing STATUS_UPDATES (batched call)");

  auto ra = std::make_unique<RunningAgent>();
  if (!start_agent(*ra)) return 1;
  if (!master.wait([&] { return master.registrations >= 1; }, std::chrono::seconds(30))) {
    std::fprintf(stderr, "the agent did not register\n");
    return 1;
  }

  // ---- phase 1: throughput ----
  const uint64_t expected = 4ull * static_cast<uint64_t>(tasks);
  double cpu0 = cpu_seconds();
  auto t0 = Clock::now();
  master.run_tasks(0, tasks, true);
  if (!master.wait([&] { return master.updates >= expected; }, std::chrono::seconds(600))) {
    std::fprintf(stderr, "only %llu of %llu updates arrived\n",
                 static_cast<unsigned long long>(master.updates),
                 static_cast<unsigned long long>(expected));
    return 1;
  }
  double at_master = seconds_since(t0);
  // Every update acknowledged at the agent and every finished task's record removed (durable).
  for (;;) {
    double acked = metric(config.socket, "corral_agent_status_updates_acknowledged_total");
    double live = metric(config.socket, "corral_agent_tasks_running");
    if (acked >= static_cast<double>(expected) && live == 0) break;
    if (seconds_since(t0) > 600) {
      std::fprintf(stderr, "acknowledgements stuck at %.0f\n", acked);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  double all_acked = seconds_since(t0);
  double cpu = cpu_seconds() - cpu0;
  double commits = metric(config.socket, "corral_agent_checkpoint_commits_total");
  double retries = metric(config.socket, "corral_agent_status_update_retries_total");
  double calls = metric(config.socket, "corral_agent_status_update_calls_total");
  std::printf(
      "throughput (mixed: launch + updates + teardown): tasks=%d updates=%llu "
      "all_at_master_s=%.3f all_acked_s=%.3f updates_per_s=%.0f checkpoint_commits=%.0f "
      "updates_per_commit=%.1f update_calls=%.0f resent=%.0f process_cpu_s=%.2f\n",
      tasks, static_cast<unsigned long long>(expected), at_master, all_acked,
      static_cast<double>(expected) / all_acked, commits,
      commits > 0 ? static_cast<double>(expected) / commits : 0.0, calls, retries, cpu);
  int next_task = tasks;

  // ---- phase 1b: the update path alone ----
  if (update_tasks > 0 && updates_per_task > 0) {
    uint64_t running_before, updates_before;
    {
      std::lock_guard lock(master.mu_);
      running_before = master.running;
    }
    master.run_tasks(next_task, update_tasks, false);
    if (!master.wait([&] { return master.running >= running_before + update_tasks; },
                     std::chrono::seconds(600))) {
      std::fprintf(stderr, "the update-phase tasks did not all run\n");
      return 1;
    }
    // Wait until every STARTING/RUNNING of the launch is acknowledged and durable.
    const double launch_acked = static_cast<double>(expected) + 2.0 * update_tasks;
    for (;;) {
      if (metric(config.socket, "corral_agent_status_updates_acknowledged_total") >= launch_acked)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    {
      std::lock_guard lock(master.mu_);
      updates_before = master.updates;
    }
    const double commits0 = metric(config.socket, "corral_agent_checkpoint_commits_total");
    const double calls0 = metric(config.socket, "corral_agent_status_update_calls_total");
    const uint64_t n_updates =
        static_cast<uint64_t>(update_tasks) * static_cast<uint64_t>(updates_per_task);
    double ucpu0 = cpu_seconds();
    auto u0 = Clock::now();
    auto& impl = agent::AgentInternalsAccess::impl(*ra->agent);
    asio::post(ra->io, [&impl, first = next_task, n = update_tasks, k = updates_per_task] {
      for (int round = 0; round < k; ++round) {
        for (int i = first; i < first + n; ++i) {
          auto* t = impl.find("bench", "t" + std::to_string(i));
          if (!t) continue;
          impl.update(*t, v1::TASK_RUNNING, v1::TaskStatus::SOURCE_EXECUTOR,
                      v1::TaskStatus::REASON_TASK_HEALTH_CHECK_STATUS_UPDATED, "", round % 2 == 0);
        }
      }
    });
    if (!master.wait([&] { return master.updates >= updates_before + n_updates; },
                     std::chrono::seconds(600))) {
      std::fprintf(stderr, "update phase: only %llu of %llu updates arrived\n",
                   static_cast<unsigned long long>(master.updates - updates_before),
                   static_cast<unsigned long long>(n_updates));
      return 1;
    }
    double u_at_master = seconds_since(u0);
    const double acked_all = launch_acked + static_cast<double>(n_updates);
    for (;;) {
      if (metric(config.socket, "corral_agent_status_updates_acknowledged_total") >= acked_all)
        break;
      if (seconds_since(u0) > 600) {
        std::fprintf(stderr, "update phase: acknowledgements stuck\n");
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    double u_acked = seconds_since(u0);
    double ucpu = cpu_seconds() - ucpu0;
    double ucommits = metric(config.socket, "corral_agent_checkpoint_commits_total") - commits0;
    double ucalls = metric(config.socket, "corral_agent_status_update_calls_total") - calls0;
    std::printf(
        "update path alone: running_tasks=%d updates=%llu all_at_master_s=%.3f all_acked_s=%.3f "
        "updates_per_s=%.0f checkpoint_commits=%.0f updates_per_commit=%.1f update_calls=%.0f "
        "process_cpu_s=%.2f\n",
        update_tasks, static_cast<unsigned long long>(n_updates), u_at_master, u_acked,
        static_cast<double>(n_updates) / u_acked, ucommits,
        ucommits > 0 ? static_cast<double>(n_updates) / ucommits : 0.0, ucalls, ucpu);
    // Kill them (not timed) so the recovery phase starts from the same state as before.
    auto k0 = Clock::now();
    master.kill_tasks(next_task, update_tasks);
    const double killed_acked = acked_all + 2.0 * update_tasks;  // KILLING, KILLED
    for (;;) {
      if (metric(config.socket, "corral_agent_tasks_running") == 0 &&
          metric(config.socket, "corral_agent_status_updates_acknowledged_total") >= killed_acked)
        break;
      if (seconds_since(k0) > 600) {
        std::fprintf(stderr, "update phase: the kills were not all acknowledged\n");
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the records' removal lands
    std::printf("update phase teardown (not timed above): %.2f s\n", seconds_since(k0));
    next_task += update_tasks;
  }

  // ---- phase 2: recovery ----
  if (recover_tasks > 0) {
    uint64_t running_before = master.running;
    master.run_tasks(next_task, recover_tasks, false);
    if (!master.wait([&] { return master.running >= running_before + recover_tasks; },
                     std::chrono::seconds(600))) {
      std::fprintf(stderr, "the recovery tasks did not all run\n");
      return 1;
    }
    // Let the RUNNING acknowledgements land in the checkpoint.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ra->crash();
    ra.reset();

    auto l0 = Clock::now();
    auto store = agent::CheckpointStore::open((config.work_dir / "agent.db").string());
    if (!store) return 1;
    auto contents = store->load();
    if (!contents) return 1;
    double load_s = seconds_since(l0);
    auto p0 = Clock::now();
    size_t parsed = 0;
    for (const auto& [id, text] : contents->tasks)
      parsed += agent::TaskRecord::from_record(text) ? 1 : 0;
    double parse_s = seconds_since(p0);

    int regs = master.registrations;
    ra = std::make_unique<RunningAgent>();
    auto s0 = Clock::now();
    if (!start_agent(*ra)) return 1;
    double start_s = seconds_since(s0);
    if (!master.wait([&] { return master.registrations > regs; }, std::chrono::seconds(60))) {
      std::fprintf(stderr, "the restarted agent did not re-register\n");
      return 1;
    }
    double rereg_s = seconds_since(s0);
    std::printf(
        "recovery: tasks=%d records=%zu parsed=%zu checkpoint_load_ms=%.1f parse_ms=%.1f "
        "agent_start_ms=%.1f reregistered_ms=%.1f reregister_tasks=%d\n",
        recover_tasks, contents->tasks.size(), parsed, load_s * 1e3, parse_s * 1e3, start_s * 1e3,
        rereg_s * 1e3, master.reregistered_tasks);
  }
  ra->crash();
  if (dir_arg.empty()) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  return 0;
}
