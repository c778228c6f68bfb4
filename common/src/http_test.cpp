// The HTTP server seen from its clients: Corral's own client and raw sockets that send what a
// well-behaved client never would. Every test ends by checking that the server still answers.

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include <poll.h>
#include <sys/stat.h>

#include <fstream>

#include "corral/common/http.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/http_server.hpp"
#include "corral/common/recordio.hpp"
#include "http_test_util.hpp"

namespace corral::http {
namespace {

using namespace std::chrono_literals;
using testing::RawSocket;
using testing::RunningServer;
using testing::status_line;

// Writers of open streams, shared between the server's handler and the test thread.
struct StreamRegistry {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<StreamWriter>> writers;
  std::vector<StreamEnd> ended;

  std::shared_ptr<StreamWriter> wait_for_stream(std::size_t index = 0) {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, 5s, [&] { return writers.size() > index; })) {
      return nullptr;
    }
    return writers[index];
  }
  std::optional<StreamEnd> wait_for_end(std::size_t index = 0) {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, 5s, [&] { return ended.size() > index; })) {
      return std::nullopt;
    }
    return ended[index];
  }
};

Router test_router(StreamRegistry* streams) {
  Router router;
  router.add(Verb::get, "/hello",
             [](const Request&) { return make_response(Status::ok, "hello"); });
  router.add(Verb::post, "/echo", [](const Request& req) {
    return make_response(Status::ok, req.body(), "application/octet-stream");
  });
  router.add(Verb::post, "/json", [](const Request& req) {
    auto body = parse_json_body(req);
    if (!body.ok()) {
      return error_response(Status::bad_request, body.error().message());
    }
    return json_response(Status::ok, {{"type", body->value("type", "")}});
  });
  router.add(Verb::get, "/throws",
             [](const Request&) -> Response { throw std::runtime_error("boom"); });
  router.add(Verb::get, "/forgets", [](std::shared_ptr<Exchange>) {});
  router.add_prefix(Verb::get, "/files/", [](const Request& req) {
    return make_response(Status::ok, "file " + std::string(target_path(req.target())));
  });
  if (streams != nullptr) {
    // Like Mesos's SUBSCRIBE: 200 + Mesos-Stream-Id, then RecordIO events pushed later.
    router.add(Verb::post, "/api/v1/scheduler", [streams](std::shared_ptr<Exchange> exchange) {
      auto call = parse_json_body(exchange->request());
      if (!call.ok()) {
        exchange->respond(error_response(Status::bad_request, call.error().message()));
        return;
      }
      if (call->value("type", "") != "SUBSCRIBE") {
        exchange->respond(make_response(Status::accepted, ""));
        return;
      }
      Response head{Status::ok, 11};
      head.set(Field::content_type, "application/recordio");
      head.set("Mesos-Stream-Id", "stream-1");
      auto writer = exchange->start_stream(std::move(head));
      writer->write_chunk(recordio_encode(R"({"type":"SUBSCRIBED"})"));
      writer->on_close([streams](StreamEnd end) {
        std::lock_guard lock(streams->mu);
        streams->ended.push_back(end);
        streams->cv.notify_all();
      });
      std::lock_guard lock(streams->mu);
      streams->writers.push_back(writer);
      streams->cv.notify_all();
    });
  }
  return router;
}

// The server is healthy: a fresh client gets an answer over both transports.
void expect_server_answers(RunningServer& server) {
  for (const auto& address : {server.tcp_address(), server.unix_address()}) {
    auto client = HttpClient::create(address);
    ASSERT_TRUE(client.ok());
    auto res = client->get("/hello");
    ASSERT_TRUE(res.ok()) << address << ": " << res.error().to_string();
    EXPECT_EQ(res->result(), Status::ok);
    EXPECT_EQ(res->body(), "hello");
  }
}

std::string body_of(const std::string& raw_response) {
  const auto at = raw_response.find("\r\n\r\n");
  return at == std::string::npos ? "" : raw_response.substr(at + 4);
}

