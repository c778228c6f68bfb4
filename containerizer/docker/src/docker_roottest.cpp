// The Docker containerizer against a real dockerd (root; ctest labels root and docker). The
// ctest fixture docker.daemon.start runs tests/docker/dockerd-fixture, which starts dockerd on
// /run/corral-test/docker.sock and imports corral-test/busybox:latest; the dockerd outage tests
// start their own daemons (docker-down, docker-live) so they never disturb the shared one.
// Results are checked the way a user would: the sandbox files, the reported termination, what
// dockerd itself says about the container afterwards.
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/docker/docker_containerizer.hpp"

namespace corral::docker {
namespace {

namespace v1 = corral::v1;
using containerizer::LaunchRequest;
using containerizer::Termination;
using namespace std::chrono_literals;

constexpr const char* kImage = "corral-test/busybox:latest";
const std::string kSharedSocket = "unix:/run/corral-test/docker.sock";

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs the fixture script (constant arguments only).
int fixture(const std::string& args) {
  return std::system((std::string(CORRAL_DOCKER_FIXTURE) + " " + args + " >/dev/null").c_str());
}

// Collects terminations; each container must be reported exactly once.
class Terminations {
 public:
  void add(const std::string& id, const Termination& t) {
    std::lock_guard lock(mutex_);
    ++count_[id];
    seen_[id] = t;
    cv_.notify_all();
  }
  std::optional<Termination> wait(const std::string& id, std::chrono::milliseconds timeout = 60s) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return seen_.count(id) > 0; })) return std::nullopt;
    return seen_[id];
  }
  int count(const std::string& id) {
    std::lock_guard lock(mutex_);
    return count_[id];
  }
  std::size_t size() {
    std::lock_guard lock(mutex_);
    return seen_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::string, Termination> seen_;
  std::map<std::string, int> count_;
};

class DockerTest : public testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("corral-docker-test-");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(*d));
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    label_ = std::string("test-") + info->name() + "-" + std::to_string(::getpid());
    prefix_ = "corral-" + label_ + "-";
  }
  void TearDown() override {
    c_.reset();
    // Leave nothing behind in dockerd, whatever the test did.
    for (const auto& socket : sockets_used_) {
      EngineOptions eo;
      eo.endpoint = socket;
      Engine e(eo);
      auto listed = e.list_containers(std::string(kLabelAgent) + "=" + label_);
      if (listed.ok()) {
        for (const auto& c : *listed) (void)e.remove_container(c["Id"].get<std::string>());
      }
    }
  }

  DockerOptions options(const std::string& socket = kSharedSocket) {
    DockerOptions o;
    o.endpoint = socket;
    o.agent_label = label_;
    o.name_prefix = prefix_;
    o.policy.networks = {{"none", "host"}, "test"};
    o.log_drain = 5s;
    sockets_used_.insert(socket);
    return o;
  }

  std::unique_ptr<DockerContainerizer> open(DockerOptions o) {
    auto c = open_docker_containerizer(std::move(o));
    EXPECT_TRUE(c.ok()) << c.error().message();
    if (!c.ok()) return nullptr;
    (*c)->set_termination_callback(
        [this](const std::string& id, const Termination& t) { terms_.add(id, t); });
    return std::move(*c);
  }

  void open_shared() {
    c_ = open(options());
    ASSERT_NE(c_, nullptr);
  }

  LaunchRequest request(const std::string& id, const std::string& command) {
    LaunchRequest r;
    r.container_id = id;
    r.framework.mutable_id()->set_value("fw");
    r.task.mutable_task_id()->set_value("task-" + id);
    r.task.mutable_container()->set_type(v1::ContainerInfo::DOCKER);
    r.task.mutable_container()->mutable_docker()->set_image(kImage);
    r.task.mutable_container()->mutable_docker()->set_network(v1::ContainerInfo::DockerInfo::NONE);
    r.task.mutable_command()->set_value(command);
    r.sandbox_dir = dir_->path() / id;
    std::filesystem::create_directories(r.sandbox_dir);
    r.decision.user = "nobody";
    r.decision.seccomp = "default";
    r.decision.limits.pids_max = 64;
    r.env = {"CORRAL_TASK_ID=task-" + id};
    return r;
  }

  std::string out(const std::string& id) { return read_file(dir_->path() / id / "stdout"); }
  std::string err(const std::string& id) { return read_file(dir_->path() / id / "stderr"); }

  std::unique_ptr<TempDir> dir_;
  std::string label_, prefix_;
  std::set<std::string> sockets_used_;
  Terminations terms_;
  std::unique_ptr<DockerContainerizer> c_;
};

