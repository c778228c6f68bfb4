#include "corral/master/master.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/metrics.hpp"

namespace corral::master {
namespace {

// A master on an ephemeral loopback port, its io_context on a thread of its own.
class RunningMaster {
 public:
  explicit RunningMaster(const std::filesystem::path& work_dir) {
    MasterConfig cfg;
    cfg.listen = "127.0.0.1:0";
    cfg.work_dir = work_dir;
    auto m = Master::start(io_, cfg);
    if (!m.ok()) {
      error_ = m.error().message();
      return;
    }
    master_ = std::move(*m);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RunningMaster() {
    if (master_) {
      master_->stop([this] { io_.stop(); });
      thread_.join();
    }
  }
  Master* operator->() { return master_.get(); }
  const std::string& error() const { return error_; }
  http::HttpClient client() { return *http::HttpClient::create(master_->address()); }

 private:
  boost::asio::io_context io_;
  std::unique_ptr<Master> master_;
  std::thread thread_;
  std::string error_;
};

nlohmann::json json_of(const http::Response& r) { return nlohmann::json::parse(r.body()); }

TEST(Master, ServesHealthVersionAndMetrics) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  RunningMaster m(dir->path() / "master");
  ASSERT_TRUE(m.error().empty()) << m.error();
  auto c = m.client();
  auto health = c.get("/health");
  ASSERT_TRUE(health.ok()) << health.error().message();
  EXPECT_EQ(health->result(), http::Status::ok);

  auto version = c.get("/version");
  ASSERT_TRUE(version.ok());
  auto v = json_of(*version);
  EXPECT_EQ(v["master_id"], m->master_id());
  EXPECT_EQ(v["master_id"].get<std::string>().size(), 36u);  // a UUID
  EXPECT_FALSE(v["version"].get<std::string>().empty());

  auto metrics = c.get("/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body().find("corral_master_start_count 1\n"), std::string::npos)
      << metrics->body();
  EXPECT_EQ((*metrics)[http::Field::content_type], MetricsRegistry::kContentType);
}

TEST(Master, IdentitySurvivesRestartAndStartsAreCounted) {
  auto dir = TempDir::create();
  std::string first_id;
  {
    RunningMaster m(dir->path());
    ASSERT_TRUE(m.error().empty()) << m.error();
    first_id = m->master_id();
    EXPECT_EQ(m->start_count(), 1);
  }
  RunningMaster again(dir->path());
  ASSERT_TRUE(again.error().empty()) << again.error();
  EXPECT_EQ(again->master_id(), first_id);
  EXPECT_EQ(again->start_count(), 2);
}

TEST(Master, OperatorApiAnswersMesosShapedJson) {
  auto dir = TempDir::create();
  RunningMaster m(dir->path());
  ASSERT_TRUE(m.error().empty()) << m.error();
  auto c = m.client();
  auto r = c.post("/api/v1", R"({"type":"GET_HEALTH"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->result(), http::Status::ok);
  EXPECT_EQ(json_of(*r),
            nlohmann::json::parse(R"({"type":"GET_HEALTH","get_health":{"healthy":true}})"));

  r = c.post("/api/v1", R"({"type":"GET_VERSION"})");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(json_of(*r)["get_version"]["version_info"]["version"].get<std::string>().empty());
}

TEST(Master, BadOperatorCallsGetClearErrorsAndTheMasterStaysUp) {
  auto dir = TempDir::create();
  RunningMaster m(dir->path());
  ASSERT_TRUE(m.error().empty()) << m.error();
  auto c = m.client();

  auto bad_json = c.post("/api/v1", R"({"type": "GET_HEALTH",)");
  ASSERT_TRUE(bad_json.ok());
  EXPECT_EQ(bad_json->result(), http::Status::bad_request);
  EXPECT_NE(json_of(*bad_json)["error"].get<std::string>().find("Failed to parse body into Call"),
            std::string::npos);

  auto no_type = c.post("/api/v1", R"({"kind": "GET_HEALTH"})");
  ASSERT_TRUE(no_type.ok());
  EXPECT_EQ(no_type->result(), http::Status::bad_request);
  EXPECT_NE(json_of(*no_type)["error"].get<std::string>().find("\"type\""), std::string::npos);

  auto unknown = c.post("/api/v1", R"({"type": "GET_UNICORNS"})");
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->result(), http::Status::bad_request);
  EXPECT_NE(json_of(*unknown)["error"].get<std::string>().find("GET_UNICORNS"), std::string::npos);

  auto later = c.post("/api/v1", R"({"type": "READ_FILE"})");
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later->result(), http::Status::not_implemented);
  EXPECT_NE(json_of(*later)["error"].get<std::string>().find("not implemented"), std::string::npos);

  auto sched = c.post("/api/v1/scheduler", R"({"type": "SUBSCRIBE"})");
  ASSERT_TRUE(sched.ok());
  EXPECT_EQ(sched->result(), http::Status::bad_request);

  auto health = c.get("/health");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->result(), http::Status::ok);
}

TEST(Master, BusyPortIsReportedWithAHint) {
  auto dir = TempDir::create();
  RunningMaster first(dir->path() / "a");
  ASSERT_TRUE(first.error().empty()) << first.error();
  boost::asio::io_context io;
  MasterConfig cfg;
  cfg.listen = first->address().substr(std::string("http://").size());
  cfg.work_dir = dir->path() / "b";
  auto second = Master::start(io, cfg);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message().find("is another corral-master running?"), std::string::npos)
      << second.error().message();
}

TEST(MasterConfig, EmbeddedDefaultsAndFileValues) {
  auto cfg = parse_master_config("", "master.toml");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->listen, "127.0.0.1:5050");
  cfg = parse_master_config("listen = \"0.0.0.0:6050\"\n[http]\nmax_request_body = \"1MiB\"\n",
                            "master.toml");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->listen, "0.0.0.0:6050");
  EXPECT_EQ(cfg->max_request_body, 1u << 20);
}

TEST(MasterConfig, AgentFrameworkAndAllocatorTimeouts) {
  auto cfg = parse_master_config(
      "[agents]\nping_timeout = \"5s\"\nmax_ping_timeouts = 3\nremoval_timeout = \"2h\"\n"
      "[frameworks]\noffer_timeout = \"30s\"\n[allocator]\ninterval = \"250ms\"\n",
      "master.toml");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->agent_ping_timeout, std::chrono::seconds(5));
  EXPECT_EQ(cfg->max_agent_ping_timeouts, 3);
  EXPECT_EQ(cfg->agent_removal_timeout, std::chrono::hours(2));
  EXPECT_EQ(cfg->offer_timeout, std::chrono::seconds(30));
  EXPECT_EQ(cfg->allocation_interval, std::chrono::milliseconds(250));
  auto bad = parse_master_config("[agents]\nping_timeout = \"0s\"\n", "master.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("ping_timeout"), std::string::npos) << bad.error().message();
}

TEST(MasterConfig, MistakesNameFileLineAndKey) {
  auto cfg =
      parse_master_config("work_dir = \"relative/dir\"\nlisten = \"nonsense:port:x\"\nlog = 1\n",
                          "/etc/corral/master.toml");
  ASSERT_FALSE(cfg.ok());
  const std::string& m = cfg.error().message();
  EXPECT_NE(m.find("/etc/corral/master.toml:1: key 'work_dir': must be an absolute path"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("/etc/corral/master.toml:2: key 'listen'"), std::string::npos) << m;
  EXPECT_NE(m.find("/etc/corral/master.toml:3: unknown key 'log'"), std::string::npos) << m;
}

}  // namespace
}  // namespace corral::master
