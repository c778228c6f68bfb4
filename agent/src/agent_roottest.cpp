// corral-agent end to end on the host: the real binary, the real launcher, real tasks, the agent
// API over its unix socket, and a small in-test master speaking the agent link. The host has no
// cgroup v2 controllers, so these run with [cgroups] require_v2 = false; the guest group `agent`
// (tests/vm/groups/agent.sh) covers cgroups and systemd, and the guest group `agent-lifecycle`
// runs the lifecycle tests below in the guest with cgroups required (CORRAL_AGENT_TEST_IN_GUEST).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent_test_support.hpp"
#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/http_server.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/common/recordio.hpp"
#include "corral/v1/agent.pb.h"
#include "corral/v1/internal.pb.h"

namespace corral::agent {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
namespace internal = corral::v1::internal;
using agent_testing::AgentProcess;
using agent_testing::FakeMaster;
using agent_testing::in_guest;
using agent_testing::patience;

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("agent-test-");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(*d));
    ::chmod(dir_->path().c_str(), 0755);
    fs::create_directories(dir_->path() / "policy");
    fs::create_directories(dir_->path() / "files");
    // In the guest the default (cgroup v2 required, systemd backend) is what is tested.
    std::ofstream(dir_->path() / "policy" / "10-test.toml")
        << (in_guest() ? "" : "[cgroups]\nrequire_v2 = false\n")
        << "[volumes]\nallowed_host_paths = [\"" << (dir_->path() / "files").string() << "\"]\n";
  }
  // Tasks outlive their agent by design (an agent restart must not kill them), so a test that
  // ends with a task still running would leave it behind for the next test, for ten minutes.
  // Kill every launcher that works under this test's directory: its task's init first.
  void TearDown() override {
    if (!dir_) return;
    const std::string mine = dir_->path().string() + "/";
    for (const auto& entry : fs::directory_iterator("/proc")) {
      const std::string name = entry.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream in(entry.path() / "cmdline", std::ios::binary);
      std::vector<std::string> args;
      for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
      if (args.size() < 2 || args[0].find("corral-launcher-init") == std::string::npos ||
          args[1] != "supervise") {
        continue;
      }
      bool ours = false;
      pid_t init = 0;
      for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i].rfind(mine, 0) == 0) ours = true;
        if (args[i] == "init-pid" && i + 1 < args.size()) init = std::atoi(args[i + 1].c_str());
      }
      if (!ours) continue;
      if (init > 0) ::kill(init, SIGKILL);
      ::kill(std::atoi(name.c_str()), SIGKILL);
    }
  }
  fs::path path() const { return dir_->path(); }
  std::unique_ptr<TempDir> dir_;
};

std::string simple_task(const std::string& id, const std::string& command,
                        const std::string& extra = "") {
  return R"({"name":")" + id + R"(","task_id":{"value":")" + id +
         R"("},"agent_id":{"value":"x"},"command":{"value":)" + nlohmann::json(command).dump() +
         "}" + extra + "}";
}

std::vector<v1::TaskState> states(const v1::Task& t) {
  std::vector<v1::TaskState> out;
  for (const auto& s : t.statuses()) out.push_back(s.state());
  return out;
}

TEST_F(AgentTest, ALocalTaskRunsToFinishedWithStatusesInOrderAndItsOutputIsReadable) {
  AgentProcess agent(path(), "");
  agent.start();
  auto r = agent.launch(simple_task("hello", "echo hello from the task; sleep 0.5"));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->result(), http::Status::accepted) << r->body();
  auto cid = nlohmann::json::parse(r->body())["container_id"].get<std::string>();
  auto t = agent.wait_state("hello", {v1::TASK_FINISHED});
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->state(), v1::TASK_FINISHED);
  EXPECT_EQ(states(*t),
            (std::vector<v1::TaskState>{v1::TASK_STARTING, v1::TASK_RUNNING, v1::TASK_FINISHED}));
  // The sandbox's stdout through READ_FILE.
  auto read = agent.call(R"({"type":"READ_FILE","read_file":{"path":"local/hello/)" + cid +
                         R"(/stdout","offset":0}})");
  EXPECT_EQ(read.read_file().data(), "hello from the task\n");
  // The log endpoint still serves a completed task's output.
  auto c = agent.client();
  ASSERT_TRUE(c.ok());
  auto log = c->get("/corral/v1/logs/" + cid + "/stdout");
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log->result(), http::Status::ok) << log->body();
  EXPECT_EQ(log->body(), "hello from the task\n");
  // The running warning says limits are not enforced on the host (no cgroup v2 controllers);
  // in the guest they are, and nothing says otherwise.
  if (in_guest()) {
    EXPECT_EQ(agent.log().find("NOT enforced"), std::string::npos) << agent.log();
  } else {
    EXPECT_NE(agent.log().find("NOT enforced"), std::string::npos);
  }
}

