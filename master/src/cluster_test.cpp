// corral-master end to end on loopback: a real master, simulated agents speaking the agent link
// and simulated frameworks speaking the scheduler API (master/src/sim.cpp).
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/master/master.hpp"
#include "corral/master/sim.hpp"
#include "corral/v1/master.pb.h"

namespace corral::master {
namespace {

using namespace std::chrono_literals;
using v1::scheduler::Call;
using v1::scheduler::Event;

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

MasterConfig fast_config(const std::filesystem::path& dir, const std::string& listen) {
  MasterConfig cfg;
  cfg.listen = listen;
  cfg.work_dir = dir;
  cfg.agent_ping_timeout = 100ms;
  cfg.max_agent_ping_timeouts = 3;
  cfg.agent_reregister_timeout = 5s;
  cfg.agent_removal_timeout = 600ms;
  cfg.framework_heartbeat_interval = 1s;
  cfg.allocation_interval = 100ms;
  cfg.allocation_batch_delay = 5ms;
  return cfg;
}

class MasterProcess {
 public:
  MasterProcess(MasterConfig cfg) {
    auto m = Master::start(io_, std::move(cfg));
    if (!m) {
      error_ = m.error().message();
      return;
    }
    master_ = std::move(*m);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~MasterProcess() { shutdown(); }
  void shutdown() {
    if (!master_) return;
    boost::asio::post(io_, [this] { master_->stop([this] { io_.stop(); }); });
    thread_.join();
    master_.reset();
  }
  Master* operator->() { return master_.get(); }
  const std::string& error() const { return error_; }

 private:
  boost::asio::io_context io_;
  std::unique_ptr<Master> master_;
  std::thread thread_;
  std::string error_;
};

// Simulated agents and frameworks share one io_context on a thread of their own.
class SimLoop {
 public:
  SimLoop() : guard_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~SimLoop() {
    guard_.reset();
    io_.stop();
    thread_.join();
  }
  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::thread thread_;
};

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create();
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(*d));
    start_master("127.0.0.1:0");
  }
  void start_master(const std::string& listen) {
    master_ = std::make_unique<MasterProcess>(fast_config(dir_->path() / "master", listen));
    ASSERT_TRUE(master_->error().empty()) << master_->error();
    address_ = (*master_)->address();
    endpoint_ = *http::parse_endpoint(address_);
  }
  void restart_master() {
    master_->shutdown();
    master_.reset();
    start_master(endpoint_.to_string());
  }
  http::HttpClient client() { return *http::HttpClient::create(address_); }
  std::unique_ptr<sim::Agent> agent(const std::string& host, sim::AgentOptions o = {}) {
    o.hostname = host;
    auto a = std::make_unique<sim::Agent>(loop_.io(), endpoint_, o);
    return a;
  }
  std::unique_ptr<sim::Framework> framework(sim::FrameworkOptions o = {}) {
    return std::make_unique<sim::Framework>(loop_.io(), endpoint_, o);
  }
  nlohmann::json op(const std::string& body, http::Status expect = http::Status::ok) {
    auto c = client();
    auto r = c.post("/api/v1", body);
    EXPECT_TRUE(r.ok());
    if (!r.ok()) return {};
    EXPECT_EQ(r->result(), expect) << r->body();
    if (r->body().empty()) return {};
    return nlohmann::json::parse(r->body(), nullptr, false);
  }
  static size_t count(const std::vector<Event>& evs, Event::Type t) {
    return std::count_if(evs.begin(), evs.end(), [t](const Event& e) { return e.type() == t; });
  }
  static std::vector<v1::Offer> offers(const sim::Framework& f) {
    std::vector<v1::Offer> out;
    for (const auto& e : f.events()) {
      if (e.type() == Event::OFFERS) {
        for (const auto& o : e.offers().offers()) out.push_back(o);
      }
    }
    return out;
  }
  static std::vector<v1::TaskStatus> updates(const sim::Framework& f) {
    std::vector<v1::TaskStatus> out;
    for (const auto& e : f.events()) {
      if (e.type() == Event::UPDATE) out.push_back(e.update().status());
    }
    return out;
  }
  static size_t agent_events(const sim::Agent& a, v1::internal::AgentEvent::Type t) {
    auto evs = a.events();
    return std::count_if(evs.begin(), evs.end(), [t](const auto& e) { return e.type() == t; });
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<MasterProcess> master_;
  std::string address_;
  http::Endpoint endpoint_;
  SimLoop loop_;
};

// ---------------------------------------------------------------------------------------------
// Registry and agent link

TEST_F(ClusterTest, AgentRegistersIsPersistedAndReregistersAfterAMasterRestart) {
  auto a = agent("host-a");
  a->connect();
  ASSERT_TRUE(eventually([&] { return !a->id().empty(); })) << a->last_error();
  std::string id = a->id();
  EXPECT_EQ(id.rfind((*master_)->master_id() + "-S", 0), 0u) << id;
  auto evs = a->events();
  ASSERT_FALSE(evs.empty());
  EXPECT_EQ(evs[0].type(), v1::internal::AgentEvent::REGISTERED);
  EXPECT_DOUBLE_EQ(evs[0].registered().heartbeat_interval_seconds(), 0.1);
  // Pings arrive and are answered.
  EXPECT_TRUE(eventually([&] { return agent_events(*a, v1::internal::AgentEvent::PING) >= 2; }));

  auto agents = op(R"({"type":"GET_AGENTS"})");
  ASSERT_EQ(agents["get_agents"]["agents"].size(), 1u) << agents.dump();
  EXPECT_EQ(agents["get_agents"]["agents"][0]["agent_info"]["hostname"], "host-a");
  EXPECT_EQ(agents["get_agents"]["agents"][0]["agent_info"]["id"]["value"], id);

  a->disconnect();
  restart_master();
  // The restarted master expects it back.
  agents = op(R"({"type":"GET_AGENTS"})");
  ASSERT_EQ(agents["get_agents"]["recovered_agents"].size(), 1u) << agents.dump();
  EXPECT_EQ(agents["get_agents"]["recovered_agents"][0]["id"]["value"], id);
  a->connect();
  ASSERT_TRUE(eventually([&] {
    return agent_events(*a, v1::internal::AgentEvent::REREGISTERED) == 1;
  })) << a->last_error();
  EXPECT_EQ(a->id(), id);
  agents = op(R"({"type":"GET_AGENTS"})");
  ASSERT_EQ(agents["get_agents"]["agents"].size(), 1u) << agents.dump();
  EXPECT_TRUE(agents["get_agents"]["agents"][0]["active"].get<bool>());
}

TEST_F(ClusterTest, AgentLinkErrorsAreMesosStyleAndTheMasterStaysUp) {
  auto c = client();
  auto post = [&](const std::string& body, const std::string& ct, const std::string& sid = "") {
    auto req = http::make_request(http::Verb::post, "/api/v1/agent", body, ct);
    if (!sid.empty()) req.set("Corral-Agent-Stream-Id", sid);
    auto r = c.request(std::move(req));
    EXPECT_TRUE(r.ok());
    return *r;
  };
  auto r = post("{not json", "application/json");
  EXPECT_EQ(r.result(), http::Status::bad_request);
  EXPECT_NE(r.body().find("cannot parse the body as an AgentCall"), std::string::npos) << r.body();
  r = post(R"({"type":"PONG"})", "text/plain");
  EXPECT_EQ(r.result(), http::Status::unsupported_media_type);
  r = post(R"({"type":"PONG"})", "application/json");
  EXPECT_EQ(r.result(), http::Status::bad_request);
  EXPECT_NE(r.body().find("agent_id is required"), std::string::npos) << r.body();
  r = post(R"({"type":"PONG","agent_id":{"value":"nope"}})", "application/json");
  EXPECT_EQ(r.result(), http::Status::not_found);

  auto a = agent("host-a");
  a->connect();
  ASSERT_TRUE(eventually([&] { return !a->id().empty(); }));
  r = post(R"({"type":"PONG","agent_id":{"value":")" + a->id() + R"("}})", "application/json",
           "wrong-stream");
  EXPECT_EQ(r.result(), http::Status::forbidden);
  EXPECT_NE(r.body().find("stale"), std::string::npos) << r.body();
  // REGISTER with an id the master knows is refused on the stream.
  auto req = http::make_request(
      http::Verb::post, "/api/v1/agent",
      R"({"type":"REGISTER","register":{"agent_info":{"hostname":"x","id":{"value":")" + a->id() +
          R"("}}}})");
  std::string body;
  auto end = c.stream(std::move(req), {.on_head = nullptr,
                                       .on_data =
                                           [&](std::string_view d) {
                                             body.append(d);
                                             return true;
                                           },
                                       .on_end = nullptr});
  EXPECT_NE(body.find("ERROR"), std::string::npos) << body;
  EXPECT_NE(body.find("must REREGISTER"), std::string::npos) << body;
  auto health = c.get("/health");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->result(), http::Status::ok);
}

