// org.corral.Agent1 and org.corral.Master1 on a real, private dbus-daemon: busctl introspects,
// reads properties and calls methods as root; a caller running as nobody (setpriv) is refused
// by the daemon's own check and, with the shipped policy file, by the bus itself; signals and
// PropertiesChanged reach a subscriber.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <future>
#include <mutex>
#include <thread>

#include "corral/dbus/access.hpp"
#include "corral/dbus/agent1.hpp"
#include "corral/dbus/avahi.hpp"
#include "corral/dbus/master1.hpp"
#include "test_bus.hpp"

namespace corral::dbus {
namespace {

using testing::CommandResult;
using testing::PrivateBus;
using testing::run_command;

class FakeAgent : public AgentBackend {
 public:
  std::string state() const override { return state_; }
  std::map<std::string, double> resources() const override { return {{"cpus", 2}, {"mem", 1024}}; }
  uint32_t task_count() const override { return static_cast<uint32_t>(tasks_.size()); }
  std::vector<AgentTask> list_tasks() const override { return tasks_; }
  Result<void> kill_task(const std::string& id) override {
    for (const auto& t : tasks_) {
      if (t.task_id == id) {
        killed_.push_back(id);
        return {};
      }
    }
    return Error(ENOENT, "no task " + id + " on this agent");
  }
  Result<void> drain(uint32_t timeout) override {
    drained_ = static_cast<int>(timeout);
    state_ = "draining";
    return {};
  }
  Result<void> reload_policy() override {
    return Error(EINVAL, "/etc/corral/policy.d/10-bad.toml:3: unknown key 'prot'");
  }
  std::string state_ = "registered";
  std::vector<AgentTask> tasks_ = {{"web-1", "fw-1", "TASK_RUNNING", "c1"},
                                   {"batch-7", "fw-2", "TASK_STAGING", "c2"}};
  std::vector<std::string> killed_;
  int drained_ = -1;
};

class FakeMaster : public MasterBackend {
 public:
  std::string state() const override { return "leading"; }
  std::string leader() const override { return "m-123"; }
  std::string address() const override { return "http://127.0.0.1:5050"; }
  uint32_t agent_count() const override { return 1; }
  uint32_t framework_count() const override { return 1; }
  std::vector<MasterEntry> list_agents() const override { return {{"a-1", "node0", "REACHABLE"}}; }
  std::vector<MasterEntry> list_frameworks() const override {
    return {{"fw-1", "services", "ACTIVE"}};
  }
};

// The daemon side: a bus connection, the two objects, on an io_context in its own thread.
class Daemon {
 public:
  explicit Daemon(const std::string& address) {
    ::setenv("DBUS_SYSTEM_BUS_ADDRESS", address.c_str(), 1);
    auto b = Bus::open_system(io_, "test-daemon");
    EXPECT_TRUE(b.ok()) << (b.ok() ? "" : b.error().message());
    if (!b.ok()) return;
    bus_ = std::move(*b);
    auto names = bus_->request_name(kAgentBusName);
    EXPECT_TRUE(names.ok()) << (names.ok() ? "" : names.error().message());
    names = bus_->request_name(kMasterBusName);
    EXPECT_TRUE(names.ok()) << (names.ok() ? "" : names.error().message());
    auto a = Agent1Service::start(*bus_, agent_);
    EXPECT_TRUE(a.ok());
    if (a.ok()) agent1_ = std::move(*a);
    auto m = Master1Service::start(*bus_, master_);
    EXPECT_TRUE(m.ok());
    if (m.ok()) master1_ = std::move(*m);
    work_ = std::thread([this] {
      auto guard = boost::asio::make_work_guard(io_);
      io_.run();
    });
  }
  ~Daemon() {
    boost::asio::post(io_, [this] {
      agent1_.reset();
      master1_.reset();
      bus_.reset();
      io_.stop();
    });
    if (work_.joinable()) work_.join();
  }
  template <typename F>
  void on_loop(F f) {
    if (!work_.joinable()) {  // set-up failed (reported above): do not wait for a loop
      ADD_FAILURE() << "the test daemon's loop is not running";
      return;
    }
    std::promise<void> done;
    boost::asio::post(io_, [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }

  boost::asio::io_context io_;
  std::unique_ptr<Bus> bus_;
  FakeAgent agent_;
  FakeMaster master_;
  std::unique_ptr<Agent1Service> agent1_;
  std::unique_ptr<Master1Service> master1_;
  std::thread work_;
};

std::vector<std::string> busctl(const PrivateBus& bus, std::vector<std::string> args,
                                bool as_nobody = false) {
  std::vector<std::string> argv;
  if (as_nobody) {
    argv = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"};
  }
  argv.push_back("busctl");
  argv.push_back("--address=" + bus.address());
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

TEST(DbusRoot, AgentObjectIntrospectsAndAnswersRoot) {
  PrivateBus bus(testing::kPermissivePolicy);
  ASSERT_TRUE(bus.running()) << "dbus-daemon (package dbus) did not start";
  Daemon d(bus.address());

  CommandResult r = run_command(
      busctl(bus, {"introspect", "org.corral.Agent1", "/org/corral/Agent1", "org.corral.Agent1"}));
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* member : {".KillTask", ".ListTasks", ".Drain", ".ReloadPolicy", ".State",
                             ".Resources", ".TaskCount", ".TaskStateChanged", "emits-change"})
    EXPECT_NE(r.output.find(member), std::string::npos) << member << " missing in\n" << r.output;

  r = run_command(busctl(bus, {"get-property", "org.corral.Agent1", "/org/corral/Agent1",
                               "org.corral.Agent1", "TaskCount", "State"}));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "u 2\ns \"registered\"\n");

  r = run_command(busctl(
      bus, {"call", "org.corral.Agent1", "/org/corral/Agent1", "org.corral.Agent1", "ListTasks"}));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output,
            "a(ssss) 2 \"web-1\" \"fw-1\" \"TASK_RUNNING\" \"c1\" \"batch-7\" \"fw-2\" "
            "\"TASK_STAGING\" \"c2\"\n");