TEST_F(AgentTest, AFailingTaskReportsItsExitCode) {
  AgentProcess agent(path(), "");
  agent.start();
  // Tasks run as the policy's default user (nobody), never as the agent's root.
  ASSERT_EQ(
      agent.launch(simple_task("fails", "[ \"$(id -u)\" = 65534 ] && exit 3; exit 9"))->result(),
      http::Status::accepted);
  auto t = agent.wait_state("fails", {v1::TASK_FAILED});
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->state(), v1::TASK_FAILED);
  EXPECT_NE(t->statuses().rbegin()->message().find("exited with status 3"), std::string::npos);
}

TEST_F(AgentTest, KillUsesTheGracePeriodThenSigkill) {
  AgentProcess agent(path(), "");
  agent.start();
  // Each shell says when its trap is installed (a file in its sandbox), so the kill never
  // comes before the trap, however slow the machine.
  std::map<std::string, std::string> sandbox;
  struct Launch {
    const char* id;
    const char* command;
    const char* extra;
  };
  const Launch launches[] = {
      {"polite", "trap 'exit 0' TERM; touch /mnt/sandbox/ready; while :; do sleep 0.1; done", ""},
      {"stubborn", "trap '' TERM; touch /mnt/sandbox/ready; while :; do sleep 0.1; done",
       R"(,"kill_policy":{"grace_period":{"nanoseconds":1000000000}})"}};
  for (const auto& l : launches) {
    auto r = agent.launch(simple_task(l.id, l.command, l.extra));
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->result(), http::Status::accepted) << r->body();
    sandbox[l.id] = nlohmann::json::parse(r->body())["sandbox"].get<std::string>();
  }

  ASSERT_TRUE(agent.wait_state("polite", {v1::TASK_RUNNING}).has_value());
  auto stubborn = agent.wait_state("stubborn", {v1::TASK_RUNNING});
  ASSERT_TRUE(stubborn.has_value());
  for (const auto& [id, dir] : sandbox) {
    auto deadline = std::chrono::steady_clock::now() + patience(30s);
    while (!fs::exists(dir + "/ready") && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(fs::exists(dir + "/ready")) << id << " never installed its trap";
  }
  for (const auto* id : {"polite", "stubborn"}) {
    auto t = agent.task(id);
    ASSERT_TRUE(t.has_value());
    auto cid = t->statuses().rbegin()->container_status().container_id().value();
    if (in_guest()) {
      // The task runs in its own cgroup under the agent's systemd scope.
      EXPECT_TRUE(fs::exists("/sys/fs/cgroup/corral.slice/corral-tasks.scope/task-" + cid))
          << "no cgroup for " << id;
    }
    auto r = agent.post_json(
        "/api/v1", R"({"type":"KILL_CONTAINER","kill_container":{"container_id":{"value":")" + cid +
                       R"("},"signal":15}})");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->result(), http::Status::ok) << r->body();
  }
  auto polite = agent.wait_state("polite", {v1::TASK_KILLED});
  ASSERT_TRUE(polite.has_value());
  EXPECT_EQ(polite->state(), v1::TASK_KILLED);
  auto start = std::chrono::steady_clock::now();
  stubborn = agent.wait_state("stubborn", {v1::TASK_KILLED});
  ASSERT_TRUE(stubborn.has_value());
  EXPECT_EQ(stubborn->state(), v1::TASK_KILLED);
  EXPECT_NE(stubborn->statuses().rbegin()->message().find("SIGKILL"), std::string::npos)
      << stubborn->statuses().rbegin()->message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, patience(30s));
}

