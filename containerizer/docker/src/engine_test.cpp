// Unit tests of the Engine API client and the pure parts of the Docker containerizer. dockerd's
// malformed or hostile answers come from a fake Engine API server on a unix socket.
#include "corral/docker/engine.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "corral/common/fd.hpp"
#include "corral/common/http_server.hpp"
#include "corral/docker/docker_containerizer.hpp"

namespace corral::docker {
namespace {

using http::Router;
using http::Status;

// A fake dockerd: a Router served on a unix socket by one io_context thread.
class FakeDockerd {
 public:
  explicit FakeDockerd(Router router) {
    auto d = TempDir::create("corral-fake-dockerd-");
    EXPECT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(*d));
    server_ = std::make_unique<http::Server>(io_, std::move(router));
    socket_ = "unix:" + (dir_->path() / "docker.sock").string();
    auto r = server_->listen(socket_);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeDockerd() {
    work_.reset();
    io_.stop();
    thread_.join();
    server_.reset();
  }
  const std::string& socket() const { return socket_; }
  Engine engine() const {
    EngineOptions o;
    o.endpoint = socket_;
    o.request_timeout = std::chrono::seconds(5);
    return Engine(o);
  }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      boost::asio::make_work_guard(io_)};
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<http::Server> server_;
  std::string socket_;
  std::thread thread_;
};

http::Response json(Status status, const std::string& body) {
  return http::make_response(status, body, "application/json");
}

// Answers the way dockerd streams progress: chunked, one chunk per line.
Router::Handler chunked(std::vector<std::string> lines,
                        std::function<void(const http::Request&)> seen = {}) {
  return [lines, seen](std::shared_ptr<http::Exchange> ex) {
    if (seen) seen(ex->request());
    auto w = ex->start_stream(http::make_response(Status::ok, "", "application/json"));
    for (const auto& l : lines) w->write_chunk(l);
    w->close();
  };
}

// ---------------------------------------------------------------- pure helpers

TEST(ImageRef, SplitsRegistryNameTagAndDigest) {
  auto a = parse_image_ref("busybox");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->name, "busybox");
  EXPECT_EQ(a->tag, "latest");  // never "all tags"
  EXPECT_EQ(a->registry, "docker.io");
  EXPECT_EQ(a->full(), "busybox:latest");

  auto b = parse_image_ref("127.0.0.1:5000/team/app:1.2");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->registry, "127.0.0.1:5000");
  EXPECT_EQ(b->name, "127.0.0.1:5000/team/app");
  EXPECT_EQ(b->tag, "1.2");

  const std::string digest = "sha256:" + std::string(64, 'a');
  auto c = parse_image_ref("localhost/app@" + digest);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->registry, "localhost");
  EXPECT_EQ(c->digest, digest);
  EXPECT_EQ(c->full(), "localhost/app@" + digest);
}

TEST(ImageRef, RefusesWhatIsNotAReference) {
  for (const char* bad : {"", "app:", "/app", "a//b", "app@sha256:12", "app;rm -rf /", "a b"}) {
    auto r = parse_image_ref(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("is not valid"), std::string::npos) << r.error().message();
    EXPECT_EQ(r.error().code(), EINVAL);
  }
}

TEST(RegistryAuth, ConfigJsonCredentialsBecomeTheHeader) {
  auto dir = TempDir::create("corral-docker-auth-");
  ASSERT_TRUE(dir.ok());
  auto file = dir->path() / "config.json";
  // "alice:s3cret" in base64
  std::ofstream(file) << R"({"auths": {"127.0.0.1:5000": {"auth": "YWxpY2U6czNjcmV0"}}})";
  auto auth = registry_auth_from_config(file, "127.0.0.1:5000");
  ASSERT_TRUE(auth.ok()) << auth.error().message();
  ASSERT_TRUE(auth->has_value());
  EXPECT_EQ((*auth)->username, "alice");
  EXPECT_EQ((*auth)->password, "s3cret");
  auto none = registry_auth_from_config(file, "other.example");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  // The header is base64url JSON that dockerd decodes.
  std::string header = encode_registry_auth(**auth);
  EXPECT_EQ(header.find('+'), std::string::npos);
  EXPECT_EQ(header.find('/'), std::string::npos);
  EXPECT_FALSE(header.empty());

  std::ofstream(file) << "{not json";
  auto broken = registry_auth_from_config(file, "127.0.0.1:5000");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().message().find("is not a JSON object"), std::string::npos);
  auto missing = registry_auth_from_config(dir->path() / "nope.json", "x");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("nope.json"), std::string::npos);
}