  r = run_command(busctl(bus, {"call", "org.corral.Agent1", "/org/corral/Agent1",
                               "org.corral.Agent1", "KillTask", "s", "web-1"}));
  EXPECT_EQ(r.status, 0) << r.output;
  d.on_loop([&] { EXPECT_EQ(d.agent_.killed_, std::vector<std::string>{"web-1"}); });

  r = run_command(busctl(bus, {"call", "org.corral.Agent1", "/org/corral/Agent1",
                               "org.corral.Agent1", "KillTask", "s", "nope"}));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("no task nope on this agent"), std::string::npos) << r.output;

  r = run_command(busctl(bus, {"call", "org.corral.Agent1", "/org/corral/Agent1",
                               "org.corral.Agent1", "ReloadPolicy"}));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("10-bad.toml:3: unknown key 'prot'"), std::string::npos) << r.output;

  r = run_command(busctl(bus, {"call", "org.corral.Agent1", "/org/corral/Agent1",
                               "org.corral.Agent1", "Drain", "u", "60"}));
  EXPECT_EQ(r.status, 0) << r.output;
  d.on_loop([&] { EXPECT_EQ(d.agent_.drained_, 60); });
  r = run_command(busctl(bus, {"get-property", "org.corral.Agent1", "/org/corral/Agent1",
                               "org.corral.Agent1", "State"}));
  EXPECT_EQ(r.output, "s \"draining\"\n");
}

TEST(DbusRoot, NobodyReadsPropertiesButTheDaemonRefusesItsMethodCalls) {
  PrivateBus bus(testing::kPermissivePolicy);  // the bus lets everything through
  ASSERT_TRUE(bus.running()) << "dbus-daemon (package dbus) did not start";
  Daemon d(bus.address());

  CommandResult r = run_command(busctl(
      bus,
      {"get-property", "org.corral.Agent1", "/org/corral/Agent1", "org.corral.Agent1", "TaskCount"},
      true));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "u 2\n");

  // busctl shows AccessDenied as a bare "Access denied"; dbus-send prints the daemon's message.
  auto dbus_send = [&](const std::string& dest, const std::string& path, const std::string& method,
                       std::vector<std::string> args) {
    std::vector<std::string> argv = {
        "setpriv",   "--reuid=65534",          "--regid=65534", "--clear-groups", "--",
        "dbus-send", "--bus=" + bus.address(), "--print-reply", "--dest=" + dest, path,
        method};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv);
  };
  r = dbus_send("org.corral.Agent1", "/org/corral/Agent1", "org.corral.Agent1.KillTask",
                {"string:web-1"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("org.freedesktop.DBus.Error.AccessDenied: only root and members of "
                          "the group 'corral' may call KillTask (uid 65534 is neither)"),
            std::string::npos)
      << r.output;
  r = dbus_send("org.corral.Master1", "/org/corral/Master1", "org.corral.Master1.ListAgents", {});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("may call ListAgents"), std::string::npos) << r.output;
  d.on_loop([&] { EXPECT_TRUE(d.agent_.killed_.empty()); });
}

