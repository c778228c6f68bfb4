// The native containerizer on the host, with the real corral-launcher and without cgroups (the
// host's cgroups are hybrid v1; the guest group `agent` covers the cgroup path).
#include "corral/native/native.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <condition_variable>
#include <map>
#include <mutex>

#include "corral/common/fd.hpp"

namespace corral::native {
namespace {
namespace fs = std::filesystem;
using containerizer::Termination;

class Collector {
 public:
  void operator()(const std::string& id, const Termination& t) {
    std::lock_guard lock(mu_);
    ++count_[id];
    got_[id] = t;
    cv_.notify_all();
  }
  std::optional<Termination> wait(const std::string& id, std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return got_.count(id) > 0; });
    if (!got_.count(id)) return std::nullopt;
    return got_[id];
  }
  int count(const std::string& id) {
    std::lock_guard lock(mu_);
    return count_[id];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Termination> got_;
  std::map<std::string, int> count_;
};

class NativeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("native-test-");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(*d));
    ::chmod(dir_->path().c_str(), 0755);
  }
  std::unique_ptr<containerizer::Containerizer> open(Collector& collector) {
    NativeOptions o;
    o.launcher_path = CORRAL_LAUNCHER_PATH;
    auto c = open_native_containerizer(o);
    EXPECT_TRUE(c.ok()) << c.error().message();
    (*c)->set_termination_callback(std::ref(collector));
    return std::move(*c);
  }
  containerizer::LaunchRequest request(const std::string& id, const std::string& command) {
    containerizer::LaunchRequest r;
    r.container_id = id;
    r.task.mutable_task_id()->set_value(id);
    r.task.set_name("test-" + id);
    r.task.mutable_command()->set_value(command);
    r.sandbox_dir = dir_->path() / id / "sandbox";
    r.run_dir = dir_->path() / id / "run";
    fs::create_directories(r.sandbox_dir);
    fs::create_directories(r.run_dir);
    r.decision.capabilities = isolator::default_capabilities();
    r.decision.seccomp = "default";
    r.kill_grace = std::chrono::seconds(5);
    return r;
  }
  std::unique_ptr<TempDir> dir_;
};

TEST_F(NativeTest, RunsATaskAndReportsItsExitCodeAndOutput) {
  Collector got;
  auto c = open(got);
  auto req = request("exit3", "echo hello from $CORRAL_X; exit 3");
  req.env = {"CORRAL_X=the-agent"};
  auto launched = c->launch(req);
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  ASSERT_TRUE(launched->pid.has_value());
  auto t = got.wait("exit3", std::chrono::seconds(30));
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->kind, Termination::Kind::exited);
  EXPECT_EQ(t->code, 3);
  EXPECT_FALSE(t->reason.has_value());
  EXPECT_EQ(read_file(req.sandbox_dir / "stdout").value_or(""), "hello from the-agent\n");
  EXPECT_TRUE(c->destroy("exit3").ok());
  EXPECT_EQ(got.count("exit3"), 1);
}

TEST_F(NativeTest, AProgramThatDoesNotExistFailsTheLaunchWithTheReason) {
  Collector got;
  auto c = open(got);
  auto req = request("missing", "");
  req.task.mutable_command()->set_shell(false);
  req.task.mutable_command()->set_value("/no/such/program");
  auto launched = c->launch(req);
  ASSERT_FALSE(launched.ok());
  EXPECT_NE(launched.error().message().find("/no/such/program"), std::string::npos)
      << launched.error().message();
  EXPECT_FALSE(got.wait("missing", std::chrono::seconds(1)).has_value());
}

TEST_F(NativeTest, KillSendsSigtermAndTheTaskMayExitCleanly) {
  Collector got;
  auto c = open(got);
  auto req = request("graceful",
                     "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.1; done");
  ASSERT_TRUE(c->launch(req).ok());
  for (int i = 0; i < 100 && read_file(req.sandbox_dir / "stdout").value_or("") != "ready\n"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(c->kill("graceful", std::chrono::seconds(5)).ok());
  auto t = got.wait("graceful", std::chrono::seconds(30));
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->kind, Termination::Kind::exited) << t->message;
  EXPECT_EQ(t->code, 0);
  EXPECT_NE(read_file(req.sandbox_dir / "stdout").value_or("").find("got TERM"), std::string::npos);
}