TEST_F(ClusterTest, SilentAgentBecomesUnreachableThenGoneAndFrameworksAreTold) {
  sim::AgentOptions quiet;
  auto a = agent("host-a", quiet);
  a->connect();
  ASSERT_TRUE(eventually([&] { return !a->id().empty(); }));
  sim::FrameworkOptions fo;
  fo.partition_aware = true;
  auto f = framework(fo);
  f->on_event([](sim::Framework& fw, const Event& e) {
    if (e.type() == Event::OFFERS && e.offers().offers_size() > 0) {
      fw.call(sim::Framework::launch(e.offers().offers(0), "t1", 1, 128));
    }
  });
  f->subscribe();
  ASSERT_TRUE(eventually([&] {
    for (const auto& u : updates(*f)) {
      if (u.state() == v1::TASK_RUNNING) return true;
    }
    return false;
  })) << f->last_error();
  // The agent stops answering pings (its stream stays open).
  a->disconnect();
  ASSERT_TRUE(eventually([&] {
    for (const auto& u : updates(*f)) {
      if (u.state() == v1::TASK_UNREACHABLE) return true;
    }
    return false;
  }));
  ASSERT_TRUE(eventually([&] {
    for (const auto& u : updates(*f)) {
      if (u.state() == v1::TASK_GONE) return true;
    }
    return false;
  }));
  EXPECT_GE(count(f->events(), Event::FAILURE), 1u);
  // A GONE agent may not come back with its id.
  a->connect();
  ASSERT_TRUE(eventually([&] { return agent_events(*a, v1::internal::AgentEvent::ERROR) == 1; }));
  EXPECT_NE(a->last_error().find("GONE"), std::string::npos) << a->last_error();
}