TEST_F(DockerTest, LaunchStreamsOutputAndReportsTheExitCode) {
  open_shared();
  auto launched = c_->launch(request("exit3",
                                     "echo out; echo err >&2; echo $CORRAL_TASK_ID; "
                                     "echo $MESOS_SANDBOX; id -u; exit 3"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  EXPECT_TRUE(launched->checkpoint.contains("docker_id"));
  auto t = terms_.wait("exit3");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::exited);
  EXPECT_EQ(t->code, 3);
  EXPECT_FALSE(t->oom_killed);
  EXPECT_EQ(out("exit3"), "out\ntask-exit3\n/mnt/mesos/sandbox\n65534\n");
  EXPECT_EQ(err("exit3"), "err\n");
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(terms_.count("exit3"), 1);

  // destroy() removes the container from dockerd.
  const std::string docker_id = launched->checkpoint["docker_id"];
  ASSERT_TRUE(c_->destroy("exit3").ok());
  EngineOptions eo;
  eo.endpoint = kSharedSocket;
  auto gone = Engine(eo).inspect_container(docker_id);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), ENOENT);
}

TEST_F(DockerTest, ZeroExitAndLargeOutputArriveWhole) {
  open_shared();
  // 600 KiB of output in 100000 frames, then exit 0 at once.
  auto launched = c_->launch(request("big", "seq 1 100000"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  auto t = terms_.wait("big");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::exited);
  EXPECT_EQ(t->code, 0);
  std::string o = out("big");
  EXPECT_EQ(std::count(o.begin(), o.end(), '\n'), 100000);
  EXPECT_EQ(o.substr(o.size() - 7), "100000\n");
}

TEST_F(DockerTest, TaskRunningLongerThanTheRequestTimeoutIsFollowedToItsEnd) {
  // dockerd answers a wait only when the container stops; that must not look like an outage.
  DockerOptions o = options();
  o.request_timeout = 2s;
  c_ = open(o);
  ASSERT_NE(c_, nullptr);
  auto launched = c_->launch(request("long", "echo a; sleep 6; echo b"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  std::this_thread::sleep_for(3s);
  EXPECT_TRUE(c_->daemon_condition().reachable) << c_->daemon_condition().message;
  auto t = terms_.wait("long");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::exited) << t->message;
  EXPECT_EQ(t->code, 0);
  EXPECT_EQ(t->message, "exited with 0");
  EXPECT_EQ(out("long"), "a\nb\n");
  EXPECT_TRUE(c_->daemon_condition().reachable);
}

TEST_F(DockerTest, MesosTaskWithADelegatedImageRunsThroughDockerd) {
  auto policy = isolator::load_policy_text(
      isolator::builtin_policy(),
      "[docker]\ndelegate_images = [\"corral-test/*\"]\nnetworks = [\"none\"]\n", "test.toml");
  ASSERT_TRUE(policy.ok()) << policy.error().message();
  LaunchRequest r = request("delegated", "echo via docker; cat /proc/1/cgroup | grep -c docker");
  r.task.mutable_container()->Clear();
  r.task.mutable_container()->set_type(v1::ContainerInfo::MESOS);
  auto* image = r.task.mutable_container()->mutable_mesos()->mutable_image();
  image->set_type(v1::Image::DOCKER);
  image->mutable_docker()->set_name(kImage);
  ASSERT_TRUE(should_delegate_to_docker(*policy, r.task));
  DockerOptions o = docker_options_from_policy(*policy);
  DockerOptions mine = options();
  o.endpoint = mine.endpoint;
  o.agent_label = mine.agent_label;
  o.name_prefix = mine.name_prefix;
  c_ = open(o);
  ASSERT_NE(c_, nullptr);
  auto launched = c_->launch(r);
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  auto t = terms_.wait("delegated");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->code, 0) << t->message;
  EXPECT_EQ(out("delegated").substr(0, 11), "via docker\n");
  // Not delegated when the policy has no matching pattern.
  EXPECT_FALSE(should_delegate_to_docker(isolator::builtin_policy(), r.task));
}

TEST_F(DockerTest, EnvironmentAndVolumesAsThePolicyDecided) {
  open_shared();
  auto data = dir_->path() / "data";
  std::filesystem::create_directories(data);
  std::ofstream(data / "in.txt") << "from the host\n";
  std::filesystem::permissions(dir_->path(), std::filesystem::perms::all);
  LaunchRequest r = request("envvol",
                            "cat /data/in.txt; echo \"$GREETING\"; "
                            "touch /data/new 2>/dev/null && echo writable || echo "
                            "read-only");
  auto* var = r.task.mutable_command()->mutable_environment()->add_variables();
  var->set_name("GREETING");
  var->set_value("hello world");
  r.decision.volumes.push_back({data.string(), "/data", false});
  auto launched = c_->launch(r);
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  auto t = terms_.wait("envvol");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->code, 0);
  EXPECT_EQ(out("envvol"), "from the host\nhello world\nread-only\n");
  EXPECT_FALSE(std::filesystem::exists(data / "new"));
}

