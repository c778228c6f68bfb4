// The real agent (in-process, its containerizer replaced by one that runs nothing) against the
// real corral-master on loopback, with a simulated framework (master/src/sim.cpp) that launches
// tasks, acknowledges every update and kills each task once it runs: the master announces
// STATUS_UPDATES, the agent batches its updates, the framework sees every task's updates once
// and in order, every acknowledgement reaches the agent and the finished tasks' records leave
// its checkpoint.
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "agent_internal.hpp"
#include "checkpoint.hpp"
#include "corral/agent/agent.hpp"
#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/master/master.hpp"
#include "corral/master/sim.hpp"
#include "instant_containerizer.hpp"

namespace corral::agent {
struct AgentInternalsAccess {
  static AgentImpl& impl(Agent& a) { return *a.impl_; }
};
namespace {
namespace asio = boost::asio;
using namespace std::chrono_literals;
using v1::scheduler::Call;
using v1::scheduler::Event;

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 30s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

double metric(const std::string& socket, const std::string& name) {
  auto c = http::HttpClient::create("unix:" + socket);
  if (!c) return -1;
  auto r = c->get("/metrics");
  if (!r) return -1;
  auto pos = r->body().find("\n" + name + " ");
  if (pos == std::string::npos) return -1;
  return std::stod(r->body().substr(pos + name.size() + 2));
}

TEST(AgentMasterLink, BatchedUpdatesReachTheFrameworkInOrderAndAcknowledgedOnesAreRemoved) {
  constexpr int kTasks = 40;
  auto dir = TempDir::create("corral-agent-master-");
  ASSERT_TRUE(dir.ok());

  // The master.
  asio::io_context master_io;
  master::MasterConfig mc;
  mc.listen = "127.0.0.1:0";
  mc.work_dir = dir->path() / "master";
  mc.allocation_interval = 100ms;
  mc.allocation_batch_delay = 5ms;
  auto m = master::Master::start(master_io, mc);
  ASSERT_TRUE(m.ok()) << m.error().message();
  std::thread master_thread([&] { master_io.run(); });

  // The agent.
  std::filesystem::create_directories(dir->path() / "policy");
  AgentConfig ac;
  ac.master = (*m)->address();
  ac.socket = (dir->path() / "agent.sock").string();
  ac.listen = "";
  ac.work_dir = dir->path() / "agent";
  ac.policy_dir = dir->path() / "policy";
  ac.cgroup_backend = "none";
  asio::io_context agent_io;
  AgentDeps deps;
  deps.native = std::make_unique<InstantContainerizer>();
  auto a = Agent::start(agent_io, ac, std::move(deps));
  ASSERT_TRUE(a.ok()) << a.error().message();
  std::unique_ptr<Agent> agent = std::move(*a);
  std::thread agent_thread([&] {
    auto guard = asio::make_work_guard(agent_io);
    agent_io.run();
  });

  // The framework.
  asio::io_context sim_io;
  auto sim_guard = asio::make_work_guard(sim_io);
  std::thread sim_thread([&] { sim_io.run(); });
  master::sim::FrameworkOptions fo;
  fo.user = "nobody";
  {
    master::sim::Framework fw(sim_io, *http::parse_endpoint((*m)->address()), fo);
    auto launched = std::make_shared<bool>(false);
    fw.on_event([launched](master::sim::Framework& f, const Event& e) {
      if (e.type() == Event::OFFERS) {
        const auto& offer = e.offers().offers(0);
        if (*launched) {
          f.call(master::sim::Framework::decline(offer, 3600));
          return;
        }
        *launched = true;
        Call c = master::sim::Framework::launch(offer, "t0", 0.01, 1);
        auto* op = c.mutable_accept()->mutable_operations(0)->mutable_launch();
        op->mutable_task_infos(0)->mutable_command()->set_value("true");
        for (int i = 1; i < kTasks; ++i) {
          auto* t = op->add_task_infos();
          *t = op->task_infos(0);
          t->set_name("t" + std::to_string(i));
          t->mutable_task_id()->set_value("t" + std::to_string(i));
        }
        f.call(c);
      }
      if (e.type() == Event::UPDATE) {
        const auto& st = e.update().status();
        Call ack;
        ack.set_type(Call::ACKNOWLEDGE);
        *ack.mutable_acknowledge()->mutable_agent_id() = st.agent_id();
        *ack.mutable_acknowledge()->mutable_task_id() = st.task_id();
        ack.mutable_acknowledge()->set_uuid(st.uuid());
        f.call(ack);
        if (st.state() == v1::TASK_RUNNING) {
          Call kill;
          kill.set_type(Call::KILL);
          *kill.mutable_kill()->mutable_task_id() = st.task_id();
          *kill.mutable_kill()->mutable_agent_id() = st.agent_id();
          f.call(kill);
        }
      }
    });
    fw.subscribe();

    const double want = 4.0 * kTasks;  // STARTING, RUNNING, KILLING, KILLED
    EXPECT_TRUE(eventually([&] {
      return metric(ac.socket, "corral_agent_status_updates_acknowledged_total") == want &&
             metric(ac.socket, "corral_agent_tasks_running") == 0;
    })) << "acknowledged at the agent: "
        << metric(ac.socket, "corral_agent_status_updates_acknowledged_total") << " of " << want
        << "; framework: " << fw.last_error();

    // The framework saw each task's updates once, in order.
    std::map<std::string, std::vector<v1::TaskState>> seen;
    for (const auto& e : fw.events()) {
      if (e.type() == Event::UPDATE)
        seen[e.update().status().task_id().value()].push_back(e.update().status().state());
    }
    ASSERT_EQ(seen.size(), static_cast<size_t>(kTasks));
    const std::vector<v1::TaskState> order = {v1::TASK_STARTING, v1::TASK_RUNNING, v1::TASK_KILLING,
                                              v1::TASK_KILLED};
    for (const auto& [task, states] : seen) EXPECT_EQ(states, order) << task;

    // The master announced STATUS_UPDATES and the agent used it: fewer calls than updates.
    double calls = metric(ac.socket, "corral_agent_status_update_calls_total");
    EXPECT_GT(calls, 0);
    EXPECT_LT(calls, want) << "the agent sent one update per call to a master with STATUS_UPDATES";
    EXPECT_EQ(metric(ac.socket, "corral_agent_status_update_batch_fallbacks_total"), 0);
    EXPECT_EQ(metric(ac.socket, "corral_agent_status_update_retries_total"), 0);

    // The master has every task terminal.
    auto c = http::HttpClient::create((*m)->address());
    ASSERT_TRUE(c.ok());
    auto r = c->post("/api/v1", R"({"type":"GET_TASKS"})");
    ASSERT_TRUE(r.ok());
    auto j = nlohmann::json::parse(r->body(), nullptr, false);
    std::set<std::string> killed;
    for (const auto* list : {"tasks", "completed_tasks"}) {
      for (const auto& t : j["get_tasks"].value(list, nlohmann::json::array())) {
        if (t.value("state", "") == "TASK_KILLED") killed.insert(t["task_id"].value("value", ""));
      }
    }
    EXPECT_EQ(killed.size(), static_cast<size_t>(kTasks)) << r->body().substr(0, 2000);

    // The master's side of STATUS_UPDATES, on the agent's own stream: a list with one bad update
    // is refused whole (nothing applied), a good list is applied in the order listed.
    std::promise<std::pair<std::string, std::string>> ids;
    asio::post(agent_io, [&] {
      auto& impl = AgentInternalsAccess::impl(*agent);
      ids.set_value({impl.agent_id_, impl.stream_id_});
    });
    auto [agent_id, stream_id] = ids.get_future().get();
    auto status = [&](const std::string& task, v1::TaskState st, const std::string& uuid) {
      v1::internal::StatusUpdate u;
      u.mutable_framework_id()->set_value(fw.id());
      u.set_uuid(uuid);
      u.mutable_status()->mutable_task_id()->set_value(task);
      u.mutable_status()->set_state(st);
      u.mutable_status()->set_uuid(uuid);
      return u;
    };
    auto post_updates = [&](const std::vector<v1::internal::StatusUpdate>& us) {
      v1::internal::AgentCall call;
      call.set_type(v1::internal::AgentCall::STATUS_UPDATES);
      call.mutable_agent_id()->set_value(agent_id);
      for (const auto& u : us) *call.mutable_status_updates()->add_updates() = u;
      auto req = http::make_request(http::Verb::post, "/api/v1/agent", to_binary(call),
                                    "application/x-protobuf");
      req.set("Corral-Agent-Stream-Id", stream_id);
      return c->request(std::move(req));
    };
    auto bad = status("ghost", v1::TASK_RUNNING, "uuid-ghost-0000");
    bad.mutable_status()->clear_task_id();
    auto refused = post_updates({status("ghost", v1::TASK_STARTING, "uuid-ghost-0001"), bad});
    ASSERT_TRUE(refused.ok());
    EXPECT_EQ(refused->result(), http::Status::bad_request);
    EXPECT_NE(refused->body().find("updates[1]"), std::string::npos) << refused->body();
    auto ghost_state = [&]() -> std::string {
      auto g = c->post("/api/v1", R"({"type":"GET_TASKS"})");
      if (!g.ok()) return "?";
      auto gj = nlohmann::json::parse(g->body(), nullptr, false);
      for (const auto& t : gj["get_tasks"].value("tasks", nlohmann::json::array())) {
        if (t["task_id"].value("value", "") == "ghost") return t.value("state", "");
      }
      return "";
    };
    EXPECT_EQ(ghost_state(), "") << "an update of a refused STATUS_UPDATES call was applied";
    auto accepted = post_updates({status("ghost", v1::TASK_STARTING, "uuid-ghost-0002"),
                                  status("ghost", v1::TASK_RUNNING, "uuid-ghost-0003")});
    ASSERT_TRUE(accepted.ok());
    EXPECT_EQ(accepted->result(), http::Status::accepted) << accepted->body();
    EXPECT_EQ(ghost_state(), "TASK_RUNNING");  // the list's last update is the newest state
    fw.disconnect();
  }

  // Stop the agent (its last commit lands): no task record is left in its checkpoint.
  std::promise<void> stopped;
  asio::post(agent_io, [&] { agent->stop(false, [&] { stopped.set_value(); }); });
  stopped.get_future().wait_for(10s);
  agent_io.stop();
  agent_thread.join();
  agent.reset();
  auto store = CheckpointStore::open((ac.work_dir / "agent.db").string());
  ASSERT_TRUE(store.ok()) << store.error().message();
  auto contents = store->load();
  ASSERT_TRUE(contents.ok());
  EXPECT_TRUE(contents->tasks.empty()) << contents->tasks.size() << " records left";

  sim_guard.reset();
  sim_io.stop();
  sim_thread.join();
  asio::post(master_io, [&] { (*m)->stop([&] { master_io.stop(); }); });
  master_thread.join();
}

}  // namespace
}  // namespace corral::agent