TEST_F(ClusterTest, NonPartitionAwareFrameworksGetTaskLost) {
  auto a = agent("host-a");
  a->connect();
  auto f = framework();
  f->on_event([](sim::Framework& fw, const Event& e) {
    if (e.type() == Event::OFFERS && e.offers().offers_size() > 0) {
      fw.call(sim::Framework::launch(e.offers().offers(0), "t1", 1, 128));
    }
  });
  f->subscribe();
  ASSERT_TRUE(eventually([&] { return !updates(*f).empty(); }));
  a->disconnect();
  ASSERT_TRUE(eventually([&] {
    for (const auto& u : updates(*f)) {
      if (u.state() == v1::TASK_LOST) return true;
    }
    return false;
  }));
  for (const auto& u : updates(*f)) {
    EXPECT_NE(u.state(), v1::TASK_UNREACHABLE);
    EXPECT_NE(u.state(), v1::TASK_GONE);
  }
}

// ---------------------------------------------------------------------------------------------
// Scheduler API

TEST_F(ClusterTest, FrameworkLaunchesATaskAndAcknowledgementsReachTheAgent) {
  auto a = agent("host-a");
  a->connect();
  auto f = framework();
  f->on_event([](sim::Framework& fw, const Event& e) {
    if (e.type() == Event::OFFERS) {
      for (const auto& o : e.offers().offers()) fw.call(sim::Framework::launch(o, "web-1", 1, 256));
    }
    if (e.type() == Event::UPDATE && !e.update().status().uuid().empty()) {
      Call ack;
      ack.set_type(Call::ACKNOWLEDGE);
      *ack.mutable_acknowledge()->mutable_agent_id() = e.update().status().agent_id();
      *ack.mutable_acknowledge()->mutable_task_id() = e.update().status().task_id();
      ack.mutable_acknowledge()->set_uuid(e.update().status().uuid());
      fw.call(ack);
    }
  });
  f->subscribe();
  ASSERT_TRUE(eventually([&] { return a->acknowledged() == 1; })) << f->last_error();
  auto evs = f->events();
  ASSERT_GE(evs.size(), 3u);
  EXPECT_EQ(evs[0].type(), Event::SUBSCRIBED);
  EXPECT_EQ(evs[0].subscribed().framework_id().value(), f->id());
  auto tasks = a->tasks();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks.begin()->second.task_id().value(), "web-1");
  for (int s : f->statuses()) EXPECT_EQ(s, 202);

  auto t = op(R"({"type":"GET_TASKS"})");
  ASSERT_EQ(t["get_tasks"]["tasks"].size(), 1u) << t.dump();
  EXPECT_EQ(t["get_tasks"]["tasks"][0]["state"], "TASK_RUNNING");
  // The unused part of the offer went back: the agent's allocation is exactly the task's.
  auto state = op(R"({"type":"GET_STATE"})");
  auto c = client();
  auto st = c.get("/state");
  ASSERT_TRUE(st.ok());
  auto sj = nlohmann::json::parse(st->body());
  ASSERT_EQ(sj["frameworks"].size(), 1u);
  EXPECT_EQ(sj["frameworks"][0]["tasks"].size(), 1u);
  EXPECT_DOUBLE_EQ(sj["frameworks"][0]["used_resources"]["cpus"].get<double>(), 1.0);
  EXPECT_EQ(sj["slaves"].size(), 1u);
  auto snap = c.get("/metrics/snapshot");
  ASSERT_TRUE(snap.ok());
  auto mj = nlohmann::json::parse(snap->body());
  EXPECT_EQ(mj["master/tasks_running"], 1);
  EXPECT_EQ(mj["master/slaves_active"], 1);
}