TEST(HttpEndpoint, ParsesTcpAndUnixAddresses) {
  auto a = parse_endpoint("http://127.0.0.1:5050/");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->kind, Endpoint::Kind::kTcp);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 5050);
  auto b = parse_endpoint("[::1]:0");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->to_string(), "[::1]:0");
  auto c = parse_endpoint("unix:/run/corral/agent.sock");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->kind, Endpoint::Kind::kUnix);
  EXPECT_EQ(c->path, "/run/corral/agent.sock");
  EXPECT_EQ(parse_endpoint(c->to_string())->path, c->path);
  EXPECT_FALSE(parse_endpoint("localhost").ok());
  EXPECT_FALSE(parse_endpoint("host:99999").ok());
  EXPECT_FALSE(parse_endpoint("unix:relative.sock").ok());
  auto tls = parse_endpoint("https://master:5050");
  ASSERT_FALSE(tls.ok());
  EXPECT_NE(tls.error().message().find("TLS"), std::string::npos);
}

TEST(HttpServer, AnswersOverTcpAndUnixSocket) {
  RunningServer server(test_router(nullptr));
  EXPECT_NE(server.port(), 0);
  ASSERT_EQ(server.server().endpoints().size(), 2u);
  EXPECT_EQ(server.server().endpoints()[1].path, server.unix_path());
  expect_server_answers(server);
  for (const auto& address : {server.tcp_address(), server.unix_address()}) {
    auto client = HttpClient::create(address);
    auto res = client->post("/echo", "ping", "text/plain");
    ASSERT_TRUE(res.ok()) << res.error().to_string();
    EXPECT_EQ(res->body(), "ping");
    EXPECT_EQ((*res)[Field::server], "corral");
  }
}