TEST_F(AgentTest, ATaskFailingItsHealthCheckIsKilledAndReportedUnhealthy) {
  AgentProcess agent(path(), "");
  agent.start();
  // In the (emulated, slow) guest a grace period covers the start of "well"'s shell.
  std::string hc =
      R"(,"health_check":{"type":"COMMAND","command":{"value":"test -e /mnt/sandbox/ok"},)"
      R"("delay_seconds":0,"interval_seconds":0.3,"timeout_seconds":5,)"
      R"("consecutive_failures":3,"grace_period_seconds":)" +
      std::string(in_guest() ? "10" : "0") + "}";
  ASSERT_EQ(agent.launch(simple_task("sick", "sleep 600", hc))->result(), http::Status::accepted);
  ASSERT_EQ(agent.launch(simple_task("well", "touch /mnt/sandbox/ok; sleep 600", hc))->result(),
            http::Status::accepted);
  auto sick = agent.wait_state("sick", {v1::TASK_FAILED}, 90s);
  ASSERT_TRUE(sick.has_value());
  ASSERT_EQ(sick->state(), v1::TASK_FAILED) << agent.log();
  const auto& last = *sick->statuses().rbegin();
  EXPECT_EQ(last.reason(), v1::TaskStatus::REASON_TASK_HEALTH_CHECK_STATUS_UPDATED);
  EXPECT_FALSE(last.healthy());
  EXPECT_NE(last.message().find("health checks"), std::string::npos) << last.message();
  auto well = agent.task("well");
  ASSERT_TRUE(well.has_value());
  EXPECT_EQ(well->state(), v1::TASK_RUNNING);
  bool saw_healthy = false;
  for (const auto& s : well->statuses())
    saw_healthy = saw_healthy || (s.has_healthy() && s.healthy());
  EXPECT_TRUE(saw_healthy);
  // "well" is killed, not left running for the next test (or the guest's cgroup check).
  auto cid = well->statuses().rbegin()->container_status().container_id().value();
  auto k = agent.post_json(
      "/api/v1", R"({"type":"KILL_CONTAINER","kill_container":{"container_id":{"value":")" + cid +
                     R"("},"signal":9}})");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->result(), http::Status::ok) << k->body();
  auto killed = agent.wait_state("well", {v1::TASK_KILLED});
  ASSERT_TRUE(killed.has_value());
  EXPECT_EQ(killed->state(), v1::TASK_KILLED);
  agent.stop();
}

TEST_F(AgentTest, AUriWithABadChecksumIsRefusedAndAGoodOneIsFetched) {
  std::ofstream(path() / "files" / "data.txt") << "payload\n";
  AgentProcess agent(path(), "");
  agent.start();
  const std::string good =
      "d4e4877bac978b7952f0d544fc52ebff5411d351d129f1f056fa43f11da9af2b";  // sha256 of "payload\n"
  const std::string file = (path() / "files" / "data.txt").string();
  auto task = [&](const std::string& id, const std::string& sha) {
    return R"({"name":")" + id + R"(","task_id":{"value":")" + id +
           R"("},"command":{"value":"cat /mnt/sandbox/data.txt","uris":[{"value":")" + file +
           "#sha256=" + sha + R"("}]}})";
  };
  ASSERT_EQ(agent.launch(task("badsum", std::string(64, 'a')))->result(), http::Status::accepted);
  auto t = agent.wait_state("badsum", {v1::TASK_FAILED});
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->state(), v1::TASK_FAILED);
  EXPECT_NE(t->statuses().rbegin()->message().find("checksum mismatch"), std::string::npos)
      << t->statuses().rbegin()->message();
  EXPECT_EQ(t->statuses().rbegin()->reason(), v1::TaskStatus::REASON_CONTAINER_LAUNCH_FAILED);
  ASSERT_EQ(agent.launch(task("goodsum", good))->result(), http::Status::accepted);
  auto g = agent.wait_state("goodsum", {v1::TASK_FINISHED, v1::TASK_FAILED});
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->state(), v1::TASK_FINISHED) << g->statuses().rbegin()->message();
  // A file outside the policy's allowed host paths is refused.
  ASSERT_EQ(
      agent
          .launch(
              R"({"name":"x","task_id":{"value":"shadow"},"command":{"value":"true","uris":[{"value":"/etc/shadow"}]}})")
          ->result(),
      http::Status::accepted);
  auto s = agent.wait_state("shadow", {v1::TASK_FAILED});
  ASSERT_TRUE(s.has_value());
  EXPECT_NE(s->statuses().rbegin()->message().find("allowed_host_paths"), std::string::npos);
}