// Ports: offered as ranges, a task's ports are taken from the offer and are not offered to
// anyone else while it runs; GET_STATE (streamed) is the same message in JSON and protobuf.
TEST_F(ClusterTest, PortsAreOfferedAndATasksPortsAreNotOfferedAgain) {
  sim::AgentOptions ao;
  ao.ports = {{31000, 31009}};
  auto a = agent("host-ports", ao);
  a->connect();
  auto ports_of = [](const google::protobuf::RepeatedPtrField<v1::Resource>& rs) {
    std::string out;
    for (const auto& r : rs) {
      if (r.name() != "ports") continue;
      for (const auto& range : r.ranges().range()) {
        out += std::to_string(range.begin()) + "-" + std::to_string(range.end()) + " ";
      }
    }
    return out;
  };
  auto f = framework();
  auto launched = std::make_shared<bool>(false);
  f->on_event([launched](sim::Framework& fw, const Event& e) {
    if (e.type() == Event::OFFERS) {
      for (const auto& o : e.offers().offers()) {
        if (*launched) {  // the rest of the agent is for the second framework
          fw.call(sim::Framework::decline(o, 3600));
          continue;
        }
        *launched = true;
        Call c = sim::Framework::launch(o, "web-ports", 1, 256);
        auto* ti =
            c.mutable_accept()->mutable_operations(0)->mutable_launch()->mutable_task_infos(0);
        auto* r = ti->add_resources();
        r->set_name("ports");
        r->set_type(v1::Value::RANGES);
        auto* range = r->mutable_ranges()->add_range();
        range->set_begin(31000);
        range->set_end(31001);
        fw.call(c);
      }
    }
    if (e.type() == Event::UPDATE && !e.update().status().uuid().empty()) {
      Call ack;
      ack.set_type(Call::ACKNOWLEDGE);
      *ack.mutable_acknowledge()->mutable_agent_id() = e.update().status().agent_id();
      *ack.mutable_acknowledge()->mutable_task_id() = e.update().status().task_id();
      ack.mutable_acknowledge()->set_uuid(e.update().status().uuid());
      fw.call(ack);
    }
  });
  f->subscribe();
  ASSERT_TRUE(eventually([&] { return a->acknowledged() == 1; })) << f->last_error();
  auto first = offers(*f);
  ASSERT_GE(first.size(), 1u);
  EXPECT_EQ(ports_of(first[0].resources()), "31000-31009 ");
  auto tasks = a->tasks();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(ports_of(tasks.begin()->second.resources()), "31000-31001 ");

  // A second framework is offered the rest of the agent: the other eight ports.
  auto g = framework();
  g->subscribe();
  ASSERT_TRUE(eventually([&] { return !offers(*g).empty(); })) << g->last_error();
  EXPECT_EQ(ports_of(offers(*g)[0].resources()), "31002-31009 ");

  // GET_STATE: the streamed JSON is exactly to_json() of the protobuf answer.
  auto c = client();
  auto js = c.post("/api/v1", R"({"type":"GET_STATE"})");
  ASSERT_TRUE(js.ok());
  http::Request req = http::make_request(http::Verb::post, "/api/v1", R"({"type":"GET_STATE"})",
                                         "application/json");
  req.set(http::Field::accept, "application/x-protobuf");
  auto pb = c.request(std::move(req));
  ASSERT_TRUE(pb.ok());
  ASSERT_EQ(pb->result(), http::Status::ok);
  v1::master::Response from_pb;
  ASSERT_TRUE(parse_binary(pb->body(), &from_pb).ok());
  EXPECT_EQ(to_json(from_pb), js->body());
  ASSERT_EQ(from_pb.get_state().get_tasks().tasks_size(), 1);
  EXPECT_EQ(ports_of(from_pb.get_state().get_tasks().tasks(0).resources()), "31000-31001 ");
  ASSERT_EQ(from_pb.get_state().get_agents().agents_size(), 1);
  const auto& agent_state = from_pb.get_state().get_agents().agents(0);
  EXPECT_EQ(ports_of(agent_state.total_resources()), "31000-31009 ");
  EXPECT_EQ(ports_of(agent_state.offered_resources()), "31002-31009 ");
  EXPECT_EQ(ports_of(agent_state.allocated_resources()), "31000-31001 ");
  // GET_TASKS likewise, and /state shows the ports the Mesos way.
  auto jt = c.post("/api/v1", R"({"type":"GET_TASKS"})");
  ASSERT_TRUE(jt.ok());
  v1::master::Response tasks_pb;
  ASSERT_TRUE(parse_json(jt->body(), &tasks_pb).ok());
  EXPECT_EQ(to_json(tasks_pb), jt->body());
  auto st = c.get("/state");
  ASSERT_TRUE(st.ok());
  auto sj = nlohmann::json::parse(st->body());
  nlohmann::json task_json;
  for (const auto& fw : sj["frameworks"]) {
    if (fw["tasks"].size() == 1) task_json = fw["tasks"][0];
  }
  EXPECT_EQ(task_json["resources"]["ports"], "[31000-31001]") << st->body();
  EXPECT_EQ(task_json["id"], "web-ports");
  EXPECT_EQ(task_json["state"], "TASK_RUNNING");

  // The master reuses each task's and agent's JSON between reads (until they change): after
  // the task finishes, GET_STATE shows the new state and the freed ports, and is still exactly
  // the protobuf answer's JSON.
  const std::string fw_id = tasks.begin()->first.first;
  a->send_status(fw_id, "web-ports", v1::TASK_FINISHED);
  ASSERT_TRUE(eventually([&] { return a->acknowledged() == 2; })) << f->last_error();
  auto js2 = c.post("/api/v1", R"({"type":"GET_STATE"})");
  ASSERT_TRUE(js2.ok());
  EXPECT_NE(js2->body(), js->body());
  http::Request req2 = http::make_request(http::Verb::post, "/api/v1", R"({"type":"GET_STATE"})",
                                          "application/json");
  req2.set(http::Field::accept, "application/x-protobuf");
  auto pb2 = c.request(std::move(req2));
  ASSERT_TRUE(pb2.ok());
  v1::master::Response from_pb2;
  ASSERT_TRUE(parse_binary(pb2->body(), &from_pb2).ok());
  EXPECT_EQ(to_json(from_pb2), js2->body());
  const auto& state2 = from_pb2.get_state();
  ASSERT_EQ(state2.get_tasks().completed_tasks_size(), 1) << js2->body();
  EXPECT_EQ(state2.get_tasks().completed_tasks(0).state(), v1::TASK_FINISHED);
  EXPECT_EQ(state2.get_tasks().tasks_size(), 0);
  ASSERT_EQ(state2.get_agents().agents_size(), 1);
  EXPECT_EQ(ports_of(state2.get_agents().agents(0).allocated_resources()), "") << js2->body();
}