TEST(LogDemuxer, SplitsFramesArrivingInPieces) {
  std::string out, err;
  LogDemuxer d([&](int stream, std::string_view data) { (stream == 2 ? err : out) += data; });
  auto frame = [](char stream, const std::string& payload) {
    std::string f = {stream, 0, 0, 0, 0, 0, 0, static_cast<char>(payload.size())};
    return f + payload;
  };
  std::string wire = frame(1, "hello ") + frame(2, "oops\n") + frame(1, "world\n");
  for (char c : wire) ASSERT_TRUE(d.feed(std::string_view(&c, 1)).ok());  // byte by byte
  EXPECT_EQ(out, "hello world\n");
  EXPECT_EQ(err, "oops\n");
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(LogDemuxer, RawTextIsAProtocolError) {
  LogDemuxer d([](int, std::string_view) {});
  auto r = d.feed("plain text from a TTY\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), EPROTO);
  EXPECT_NE(r.error().message().find("multiplexed"), std::string::npos);
}

TEST(ApiVersion, ComparesNumerically) {
  EXPECT_TRUE(api_version_at_least("1.41", "1.41"));
  EXPECT_TRUE(api_version_at_least("1.43", "1.41"));
  EXPECT_TRUE(api_version_at_least("2.0", "1.41"));
  EXPECT_FALSE(api_version_at_least("1.40", "1.41"));
  EXPECT_FALSE(api_version_at_least("1.9", "1.41"));
  EXPECT_FALSE(api_version_at_least("banana", "1.41"));
}

// ---------------------------------------------------------------- malformed dockerd answers

TEST(FakeEngine, OldDockerIsRefusedWithTheVersionNeeded) {
  Router r;
  r.add(http::Verb::get, "/version", [](const http::Request&) {
    return json(Status::ok, R"({"Version":"19.03.2","ApiVersion":"1.40"})");
  });
  FakeDockerd fake(std::move(r));
  auto v = fake.engine().negotiate();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), ENOTSUP);
  EXPECT_NE(v.error().message().find("speaks Engine API 1.40; Corral needs 1.41"),
            std::string::npos)
      << v.error().message();
}

TEST(FakeEngine, NonJsonAnswerIsAProtocolErrorNotACrash) {
  Router r;
  r.add(http::Verb::get, "/version", [](const http::Request&) {
    return http::make_response(Status::ok, "<html>I am nginx</html>", "text/html");
  });
  FakeDockerd fake(std::move(r));
  auto v = fake.engine().negotiate();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), EPROTO);
  EXPECT_NE(v.error().message().find("not JSON"), std::string::npos) << v.error().message();
  EXPECT_NE(v.error().message().find("is that socket really dockerd?"), std::string::npos);

  DockerOptions o;
  o.endpoint = fake.socket();
  auto c = open_docker_containerizer(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), EPROTO);
}

TEST(FakeEngine, VersionWithoutApiVersionIsRefused) {
  Router r;
  r.add(http::Verb::get, "/version",
        [](const http::Request&) { return json(Status::ok, R"({"Version": 7})"); });
  FakeDockerd fake(std::move(r));
  auto v = fake.engine().negotiate();
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message().find("without an \"ApiVersion\""), std::string::npos);
}

