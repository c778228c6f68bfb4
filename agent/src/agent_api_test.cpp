// The agent API's access rules, in-process (the containerizer replaced by one that runs
// nothing): over TCP the calls that change the agent need the bearer token of api_token_file,
// reads need nothing, and without a token file TCP is read-only; the unix socket serves all.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <thread>

#include "corral/agent/agent.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/v1/agent.pb.h"
#include "instant_containerizer.hpp"

namespace corral::agent {
namespace {
namespace fs = std::filesystem;
namespace asio = boost::asio;

constexpr const char* kToken = "0123456789abcdef0123456789abcdef";

class AgentApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/corral-agent-api.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ / "policy");
    config_.socket = (dir_ / "agent.sock").string();
    config_.listen = "127.0.0.1:0";
    config_.work_dir = dir_ / "work";
    config_.policy_dir = dir_ / "policy";
    config_.cgroup_backend = "none";
  }
  void TearDown() override {
    stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void write_token(const std::string& content, mode_t mode) {
    fs::path p = dir_ / "api.token";
    {
      std::ofstream f(p);
      f << content;
    }
    ::chmod(p.c_str(), mode);
    config_.api_token_file = p;
  }
  Result<void> start() {
    AgentDeps deps;
    deps.native = std::make_unique<InstantContainerizer>();
    auto a = Agent::start(io_, config_, std::move(deps));
    if (!a) return a.error();
    agent_ = std::move(*a);
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(io_);
      io_.run();
    });
    return {};
  }
  void stop() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
    agent_.reset();
  }
  http::Response tcp(http::Verb verb, const std::string& target, const std::string& body,
                     const std::string& authorization = "") {
    auto c = http::HttpClient::create(agent_->tcp_address());
    EXPECT_TRUE(c.ok());
    auto req = http::make_request(verb, target, body);
    if (!authorization.empty()) req.set(http::Field::authorization, authorization);
    auto r = c->request(std::move(req));
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message());
    return r ? *r : http::Response();
  }
  http::Response unix_post(const std::string& target, const std::string& body) {
    auto c = http::HttpClient::create("unix:" + config_.socket);
    EXPECT_TRUE(c.ok());
    auto r = c->post(target, body);
    EXPECT_TRUE(r.ok());
    return r ? *r : http::Response();
  }
  static std::string task_json(const std::string& id) {
    return R"({"framework_id":"local","task":{"name":")" + id + R"(","task_id":{"value":")" + id +
           R"("},"command":{"value":"true"}}})";
  }
  bool has_task(const std::string& id) {
    auto r = tcp(http::Verb::post, "/api/v1", R"({"type":"GET_TASKS"})");
    return r.body().find("\"" + id + "\"") != std::string::npos;
  }

  fs::path dir_;
  AgentConfig config_;
  asio::io_context io_;
  std::unique_ptr<Agent> agent_;
  std::thread thread_;
};

TEST_F(AgentApiTest, WithoutATokenFileTcpIsReadOnlyAndSaysHowToEnableWrites) {
  ASSERT_TRUE(start().ok());
  auto state = tcp(http::Verb::post, "/api/v1", R"({"type":"GET_STATE"})");
  EXPECT_EQ(state.result(), http::Status::ok);
  auto launch =
      tcp(http::Verb::post, "/corral/v1/tasks", task_json("t1"), std::string("Bearer ") + kToken);
  EXPECT_EQ(launch.result(), http::Status::forbidden);
  EXPECT_NE(launch.body().find("api_token_file"), std::string::npos) << launch.body();
  auto kill = tcp(http::Verb::post, "/api/v1",
                  R"({"type":"KILL_CONTAINER","kill_container":{"container_id":{"value":"x"}}})");
  EXPECT_EQ(kill.result(), http::Status::forbidden);
  EXPECT_NE(kill.body().find("api_token_file"), std::string::npos) << kill.body();
  EXPECT_EQ(tcp(http::Verb::post, "/corral/v1/drain", "{}").result(), http::Status::forbidden);
  EXPECT_FALSE(has_task("t1"));
}

