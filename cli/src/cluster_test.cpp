// corral agents / frameworks / tasks / quota / top against a real master with a simulated
// agent and framework.
#include "corral/cli/cluster.hpp"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/master/master.hpp"
#include "corral/master/sim.hpp"

namespace corral::cli {
namespace {

using namespace std::chrono_literals;

template <typename Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 1000 && !pred(); ++i) std::this_thread::sleep_for(10ms);
  return pred();
}

TEST(ClusterCli, ListsAgentsFrameworksTasksQuotaAndTop) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  boost::asio::io_context master_io;
  master::MasterConfig cfg;
  cfg.listen = "127.0.0.1:0";
  cfg.work_dir = dir->path() / "master";
  cfg.allocation_batch_delay = 5ms;
  auto m = master::Master::start(master_io, cfg);
  ASSERT_TRUE(m.ok()) << m.error().message();
  std::thread master_thread([&] { master_io.run(); });

  boost::asio::io_context sim_io;
  auto guard = boost::asio::make_work_guard(sim_io);
  std::thread sim_thread([&] { sim_io.run(); });
  auto ep = *http::parse_endpoint((*m)->address());
  {
    master::sim::AgentOptions ao;
    ao.hostname = "node-7";
    ao.cpus = 8;
    ao.mem = 16384;
    master::sim::Agent agent(sim_io, ep, ao);
    agent.connect();
    master::sim::FrameworkOptions fo;
    fo.name = "billing";
    fo.roles = {"eng/web"};
    master::sim::Framework fw(sim_io, ep, fo);
    auto launched = std::make_shared<std::atomic<bool>>(false);
    fw.on_event([launched](master::sim::Framework& f, const v1::scheduler::Event& e) {
      if (e.type() != v1::scheduler::Event::OFFERS) return;
      if (launched->exchange(true)) {
        f.call(master::sim::Framework::decline(e.offers().offers(0), 3600));
      } else {
        f.call(master::sim::Framework::launch(e.offers().offers(0), "invoice-1", 2, 1024));
      }
    });
    fw.subscribe();
    ASSERT_TRUE(eventually([&] { return agent.tasks().size() == 1 && !fw.events().empty(); }));
    ASSERT_TRUE(eventually([&] {
      for (const auto& e : fw.events()) {
        if (e.type() == v1::scheduler::Event::UPDATE) return true;
      }
      return false;
    }));

    auto client = *http::HttpClient::create((*m)->address());
    auto agents = render_agents(client, false);
    ASSERT_TRUE(agents.ok()) << agents.error().message();
    EXPECT_NE(agents->find("HOSTNAME"), std::string::npos) << *agents;
    EXPECT_NE(agents->find("node-7"), std::string::npos) << *agents;
    EXPECT_NE(agents->find("active"), std::string::npos) << *agents;

    auto fws = render_frameworks(client, false);
    ASSERT_TRUE(fws.ok());
    EXPECT_NE(fws->find("billing"), std::string::npos) << *fws;
    EXPECT_NE(fws->find("eng/web"), std::string::npos) << *fws;
    EXPECT_NE(fws->find("connected"), std::string::npos) << *fws;

    auto tasks = render_tasks(client, false, false);
    ASSERT_TRUE(tasks.ok());
    EXPECT_NE(tasks->find("invoice-1"), std::string::npos) << *tasks;
    EXPECT_NE(tasks->find("TASK_RUNNING"), std::string::npos) << *tasks;
    auto tasks_json = render_tasks(client, true, false);
    ASSERT_TRUE(tasks_json.ok());
    EXPECT_EQ(nlohmann::json::parse(*tasks_json).size(), 1u);

    ASSERT_TRUE(set_quota(client, "eng", {{"cpus", 2}}, {{"cpus", 4}}).ok());
    auto quota = render_quota(client, false);
    ASSERT_TRUE(quota.ok());
    EXPECT_NE(quota->find("eng"), std::string::npos) << *quota;
    EXPECT_NE(quota->find("cpus=2"), std::string::npos) << *quota;
    EXPECT_NE(quota->find("cpus=4"), std::string::npos) << *quota;
    auto bad = set_quota(client, "eng", {{"cpus", 8}}, {{"cpus", 4}});
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find("above its limit"), std::string::npos)
        << bad.error().message();

    // Once the declined remainder is back, only the task's 2 cpus are in use.
    Result<std::string> top = Error(0, "");
    EXPECT_TRUE(eventually([&] {
      top = render_top(client);
      return top.ok() && top->find("cpus 2/8 (25%)") != std::string::npos;
    })) << (top.ok() ? *top : top.error().message());
    ASSERT_TRUE(top.ok());
    EXPECT_NE(top->find("1 running"), std::string::npos) << *top;
    EXPECT_NE(top->find("eng/web"), std::string::npos) << *top;
  }
  guard.reset();
  sim_io.stop();
  sim_thread.join();
  boost::asio::post(master_io, [&] { (*m)->stop([&] { master_io.stop(); }); });
  master_thread.join();

  // A master that is not there: a clear error, not a crash.
  auto nowhere = *http::HttpClient::create("127.0.0.1:1");
  auto r = render_agents(nowhere, false);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("cannot reach the master"), std::string::npos);
}

}  // namespace
}  // namespace corral::cli