TEST_F(AgentTest, BadInputIsRefusedAndTheAgentStaysUp) {
  AgentProcess agent(path(), "");
  agent.start();
  auto r = agent.post_json("/corral/v1/tasks", "{not json");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->result(), http::Status::bad_request);
  EXPECT_NE(r->body().find("invalid JSON"), std::string::npos) << r->body();
  r = agent.launch(simple_task("t1", "sleep 600"), "no-such-framework");
  EXPECT_EQ(r->result(), http::Status::not_found);
  EXPECT_NE(r->body().find("unknown framework"), std::string::npos);
  ASSERT_EQ(agent.launch(simple_task("dup", "sleep 600"))->result(), http::Status::accepted);
  r = agent.launch(simple_task("dup", "sleep 600"));
  EXPECT_EQ(r->result(), http::Status::conflict) << r->body();
  r = agent.launch(simple_task("../escape", "true"));
  EXPECT_EQ(r->result(), http::Status::bad_request) << r->body();
  // Sandbox path escapes.
  auto t = agent.wait_state("dup", {v1::TASK_RUNNING});
  ASSERT_TRUE(t.has_value());
  auto cid = t->statuses().rbegin()->container_status().container_id().value();
  fs::path sandbox = path() / "work" / "sandboxes" / "local" / "dup" / cid;
  fs::create_symlink("/etc", sandbox / "etc-link");
  for (const std::string& p : {std::string("local/dup/") + cid + "/../../../../agent.db",
                               "local/dup/" + cid + "/etc-link/shadow", std::string("/etc/shadow"),
                               std::string("../../etc/passwd")}) {
    auto resp = agent.post_json(
        "/api/v1", R"({"type":"READ_FILE","read_file":{"path":")" + p + R"(","offset":0}})");
    ASSERT_TRUE(resp.ok());
    EXPECT_TRUE(resp->result() == http::Status::forbidden ||
                resp->result() == http::Status::not_found)
        << p << " -> " << resp->result_int() << " " << resp->body();
    EXPECT_EQ(resp->body().find("root:"), std::string::npos);
  }
  r = agent.post_json("/api/v1", R"({"type":"NO_SUCH_CALL"})");
  EXPECT_EQ(r->result(), http::Status::bad_request);
  EXPECT_TRUE(agent.alive());
  EXPECT_TRUE(agent.call(R"({"type":"GET_HEALTH"})").get_health().healthy());
}

TEST_F(AgentTest, AGigabyteLogLineIsBoundedOnDiskAndTheAgentStaysUp) {
  AgentProcess agent(path(), "");
  agent.start();
  ASSERT_EQ(agent.launch(simple_task("noisy", "head -c 1073741824 /dev/zero"))->result(),
            http::Status::accepted);
  auto t = agent.wait_state("noisy", {v1::TASK_FINISHED, v1::TASK_FAILED}, 300s);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->state(), v1::TASK_FINISHED);
  uint64_t total = 0;
  for (auto& e : fs::recursive_directory_iterator(path() / "work" / "sandboxes")) {
    if (e.is_regular_file()) total += e.file_size();
  }
  // stdout + 3 rotated files of 10 MiB each, at most.
  EXPECT_LE(total, 45ull << 20);
  EXPECT_TRUE(agent.call(R"({"type":"GET_HEALTH"})").get_health().healthy());
}

