// corral-agent delegating tasks to a real dockerd (the ctest fixture docker.daemon starts it on
// /run/corral-test/docker.sock and imports corral-test/busybox:latest).
#include <fstream>

#include "agent_test_support.hpp"

namespace corral::agent {
namespace {
using agent_testing::AgentProcess;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

class AgentDockerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists("/run/corral-test/docker.sock"))
        << "no test dockerd: run through ctest (fixture docker.daemon) or "
           "tests/docker/dockerd-fixture start";
    auto d = TempDir::create("agent-docker-");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(*d));
    ::chmod(dir_->path().c_str(), 0755);
    fs::create_directories(dir_->path() / "policy");
    std::ofstream(dir_->path() / "policy" / "10-test.toml")
        << "[cgroups]\nrequire_v2 = false\n[docker]\nsocket = \"/run/corral-test/docker.sock\"\n";
  }
  std::unique_ptr<TempDir> dir_;
};

std::string docker_task(const std::string& id, const std::string& command) {
  return R"({"name":")" + id + R"(","task_id":{"value":")" + id + R"("},"command":{"value":)" +
         nlohmann::json(command).dump() +
         R"(},"container":{"type":"DOCKER","docker":{"image":"corral-test/busybox:latest","network":"NONE"}}})";
}

TEST_F(AgentDockerTest, ADockerTaskRunsThroughDockerdAndTwentySurviveKill9OfTheAgent) {
  AgentProcess agent(dir_->path(), "");
  agent.start();
  ASSERT_NE(agent.log().find("Docker delegation available"), std::string::npos) << agent.log();
  auto r = agent.launch(docker_task("dexit", "echo hello from docker; exit 3"));
  ASSERT_EQ(r->result(), http::Status::accepted) << r->body();
  auto cid = nlohmann::json::parse(r->body())["container_id"].get<std::string>();
  auto t = agent.wait_state("dexit", {v1::TASK_FAILED, v1::TASK_FINISHED}, 120s);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->state(), v1::TASK_FAILED);
  EXPECT_NE(t->statuses().rbegin()->message().find("3"), std::string::npos)
      << t->statuses().rbegin()->message();
  auto out = read_file(dir_->path() / "work" / "sandboxes" / "local" / "dexit" / cid / "stdout");
  EXPECT_EQ(out.value_or(""), "hello from docker\n");

  // Twenty running Docker tasks survive kill -9 of the agent and are adopted by the next one.
  for (int i = 0; i < 20; ++i) {
    auto l = agent.launch(docker_task("dlong" + std::to_string(i), "sleep 600"));
    ASSERT_EQ(l->result(), http::Status::accepted) << l->body();
  }
  for (int i = 0; i < 20; ++i) {
    auto t = agent.wait_state("dlong" + std::to_string(i), {v1::TASK_RUNNING}, 180s);
    ASSERT_TRUE(t && t->state() == v1::TASK_RUNNING) << i;
  }
  agent.kill9();
  agent.start();
  for (int i = 0; i < 20; ++i) {
    auto again = agent.wait_state("dlong" + std::to_string(i), {v1::TASK_RUNNING}, 60s);
    ASSERT_TRUE(again.has_value()) << i;
    EXPECT_EQ(again->state(), v1::TASK_RUNNING) << i;
    ASSERT_GT(again->statuses_size(), 0);
  }
  auto one = agent.task("dlong0");
  auto lc = one->statuses().rbegin()->container_status().container_id().value();
  auto k = agent.post_json(
      "/api/v1", R"({"type":"KILL_CONTAINER","kill_container":{"container_id":{"value":")" + lc +
                     R"("},"signal":15}})");
  ASSERT_TRUE(k.ok());
  auto killed = agent.wait_state("dlong0", {v1::TASK_KILLED}, 120s);
  ASSERT_TRUE(killed.has_value());
  EXPECT_EQ(killed->state(), v1::TASK_KILLED);
  // The rest go with a drain at once.
  auto d = agent.post_json("/corral/v1/drain", R"({"deadline_seconds":0,"kill":true})");
  ASSERT_TRUE(d.ok());
  for (int i = 1; i < 20; ++i) {
    auto t = agent.wait_state("dlong" + std::to_string(i), {v1::TASK_KILLED}, 180s);
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->state(), v1::TASK_KILLED) << i;
  }
}

}  // namespace
}  // namespace corral::agent