TEST_F(DockerTest, KillWithGraceEscalatesToSigkill) {
  open_shared();
  // PID 1 ignores SIGTERM (no handler): only SIGKILL after the grace ends it.
  auto launched = c_->launch(request("stubborn", "echo up; sleep 600"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  std::this_thread::sleep_for(300ms);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(c_->kill("stubborn", 1s).ok());
  auto t = terms_.wait("stubborn");
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::signaled);
  EXPECT_EQ(t->signal, 9);
  EXPECT_TRUE(t->killed_after_grace);
  EXPECT_GE(took, 1s);
  EXPECT_EQ(out("stubborn"), "up\n");
}

TEST_F(DockerTest, KillLetsATaskThatHandlesSigtermExitCleanly) {
  open_shared();
  auto launched = c_->launch(
      request("polite", "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  for (int i = 0; i < 50 && out("polite").empty(); ++i) std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(c_->kill("polite", 20s).ok());
  auto t = terms_.wait("polite", 15s);  // well before the 20 s grace
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::exited);
  EXPECT_EQ(t->code, 0);
  EXPECT_FALSE(t->killed_after_grace);
  EXPECT_EQ(out("polite"), "up\nbye\n");
  // Killing an ended container is fine.
  EXPECT_TRUE(c_->kill("polite", 1s).ok());
}

TEST_F(DockerTest, MemoryLimitOomIsReportedAsMemoryLimitation) {
  open_shared();
  LaunchRequest r = request("oom", "echo start; head -c 200m /dev/zero | tail > /dev/null");
  r.decision.limits.memory_max = 16ull << 20;
  auto launched = c_->launch(r);
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  auto t = terms_.wait("oom");
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->oom_killed) << t->message;
  EXPECT_EQ(t->reason, v1::TaskStatus::REASON_CONTAINER_LIMITATION_MEMORY) << t->message;
  EXPECT_NE(t->message.find("out of memory (limit 16MiB)"), std::string::npos) << t->message;
}

TEST_F(DockerTest, PidsLimitStopsAForkBomb) {
  open_shared();
  LaunchRequest r =
      request("pids", "i=0; while [ $i -lt 20 ]; do sleep 600 & i=$((i+1)); done; echo forked all");
  r.decision.limits.pids_max = 6;
  auto launched = c_->launch(r);
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  auto t = terms_.wait("pids");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::exited);
  EXPECT_NE(t->code, 0);
  EXPECT_NE(err("pids").find("can't fork"), std::string::npos) << err("pids");
  EXPECT_EQ(out("pids"), "");
}