TEST_F(ClusterTest, SchedulerApiErrorsAreMesosStyleAndTheMasterStaysUp) {
  auto c = client();
  auto post = [&](const std::string& body, const std::string& ct = "application/json",
                  const std::string& sid = "") {
    auto req = http::make_request(http::Verb::post, "/api/v1/scheduler", body, ct);
    if (!sid.empty()) req.set("Mesos-Stream-Id", sid);
    auto r = c.request(std::move(req));
    EXPECT_TRUE(r.ok());
    return *r;
  };
  auto r = post("{\"type\": ");
  EXPECT_EQ(r.result(), http::Status::bad_request);
  EXPECT_NE(r.body().find("Failed to parse body into Call"), std::string::npos) << r.body();
  r = post(R"({"type":"FLY_TO_THE_MOON"})");
  EXPECT_EQ(r.result(), http::Status::bad_request);
  EXPECT_NE(r.body().find("FLY_TO_THE_MOON"), std::string::npos) << r.body();
  r = post(R"({"framework_id":{"value":"x"}})");
  EXPECT_EQ(r.result(), http::Status::bad_request);
  EXPECT_NE(r.body().find("'type'"), std::string::npos) << r.body();
  r = post(R"({"type":"REVIVE","framework_id":{"value":"never-subscribed"}})", "application/json",
           "s");
  EXPECT_EQ(r.result(), http::Status::forbidden);
  EXPECT_EQ(r.body(), "Framework is not subscribed");
  r = post(R"({"type":"SUBSCRIBE"})", "application/xml");
  EXPECT_EQ(r.result(), http::Status::unsupported_media_type);
  r = post(std::string(9 << 20, ' '));
  EXPECT_EQ(r.result(), http::Status::payload_too_large);
  r = post(R"({"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n",
           "roles":["bad role"],"capabilities":[{"type":"MULTI_ROLE"}]}}})");
  EXPECT_EQ(r.result(), http::Status::bad_request);
  EXPECT_NE(r.body().find("Invalid role"), std::string::npos) << r.body();

  auto f = framework();
  f->subscribe();
  ASSERT_TRUE(eventually([&] { return !f->id().empty(); }));
  std::string call = R"({"type":"REVIVE","framework_id":{"value":")" + f->id() + R"("}})";
  r = post(call);
  EXPECT_EQ(r.result(), http::Status::bad_request);
  EXPECT_NE(r.body().find("Mesos-Stream-Id"), std::string::npos) << r.body();
  r = post(call, "application/json", "not-the-stream");
  EXPECT_EQ(r.result(), http::Status::bad_request);
  EXPECT_NE(r.body().find("didn't match"), std::string::npos) << r.body();
  r = post(R"({"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n"}}})",
           "application/json", "some-stream");
  EXPECT_EQ(r.result(), http::Status::bad_request);
  auto health = c.get("/health");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->result(), http::Status::ok);
}