TEST(FakeEngine, NoDaemonSaysWhatToCheck) {
  DockerOptions o;
  o.endpoint = "unix:/nonexistent/corral-test/docker.sock";
  auto c = open_docker_containerizer(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), ENOENT);
  EXPECT_NE(c.error().message().find("is dockerd running?"), std::string::npos)
      << c.error().message();
  EXPECT_NE(c.error().message().find("/nonexistent/corral-test/docker.sock"), std::string::npos);
}

TEST(FakeEngine, NameCollisionIsEexistWithTheFix) {
  Router r;
  r.add(http::Verb::post, "/v1.41/containers/create", [](const http::Request&) {
    return json(Status::conflict,
                R"({"message":"Conflict. The container name \"/corral-t1\" is already in use"})");
  });
  FakeDockerd fake(std::move(r));
  auto id = fake.engine().create_container("corral-t1", {{"Image", "x"}});
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.error().code(), EEXIST);
  EXPECT_NE(id.error().message().find("already in use"), std::string::npos);
  EXPECT_NE(id.error().message().find("docker rm -f corral-t1"), std::string::npos);
}

TEST(FakeEngine, CreateAnswerWithoutIdIsRefused) {
  Router r;
  r.add(http::Verb::post, "/v1.41/containers/create",
        [](const http::Request&) { return json(Status::created, R"({"Warnings":[]})"); });
  FakeDockerd fake(std::move(r));
  auto id = fake.engine().create_container("c", {{"Image", "x"}});
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.error().code(), EPROTO);
  EXPECT_NE(id.error().message().find("no \"Id\""), std::string::npos);
}

TEST(FakeEngine, InspectWithoutStateIsRefused) {
  Router r;
  r.add_prefix(http::Verb::get, "/v1.41/containers/",
               [](const http::Request&) { return json(Status::ok, R"({"Id":"abc"})"); });
  FakeDockerd fake(std::move(r));
  auto j = fake.engine().inspect_container("abc");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.error().code(), EPROTO);
}

TEST(FakeEngine, ListThatIsNotAnArrayIsRefused) {
  Router r;
  r.add(http::Verb::get, "/v1.41/containers/json",
        [](const http::Request&) { return json(Status::ok, R"({"Id":"abc"})"); });
  FakeDockerd fake(std::move(r));
  auto j = fake.engine().list_containers("org.corral.agent=x");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.error().code(), EPROTO);
  EXPECT_NE(j.error().message().find("not a JSON array"), std::string::npos);
}

TEST(FakeEngine, PullErrorsInsideTheProgressStreamAreErrors) {
  Router r;
  std::string seen_auth;
  r.add(
      http::Verb::post, "/v1.41/images/create",
      chunked({"{\"status\":\"Pulling from team/app\",\"id\":\"1.0\"}\n",
               "{\"errorDetail\":{\"message\":\"unauthorized: authentication required\"},"
               "\"error\":\"unauthorized: authentication required\"}\n"},
              [&](const http::Request& req) { seen_auth = std::string(req["X-Registry-Auth"]); }));
  FakeDockerd fake(std::move(r));
  auto ref = parse_image_ref("127.0.0.1:5000/team/app:1.0");
  ASSERT_TRUE(ref.ok());
  int progress_lines = 0;
  auto pulled = fake.engine().pull(*ref, RegistryAuth{"alice", "wrong", "127.0.0.1:5000"},
                                   [&](const nlohmann::json&) { ++progress_lines; });
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.error().code(), EACCES);
  EXPECT_NE(pulled.error().message().find("authentication required"), std::string::npos);
  EXPECT_NE(pulled.error().message().find("check the credentials for 127.0.0.1:5000"),
            std::string::npos);
  EXPECT_EQ(progress_lines, 1);
  EXPECT_EQ(seen_auth, encode_registry_auth({"alice", "wrong", "127.0.0.1:5000"}));
}