TEST(HttpServer, KeepAliveServesSequentialAndPipelinedRequestsOnOneConnection) {
  RunningServer server(test_router(nullptr));
  for (bool use_unix : {false, true}) {
    auto sock =
        use_unix ? RawSocket::unix_socket(server.unix_path()) : RawSocket::tcp(server.port());
    const std::string get = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_TRUE(sock.send(get));
    auto first = sock.read_response();
    EXPECT_EQ(status_line(first), "HTTP/1.1 200 OK");
    EXPECT_EQ(body_of(first), "hello");
    ASSERT_TRUE(sock.send(get));
    EXPECT_EQ(body_of(sock.read_response()), "hello");
    // Three requests in one write; three responses in order on the same connection.
    ASSERT_TRUE(
        sock.send(get + "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + get));
    EXPECT_EQ(body_of(sock.read_response()), "hello");
    EXPECT_EQ(body_of(sock.read_response()), "abc");
    EXPECT_EQ(body_of(sock.read_response()), "hello");
    // Connection: close is honoured.
    ASSERT_TRUE(sock.send("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    bool closed = false;
    auto last = sock.read_until_closed(&closed);
    EXPECT_TRUE(closed);
    EXPECT_NE(last.find("Connection: close"), std::string::npos) << last;
  }
  expect_server_answers(server);
}

TEST(HttpServer, StreamsRecordIoEventsOneChunkEachPushedLater) {
  StreamRegistry streams;
  RunningServer server(test_router(&streams));
  auto sock = RawSocket::tcp(server.port());
  const std::string call = R"({"type":"SUBSCRIBE"})";
  ASSERT_TRUE(
      sock.send("POST /api/v1/scheduler HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nContent-Length: " +
                std::to_string(call.size()) + "\r\n\r\n" + call));
  const std::string head = sock.read_until("\r\n\r\n");
  EXPECT_EQ(status_line(head), "HTTP/1.1 200 OK");
  EXPECT_NE(head.find("Mesos-Stream-Id: stream-1\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("Content-Length"), std::string::npos) << head;
  // The first event was written by the handler itself: one record in one chunk.
  const std::string subscribed = recordio_encode(R"({"type":"SUBSCRIBED"})");
  char size_hex[16];
  std::snprintf(size_hex, sizeof size_hex, "%zx", subscribed.size());
  EXPECT_EQ(sock.read_until(subscribed + "\r\n"),
            std::string(size_hex) + "\r\n" + subscribed + "\r\n");

  // Later events come from another thread, long after the handler returned.
  auto writer = streams.wait_for_stream();
  ASSERT_NE(writer, nullptr);
  std::this_thread::sleep_for(50ms);
  const std::string heartbeat = recordio_encode(R"({"type":"HEARTBEAT"})");
  ASSERT_TRUE(writer->write_chunk(heartbeat));
  std::snprintf(size_hex, sizeof size_hex, "%zx", heartbeat.size());
  EXPECT_EQ(sock.read_until(heartbeat + "\r\n"),
            std::string(size_hex) + "\r\n" + heartbeat + "\r\n");
  writer->close();
  EXPECT_FALSE(writer->write_chunk("too late"));
  bool closed = false;
  EXPECT_EQ(sock.read_until_closed(&closed), "0\r\n\r\n");
  EXPECT_TRUE(closed);
  EXPECT_EQ(streams.wait_for_end(), StreamEnd::kClosed);
  expect_server_answers(server);
}

TEST(HttpServer, StreamNoticesClientDisconnect) {
  StreamRegistry streams;
  RunningServer server(test_router(&streams));
  {
    auto sock = RawSocket::unix_socket(server.unix_path());
    const std::string call = R"({"type":"SUBSCRIBE"})";
    ASSERT_TRUE(sock.send("POST /api/v1/scheduler HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                          std::to_string(call.size()) + "\r\n\r\n" + call));
    EXPECT_EQ(status_line(sock.read_until("\r\n\r\n")), "HTTP/1.1 200 OK");
    ASSERT_NE(streams.wait_for_stream(), nullptr);
  }  // the client goes away
  EXPECT_EQ(streams.wait_for_end(), StreamEnd::kClientGone);
  auto writer = streams.wait_for_stream();
  EXPECT_FALSE(writer->is_open());
  EXPECT_FALSE(writer->write_chunk(recordio_encode("{}")));
  expect_server_answers(server);
}

TEST(HttpServer, StreamToAClientThatStopsReadingIsCutAtTheQueueLimit) {
  StreamRegistry streams;
  ServerOptions options;
  options.stream_queue_limit = 64 * 1024;
  RunningServer server(test_router(&streams), options);
  auto sock = RawSocket::unix_socket(server.unix_path());
  const std::string call = R"({"type":"SUBSCRIBE"})";
  ASSERT_TRUE(sock.send("POST /api/v1/scheduler HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                        std::to_string(call.size()) + "\r\n\r\n" + call));
  auto writer = streams.wait_for_stream();
  ASSERT_NE(writer, nullptr);
  // The client never reads: once the socket buffers are full the queue grows to the limit.
  const std::string event = recordio_encode(std::string(16 * 1024, 'e'));
  bool refused = false;
  for (int i = 0; i < 4096 && !refused; ++i) {  // at most 64 MiB
    refused = !writer->write_chunk(event);
  }
  EXPECT_TRUE(refused);
  EXPECT_EQ(streams.wait_for_end(), StreamEnd::kTooSlow);
  expect_server_answers(server);
}

TEST(HttpServer, HeaderOver64KiBGets431AndConnectionClosed) {
  RunningServer server(test_router(nullptr));  // default header_limit: 64 KiB
  EXPECT_EQ(ServerOptions{}.header_limit, 64u * 1024);
  {
    auto sock = RawSocket::tcp(server.port());
    ASSERT_TRUE(sock.send(
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(70 * 1024, 'a') + "\r\n\r\n"));
    bool closed = false;
    auto response = sock.read_until_closed(&closed);
    EXPECT_EQ(status_line(response), "HTTP/1.1 431 Request Header Fields Too Large");
    EXPECT_NE(response.find(R"({"error":"request header exceeds the limit of 65536 bytes"})"),
              std::string::npos)
        << response;
    EXPECT_TRUE(closed);
  }
  {
    // Just under the limit is fine.
    auto sock = RawSocket::unix_socket(server.unix_path());
    ASSERT_TRUE(sock.send(
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(60 * 1024, 'a') + "\r\n\r\n"));
    EXPECT_EQ(status_line(sock.read_response()), "HTTP/1.1 200 OK");
  }
  expect_server_answers(server);
}

TEST(HttpServer, BodyOverConfiguredLimitGets413) {
  ServerOptions options;
  options.body_limit = 1024;
  RunningServer server(test_router(nullptr), options);
  {
    // A Content-Length over the limit is refused before the body is sent.
    auto sock = RawSocket::tcp(server.port());
    ASSERT_TRUE(sock.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n"));
    bool closed = false;
    auto response = sock.read_until_closed(&closed);
    EXPECT_EQ(status_line(response), "HTTP/1.1 413 Payload Too Large");
    EXPECT_NE(response.find(R"({"error":"request body exceeds the limit of 1024 bytes"})"),
              std::string::npos)
        << response;
    EXPECT_TRUE(closed);
  }
  {
    // A chunked body is counted as it arrives.
    auto sock = RawSocket::unix_socket(server.unix_path());
    ASSERT_TRUE(sock.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "400\r\n" +
        std::string(0x400, 'a') + "\r\n10\r\n" + std::string(0x10, 'b') + "\r\n0\r\n\r\n"));
    bool closed = false;
    auto response = sock.read_until_closed(&closed);
    EXPECT_EQ(status_line(response), "HTTP/1.1 413 Payload Too Large");
    EXPECT_TRUE(closed);
  }
  {
    // At the limit: accepted, through the client too.
    auto client = HttpClient::create(server.tcp_address());
    auto res = client->post("/echo", std::string(1024, 'z'), "text/plain");
    ASSERT_TRUE(res.ok()) << res.error().to_string();
    EXPECT_EQ(res->result(), Status::ok);
    EXPECT_EQ(res->body().size(), 1024u);
  }
  expect_server_answers(server);
}

TEST(HttpServer, AcceptsChunkedRequestBodyAndExpectContinue) {
  RunningServer server(test_router(nullptr));
  auto sock = RawSocket::tcp(server.port());
  ASSERT_TRUE(
      sock.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"));
  auto response = sock.read_response();
  EXPECT_EQ(status_line(response), "HTTP/1.1 200 OK");
  EXPECT_EQ(body_of(response), "hello world");
  // curl and others wait for "100 Continue" before sending a large body.
  ASSERT_TRUE(
      sock.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                "Expect: 100-continue\r\n\r\n"));
  EXPECT_EQ(sock.read_until("\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(sock.send("data"));
  EXPECT_EQ(body_of(sock.read_response()), "data");
  expect_server_answers(server);
}

TEST(HttpServer, StalledClientCutOffAtIdleTimeout) {
  ServerOptions options;
  options.idle_timeout = 200ms;
  RunningServer server(test_router(nullptr), options);
  {
    // Half a request, then silence: 408 and the connection closed.
    auto sock = RawSocket::tcp(server.port());
    ASSERT_TRUE(sock.send("GET /hello HTTP/1.1\r\nHo"));
    const auto start = std::chrono::steady_clock::now();
    bool closed = false;
    auto response = sock.read_until_closed(&closed, 5s);
    EXPECT_TRUE(closed);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
    EXPECT_EQ(status_line(response), "HTTP/1.1 408 Request Timeout");
    EXPECT_NE(response.find("no data received for 200 ms"), std::string::npos) << response;
  }
  {
    // An idle keep-alive connection is simply closed.
    auto sock = RawSocket::unix_socket(server.unix_path());
    ASSERT_TRUE(sock.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(body_of(sock.read_response()), "hello");
    bool closed = false;
    EXPECT_EQ(sock.read_until_closed(&closed, 5s), "");
    EXPECT_TRUE(closed);
  }
  expect_server_answers(server);
}

TEST(HttpServer, TricklingClientCutOffAtReadTimeout) {
  ServerOptions options;
  options.idle_timeout = 2s;
  options.read_timeout = 300ms;
  RunningServer server(test_router(nullptr), options);
  auto sock = RawSocket::tcp(server.port());
  // One byte every 20 ms never lets the idle timeout fire, but the whole request is late.
  const std::string request =
      "GET /hello HTTP/1.1\r\nHost: x\r\nX-Padding: " + std::string(1000, 'p') + "\r\n\r\n";
  const auto start = std::chrono::steady_clock::now();
  for (char c : request) {
    if (!sock.send(std::string_view(&c, 1)) || std::chrono::steady_clock::now() - start > 5s) {
      break;
    }
    std::this_thread::sleep_for(20ms);
    // Stop trickling once the server answered.
    pollfd pfd{sock.fd(), POLLIN, 0};
    if (::poll(&pfd, 1, 0) == 1) {
      break;
    }
  }
  bool closed = false;
  auto response = sock.read_until_closed(&closed, 5s);
  EXPECT_TRUE(closed);
  EXPECT_EQ(status_line(response), "HTTP/1.1 408 Request Timeout");
  EXPECT_NE(response.find("did not arrive within 300 ms"), std::string::npos) << response;
  expect_server_answers(server);
}

TEST(HttpServer, MalformedRequestLinesGet400AndConnectionClosed) {
  RunningServer server(test_router(nullptr));
  for (const std::string bad :
       {"GARBAGE\r\n\r\n", "GET /hello HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        "GET /hello HTTX/1.1\r\nHost: x\r\n\r\n", "GET  HTTP/1.1\r\n\r\n",
        "\x01\x02\x03 / HTTP/1.1\r\n\r\n", "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n"}) {
    auto sock = RawSocket::tcp(server.port());
    ASSERT_TRUE(sock.send(bad));
    bool closed = false;
    auto response = sock.read_until_closed(&closed);
    EXPECT_EQ(status_line(response), "HTTP/1.1 400 Bad Request") << bad;
    EXPECT_NE(response.find(R"({"error":"malformed request: )"), std::string::npos) << response;
    EXPECT_NE(response.find("Connection: close"), std::string::npos) << response;
    EXPECT_TRUE(closed) << bad;
  }
  expect_server_answers(server);
}

TEST(HttpServer, InvalidJsonBodyGets400NamingTheProblem) {
  StreamRegistry streams;
  RunningServer server(test_router(&streams));
  auto client = HttpClient::create(server.tcp_address());
  auto res = client->post("/json", R"({"type": "SUBSCRIBE",})");
  ASSERT_TRUE(res.ok()) << res.error().to_string();
  EXPECT_EQ(res->result(), Status::bad_request);
  EXPECT_EQ((*res)[Field::content_type], "application/json");
  auto body = nlohmann::json::parse(res->body());
  const std::string message = body.at("error");
  EXPECT_NE(message.find("invalid JSON in request body at byte 22"), std::string::npos) << message;
  EXPECT_NE(message.find("unexpected '}'"), std::string::npos) << message;

  res = client->post("/json", "");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->result(), Status::bad_request);
  EXPECT_EQ(nlohmann::json::parse(res->body()).at("error"),
            "request body is empty; expected a JSON document");

  // The same problem on the scheduler endpoint, and a well-formed call on the same connection.
  res = client->post("/api/v1/scheduler", "{\"type\": ");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->result(), Status::bad_request);
  res = client->post("/api/v1/scheduler", R"({"type":"ACCEPT"})");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->result(), Status::accepted);
  expect_server_answers(server);
}

TEST(HttpServer, RoutesAnswer404And405AndPrefixMatches) {
  RunningServer server(test_router(nullptr));
  auto client = HttpClient::create(server.tcp_address());
  auto res = client->get("/nope");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->result(), Status::not_found);
  EXPECT_EQ(nlohmann::json::parse(res->body()).at("error"), "no such endpoint: GET /nope");
  res = client->post("/hello", "x");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->result(), Status::method_not_allowed);
  EXPECT_EQ((*res)[Field::allow], "GET");
  res = client->get("/files/ui/index.html?v=2");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->body(), "file /files/ui/index.html");
  expect_server_answers(server);
}

TEST(HttpServer, HandlerThatThrowsOrForgetsGets500) {
  RunningServer server(test_router(nullptr));
  auto client = HttpClient::create(server.unix_address());
  auto res = client->get("/throws");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->result(), Status::internal_server_error);
  res = client->get("/forgets");
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->result(), Status::internal_server_error);
  EXPECT_EQ(nlohmann::json::parse(res->body()).at("error"), "the handler did not send a response");
  expect_server_answers(server);
}

TEST(HttpServer, GracefulStopFinishesInFlightRequestsAndEndsStreams) {
  StreamRegistry streams;
  // A handler that answers 300 ms later from another thread.
  Router router = test_router(&streams);
  router.add(Verb::get, "/slow", [](std::shared_ptr<Exchange> exchange) {
    std::thread([exchange] {
      std::this_thread::sleep_for(300ms);
      exchange->respond(make_response(Status::ok, "slow"));
    }).detach();
  });
  auto server = std::make_unique<RunningServer>(std::move(router));

  // An open stream, an idle keep-alive connection and a request in progress.
  auto stream_sock = RawSocket::tcp(server->port());
  const std::string call = R"({"type":"SUBSCRIBE"})";
  ASSERT_TRUE(stream_sock.send("POST /api/v1/scheduler HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                               std::to_string(call.size()) + "\r\n\r\n" + call));
  EXPECT_EQ(status_line(stream_sock.read_until("\r\n\r\n")), "HTTP/1.1 200 OK");
  ASSERT_NE(streams.wait_for_stream(), nullptr);

  auto idle_sock = RawSocket::unix_socket(server->unix_path());
  ASSERT_TRUE(idle_sock.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(body_of(idle_sock.read_response()), "hello");

  auto slow_sock = RawSocket::tcp(server->port());
  ASSERT_TRUE(slow_sock.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::this_thread::sleep_for(100ms);  // the request reaches its handler

  ASSERT_TRUE(server->stop_and_wait(10s));

  bool closed = false;
  auto slow = slow_sock.read_until_closed(&closed);
  EXPECT_EQ(status_line(slow), "HTTP/1.1 200 OK");
  EXPECT_EQ(body_of(slow), "slow");
  EXPECT_NE(slow.find("Connection: close"), std::string::npos) << slow;
  EXPECT_TRUE(closed);

  auto rest = stream_sock.read_until_closed(&closed);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(rest.ends_with("0\r\n\r\n")) << rest;
  EXPECT_EQ(streams.wait_for_end(), StreamEnd::kServerStopping);

  EXPECT_EQ(idle_sock.read_until_closed(&closed), "");
  EXPECT_TRUE(closed);

  // No longer listening; the unix socket file is gone.
  EXPECT_FALSE(std::filesystem::exists(server->unix_path()));
  auto client = HttpClient::create(server->tcp_address());
  auto res = client->get("/hello");
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), ECONNREFUSED);
}

TEST(HttpServer, UnixSocketPathHandling) {
  testing::TempDir dir;
  boost::asio::io_context io;
  const std::string path = (dir.path() / "agent.sock").string();
  {
    // A stale socket file left by a crashed process is replaced.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
  }
  Server first(io, test_router(nullptr));
  auto listened = first.listen("unix:" + path, 0600);
  ASSERT_TRUE(listened.ok()) << listened.error().to_string();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // A live one is not stolen.
  Server second(io, test_router(nullptr));
  auto again = second.listen("unix:" + path);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), EADDRINUSE);
  EXPECT_NE(again.error().message().find("another process"), std::string::npos);

  // Nor is a regular file.
  const std::string file = (dir.path() / "not-a-socket").string();
  std::ofstream(file) << "data";
  auto on_file = second.listen("unix:" + file);
  ASSERT_FALSE(on_file.ok());
  EXPECT_EQ(on_file.error().code(), EEXIST);
  EXPECT_TRUE(std::filesystem::exists(file));

  // A TCP port in use is reported, naming the address.
  ASSERT_TRUE(first.listen("127.0.0.1:0").ok());
  auto busy = second.listen("127.0.0.1:" + std::to_string(first.tcp_port()));
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code(), EADDRINUSE);
  EXPECT_NE(busy.error().message().find("127.0.0.1:"), std::string::npos);
}

}  // namespace
}  // namespace corral::http