TEST_F(DockerTest, UsageComesFromTheStatsApi) {
  open_shared();
  LaunchRequest r = request("usage", "sleep 600 & echo started; sleep 600");
  r.decision.limits.memory_max = 64ull << 20;
  r.decision.limits.cpus = 0.5;
  auto launched = c_->launch(r);
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  for (int i = 0; i < 100 && out("usage").empty(); ++i) std::this_thread::sleep_for(100ms);
  auto u = c_->usage("usage");
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_EQ(u->processes(), 2u);  // two sleeps (sh execs the last command)
  EXPECT_EQ(u->mem_limit_bytes(), 64ull << 20);
  EXPECT_DOUBLE_EQ(u->cpus_limit(), 0.5);
  EXPECT_GT(u->mem_total_bytes(), 0u);
  EXPECT_GT(u->timestamp(), 0);
  auto unknown = c_->usage("nosuch");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), ENOENT);
  ASSERT_TRUE(c_->kill("usage", 0s).ok());
  ASSERT_TRUE(terms_.wait("usage"));
}

TEST_F(DockerTest, NameCollisionIsAClearError) {
  open_shared();
  EngineOptions eo;
  eo.endpoint = kSharedSocket;
  Engine e(eo);
  auto squatter = e.create_container(
      prefix_ + "taken",
      {{"Image", kImage}, {"Cmd", {"true"}}, {"Labels", {{kLabelAgent, label_ + "-other"}}}});
  ASSERT_TRUE(squatter.ok()) << squatter.error().message();
  auto launched = c_->launch(request("taken", "true"));
  (void)e.remove_container(*squatter);
  ASSERT_FALSE(launched.ok());
  EXPECT_EQ(launched.error().code(), EEXIST);
  EXPECT_NE(launched.error().message().find("already in use"), std::string::npos)
      << launched.error().message();
  EXPECT_NE(launched.error().message().find("docker rm -f " + prefix_ + "taken"),
            std::string::npos);
}

TEST_F(DockerTest, MissingImageFailsTheLaunchAndLeavesNothing) {
  open_shared();
  LaunchRequest r = request("noimage", "true");
  // A registry on loopback that refuses connections: no network needed, a fast failure.
  r.task.mutable_container()->mutable_docker()->set_image("127.0.0.1:1/corral/nope:1");
  auto launched = c_->launch(r);
  ASSERT_FALSE(launched.ok());
  EXPECT_NE(launched.error().message().find("pulling image 127.0.0.1:1/corral/nope:1"),
            std::string::npos)
      << launched.error().message();
  EXPECT_EQ(c_->tracked(), 0u);
  EngineOptions eo;
  eo.endpoint = kSharedSocket;
  auto listed = Engine(eo).list_containers(std::string(kLabelAgent) + "=" + label_);
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
}

TEST_F(DockerTest, CommandThatCannotStartIsAnErrorWithDockersReason) {
  open_shared();
  LaunchRequest r = request("nocmd", "");
  r.task.mutable_command()->set_shell(false);
  r.task.mutable_command()->set_value("/no/such/binary");
  auto launched = c_->launch(r);
  ASSERT_FALSE(launched.ok());
  EXPECT_NE(launched.error().message().find("/no/such/binary"), std::string::npos)
      << launched.error().message();
  EXPECT_NE(launched.error().message().find("did not start in dockerd"), std::string::npos);
  EngineOptions eo;
  eo.endpoint = kSharedSocket;
  auto listed = Engine(eo).list_containers(std::string(kLabelAgent) + "=" + label_);
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty()) << listed->dump();
}

