// Status updates on the agent link, in-process (the containerizer replaced by one that runs
// nothing), against a small in-test master: a master that announces STATUS_UPDATES gets the
// updates batched, in order per task, each acknowledged on its own and then gone from the
// agent's checkpoint; an older master (no announcement) gets one STATUS_UPDATE per call; a
// master that announces the call but refuses it makes the agent fall back; unacknowledged
// updates in a batch are sent again.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "checkpoint.hpp"
#include "corral/agent/agent.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/http_server.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/common/recordio.hpp"
#include "corral/v1/internal.pb.h"
#include "instant_containerizer.hpp"

namespace corral::agent {
namespace {
namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace internal = corral::v1::internal;
using namespace std::chrono_literals;

struct LinkMasterOptions {
  bool announce = true;      // status_updates_call in REGISTERED / REREGISTERED
  bool accept_batch = true;  // false: STATUS_UPDATES is answered 400, as an older master does
  bool kill_running = true;  // KILL_TASK when a task's TASK_RUNNING arrives
};

// The master's side of the agent link.
class LinkMaster {
 public:
  explicit LinkMaster(LinkMasterOptions o) : o_(o), work_(io_.get_executor()) {
    http::Router r;
    r.add(http::Verb::post, "/api/v1/agent", [this](std::shared_ptr<http::Exchange> ex) {
      internal::AgentCall call;
      if (!parse_binary(ex->request().body(), &call).ok()) {
        ex->respond(http::error_response(http::Status::bad_request, "bad call"));
        return;
      }
      std::lock_guard lock(mu_);
      if (call.type() == internal::AgentCall::REGISTER ||
          call.type() == internal::AgentCall::REREGISTER) {
        auto head = http::make_response(http::Status::ok, "", "application/x-protobuf");
        head.set("Corral-Agent-Stream-Id", "stream");
        stream_ = ex->start_stream(head);
        internal::AgentEvent ev;
        ev.set_type(internal::AgentEvent::REGISTERED);
        ev.mutable_registered()->mutable_agent_id()->set_value("agent-1");
        ev.mutable_registered()->set_heartbeat_interval_seconds(3600);
        if (o_.announce) ev.mutable_registered()->set_status_updates_call(true);
        stream_->write_chunk(recordio_encode(to_binary(ev)));
        return;
      }
      if (call.type() == internal::AgentCall::STATUS_UPDATES && !o_.accept_batch) {
        ++refused_batches_;
        ex->respond(http::error_response(http::Status::bad_request, "AgentCall.type is missing"));
        return;
      }
      std::vector<internal::StatusUpdate> got;
      if (call.type() == internal::AgentCall::STATUS_UPDATE) {
        ++single_calls_;
        got.push_back(call.status_update());
      } else if (call.type() == internal::AgentCall::STATUS_UPDATES) {
        batch_sizes_.push_back(call.status_updates().updates_size());
        for (const auto& u : call.status_updates().updates()) got.push_back(u);
      }
      std::string events;
      for (const auto& u : got) {
        updates_.push_back(u);
        if (ack_) {
          internal::AgentEvent ack;
          ack.set_type(internal::AgentEvent::ACKNOWLEDGE);
          *ack.mutable_acknowledge()->mutable_framework_id() = u.framework_id();
          *ack.mutable_acknowledge()->mutable_task_id() = u.status().task_id();
          ack.mutable_acknowledge()->set_uuid(u.uuid());
          events += recordio_encode(to_binary(ack));
        }
        if (o_.kill_running && u.status().state() == v1::TASK_RUNNING &&
            killed_.insert(u.status().task_id().value()).second) {
          internal::AgentEvent kill;
          kill.set_type(internal::AgentEvent::KILL_TASK);
          *kill.mutable_kill_task()->mutable_framework_id() = u.framework_id();
          *kill.mutable_kill_task()->mutable_task_id() = u.status().task_id();
          kill.mutable_kill_task()->mutable_kill_policy()->mutable_grace_period()->set_nanoseconds(
              0);
          events += recordio_encode(to_binary(kill));
        }
      }
      if (stream_ && !events.empty()) stream_->write_chunk(std::move(events));
      ex->respond(http::make_response(http::Status::accepted, ""));
    });
    server_ = std::make_unique<http::Server>(io_, std::move(r));
    EXPECT_TRUE(server_->listen("127.0.0.1:0").ok());
    thread_ = std::thread([this] { io_.run(); });
  }
  ~LinkMaster() {
    asio::post(io_, [this] {
      if (stream_) stream_->close();
      server_.reset();
    });
    work_.reset();
    io_.stop();
    thread_.join();
  }
  std::string address() const { return "http://127.0.0.1:" + std::to_string(server_->tcp_port()); }
  bool connected() {
    std::lock_guard lock(mu_);
    return stream_ != nullptr;
  }
  void run_tasks(int n) {
    asio::post(io_, [this, n] {
      std::string events;
      for (int i = 0; i < n; ++i) {
        internal::AgentEvent ev;
        ev.set_type(internal::AgentEvent::RUN_TASK);
        auto* f = ev.mutable_run_task()->mutable_framework();
        f->mutable_id()->set_value("fw");
        f->set_name("fw");
        auto* t = ev.mutable_run_task()->mutable_task();
        t->set_name("t" + std::to_string(i));
        t->mutable_task_id()->set_value("t" + std::to_string(i));
        t->mutable_agent_id()->set_value("agent-1");
        t->mutable_command()->set_value("true");
        events += recordio_encode(to_binary(ev));
      }
      stream_->write_chunk(std::move(events));
    });
  }
  void set_ack(bool on) {
    std::lock_guard lock(mu_);
    ack_ = on;
  }
  // Distinct updates (by uuid) of one task, in arrival order.
  std::vector<v1::TaskState> states_of(const std::string& task) {
    std::lock_guard lock(mu_);
    std::vector<v1::TaskState> out;
    std::set<std::string> seen;
    for (const auto& u : updates_) {
      if (u.status().task_id().value() != task || !seen.insert(u.uuid()).second) continue;
      out.push_back(u.status().state());
    }
    return out;
  }
  size_t distinct_updates() {
    std::lock_guard lock(mu_);
    std::set<std::string> seen;
    for (const auto& u : updates_) seen.insert(u.uuid());
    return seen.size();
  }
  size_t received() {
    std::lock_guard lock(mu_);
    return updates_.size();
  }
  int single_calls() {
    std::lock_guard lock(mu_);
    return single_calls_;
  }
  int refused_batches() {
    std::lock_guard lock(mu_);
    return refused_batches_;
  }
  std::vector<int> batch_sizes() {
    std::lock_guard lock(mu_);
    return batch_sizes_;
  }

