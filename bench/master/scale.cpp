// corral-master-scale: N simulated agents and M simulated frameworks in one process, speaking
// the real agent link and the real scheduler API to a real corral-master, for load and failure
// tests. See docs/benchmarks.md ("corral-master end to end") and docs/master.md.
//
//   corral-master-scale --master http://127.0.0.1:5050 --agents 5000 --frameworks 10
//       --tasks 100000
//   corral-master-scale --spawn build/release/master/corral-master --agents 5000 ...
//   corral-master-scale --master ... --agents 1 --frameworks 0 --hold   (agents only, until
//       SIGTERM; what tests/compat uses)
//
// It prints one line per phase and a summary: agent registration rate, placements per second
// (ACCEPTed tasks that reached TASK_RUNNING at the framework), GET_STATE and /state latency at
// that size, and the master's RSS when it spawned the master (or was given --master-pid).
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/master/sim.hpp"

using namespace corral;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

extern char** environ;

namespace {

std::atomic<bool> g_stop{false};

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

template <typename Pred>
bool wait_until(Pred pred, std::chrono::seconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline && !g_stop) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"corral-master-scale: simulated agents and frameworks against a real corral-master"};
  std::string master = "http://127.0.0.1:5050";
  std::string spawn;
  int master_pid = 0;
  int agents = 100, frameworks = 1, tasks = 1000;
  double agent_cpus = 32, agent_mem = 65536, task_cpus = 0.1, task_mem = 32;
  int state_samples = 5;
  bool hold = false;
  int timeout_s = 600;
  int linger_s = 0;
  app.add_option("--master", master, "master address (default http://127.0.0.1:5050)");
  app.add_option("--spawn", spawn,
                 "start this corral-master binary on a free loopback port with a fresh work dir");
  app.add_option("--master-pid", master_pid, "pid of the master, to report its RSS");
  app.add_option("--agents", agents, "simulated agents")->check(CLI::Range(0, 1000000));
  app.add_option("--frameworks", frameworks, "simulated frameworks")->check(CLI::Range(0, 100000));
  app.add_option("--tasks", tasks, "tasks to launch in all")->check(CLI::Range(0, 100000000));
  app.add_option("--agent-cpus", agent_cpus, "cpus per agent");
  app.add_option("--agent-mem", agent_mem, "mem (MB) per agent");
  app.add_option("--task-cpus", task_cpus, "cpus per task");
  app.add_option("--task-mem", task_mem, "mem (MB) per task");
  app.add_option("--state-samples", state_samples, "GET_STATE requests to time");
  app.add_option("--timeout", timeout_s, "give up after this many seconds per phase");
  app.add_flag("--hold", hold, "after registering, keep the agents connected until SIGTERM");
  app.add_option("--linger", linger_s,
                 "at the end, print the master's address and keep the master, agents and "
                 "frameworks running this many seconds (or until SIGTERM), to time other "
                 "clients (curl) against the same master")
      ->check(CLI::Range(0, 86400));
  CLI11_PARSE(app, argc, argv);

  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, [](int) { g_stop = true; });
  signal(SIGTERM, [](int) { g_stop = true; });
  // Each agent holds two connections; raise the fd limit as far as allowed.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }

  std::unique_ptr<TempDir> work;
  pid_t child = 0;
  if (!spawn.empty()) {
    auto d = TempDir::create("corral-scale-");
    if (!d) {
      std::fprintf(stderr, "corral-master-scale: %s\n", d.error().message().c_str());
      return 1;
    }
    work = std::make_unique<TempDir>(std::move(*d));
    // A free port: bind to 0, read it, close (the master binds it right after).
    int port = 0;
    {
      boost::asio::io_context tmp;
      boost::asio::ip::tcp::acceptor acc(tmp, {boost::asio::ip::make_address("127.0.0.1"), 0});
      port = acc.local_endpoint().port();
    }
    std::string listen = "127.0.0.1:" + std::to_string(port);
    std::string wd = (work->path() / "master").string();
    std::vector<std::string> args = {spawn, "--listen",    listen,   "--work-dir",
                                     wd,    "--log-level", "warning"};
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    if (posix_spawn(&child, spawn.c_str(), nullptr, nullptr, cargs.data(), environ) != 0) {
      std::perror("corral-master-scale: cannot start the master");
      return 1;
    }
    master = "http://" + listen;
    master_pid = child;
    auto c = http::HttpClient::create(master);
    if (!wait_until(
            [&] {
              auto r = c->get("/health");
              return r.ok() && r->result() == http::Status::ok;
            },
            30s)) {
      std::fprintf(stderr, "corral-master-scale: the spawned master did not come up\n");
      kill(child, SIGTERM);
      return 1;
    }
  }
  auto endpoint = http::parse_endpoint(master);
  if (!endpoint) {
    std::fprintf(stderr, "corral-master-scale: --master: %s\n", endpoint.error().message().c_str());
    return 64;
  }

  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread loop([&] { io.run(); });

  // Phase 1: agents register.
  std::vector<std::unique_ptr<master::sim::Agent>> sim_agents;
  auto t0 = Clock::now();
  // In waves of 250, as agents of a real cluster do not all start in the same millisecond (and
  // each registration is a durable registry write on the master).
  for (int i = 0; i < agents; ++i) {
    master::sim::AgentOptions o;
    o.hostname = "sim-" + std::to_string(i);
    o.cpus = agent_cpus;
    o.mem = agent_mem;
    o.record_events = false;
    sim_agents.push_back(std::make_unique<master::sim::Agent>(io, *endpoint, o));
    sim_agents.back()->connect();
    if ((i + 1) % 250 == 0) {
      wait_until(
          [&] {
            for (size_t k = sim_agents.size() - 250; k < sim_agents.size(); ++k) {
              if (sim_agents[k]->id().empty()) return false;
            }
            return true;
          },
          std::chrono::seconds(timeout_s));
    }
  }
  bool all_registered = wait_until(
      [&] {
        for (auto& a : sim_agents) {
          if (a->id().empty()) return false;
        }
        return true;
      },
      std::chrono::seconds(timeout_s));
  double reg_s = secs(Clock::now() - t0);
  size_t registered = 0;
  for (auto& a : sim_agents) registered += a->id().empty() ? 0 : 1;
  std::printf("agents: %zu/%d registered in %.2f s (%.0f/s)%s\n", registered, agents, reg_s,
              reg_s > 0 ? registered / reg_s : 0.0, all_registered ? "" : "  [TIMED OUT]");
  std::fflush(stdout);
  if (hold) {
    for (auto& a : sim_agents) std::printf("agent %s\n", a->id().c_str());
    std::fflush(stdout);
    while (!g_stop) std::this_thread::sleep_for(100ms);
  }

  // Phase 2: frameworks launch `tasks` tasks in all.
  std::atomic<int> to_launch{tasks};
  std::atomic<int> running{0};
  std::atomic<int> errors{0};
  std::vector<std::unique_ptr<master::sim::Framework>> sim_fws;
  Clock::time_point launch_start;
  if (!hold && frameworks > 0 && tasks > 0) {
    launch_start = Clock::now();
    for (int f = 0; f < frameworks; ++f) {
      master::sim::FrameworkOptions o;
      o.name = "scale-" + std::to_string(f);
      o.protobuf = true;
      o.record_events = false;
      auto fw = std::make_unique<master::sim::Framework>(io, *endpoint, o);
      int fnum = f;
      auto seq = std::make_shared<int>(0);
      fw->on_event([&, fnum, seq](master::sim::Framework& self, const v1::scheduler::Event& e) {
        using E = v1::scheduler::Event;
        if (e.type() == E::OFFERS) {
          for (const auto& offer : e.offers().offers()) {
            double cpus = 0, mem = 0;
            for (const auto& r : offer.resources()) {
              if (r.name() == "cpus") cpus += r.scalar().value();
              if (r.name() == "mem") mem += r.scalar().value();
            }
            int fit = static_cast<int>(std::min(cpus / task_cpus + 1e-9, mem / task_mem + 1e-9));
            int n = 0;
            while (n < fit) {
              int left = to_launch.load();
              if (left <= 0 || to_launch.compare_exchange_weak(left, left - 1)) {
                if (left <= 0) break;
                ++n;
              }
            }
            if (n == 0) {
              self.call(master::sim::Framework::decline(offer, 3600));
              continue;
            }
            v1::scheduler::Call c = master::sim::Framework::launch(
                offer, "f" + std::to_string(fnum) + "-t" + std::to_string((*seq)++), task_cpus,
                task_mem);
            auto* launch = c.mutable_accept()->mutable_operations(0)->mutable_launch();
            for (int i = 1; i < n; ++i) {
              auto* t = launch->add_task_infos();
              *t = launch->task_infos(0);
              std::string id = "f" + std::to_string(fnum) + "-t" + std::to_string((*seq)++);
              t->mutable_task_id()->set_value(id);
              t->set_name(id);
            }
            c.mutable_accept()->mutable_filters()->set_refuse_seconds(3600);
            self.call(std::move(c));
          }
        } else if (e.type() == E::UPDATE) {
          const auto& s = e.update().status();
          if (s.state() == v1::TASK_RUNNING) {
            running++;
          } else {
            errors++;
          }
          if (!s.uuid().empty()) {
            v1::scheduler::Call ack;
            ack.set_type(v1::scheduler::Call::ACKNOWLEDGE);
            *ack.mutable_acknowledge()->mutable_agent_id() = s.agent_id();
            *ack.mutable_acknowledge()->mutable_task_id() = s.task_id();
            ack.mutable_acknowledge()->set_uuid(s.uuid());
            self.call(std::move(ack));
          }
        }
      });
      fw->subscribe();
      sim_fws.push_back(std::move(fw));
    }
    bool done = wait_until([&] { return running.load() + errors.load() >= tasks; },
                           std::chrono::seconds(timeout_s));
    double launch_s = secs(Clock::now() - launch_start);
    std::printf("tasks: %d running, %d failed of %d in %.2f s: %.0f placements/s%s\n",
                running.load(), errors.load(), tasks, launch_s,
                launch_s > 0 ? running.load() / launch_s : 0.0, done ? "" : "  [TIMED OUT]");
    std::fflush(stdout);
  }

  // Phase 3: GET_STATE and /state at this size.
  if (!hold && state_samples > 0) {
    http::ClientOptions co;
    co.request_timeout = 120s;
    co.body_limit = 2ull << 30;
    auto c = http::HttpClient::create(master, co);
    std::vector<double> op_ms, state_ms, write_ms;
    size_t op_bytes = 0, state_bytes = 0;
    for (int i = 0; i < state_samples; ++i) {
      auto s = Clock::now();
      auto r = c->post("/api/v1", R"({"type":"GET_STATE"})");
      op_ms.push_back(secs(Clock::now() - s) * 1000);
      if (r.ok()) op_bytes = r->body().size();
      // The master's own time to write that answer (the rest is sending and reading it).
      auto m = c->get("/metrics/snapshot");
      if (m.ok()) {
        auto j = nlohmann::json::parse(m->body(), nullptr, false);
        if (j.is_object() && j.contains("master/get_state_write_ms")) {
          write_ms.push_back(j["master/get_state_write_ms"].get<double>());
        }
      }
      s = Clock::now();
      r = c->get("/state");
      state_ms.push_back(secs(Clock::now() - s) * 1000);
      if (r.ok()) state_bytes = r->body().size();
    }
    // The first request also fills the master's per-task JSON cache (built on the first read
    // after a change): reported on its own.
    const double op_first = op_ms.front(), state_first = state_ms.front();
    std::sort(op_ms.begin(), op_ms.end());
    std::sort(state_ms.begin(), state_ms.end());
    std::printf("GET_STATE: median %.0f ms, max %.0f ms, first %.0f ms (%.1f MB JSON)\n",
                op_ms[op_ms.size() / 2], op_ms.back(), op_first, op_bytes / 1e6);
    if (!write_ms.empty()) {
      std::printf("GET_STATE written by the master in: first %.0f ms, last %.0f ms\n",
                  write_ms.front(), write_ms.back());
    }
    std::printf("/state:    median %.0f ms, max %.0f ms, first %.0f ms (%.1f MB JSON)\n",
                state_ms[state_ms.size() / 2], state_ms.back(), state_first, state_bytes / 1e6);
  }
  if (master_pid > 0) {
    std::printf("master RSS: %.0f MiB\n", rss_kib(master_pid) / 1024.0);
  }
  if (linger_s > 0 && !hold) {
    std::printf("lingering %d s: master at %s\n", linger_s, master.c_str());
    std::fflush(stdout);
    const auto until = Clock::now() + std::chrono::seconds(linger_s);
    while (Clock::now() < until && !g_stop) std::this_thread::sleep_for(50ms);
  }
  std::fflush(stdout);

  // Stop the loop first: the simulated objects are then destroyed with nothing running.
  guard.reset();
  io.stop();
  loop.join();
  sim_fws.clear();
  sim_agents.clear();
  if (child > 0) {
    kill(child, SIGTERM);
    int status = 0;
    waitpid(child, &status, 0);
  }
  return 0;
}