TEST_F(DockerTest, AgentRestartAdoptsTwentyRunningTasks) {
  open_shared();
  std::vector<std::pair<std::string, nlohmann::json>> checkpoints;
  for (int i = 0; i < 20; ++i) {
    const std::string id = "r" + std::to_string(i);
    auto launched = c_->launch(request(
        id, "echo start; trap 'echo stopping; exit 0' TERM; while true; do sleep 0.2; done"));
    ASSERT_TRUE(launched.ok()) << launched.error().message();
    checkpoints.emplace_back(id, launched->checkpoint);
  }
  for (int i = 0; i < 100 && out("r19").empty(); ++i) std::this_thread::sleep_for(100ms);
  // The agent dies: the containerizer goes away without stopping anything.
  c_.reset();
  EXPECT_EQ(terms_.size(), 0u);

  c_ = open(options());
  ASSERT_NE(c_, nullptr);
  auto recovered = c_->recover(checkpoints);
  ASSERT_TRUE(recovered.ok()) << recovered.error().message();
  ASSERT_EQ(recovered->size(), 20u);
  for (const auto& r : *recovered) EXPECT_TRUE(r.running) << r.container_id;
  EXPECT_EQ(c_->tracked(), 20u);
  for (const auto& [id, cp] : checkpoints) ASSERT_TRUE(c_->kill(id, 10s).ok());
  for (const auto& [id, cp] : checkpoints) {
    auto t = terms_.wait(id);
    ASSERT_TRUE(t) << id;
    EXPECT_EQ(t->kind, Termination::Kind::exited) << id << ": " << t->message;
    EXPECT_EQ(t->code, 0) << id;
    // The output before the restart is not written twice.
    EXPECT_EQ(out(id), "start\nstopping\n") << id;
    EXPECT_EQ(terms_.count(id), 1) << id;
  }
}