TEST(FakeEngine, PullGarbageLineIsAProtocolError) {
  Router r;
  r.add(http::Verb::post, "/v1.41/images/create", chunked({"Downloading... 50%\n"}));
  FakeDockerd fake(std::move(r));
  auto ref = parse_image_ref("app:1");
  ASSERT_TRUE(ref.ok());
  auto pulled = fake.engine().pull(*ref, std::nullopt);
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.error().code(), EPROTO) << pulled.error().message();
}

TEST(FakeEngine, MissingImageIsEnoent) {
  Router r;
  r.add(http::Verb::post, "/v1.41/images/create", [](const http::Request&) {
    return json(Status::not_found,
                R"({"message":"pull access denied for nope, repository does not exist"})");
  });
  FakeDockerd fake(std::move(r));
  auto ref = parse_image_ref("nope:1");
  ASSERT_TRUE(ref.ok());
  auto pulled = fake.engine().pull(*ref, std::nullopt);
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.error().code(), ENOENT);
  EXPECT_NE(pulled.error().message().find("repository does not exist"), std::string::npos);
}

TEST(FakeEngine, RecoverWithMalformedListFailsCleanly) {
  Router r;
  r.add(http::Verb::get, "/version",
        [](const http::Request&) { return json(Status::ok, R"({"ApiVersion":"1.41"})"); });
  r.add(http::Verb::get, "/v1.41/containers/json",
        [](const http::Request&) { return json(Status::ok, R"([{"Names":["/x"]}])"); });
  FakeDockerd fake(std::move(r));
  DockerOptions o;
  o.endpoint = fake.socket();
  auto c = open_docker_containerizer(o);
  ASSERT_TRUE(c.ok()) << c.error().message();
  auto rec = (*c)->recover({});
  ASSERT_FALSE(rec.ok());
  EXPECT_EQ(rec.error().code(), EPROTO);
  EXPECT_NE(rec.error().message().find("no \"Id\""), std::string::npos);
}

TEST(FakeEngine, MistypedContainerListAndMissingContainerEndInALostTaskNotACrash) {
  Router r;
  r.add(http::Verb::get, "/version",
        [](const http::Request&) { return json(Status::ok, R"({"ApiVersion":"1.41"})"); });
  r.add(http::Verb::get, "/v1.41/containers/json", [](const http::Request&) {
    return json(Status::ok, R"([{"Id":"abc","State":7,"Names":"not-a-list"}])");
  });
  // Every other call (wait, logs, inspect) gets the router's 404.
  FakeDockerd fake(std::move(r));
  auto sandbox = TempDir::create("corral-docker-sandbox-");
  ASSERT_TRUE(sandbox.ok());
  DockerOptions o;
  o.endpoint = fake.socket();
  o.log_drain = std::chrono::milliseconds(200);
  auto c = open_docker_containerizer(o);
  ASSERT_TRUE(c.ok()) << c.error().message();
  std::mutex m;
  std::condition_variable cv;
  std::optional<containerizer::Termination> got;
  (*c)->set_termination_callback([&](const std::string&, const containerizer::Termination& t) {
    std::lock_guard l(m);
    got = t;
    cv.notify_all();
  });
  auto rec = (*c)->recover(
      {{"c1", {{"docker_id", "abc"}, {"sandbox", sandbox->path().string()}, {"name", 42}}}});
  ASSERT_TRUE(rec.ok()) << rec.error().message();
  ASSERT_EQ(rec->size(), 1u);
  EXPECT_FALSE((*rec)[0].running);  // "State": 7 is not "running"
  std::unique_lock l(m);
  ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(10), [&] { return got.has_value(); }));
  EXPECT_EQ(got->kind, containerizer::Termination::Kind::lost);

  // A checkpoint that is not the Docker containerizer's is refused with a clear error.
  auto bad = (*c)->recover({{"c2", {{"pid", 12}}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("no docker_id"), std::string::npos);
}

// One frame of dockerd's multiplexed log stream: stream byte, three zeros, big-endian length.
std::string log_frame(int stream, const std::string& payload) {
  std::string f(8, '\0');
  f[0] = static_cast<char>(stream);
  const auto n = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) f[4 + i] = static_cast<char>((n >> (8 * (3 - i))) & 0xff);
  return f + payload;
}