TEST_F(ClusterTest, DeclineFiltersSuppressReviveKillReconcileMessageTeardown) {
  auto a = agent("host-a");
  a->connect();
  auto f = framework();
  f->subscribe();
  ASSERT_TRUE(eventually([&] { return offers(*f).size() == 1; }));
  // DECLINE with a long filter: no new offer even after several allocation cycles.
  f->call(sim::Framework::decline(offers(*f)[0], 3600));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(offers(*f).size(), 1u);
  // REVIVE clears filters: offered again.
  Call revive;
  revive.set_type(Call::REVIVE);
  f->call(revive);
  ASSERT_TRUE(eventually([&] { return offers(*f).size() == 2; }));
  // SUPPRESS, then decline: nothing more comes.
  Call suppress;
  suppress.set_type(Call::SUPPRESS);
  f->call(suppress);
  f->call(sim::Framework::decline(offers(*f)[1], 0));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(offers(*f).size(), 2u);
  f->call(revive);
  ASSERT_TRUE(eventually([&] { return offers(*f).size() == 3; }));
  // Launch, then KILL.
  f->call(sim::Framework::launch(offers(*f)[2], "t1", 1, 64));
  ASSERT_TRUE(eventually([&] { return updates(*f).size() == 1; }));
  Call kill;
  kill.set_type(Call::KILL);
  kill.mutable_kill()->mutable_task_id()->set_value("t1");
  f->call(kill);
  ASSERT_TRUE(eventually([&] {
    auto u = updates(*f);
    return !u.empty() && u.back().state() == v1::TASK_KILLED;
  }));
  // RECONCILE: explicit for a known and an unknown task, implicit for all.
  Call rec;
  rec.set_type(Call::RECONCILE);
  rec.mutable_reconcile()->add_tasks()->mutable_task_id()->set_value("t1");
  rec.mutable_reconcile()->add_tasks()->mutable_task_id()->set_value("nope");
  f->call(rec);
  ASSERT_TRUE(eventually([&] {
    auto u = updates(*f);
    return u.size() >= 4 && u[2].reason() == v1::TaskStatus::REASON_RECONCILIATION &&
           u[3].reason() == v1::TaskStatus::REASON_RECONCILIATION;
  }));
  auto u = updates(*f);
  EXPECT_EQ(u[2].state(), v1::TASK_KILLED);
  EXPECT_EQ(u[3].state(), v1::TASK_LOST);  // unknown, not partition aware
  EXPECT_TRUE(u[2].uuid().empty());        // reconciliation updates are not acknowledged
  // MESSAGE goes to the agent.
  Call msg;
  msg.set_type(Call::MESSAGE);
  msg.mutable_message()->mutable_agent_id()->set_value(a->id());
  msg.mutable_message()->mutable_executor_id()->set_value("e1");
  msg.mutable_message()->set_data("hello");
  f->call(msg);
  ASSERT_TRUE(eventually(
      [&] { return agent_events(*a, v1::internal::AgentEvent::FRAMEWORK_MESSAGE) == 1; }));
  // Bad calls on a subscribed framework: 400 with the missing field.
  Call bad_kill;
  bad_kill.set_type(Call::KILL);
  f->call(bad_kill);
  ASSERT_TRUE(eventually([&] {
    auto s = f->statuses();
    return std::find(s.begin(), s.end(), 400) != s.end();
  }));
  EXPECT_NE(f->last_error().find("kill.task_id"), std::string::npos) << f->last_error();
  // TEARDOWN: gone from the master, the agent is told to shut the framework down.
  Call td;
  td.set_type(Call::TEARDOWN);
  f->call(td);
  ASSERT_TRUE(eventually([&] {
    return op(R"({"type":"GET_FRAMEWORKS"})")["get_frameworks"]
        .value("frameworks", nlohmann::json::array())
        .empty();
  }));
}