TEST_F(AgentTest, FiftyTasksSurviveKill9OfTheAgentAndAnExitDuringTheDowntimeIsReportedOnce) {
  FakeMaster master;
  AgentProcess agent(path(), master.address());
  agent.start();
  for (int i = 0; i < 200 && !master.connected(); ++i) std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(master.connected());
  // Tasks come from the master, as RUN_TASK events.
  auto run = [&](const std::string& id, const std::string& cmd) {
    internal::AgentEvent ev;
    ev.set_type(internal::AgentEvent::RUN_TASK);
    ev.mutable_run_task()->mutable_framework()->mutable_id()->set_value("fw1");
    ev.mutable_run_task()->mutable_framework()->set_name("test framework");
    auto* t = ev.mutable_run_task()->mutable_task();
    t->set_name(id);
    t->mutable_task_id()->set_value(id);
    t->mutable_agent_id()->set_value("agent-from-master");
    t->mutable_command()->set_value(cmd);
    master.send(ev);
  };
  for (int i = 0; i < 50; ++i) run("long-" + std::to_string(i), "sleep 600");
  run("short", "sleep 4; exit 5");
  for (int i = 0; i < 50; ++i) {
    auto t = agent.wait_state("long-" + std::to_string(i), {v1::TASK_RUNNING}, 120s);
    ASSERT_TRUE(t && t->state() == v1::TASK_RUNNING) << i;
  }
  ASSERT_TRUE(agent.wait_state("short", {v1::TASK_RUNNING}).has_value());
  agent.kill9();
  master.drop_stream();
  std::this_thread::sleep_for(6s);  // "short" exits while no agent runs
  agent.start();
  auto t = agent.wait_state("short", {v1::TASK_FAILED}, 60s);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->state(), v1::TASK_FAILED);
  for (int i = 0; i < 50; ++i) {
    auto lt = agent.task("long-" + std::to_string(i));
    ASSERT_TRUE(lt.has_value()) << i;
    EXPECT_EQ(lt->state(), v1::TASK_RUNNING) << i;
  }
  // The master saw every update exactly once per uuid, in order, after re-registration.
  for (int i = 0; i < 200 && master.states_of("short").size() < 3; ++i)
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(master.states_of("short"),
            (std::vector<v1::TaskState>{v1::TASK_STARTING, v1::TASK_RUNNING, v1::TASK_FAILED}));
  bool found = false;
  for (const auto& u : master.updates()) {
    if (u.status().task_id().value() == "short" && u.status().state() == v1::TASK_FAILED) {
      found = true;
      EXPECT_NE(u.status().message().find("exited with status 5"), std::string::npos)
          << u.status().message();
    }
  }
  EXPECT_TRUE(found);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(master.states_of("long-" + std::to_string(i)),
              (std::vector<v1::TaskState>{v1::TASK_STARTING, v1::TASK_RUNNING}))
        << i;
  }
  bool reregistered = false;
  for (const auto& c : master.calls()) {
    if (c.type() == internal::AgentCall::REREGISTER) {
      reregistered = true;
      EXPECT_EQ(c.agent_id().value(), "agent-from-master");
      EXPECT_GE(c.reregister().tasks_size(), 50);
    }
  }
  EXPECT_TRUE(reregistered);
  // Clean up: the master kills them all.
  for (int i = 0; i < 50; ++i) {
    internal::AgentEvent ev;
    ev.set_type(internal::AgentEvent::KILL_TASK);
    ev.mutable_kill_task()->mutable_framework_id()->set_value("fw1");
    ev.mutable_kill_task()->mutable_task_id()->set_value("long-" + std::to_string(i));
    master.send(ev);
  }
  for (int i = 0; i < 50; ++i)
    EXPECT_TRUE(agent.wait_state("long-" + std::to_string(i), {v1::TASK_KILLED}, 60s).has_value());
}

