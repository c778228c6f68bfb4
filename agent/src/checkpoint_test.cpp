// The agent's checkpoint record: the binary format (version byte 0x01 + protobuf) round-trips
// everything recovery needs, JSON records written by older agents are still read (also from a
// real agent.db), and corrupt or unknown records are errors naming the problem, skipped by a
// starting agent that keeps the readable ones.
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <thread>

#include "agent_internal.hpp"
#include "checkpoint.hpp"
#include "corral/agent/agent.hpp"
#include "corral/common/http_client.hpp"
#include "instant_containerizer.hpp"

namespace corral::agent {
namespace {
namespace fs = std::filesystem;
namespace asio = boost::asio;

TaskRecord sample_record(const std::string& container_id, const std::string& task_id) {
  TaskRecord t;
  t.container_id = container_id;
  t.framework.mutable_id()->set_value("fw-1");
  t.framework.set_name("bench");
  t.framework.set_user("nobody");
  t.info.set_name(task_id);
  t.info.mutable_task_id()->set_value(task_id);
  t.info.mutable_command()->set_value("sleep 3600");
  auto* cpus = t.info.add_resources();
  cpus->set_name("cpus");
  cpus->set_type(v1::Value::SCALAR);
  cpus->mutable_scalar()->set_value(0.5);
  t.state = v1::TASK_RUNNING;
  t.containerizer = "native";
  t.checkpoint = {{"pid", 4242}, {"start_time", 123456789}, {"cgroup", "/corral/" + container_id}};
  t.sandbox = "/var/lib/corral/agent/sandboxes/fw-1/" + task_id + "/" + container_id;
  t.run_dir = "/var/lib/corral/agent/runs/" + container_id;
  t.user = "nobody";
  t.kill_requested = true;
  t.launched = true;
  t.created_at = 1764250000.25;
  for (auto state : {v1::TASK_STARTING, v1::TASK_RUNNING}) {
    internal::StatusUpdate u;
    u.mutable_framework_id()->set_value("fw-1");
    u.set_uuid(std::string("\x00\x01\xfe\xff", 4) + v1::TaskState_Name(state));
    u.mutable_status()->mutable_task_id()->set_value(task_id);
    u.mutable_status()->set_state(state);
    u.mutable_status()->set_message("message with \"quotes\" and \xc3\xa9");
    t.pending.push_back(u);
    t.statuses.push_back(u.status());
  }
  return t;
}

void expect_same(const TaskRecord& a, const TaskRecord& b) {
  EXPECT_EQ(a.container_id, b.container_id);
  EXPECT_EQ(a.framework.SerializeAsString(), b.framework.SerializeAsString());
  EXPECT_EQ(a.info.SerializeAsString(), b.info.SerializeAsString());
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.containerizer, b.containerizer);
  EXPECT_EQ(a.checkpoint, b.checkpoint);
  EXPECT_EQ(a.sandbox, b.sandbox);
  EXPECT_EQ(a.run_dir, b.run_dir);
  EXPECT_EQ(a.user, b.user);
  EXPECT_EQ(a.kill_requested, b.kill_requested);
  EXPECT_EQ(a.local, b.local);
  EXPECT_EQ(a.launched, b.launched);
  EXPECT_DOUBLE_EQ(a.created_at, b.created_at);
  ASSERT_EQ(a.pending.size(), b.pending.size());
  for (size_t i = 0; i < a.pending.size(); ++i)
    EXPECT_EQ(a.pending[i].SerializeAsString(), b.pending[i].SerializeAsString()) << i;
  ASSERT_EQ(a.statuses.size(), b.statuses.size());
  for (size_t i = 0; i < a.statuses.size(); ++i)
    EXPECT_EQ(a.statuses[i].SerializeAsString(), b.statuses[i].SerializeAsString()) << i;
}

TEST(CheckpointRecord, BinaryRecordRoundTripsEverythingRecoveryNeeds) {
  TaskRecord t = sample_record("c0ffee", "t1");
  std::string bytes = t.to_record();
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(bytes.front(), '\x01');  // the format version
  auto back = TaskRecord::from_record(bytes);
  ASSERT_TRUE(back.ok()) << back.error().message();
  expect_same(t, *back);
}

TEST(CheckpointRecord, JsonRecordsOfOlderAgentsAreStillRead) {
  TaskRecord t = sample_record("c0ffee", "t1");
  std::string json = t.to_json().dump();
  ASSERT_EQ(json.front(), '{');
  auto back = TaskRecord::from_record(json);
  ASSERT_TRUE(back.ok()) << back.error().message();
  expect_same(t, *back);
}

TEST(CheckpointRecord, CorruptOrUnknownRecordsAreErrorsNamingTheProblem) {
  std::string good = sample_record("c0ffee", "t1").to_record();

  auto empty = TaskRecord::from_record("");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message().find("empty"), std::string::npos);