TEST_F(AgentApiTest, MutatingTcpCallsNeedTheBearerToken) {
  write_token(std::string(kToken) + "\n", 0600);
  ASSERT_TRUE(start().ok());

  // No Authorization: 401 with a challenge and a message naming the fix.
  auto none = tcp(http::Verb::post, "/corral/v1/tasks", task_json("t1"));
  EXPECT_EQ(none.result(), http::Status::unauthorized);
  EXPECT_EQ(std::string(none[http::Field::www_authenticate]), "Bearer realm=\"corral-agent\"");
  EXPECT_NE(none.body().find("Authorization: Bearer"), std::string::npos) << none.body();
  EXPECT_NE(none.body().find(config_.api_token_file.string()), std::string::npos) << none.body();

  // A wrong token, a truncated one, a longer one, another scheme: 401, nothing launched.
  for (const std::string& auth :
       {std::string("Bearer wrong-token-wrong-token"), std::string("Bearer ") + (kToken + 1),
        std::string("Bearer ") + kToken + "0", std::string("Basic ") + kToken}) {
    auto r = tcp(http::Verb::post, "/corral/v1/tasks", task_json("t1"), auth);
    EXPECT_EQ(r.result(), http::Status::unauthorized) << auth;
    EXPECT_NE(std::string(r[http::Field::www_authenticate]).find("error="), std::string::npos)
        << auth;
  }
  EXPECT_FALSE(has_task("t1"));
  EXPECT_EQ(tcp(http::Verb::post, "/corral/v1/drain", "{}", "Bearer nope-nope-nope-nope").result(),
            http::Status::unauthorized);
  EXPECT_EQ(tcp(http::Verb::post, "/corral/v1/reload", "").result(), http::Status::unauthorized);

  // The right token: launched.
  auto ok =
      tcp(http::Verb::post, "/corral/v1/tasks", task_json("t1"), std::string("Bearer ") + kToken);
  EXPECT_EQ(ok.result(), http::Status::accepted) << ok.body();
  auto body = nlohmann::json::parse(ok.body(), nullptr, false);
  ASSERT_TRUE(body.is_object()) << ok.body();
  std::string container = body.value("container_id", "");
  EXPECT_TRUE(has_task("t1"));

  // KILL_CONTAINER likewise.
  std::string kill = R"({"type":"KILL_CONTAINER","kill_container":{"container_id":{"value":")" +
                     container + R"("}}})";
  EXPECT_EQ(tcp(http::Verb::post, "/api/v1", kill).result(), http::Status::unauthorized);
  EXPECT_EQ(
      tcp(http::Verb::post, "/api/v1", kill, "Bearer x0123456789abcdef0123456789abcde").result(),
      http::Status::unauthorized);
  EXPECT_EQ(tcp(http::Verb::post, "/api/v1", kill, std::string("Bearer ") + kToken).result(),
            http::Status::ok);

  // Reads need no token.
  EXPECT_EQ(tcp(http::Verb::post, "/api/v1", R"({"type":"GET_STATE"})").result(), http::Status::ok);
  EXPECT_EQ(tcp(http::Verb::get, "/metrics", "").result(), http::Status::ok);

  // The unix socket needs none (its file permissions decide who connects).
  EXPECT_EQ(unix_post("/corral/v1/tasks", task_json("t2")).result(), http::Status::accepted);
  EXPECT_TRUE(has_task("t2"));
}

TEST_F(AgentApiTest, AnUnsafeOrUnusableTokenFileStopsTheStartWithTheFix) {
  write_token(kToken, 0644);
  auto r = start();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("chmod 600"), std::string::npos) << r.error().message();

  write_token("short\n", 0600);
  r = start();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("shorter than 16"), std::string::npos) << r.error().message();

  write_token("has a space in it, so it is not one token", 0600);
  r = start();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("space"), std::string::npos) << r.error().message();

  config_.api_token_file = dir_ / "missing.token";
  r = start();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("openssl rand"), std::string::npos) << r.error().message();
}

TEST(AgentConfigTest, ApiTokenFileMustBeAnAbsolutePath) {
  auto bad = parse_agent_config("api_token_file = \"token\"\n", "agent.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("api_token_file"), std::string::npos);
  auto good =
      parse_agent_config("api_token_file = \"/etc/corral/agent-api.token\"\n", "agent.toml");
  ASSERT_TRUE(good.ok()) << good.error().message();
  EXPECT_EQ(good->api_token_file.string(), "/etc/corral/agent-api.token");
}

}  // namespace
}  // namespace corral::agent