TEST_F(AgentTest, UnacknowledgedUpdatesAreResentAfterThePartitionAndTasksKeepRunning) {
  FakeMaster master;
  master.set_auto_ack(false);
  AgentProcess agent(path(), master.address());
  agent.start();
  for (int i = 0; i < 200 && !master.connected(); ++i) std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(master.connected());
  internal::AgentEvent ev;
  ev.set_type(internal::AgentEvent::RUN_TASK);
  ev.mutable_run_task()->mutable_framework()->mutable_id()->set_value("fw1");
  auto* t = ev.mutable_run_task()->mutable_task();
  t->set_name("p");
  t->mutable_task_id()->set_value("p");
  t->mutable_command()->set_value("sleep 600");
  master.send(ev);
  ASSERT_TRUE(agent.wait_state("p", {v1::TASK_RUNNING}).has_value());
  // Without acknowledgements only the first update (STARTING) leaves the agent: in order.
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(master.states_of("p"), (std::vector<v1::TaskState>{v1::TASK_STARTING}));
  // A partition: the stream drops; the agent reconnects and re-sends; the task runs on.
  master.set_auto_ack(true);
  master.drop_stream();
  for (int i = 0; i < 400 && master.states_of("p").size() < 2; ++i)
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(master.states_of("p"),
            (std::vector<v1::TaskState>{v1::TASK_STARTING, v1::TASK_RUNNING}));
  EXPECT_EQ(agent.task("p")->state(), v1::TASK_RUNNING);
  agent.stop();
}

TEST_F(AgentTest, ATaskRunsInADockerImageWithTheImagesUserEnvAndWorkdir) {
  // An OCI archive built from busybox-static (tests/image/make-image.py), imported with the CLI
  // into the agent's image store (<work_dir>/images).
  fs::path archive = path() / "app.oci.tar";
  std::string make = std::string("python3 ") + CORRAL_SOURCE_DIR +
                     "/tests/image/make-image.py oci-archive " + archive.string() +
                     " > /dev/null 2>&1";
  ASSERT_EQ(std::system(make.c_str()), 0) << "make-image.py failed (needs busybox-static)";
  std::string import = std::string(CORRAL_CLI_PATH) + " image --root " +
                       (path() / "work" / "images").string() + " import -q --tag test/app:1 " +
                       archive.string() + " > /dev/null";
  ASSERT_EQ(std::system(import.c_str()), 0);
  AgentProcess agent(path(), "");
  agent.start();
  std::string task =
      R"({"name":"img","task_id":{"value":"img"},)"
      R"("command":{"value":"echo $GREETING; id -u; pwd; cat /etc/motd; ls /data"},)"
      R"("container":{"type":"MESOS","mesos":{"image":{"type":"DOCKER","docker":{"name":"test/app:1"}}}}})";
  auto r = agent.launch(task);
  ASSERT_EQ(r->result(), http::Status::accepted) << r->body();
  auto cid = nlohmann::json::parse(r->body())["container_id"].get<std::string>();
  auto t = agent.wait_state("img", {v1::TASK_FINISHED, v1::TASK_FAILED});
  ASSERT_TRUE(t.has_value());
  ASSERT_EQ(t->state(), v1::TASK_FINISHED) << t->statuses().rbegin()->message() << agent.log();
  auto out = read_file(path() / "work" / "sandboxes" / "local" / "img" / cid / "stdout");
  ASSERT_TRUE(out.ok());
  // Env from the image, its User (app = 1000), its WorkingDir, a file of layer 2, and the
  // whiteout of /data/removed.txt applied.
  EXPECT_EQ(*out, "hi\n1000\n/home/app\nhello from layer 2\nkeep.txt\n");
  // An image that is not there (and no registry): a clear launch failure.
  std::string missing =
      R"({"name":"nope","task_id":{"value":"nope"},"command":{"value":"true"},)"
      R"("container":{"type":"MESOS","mesos":{"image":{"type":"DOCKER","docker":{"name":"127.0.0.1:1/none:1"}}}}})";
  ASSERT_EQ(agent.launch(missing)->result(), http::Status::accepted);
  auto m = agent.wait_state("nope", {v1::TASK_FAILED});
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->statuses().rbegin()->reason(), v1::TaskStatus::REASON_CONTAINER_LAUNCH_FAILED);
  EXPECT_NE(m->statuses().rbegin()->message().find("127.0.0.1:1/none:1"), std::string::npos)
      << m->statuses().rbegin()->message();
}

}  // namespace
}  // namespace corral::agent