  auto newer = TaskRecord::from_record("\x07" + good.substr(1));
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.error().message().find("unknown record format"), std::string::npos)
      << newer.error().message();

  auto truncated = TaskRecord::from_record(good.substr(0, good.size() / 2));
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.error().message().find("corrupt"), std::string::npos)
      << truncated.error().message();

  // Parses as protobuf but is not a task record (no container id, framework, task or state).
  auto hollow = TaskRecord::from_record(std::string("\x01\x3a\x04/tmp", 7));
  ASSERT_FALSE(hollow.ok());
  EXPECT_NE(hollow.error().message().find("lacks"), std::string::npos) << hollow.error().message();

  auto bad_json = TaskRecord::from_record("{\"container_id\": ");
  ASSERT_FALSE(bad_json.ok());
  EXPECT_NE(bad_json.error().message().find("JSON"), std::string::npos)
      << bad_json.error().message();
}

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/corral-agent-checkpoint.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ / "policy");
    fs::create_directories(dir_ / "work");
  }
  void TearDown() override {
    io_.stop();
    if (thread_.joinable()) thread_.join();
    agent_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
  asio::io_context io_;
  std::unique_ptr<Agent> agent_;
  std::thread thread_;
};

TEST_F(CheckpointStoreTest, StoredRecordsLoadBackByteForByte) {
  auto store = CheckpointStore::open((dir_ / "work" / "agent.db").string());
  ASSERT_TRUE(store.ok()) << store.error().message();
  CheckpointBatch b;
  b.tasks["c1"] = sample_record("c1", "t1").to_record();
  b.tasks["c2"] = sample_record("c2", "t2").to_json().dump();  // as an older agent wrote it
  ASSERT_TRUE(store->commit(b).ok());
  CheckpointBatch erase;
  erase.tasks["c2"] = std::nullopt;
  auto loaded = store->load();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->tasks.size(), 2u);
  for (const auto& [id, bytes] : loaded->tasks) {
    EXPECT_EQ(bytes, *b.tasks[id]) << id;
    auto rec = TaskRecord::from_record(bytes);
    ASSERT_TRUE(rec.ok()) << id << ": " << rec.error().message();
    EXPECT_EQ(rec->container_id, id);
  }
  ASSERT_TRUE(store->commit(erase).ok());
  loaded = store->load();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->tasks.size(), 1u);
  EXPECT_EQ(loaded->tasks[0].first, "c1");
}

// An agent.db as an older agent left it (JSON text records) plus one corrupt binary record: the
// agent starts, adopts both readable tasks, skips and counts the corrupt one.
TEST_F(CheckpointStoreTest, AgentRecoversOldJsonAndNewRecordsAndSkipsCorruptOnes) {
  {
    auto store = CheckpointStore::open((dir_ / "work" / "agent.db").string());
    ASSERT_TRUE(store.ok()) << store.error().message();
    CheckpointBatch b;
    b.meta["agent_id"] = "agent-under-test";
    TaskRecord old_one = sample_record("c1", "legacy-task");
    old_one.kill_requested = false;
    old_one.pending.clear();
    TaskRecord new_one = sample_record("c2", "binary-task");
    new_one.kill_requested = false;
    new_one.pending.clear();
    b.tasks["c1"] = old_one.to_json().dump();
    b.tasks["c2"] = new_one.to_record();
    b.tasks["c3"] = std::string("\x01\xff\xff\xff", 4);
    ASSERT_TRUE(store->commit(b).ok());
  }
  AgentConfig config;
  config.socket = (dir_ / "agent.sock").string();
  config.listen = "";
  config.work_dir = dir_ / "work";
  config.policy_dir = dir_ / "policy";
  config.cgroup_backend = "none";
  AgentDeps deps;
  deps.native = std::make_unique<InstantContainerizer>();
  auto a = Agent::start(io_, config, std::move(deps));
  ASSERT_TRUE(a.ok()) << a.error().message();
  agent_ = std::move(*a);
  EXPECT_EQ(agent_->agent_id(), "agent-under-test");
  thread_ = std::thread([this] {
    auto guard = asio::make_work_guard(io_);
    io_.run();
  });
  auto c = http::HttpClient::create("unix:" + config.socket);
  ASSERT_TRUE(c.ok());
  auto tasks = c->post("/api/v1", R"({"type":"GET_TASKS"})");
  ASSERT_TRUE(tasks.ok());
  EXPECT_NE(tasks->body().find("\"legacy-task\""), std::string::npos) << tasks->body();
  EXPECT_NE(tasks->body().find("\"binary-task\""), std::string::npos) << tasks->body();
  auto metrics = c->get("/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body().find("\ncorral_agent_checkpoint_corrupt_records_total 1"),
            std::string::npos)
      << metrics->body();
}

}  // namespace
}  // namespace corral::agent