 private:
  LinkMasterOptions o_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::unique_ptr<http::Server> server_;
  std::thread thread_;
  std::mutex mu_;
  std::shared_ptr<http::StreamWriter> stream_;
  std::vector<internal::StatusUpdate> updates_;
  std::set<std::string> killed_;
  std::vector<int> batch_sizes_;
  int single_calls_ = 0, refused_batches_ = 0;
  bool ack_ = true;
};

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 30s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

class UpdateBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/corral-agent-batch.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ / "policy");
    config_.socket = (dir_ / "agent.sock").string();
    config_.listen = "";
    config_.work_dir = dir_ / "work";
    config_.policy_dir = dir_ / "policy";
    config_.cgroup_backend = "none";
  }
  void TearDown() override {
    stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void start(const std::string& master) {
    config_.master = master;
    AgentDeps deps;
    deps.native = std::make_unique<InstantContainerizer>();
    auto a = Agent::start(io_, config_, std::move(deps));
    ASSERT_TRUE(a.ok()) << a.error().message();
    agent_ = std::move(*a);
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(io_);
      io_.run();
    });
  }
  void stop() {
    if (!agent_) return;
    std::promise<void> stopped;
    asio::post(io_, [&] { agent_->stop(false, [&] { stopped.set_value(); }); });
    stopped.get_future().wait_for(10s);
    io_.stop();
    if (thread_.joinable()) thread_.join();
    agent_.reset();
  }
  double metric(const std::string& name) {
    auto c = http::HttpClient::create("unix:" + config_.socket);
    if (!c) return -1;
    auto r = c->get("/metrics");
    if (!r) return -1;
    auto pos = r->body().find("\n" + name + " ");
    if (pos == std::string::npos) return -1;
    return std::stod(r->body().substr(pos + name.size() + 2));
  }
  // Every update acknowledged and every task's record gone from the checkpoint.
  void expect_all_acknowledged_and_removed(size_t updates) {
    EXPECT_TRUE(eventually([&] {
      return metric("corral_agent_status_updates_acknowledged_total") ==
                 static_cast<double>(updates) &&
             metric("corral_agent_tasks_running") == 0;
    })) << "acknowledged: "
        << metric("corral_agent_status_updates_acknowledged_total");
    stop();  // the last commit lands
    auto store = CheckpointStore::open((config_.work_dir / "agent.db").string());
    ASSERT_TRUE(store.ok()) << store.error().message();
    auto contents = store->load();
    ASSERT_TRUE(contents.ok());
    EXPECT_TRUE(contents->tasks.empty())
        << contents->tasks.size() << " task records left in the checkpoint";
  }
  void expect_order(LinkMaster& m, int tasks) {
    const std::vector<v1::TaskState> want = {v1::TASK_STARTING, v1::TASK_RUNNING, v1::TASK_KILLING,
                                             v1::TASK_KILLED};
    for (int i = 0; i < tasks; ++i)
      EXPECT_EQ(m.states_of("t" + std::to_string(i)), want) << "task t" << i;
  }

  fs::path dir_;
  AgentConfig config_;
  asio::io_context io_;
  std::unique_ptr<Agent> agent_;
  std::thread thread_;
};