TEST_F(DockerTest, TaskThatEndedWhileTheAgentWasAwayIsReportedWithItsExitCode) {
  open_shared();
  auto launched = c_->launch(request("away", "echo before; sleep 1; echo after; exit 7"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  c_.reset();
  std::this_thread::sleep_for(2500ms);
  c_ = open(options());
  ASSERT_NE(c_, nullptr);
  auto recovered = c_->recover({{"away", launched->checkpoint}});
  ASSERT_TRUE(recovered.ok()) << recovered.error().message();
  ASSERT_EQ(recovered->size(), 1u);
  EXPECT_FALSE((*recovered)[0].running);
  auto t = terms_.wait("away");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::exited);
  EXPECT_EQ(t->code, 7);
  EXPECT_EQ(out("away"), "before\nafter\n");
}

TEST_F(DockerTest, VanishedContainerIsReportedLost) {
  open_shared();
  auto launched = c_->launch(request("vanish", "sleep 600"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  c_.reset();
  EngineOptions eo;
  eo.endpoint = kSharedSocket;
  ASSERT_TRUE(Engine(eo).remove_container(launched->checkpoint["docker_id"]).ok());
  c_ = open(options());
  ASSERT_NE(c_, nullptr);
  auto recovered = c_->recover({{"vanish", launched->checkpoint}});
  ASSERT_TRUE(recovered.ok()) << recovered.error().message();
  auto t = terms_.wait("vanish");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::lost);
  EXPECT_NE(t->message.find("no longer exists in dockerd"), std::string::npos) << t->message;
}

TEST_F(DockerTest, OrphansAreStoppedAndRemovedAfterTheGrace) {
  open_shared();
  auto launched = c_->launch(request("orphan", "sleep 600"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  const std::string docker_id = launched->checkpoint["docker_id"];
  c_.reset();
  DockerOptions o = options();
  o.orphan_grace = 1s;
  o.orphan_stop_grace = 1s;
  c_ = open(o);
  ASSERT_NE(c_, nullptr);
  auto recovered = c_->recover({});  // the agent knows no task
  ASSERT_TRUE(recovered.ok()) << recovered.error().message();
  EngineOptions eo;
  eo.endpoint = kSharedSocket;
  Engine e(eo);
  EXPECT_TRUE(e.inspect_container(docker_id).ok());  // still there within the grace
  bool removed = false;
  for (int i = 0; i < 300 && !removed; ++i) {
    std::this_thread::sleep_for(100ms);
    auto j = e.inspect_container(docker_id);
    removed = !j.ok() && j.error().code() == ENOENT;
  }
  EXPECT_TRUE(removed);
  EXPECT_EQ(terms_.size(), 0u);  // orphans are no task's termination
}

// ---- pulls from a real registry with credentials (tests/docker/registry-fixture)

class DockerRegistryTest : public DockerTest {
 protected:
  void SetUp() override {
    DockerTest::SetUp();
    reg_ = dir_->path() / "registry";
    ASSERT_EQ(std::system((std::string(CORRAL_DOCKER_REGISTRY_FIXTURE) + " start " + reg_.string() +
                           " >/dev/null")
                              .c_str()),
              0);
    port_ = read_file(reg_ / "port");
    while (!port_.empty() && port_.back() == '\n') port_.pop_back();
    image_ = "127.0.0.1:" + port_ + "/corral/busybox:1";
  }
  void TearDown() override {
    DockerTest::TearDown();
    (void)std::system(
        (std::string(CORRAL_DOCKER_REGISTRY_FIXTURE) + " stop " + reg_.string()).c_str());
    EngineOptions eo;
    eo.endpoint = kSharedSocket;
    (void)Engine(eo).call(http::Verb::delete_, "/images/" + image_ + "?force=1");
  }
  LaunchRequest pull_request(const std::string& id, const std::string& image) {
    LaunchRequest r = request(id, "echo pulled");
    r.task.mutable_container()->mutable_docker()->set_image(image);
    r.task.mutable_container()->mutable_docker()->set_force_pull_image(true);
    return r;
  }
  std::filesystem::path reg_;
  std::string port_, image_;
};

TEST_F(DockerRegistryTest, PullsWithTheCredentialsOfTheDockerConfig) {
  DockerOptions o = options();
  o.policy.config = {(reg_ / "good.json").string(), "test"};
  int progress = 0;
  o.pull_progress = [&](const nlohmann::json&) { ++progress; };
  c_ = open(o);
  ASSERT_NE(c_, nullptr);
  auto launched = c_->launch(pull_request("pulled", image_));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  auto t = terms_.wait("pulled");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->code, 0);
  EXPECT_EQ(out("pulled"), "pulled\n");
  EXPECT_GT(progress, 0);
}

TEST_F(DockerRegistryTest, RegistryRefusingTheCredentialsIsAClearError) {
  DockerOptions o = options();
  o.policy.config = {(reg_ / "wrong.json").string(), "test"};
  c_ = open(o);
  ASSERT_NE(c_, nullptr);
  auto launched = c_->launch(pull_request("refused", image_));
  ASSERT_FALSE(launched.ok());
  EXPECT_EQ(launched.error().code(), EACCES) << launched.error().message();
  EXPECT_NE(launched.error().message().find("check the credentials for 127.0.0.1:" + port_),
            std::string::npos)
      << launched.error().message();

  // No credentials at all: refused too.
  c_ = open(options());
  auto anonymous = c_->launch(pull_request("anonymous", image_));
  ASSERT_FALSE(anonymous.ok());
  EXPECT_NE(anonymous.error().message().find("pulling image " + image_), std::string::npos)
      << anonymous.error().message();
}

TEST_F(DockerRegistryTest, ImageMissingFromTheRegistryIsEnoent) {
  DockerOptions o = options();
  o.policy.config = {(reg_ / "good.json").string(), "test"};
  c_ = open(o);
  ASSERT_NE(c_, nullptr);
  auto launched =
      c_->launch(pull_request("missing", "127.0.0.1:" + port_ + "/corral/does-not-exist:1"));
  ASSERT_FALSE(launched.ok());
  EXPECT_EQ(launched.error().code(), ENOENT) << launched.error().message();
  EXPECT_NE(launched.error().message().find("check the image name and tag"), std::string::npos)
      << launched.error().message();
  EXPECT_EQ(c_->tracked(), 0u);
}

// ---- dockerd outages, on private daemons

class DockerOutageTest : public DockerTest {
 protected:
  void start_daemon(const std::string& name, bool live_restore) {
    name_ = name;
    ASSERT_EQ(fixture("start " + name + (live_restore ? " --live-restore" : "")), 0);
  }
  void TearDown() override {
    DockerTest::TearDown();
    if (!name_.empty()) (void)fixture("stop " + name_);
  }
  std::string socket() const { return "unix:/run/corral-test/" + name_ + ".sock"; }
  std::string name_;
};

TEST_F(DockerOutageTest, DockerdStoppedMidTaskWithoutLiveRestoreFailsTheTaskWithAReason) {
  start_daemon("docker-down", false);
  DockerOptions o = options(socket());
  o.daemon_down_grace = 60s;
  c_ = open(o);
  ASSERT_NE(c_, nullptr);
  auto launched = c_->launch(request("mid", "echo up; sleep 600"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  for (int i = 0; i < 50 && out("mid").empty(); ++i) std::this_thread::sleep_for(100ms);
  ASSERT_EQ(fixture("halt " + name_), 0);
  bool noticed = false;
  for (int i = 0; i < 100 && !noticed; ++i) {
    std::this_thread::sleep_for(100ms);
    noticed = !c_->daemon_condition().reachable;
  }
  EXPECT_TRUE(noticed);
  EXPECT_NE(c_->daemon_condition().message.find("stopped answering"), std::string::npos)
      << c_->daemon_condition().message;
  ASSERT_EQ(fixture("start " + name_), 0);
  auto t = terms_.wait("mid", 60s);
  ASSERT_TRUE(t);
  EXPECT_FALSE(t->kind == Termination::Kind::exited && t->code == 0) << t->message;
  EXPECT_EQ(t->reason, v1::TaskStatus::REASON_EXECUTOR_TERMINATED) << t->message;
  EXPECT_NE(t->message.find("dockerd stopped or restarted"), std::string::npos) << t->message;
  EXPECT_TRUE(c_->daemon_condition().reachable);
  // The containerizer still works.
  auto again = c_->launch(request("after", "echo fine"));
  ASSERT_TRUE(again.ok()) << again.error().message();
  auto t2 = terms_.wait("after");
  ASSERT_TRUE(t2);
  EXPECT_EQ(t2->code, 0);
}

TEST_F(DockerOutageTest, TaskSurvivesADockerdRestartWithLiveRestore) {
  start_daemon("docker-live", true);
  DockerOptions o = options(socket());
  o.daemon_down_grace = 60s;
  c_ = open(o);
  ASSERT_NE(c_, nullptr);
  auto launched = c_->launch(request("live", "echo before; sleep 8; echo after; exit 5"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  for (int i = 0; i < 50 && out("live").empty(); ++i) std::this_thread::sleep_for(100ms);
  ASSERT_EQ(fixture("halt " + name_), 0);
  std::this_thread::sleep_for(500ms);
  EXPECT_FALSE(c_->daemon_condition().reachable);
  EXPECT_EQ(terms_.size(), 0u);
  ASSERT_EQ(fixture("start " + name_ + " --live-restore"), 0);
  auto t = terms_.wait("live", 60s);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::exited) << t->message;
  EXPECT_EQ(t->code, 5) << t->message;
  EXPECT_EQ(out("live"), "before\nafter\n");
}

TEST_F(DockerOutageTest, DockerdGoneForGoodReportsTasksLost) {
  start_daemon("docker-down", false);
  DockerOptions o = options(socket());
  o.daemon_down_grace = 3s;
  c_ = open(o);
  ASSERT_NE(c_, nullptr);
  auto launched = c_->launch(request("gone", "sleep 600"));
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  ASSERT_EQ(fixture("halt " + name_), 0);
  auto t = terms_.wait("gone", 30s);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, Termination::Kind::lost);
  EXPECT_NE(t->message.find("did not answer for 3 s"), std::string::npos) << t->message;
  EXPECT_FALSE(c_->daemon_condition().reachable);
  // Launching now is a clear error, not a crash.
  auto refused = c_->launch(request("nodaemon", "true"));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("is dockerd running?"), std::string::npos)
      << refused.error().message();
}

}  // namespace
}  // namespace corral::docker