TEST_F(NativeTest, KillEscalatesToSigkillAfterTheGracePeriod) {
  Collector got;
  auto c = open(got);
  auto req = request("stubborn", "trap '' TERM; echo ready; while :; do sleep 0.1; done");
  req.kill_grace = std::chrono::seconds(60);  // the supervisor's own grace: longer than asked
  ASSERT_TRUE(c->launch(req).ok());
  for (int i = 0; i < 100 && read_file(req.sandbox_dir / "stdout").value_or("") != "ready\n"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(c->kill("stubborn", std::chrono::milliseconds(500)).ok());
  auto t = got.wait("stubborn", std::chrono::seconds(30));
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->kind, Termination::Kind::signaled) << t->message;
  EXPECT_EQ(t->signal, SIGKILL);
  // Ended by the agent's escalation, long before the supervisor's 60 s.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST_F(NativeTest, RecoverAdoptsARunningTaskAndReportsOneThatEndedMeanwhile) {
  std::vector<std::pair<std::string, nlohmann::json>> checkpoints;
  containerizer::LaunchRequest keep_req, quick_req;
  {
    Collector first;
    auto c = open(first);
    keep_req = request("keeps", "echo up; sleep 600");
    auto a = c->launch(keep_req);
    ASSERT_TRUE(a.ok()) << a.error().message();
    quick_req = request("quick", "sleep 1; exit 7");
    auto b = c->launch(quick_req);
    ASSERT_TRUE(b.ok()) << b.error().message();
    checkpoints = {{"keeps", a->checkpoint}, {"quick", b->checkpoint}};
    // The "agent" goes away: the containerizer is destroyed without killing anything.
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // "quick" ends while nobody watches
  Collector second;
  auto c = open(second);
  auto recovered = c->recover(checkpoints);
  ASSERT_TRUE(recovered.ok()) << recovered.error().message();
  ASSERT_EQ(recovered->size(), 2u);
  for (const auto& r : *recovered) {
    EXPECT_EQ(r.running, r.container_id == "keeps") << r.container_id;
  }
  auto quick = second.wait("quick", std::chrono::seconds(10));
  ASSERT_TRUE(quick.has_value());
  EXPECT_EQ(quick->kind, Termination::Kind::exited);
  EXPECT_EQ(quick->code, 7);  // its real exit status, from the exit file
  EXPECT_FALSE(second.wait("keeps", std::chrono::seconds(1)).has_value());
  ASSERT_TRUE(c->kill("keeps", std::chrono::seconds(2)).ok());
  auto keeps = second.wait("keeps", std::chrono::seconds(30));
  ASSERT_TRUE(keeps.has_value());
  EXPECT_EQ(keeps->kind, Termination::Kind::signaled) << keeps->message;
  EXPECT_EQ(second.count("quick"), 1);
  EXPECT_EQ(second.count("keeps"), 1);
}

TEST_F(NativeTest, ARecoveredPidThatWasReusedIsNotAdopted) {
  Collector got;
  auto c = open(got);
  NativeCheckpoint cp;
  cp.pid = ::getpid();  // alive, but not the launcher: its start time differs
  cp.start_time = 1;
  cp.exit_status_path = (dir_->path() / "none.json").string();
  auto recovered = c->recover({{"ghost", to_json(cp)}});
  ASSERT_TRUE(recovered.ok());
  ASSERT_EQ(recovered->size(), 1u);
  EXPECT_FALSE((*recovered)[0].running);
  auto t = got.wait("ghost", std::chrono::seconds(10));
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->kind, Termination::Kind::lost);
  EXPECT_EQ(t->reason, v1::TaskStatus::REASON_EXECUTOR_TERMINATED);
}

TEST_F(NativeTest, ACorruptCheckpointIsReportedLostNotACrash) {
  Collector got;
  auto c = open(got);
  auto recovered = c->recover({{"bad", nlohmann::json("garbage")}});
  ASSERT_TRUE(recovered.ok());
  auto t = got.wait("bad", std::chrono::seconds(10));
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->kind, Termination::Kind::lost);
}

TEST(NativeSpec, ShellAndArgvForms) {
  NativeOptions o;
  containerizer::LaunchRequest r;
  r.sandbox_dir = "/tmp/s";
  r.run_dir = "/tmp/r";
  r.task.mutable_command()->set_value("echo hi");
  auto s = sandbox_spec_for(r, o, "");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->argv, (std::vector<std::string>{"/bin/sh", "-c", "echo hi"}));
  EXPECT_TRUE(s->namespaces.net);
  r.task.mutable_command()->set_shell(false);
  r.task.mutable_command()->set_value("/bin/echo");
  r.task.mutable_command()->add_arguments("echo");
  r.task.mutable_command()->add_arguments("a b");
  auto* ports = r.task.add_resources();
  ports->set_name("ports");
  ports->set_type(v1::Value::RANGES);
  auto* range = ports->mutable_ranges()->add_range();
  range->set_begin(31000);
  range->set_end(31000);
  s = sandbox_spec_for(r, o, "");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->argv, (std::vector<std::string>{"/bin/echo", "a b"}));
  EXPECT_FALSE(s->namespaces.net);  // tasks with ports share the host network
  auto* v = r.task.mutable_command()->mutable_environment()->add_variables();
  v->set_name("A=B");
  EXPECT_FALSE(sandbox_spec_for(r, o, "").ok());
}

}  // namespace
}  // namespace corral::native