constexpr int kTasks = 200;

TEST_F(UpdateBatchTest, MasterAnnouncingTheCallGetsBatchesInOrderEachAcknowledged) {
  LinkMaster m({});
  start(m.address());
  ASSERT_TRUE(eventually([&] { return m.connected(); }));
  m.run_tasks(kTasks);
  ASSERT_TRUE(eventually([&] { return m.distinct_updates() == 4u * kTasks; }))
      << m.distinct_updates();
  expect_order(m, kTasks);
  EXPECT_EQ(m.single_calls(), 0) << "a master that announced STATUS_UPDATES got STATUS_UPDATE";
  auto sizes = m.batch_sizes();
  ASSERT_FALSE(sizes.empty());
  EXPECT_GT(*std::max_element(sizes.begin(), sizes.end()), 1) << "no call carried two updates";
  // Far fewer calls than updates (200 tasks start in one turn of the agent's loop).
  EXPECT_LT(sizes.size(), static_cast<size_t>(kTasks)) << sizes.size() << " calls";
  EXPECT_EQ(metric("corral_agent_status_update_calls_total"), static_cast<double>(sizes.size()));
  expect_all_acknowledged_and_removed(4u * kTasks);
}

TEST_F(UpdateBatchTest, OlderMasterWithoutTheCallGetsOneUpdatePerCall) {
  LinkMaster m({.announce = false, .accept_batch = false});
  start(m.address());
  ASSERT_TRUE(eventually([&] { return m.connected(); }));
  m.run_tasks(50);
  ASSERT_TRUE(eventually([&] { return m.distinct_updates() == 4u * 50; })) << m.distinct_updates();
  expect_order(m, 50);
  EXPECT_TRUE(m.batch_sizes().empty());
  EXPECT_EQ(m.refused_batches(), 0) << "the agent sent STATUS_UPDATES to a master without it";
  EXPECT_GE(m.single_calls(), 4 * 50);
  expect_all_acknowledged_and_removed(4u * 50);
}

TEST_F(UpdateBatchTest, MasterRefusingTheBatchedCallMakesTheAgentFallBack) {
  LinkMaster m({.announce = true, .accept_batch = false});
  start(m.address());
  ASSERT_TRUE(eventually([&] { return m.connected(); }));
  m.run_tasks(50);
  ASSERT_TRUE(eventually([&] { return m.distinct_updates() == 4u * 50; })) << m.distinct_updates();
  expect_order(m, 50);
  EXPECT_GE(m.refused_batches(), 1);
  EXPECT_EQ(metric("corral_agent_status_update_batch_fallbacks_total"), 1);
  expect_all_acknowledged_and_removed(4u * 50);
}

TEST_F(UpdateBatchTest, UnacknowledgedUpdatesInABatchAreSentAgain) {
  config_.update_retry_min = 200ms;
  config_.update_retry_max = 400ms;
  LinkMaster m({.kill_running = false});
  m.set_ack(false);
  start(m.address());
  ASSERT_TRUE(eventually([&] { return m.connected(); }));
  m.run_tasks(20);
  // Only each task's first update (STARTING) goes out, again and again, until acknowledged.
  ASSERT_TRUE(eventually([&] { return m.received() >= 3u * 20; })) << m.received();
  EXPECT_EQ(m.distinct_updates(), 20u);
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(m.states_of("t" + std::to_string(i)), std::vector<v1::TaskState>{v1::TASK_STARTING});
  EXPECT_GT(metric("corral_agent_status_update_retries_total"), 0);
  m.set_ack(true);
  ASSERT_TRUE(eventually([&] { return m.distinct_updates() == 2u * 20; })) << m.distinct_updates();
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(m.states_of("t" + std::to_string(i)),
              (std::vector<v1::TaskState>{v1::TASK_STARTING, v1::TASK_RUNNING}));
  EXPECT_TRUE(eventually(
      [&] { return metric("corral_agent_status_updates_acknowledged_total") == 2.0 * 20; }));
}

}  // namespace
}  // namespace corral::agent