TEST_F(ClusterTest, FrameworkFailoverKeepsTasksAndTheOldStreamIsClosed) {
  auto a = agent("host-a");
  a->connect();
  sim::FrameworkOptions fo;
  fo.failover_timeout = 60;
  auto f = framework(fo);
  auto once = std::make_shared<std::atomic<bool>>(false);
  f->on_event([once](sim::Framework& fw, const Event& e) {
    if (e.type() != Event::OFFERS) return;
    if (once->exchange(true)) {
      fw.call(sim::Framework::decline(e.offers().offers(0), 3600));
    } else {
      fw.call(sim::Framework::launch(e.offers().offers(0), "t1", 1, 64));
    }
  });
  f->subscribe();
  ASSERT_TRUE(eventually([&] { return updates(*f).size() == 1; }));
  std::string id = f->id();
  auto f2 = framework(fo);
  f2->set_id(id);
  f2->subscribe();
  ASSERT_TRUE(eventually([&] { return f2->subscribed(); }));
  EXPECT_EQ(f2->id(), id);
  ASSERT_TRUE(eventually([&] { return !f->subscribed(); }));
  bool told = false;
  for (const auto& e : f->events()) {
    told |= e.type() == Event::ERROR && e.error().message() == "Framework failed over";
  }
  EXPECT_TRUE(told);
  Call rec;
  rec.set_type(Call::RECONCILE);
  f2->call(rec);
  ASSERT_TRUE(eventually([&] { return updates(*f2).size() == 1; }));
  EXPECT_EQ(updates(*f2)[0].state(), v1::TASK_RUNNING);
  EXPECT_EQ(agent_events(*a, v1::internal::AgentEvent::KILL_TASK), 0u);
}

// The failover test the issue names: master restarted under a running framework and two
// agents; the framework re-subscribes, the agents re-register, reconciliation reports every
// task, nothing is killed.
TEST_F(ClusterTest, MasterRestartUnderRunningFrameworkAndTwoAgentsKillsNothing) {
  auto a1 = agent("host-1");
  auto a2 = agent("host-2");
  a1->connect();
  a2->connect();
  ASSERT_TRUE(eventually([&] { return !a1->id().empty() && !a2->id().empty(); }));
  sim::FrameworkOptions fo;
  fo.failover_timeout = 3600;
  auto f = framework(fo);
  auto launched = std::make_shared<std::atomic<int>>(0);
  f->on_event([launched](sim::Framework& fw, const Event& e) {
    if (e.type() != Event::OFFERS) return;
    for (const auto& o : e.offers().offers()) {
      if (*launched >= 4) {
        fw.call(sim::Framework::decline(o, 3600));
        continue;
      }
      // Two tasks per agent, in one ACCEPT each.
      Call c = sim::Framework::launch(o, "task-" + std::to_string((*launched)++), 1, 128);
      auto* more = c.mutable_accept()->mutable_operations(0)->mutable_launch()->add_task_infos();
      *more = c.accept().operations(0).launch().task_infos(0);
      more->mutable_task_id()->set_value("task-" + std::to_string((*launched)++));
      fw.call(c);
    }
  });
  f->subscribe();
  ASSERT_TRUE(eventually([&] { return a1->tasks().size() == 2 && a2->tasks().size() == 2; }));
  std::string fw_id = f->id();

  f->disconnect();
  a1->disconnect();
  a2->disconnect();
  restart_master();

  // Everyone comes back.
  auto g = framework(fo);
  g->set_id(fw_id);
  g->subscribe();
  a1->connect();
  a2->connect();
  ASSERT_TRUE(eventually([&] {
    return agent_events(*a1, v1::internal::AgentEvent::REREGISTERED) == 1 &&
           agent_events(*a2, v1::internal::AgentEvent::REREGISTERED) == 1 && g->subscribed();
  })) << a1->last_error()
      << g->last_error();
  EXPECT_EQ(g->id(), fw_id);
  Call rec;
  rec.set_type(Call::RECONCILE);
  g->call(rec);
  ASSERT_TRUE(eventually([&] { return updates(*g).size() >= 4; }));
  std::set<std::string> running;
  for (const auto& u : updates(*g)) {
    if (u.state() == v1::TASK_RUNNING) running.insert(u.task_id().value());
  }
  EXPECT_EQ(running, (std::set<std::string>{"task-0", "task-1", "task-2", "task-3"}));
  for (auto* a : {a1.get(), a2.get()}) {
    EXPECT_EQ(agent_events(*a, v1::internal::AgentEvent::KILL_TASK), 0u);
    EXPECT_EQ(agent_events(*a, v1::internal::AgentEvent::SHUTDOWN_FRAMEWORK), 0u);
    for (const auto& e : a->events()) {
      if (e.type() == v1::internal::AgentEvent::REREGISTERED) {
        EXPECT_EQ(e.reregistered().shutdown_frameworks_size(), 0);
      }
    }
    for (const auto& [k, t] : a->tasks()) EXPECT_EQ(t.state(), v1::TASK_RUNNING);
  }
}