TEST(DbusRoot, ShippedPolicyFilesLetRootCallAndNobodyOnlyRead) {
  std::string policy = testing::kSystemBusBasePolicy;
  policy +=
      std::string("  <include>") + CORRAL_DBUS_POLICY_DIR + "/org.corral.Agent1.conf</include>\n";
  policy +=
      std::string("  <include>") + CORRAL_DBUS_POLICY_DIR + "/org.corral.Master1.conf</include>\n";
  PrivateBus bus(policy);
  ASSERT_TRUE(bus.running()) << "dbus-daemon (package dbus) did not start";
  Daemon d(bus.address());  // root owns both names under the shipped policy

  CommandResult r = run_command(busctl(bus, {"call", "org.corral.Agent1", "/org/corral/Agent1",
                                             "org.corral.Agent1", "KillTask", "s", "web-1"}));
  EXPECT_EQ(r.status, 0) << r.output;

  r = run_command(busctl(bus,
                         {"call", "org.corral.Agent1", "/org/corral/Agent1", "org.corral.Agent1",
                          "KillTask", "s", "batch-7"},
                         true));
  EXPECT_NE(r.status, 0);
  // Refused by dbus-daemon itself, before the agent sees it.
  EXPECT_NE(r.output.find("Access denied"), std::string::npos) << r.output;
  d.on_loop([&] { EXPECT_EQ(d.agent_.killed_, std::vector<std::string>{"web-1"}); });

  r = run_command(busctl(bus,
                         {"get-property", "org.corral.Master1", "/org/corral/Master1",
                          "org.corral.Master1", "AgentCount", "Leader"},
                         true));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "u 1\ns \"m-123\"\n");
  r = run_command(busctl(bus, {"introspect", "org.corral.Master1", "/org/corral/Master1"}, true));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(".ListFrameworks"), std::string::npos) << r.output;

  r = run_command(busctl(bus, {"call", "org.corral.Master1", "/org/corral/Master1",
                               "org.corral.Master1", "ListFrameworks"}));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "a(sss) 1 \"fw-1\" \"services\" \"ACTIVE\"\n");

  // nobody cannot take the agent's name.
  r = run_command({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "busctl",
                   "--address=" + bus.address(), "call", "org.freedesktop.DBus",
                   "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName", "su",
                   "org.corral.Agent1", "0"});
  EXPECT_NE(r.status, 0) << r.output;
}