TEST(FakeEngine, OutputAFollowStreamMissedAtTheExitIsReadAgainWithoutDuplicates) {
  // dockerd 20.10 can end a follow stream before the last lines of a container that just exited
  // are read (seen in CI: 22,726 of 100,000 lines). The containerizer reads the log once more
  // without follow; what is already in the sandbox is not written twice.
  std::mutex seen_mutex;
  std::vector<std::string> log_targets;
  Router r;
  r.add(http::Verb::get, "/version",
        [](const http::Request&) { return json(Status::ok, R"({"ApiVersion":"1.41"})"); });
  r.add(http::Verb::get, "/v1.41/containers/json", [](const http::Request&) {
    return json(Status::ok, R"([{"Id":"abc","State":"running","Names":["/corral-c1"]}])");
  });
  r.add(http::Verb::get, "/v1.41/containers/abc/logs", [&](std::shared_ptr<http::Exchange> ex) {
    const std::string target(ex->request().target());
    {
      std::lock_guard l(seen_mutex);
      log_targets.push_back(target);
    }
    auto w =
        ex->start_stream(http::make_response(Status::ok, "", "application/vnd.docker.raw-stream"));
    const bool follow = target.find("follow=1") != std::string::npos;
    w->write_chunk(log_frame(1, "one\n") + log_frame(2, "err one\n"));
    if (!follow) w->write_chunk(log_frame(1, "two\n") + log_frame(1, "three\n"));
    w->close();
  });
  r.add(http::Verb::post, "/v1.41/containers/abc/wait",
        [](const http::Request&) { return json(Status::ok, R"({"StatusCode":0})"); });
  r.add(http::Verb::get, "/v1.41/containers/abc/json", [](const http::Request&) {
    return json(Status::ok,
                R"({"Id":"abc","State":{"Status":"exited","Running":false,"ExitCode":0}})");
  });
  FakeDockerd fake(std::move(r));
  auto sandbox = TempDir::create("corral-docker-sandbox-");
  ASSERT_TRUE(sandbox.ok());
  DockerOptions o;
  o.endpoint = fake.socket();
  o.log_drain = std::chrono::seconds(5);
  auto c = open_docker_containerizer(o);
  ASSERT_TRUE(c.ok()) << c.error().message();
  std::mutex m;
  std::condition_variable cv;
  std::optional<containerizer::Termination> got;
  (*c)->set_termination_callback([&](const std::string&, const containerizer::Termination& t) {
    std::lock_guard l(m);
    got = t;
    cv.notify_all();
  });
  auto rec = (*c)->recover({{"c1", {{"docker_id", "abc"}, {"sandbox", sandbox->path().string()}}}});
  ASSERT_TRUE(rec.ok()) << rec.error().message();
  {
    std::unique_lock l(m);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(10), [&] { return got.has_value(); }));
  }
  EXPECT_EQ(got->kind, containerizer::Termination::Kind::exited) << got->message;
  EXPECT_EQ(got->code, 0);
  auto slurp = [&](const char* name) {
    std::ifstream in(sandbox->path() / name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(slurp("stdout"), "one\ntwo\nthree\n");
  EXPECT_EQ(slurp("stderr"), "err one\n");
  std::lock_guard l(seen_mutex);
  ASSERT_EQ(log_targets.size(), 2u);
  EXPECT_NE(log_targets[0].find("follow=1"), std::string::npos) << log_targets[0];
  EXPECT_EQ(log_targets[1].find("follow=1"), std::string::npos) << log_targets[1];
}

}  // namespace
}  // namespace corral::docker