// ---------------------------------------------------------------------------------------------
// Operator API

TEST_F(ClusterTest, OperatorQuotaWeightsReservationsMaintenanceAndMarkGone) {
  auto a = agent("host-a");
  a->connect();
  ASSERT_TRUE(eventually([&] { return !a->id().empty(); }));
  op(R"({"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"eng",
      "guarantees":{"cpus":{"value":1}},"limits":{"cpus":{"value":2}}}]}})");
  auto q = op(R"({"type":"GET_QUOTA"})");
  ASSERT_EQ(q["get_quota"]["status"]["configs"].size(), 1u) << q.dump();
  EXPECT_EQ(q["get_quota"]["status"]["configs"][0]["role"], "eng");
  op(R"({"type":"UPDATE_QUOTA","update_quota":{"quota_configs":[{"role":"eng",
      "guarantees":{"cpus":{"value":3}},"limits":{"cpus":{"value":2}}}]}})",
     http::Status::bad_request);
  op(R"({"type":"UPDATE_WEIGHTS","update_weights":{"weight_infos":[{"role":"eng","weight":2}]}})");
  auto w = op(R"({"type":"GET_WEIGHTS"})");
  EXPECT_NE(w.dump().find("\"weight\":2"), std::string::npos) << w.dump();
  // Reservations.
  op(R"({"type":"RESERVE_RESOURCES","reserve_resources":{"agent_id":{"value":")" + a->id() +
         R"("},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1},
         "reservations":[{"type":"DYNAMIC","role":"eng"}]}]}})",
     http::Status::accepted);
  ASSERT_TRUE(
      eventually([&] { return agent_events(*a, v1::internal::AgentEvent::APPLY_OPERATION) == 1; }));
  op(R"({"type":"RESERVE_RESOURCES","reserve_resources":{"agent_id":{"value":")" + a->id() +
         R"("},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":100},
         "reservations":[{"type":"DYNAMIC","role":"eng"}]}]}})",
     http::Status::conflict);
  auto roles = op(R"({"type":"GET_ROLES"})");
  EXPECT_NE(roles.dump().find("\"eng\""), std::string::npos);
  // Maintenance: no offers for a machine that is down.
  op(R"({"type":"START_MAINTENANCE","start_maintenance":{"machines":[{"hostname":"host-a"}]}})");
  auto f = framework();
  f->subscribe();
  std::this_thread::sleep_for(400ms);
  EXPECT_TRUE(offers(*f).empty());
  op(R"({"type":"STOP_MAINTENANCE","stop_maintenance":{"machines":[{"hostname":"host-a"}]}})");
  ASSERT_TRUE(eventually([&] { return !offers(*f).empty(); }));
  // MARK_AGENT_GONE: the agent is told to shut down and may not come back.
  op(R"({"type":"MARK_AGENT_GONE","mark_agent_gone":{"agent_id":{"value":")" + a->id() + R"("}}})");
  ASSERT_TRUE(
      eventually([&] { return agent_events(*a, v1::internal::AgentEvent::SHUTDOWN) == 1; }));
  auto agents = op(R"({"type":"GET_AGENTS"})");
  EXPECT_TRUE(agents["get_agents"].value("agents", nlohmann::json::array()).empty());
  auto flags = op(R"({"type":"GET_FLAGS"})");
  EXPECT_NE(flags.dump().find("agent_ping_timeout"), std::string::npos);
  auto metrics = op(R"({"type":"GET_METRICS"})");
  EXPECT_NE(metrics.dump().find("master/slaves_gone"), std::string::npos);
}

}  // namespace
}  // namespace corral::master