TEST(DbusRoot, SignalsAndPropertiesChangedReachSubscribers) {
  PrivateBus bus(testing::kPermissivePolicy);
  ASSERT_TRUE(bus.running()) << "dbus-daemon (package dbus) did not start";
  Daemon d(bus.address());

  // A subscriber on its own connection, on the daemon's loop (any loop would do).
  std::mutex mu;
  std::vector<std::string> seen;
  std::unique_ptr<Bus> client;
  SlotPtr s1, s2;
  struct Ctx {
    std::mutex* mu;
    std::vector<std::string>* seen;
  } ctx{&mu, &seen};
  d.on_loop([&] {
    auto c = Bus::open_address(d.io_, bus.address(), "test-client");
    ASSERT_TRUE(c.ok()) << c.error().message();
    client = std::move(*c);
    sd_bus_slot* slot = nullptr;
    ASSERT_GE(sd_bus_match_signal(
                  client->get(), &slot, "org.corral.Agent1", "/org/corral/Agent1",
                  "org.corral.Agent1", "TaskStateChanged",
                  [](sd_bus_message* m, void* u, sd_bus_error*) -> int {
                    const char *id, *state, *reason;
                    if (sd_bus_message_read(m, "sss", &id, &state, &reason) < 0) return 0;
                    auto* c = static_cast<Ctx*>(u);
                    std::lock_guard lock(*c->mu);
                    c->seen->push_back(std::string(id) + " " + state + " " + reason);
                    return 0;
                  },
                  &ctx),
              0);
    s1.reset(slot);
    ASSERT_GE(sd_bus_match_signal(
                  client->get(), &slot, "org.corral.Agent1", "/org/corral/Agent1",
                  "org.freedesktop.DBus.Properties", "PropertiesChanged",
                  [](sd_bus_message* m, void* u, sd_bus_error*) -> int {
                    const char* iface;
                    if (sd_bus_message_read(m, "s", &iface) < 0) return 0;
                    // a{sv} of values; invalidated names follow. Record the names.
                    std::string names;
                    if (sd_bus_message_enter_container(m, 'a', "{sv}") >= 0) {
                      while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                        const char* name;
                        sd_bus_message_read(m, "s", &name);
                        names += std::string(" ") + name;
                        sd_bus_message_skip(m, "v");
                        sd_bus_message_exit_container(m);
                      }
                      sd_bus_message_exit_container(m);
                    }
                    auto* c = static_cast<Ctx*>(u);
                    std::lock_guard lock(*c->mu);
                    c->seen->push_back(std::string("changed ") + iface + ":" + names);
                    return 0;
                  },
                  &ctx),
              0);
    s2.reset(slot);
    client->kick();
  });
  // Let the matches reach the bus daemon (AddMatch is asynchronous), then emit.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  d.on_loop([&] {
    d.agent1_->task_state_changed("web-1", "TASK_KILLED", "REASON_TASK_KILLED_DURING_LAUNCH");
    d.agent_.tasks_.pop_back();
    d.agent_.state_ = "draining";
    d.agent1_->refresh_properties();
    d.agent1_->refresh_properties();  // nothing changed since: no second signal
  });
  for (int i = 0; i < 100; ++i) {
    {
      std::lock_guard lock(mu);
      if (seen.size() >= 2) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(seen, (std::vector<std::string>{"web-1 TASK_KILLED REASON_TASK_KILLED_DURING_LAUNCH",
                                              "changed org.corral.Agent1: State TaskCount"}));
  }
  d.on_loop([&] {
    s1.reset();
    s2.reset();
    client.reset();
  });
}

}  // namespace
}  // namespace corral::dbus

namespace corral::dbus {
namespace {

// Publish and browse `_corral-master._tcp` through a real avahi-daemon on loopback.
TEST(DbusAvahiRoot, AgentFindsThePublishedMasterAndFollowsItWhenItMoves) {
  PrivateBus bus(testing::kPermissivePolicy);
  ASSERT_TRUE(bus.running()) << "dbus-daemon (package dbus) did not start";
  testing::AvahiDaemon avahi(bus);
  ASSERT_TRUE(avahi.wait_running()) << "avahi-daemon (package avahi-daemon) did not start:\n"
                                    << avahi.log();

  boost::asio::io_context io;
  auto master_bus = Bus::open_address(io, bus.address(), "test-master");
  auto agent_bus = Bus::open_address(io, bus.address(), "test-agent");
  ASSERT_TRUE(master_bus.ok() && agent_bus.ok());

  std::vector<std::string> seen;
  AvahiMasterLocator locator(**agent_bus);
  auto started = locator.start([&](const std::string& a) { seen.push_back(a); });
  ASSERT_TRUE(started.ok()) << started.error().message();

  auto run_until = [&](size_t n) {
    for (int i = 0; i < 100 && seen.size() < n; ++i) io.run_for(std::chrono::milliseconds(50));
  };
  auto a = AvahiPublisher::publish(**master_bus, "corral-master on a", kMasterServiceType, 5050,
                                   {"id=m-a"});
  ASSERT_TRUE(a.ok()) << a.error().message();
  run_until(1);
  ASSERT_EQ(seen, std::vector<std::string>{"http://127.0.0.1:5050"}) << avahi.log();

  // A second master appears: the agent stays with the first.
  auto b = AvahiPublisher::publish(**master_bus, "corral-master on b", kMasterServiceType, 5060,
                                   {"id=m-b"});
  ASSERT_TRUE(b.ok()) << b.error().message();
  io.run_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(seen.size(), 1u);

  // The first goes away: the agent follows the second.
  a->reset();
  run_until(2);
  ASSERT_EQ(seen, (std::vector<std::string>{"http://127.0.0.1:5050", "http://127.0.0.1:5060"}));

  // None left: the locator says so.
  b->reset();
  run_until(3);
  EXPECT_EQ(seen, (std::vector<std::string>{"http://127.0.0.1:5050", "http://127.0.0.1:5060", ""}));
}

// avahi-daemon starts after the master and the agent, and is restarted later (a package upgrade):
// the master publishes when it appears and again after the restart; the agent browses again.
TEST(DbusAvahiRoot, MasterAndAgentWaitForAvahiAndSurviveItsRestart) {
  PrivateBus bus(testing::kPermissivePolicy);
  ASSERT_TRUE(bus.running()) << "dbus-daemon (package dbus) did not start";
  boost::asio::io_context io;
  auto master_bus = Bus::open_address(io, bus.address(), "test-master");
  auto agent_bus = Bus::open_address(io, bus.address(), "test-agent");
  ASSERT_TRUE(master_bus.ok() && agent_bus.ok());

  std::vector<std::string> seen;
  AvahiMasterLocator locator(**agent_bus);
  auto started = locator.start([&](const std::string& a) { seen.push_back(a); }, true);
  ASSERT_TRUE(started.ok()) << started.error().message();
  EXPECT_NE(locator.absent_reason().find("avahi-daemon is not on the system bus"),
            std::string::npos)
      << locator.absent_reason();
  auto a = AvahiPublisher::publish(**master_bus, "corral-master on a", kMasterServiceType, 5050,
                                   {"id=m-a"}, true);
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_FALSE((*a)->published());
  // Without the wait, no avahi-daemon is still an error.
  EXPECT_FALSE(AvahiPublisher::publish(**master_bus, "x", kMasterServiceType, 1, {}, false).ok());

  auto run_until = [&](auto done) {
    for (int i = 0; i < 200 && !done(); ++i) io.run_for(std::chrono::milliseconds(50));
  };
  {
    testing::AvahiDaemon avahi(bus);
    ASSERT_TRUE(avahi.wait_running()) << avahi.log();
    run_until([&] { return !seen.empty(); });
    ASSERT_EQ(seen, std::vector<std::string>{"http://127.0.0.1:5050"}) << avahi.log();
    EXPECT_TRUE((*a)->published());
  }  // avahi-daemon stops
  run_until([&] { return !(*a)->published(); });
  EXPECT_FALSE((*a)->published());
  EXPECT_EQ(seen.size(), 1u) << "the agent keeps its master while avahi-daemon is away";

  testing::AvahiDaemon again(bus);
  ASSERT_TRUE(again.wait_running()) << again.log();
  run_until([&] { return (*a)->published(); });
  EXPECT_TRUE((*a)->published()) << again.log();
  // The new browser works: a second master appears, the first goes, the agent follows.
  auto b = AvahiPublisher::publish(**master_bus, "corral-master on b", kMasterServiceType, 5060,
                                   {"id=m-b"});
  ASSERT_TRUE(b.ok()) << b.error().message();
  io.run_for(std::chrono::milliseconds(1000));
  a->reset();
  run_until([&] { return seen.size() >= 2; });
  EXPECT_EQ(seen, (std::vector<std::string>{"http://127.0.0.1:5050", "http://127.0.0.1:5060"}))
      << again.log();
}

TEST(DbusAvahiRoot, WithoutAvahiDaemonTheErrorSaysWhatToDo) {
  PrivateBus bus(testing::kPermissivePolicy);
  ASSERT_TRUE(bus.running()) << "dbus-daemon (package dbus) did not start";
  boost::asio::io_context io;
  auto b = Bus::open_address(io, bus.address(), "test-agent");
  ASSERT_TRUE(b.ok());
  AvahiMasterLocator locator(**b);
  auto r = locator.start([](const std::string&) {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("avahi-daemon is not on the system bus"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("static master address"), std::string::npos);
}

}  // namespace
}  // namespace corral::dbus
