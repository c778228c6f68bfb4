// Corral's HTTP client against Corral's server (and against a raw socket that misbehaves).

#include "corral/common/http_client.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include "corral/common/http_server.hpp"
#include "corral/common/recordio.hpp"
#include "http_test_util.hpp"

namespace corral::http {
namespace {

using namespace std::chrono_literals;
using testing::RunningServer;

// Records which client connection (remote address) each request came from.
struct Peers {
  std::mutex mu;
  std::vector<std::string> seen;
};

struct Events {
  std::mutex mu;
  std::shared_ptr<StreamWriter> writer;
  std::optional<StreamEnd> ended;
};

// 24 MiB that differ from byte to byte (a lost, doubled or reordered read shows).
std::string large_body() {
  std::string body(24u << 20, '\0');
  uint32_t x = 12345;
  for (char& c : body) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>('a' + (x >> 16) % 26);
  }
  return body;
}

Router client_test_router(Peers* peers, Events* events) {
  Router router;
  router.add(Verb::get, "/whoami", [peers](std::shared_ptr<Exchange> exchange) {
    {
      std::lock_guard lock(peers->mu);
      peers->seen.push_back(exchange->remote());
    }
    exchange->respond(make_response(Status::ok, exchange->remote()));
  });
  router.add(Verb::get, "/big",
             [](const Request&) { return make_response(Status::ok, std::string(100'000, 'b')); });
  router.add(Verb::get, "/large",
             [](const Request&) { return make_response(Status::ok, large_body()); });
  router.add(Verb::get, "/never", [](std::shared_ptr<Exchange> exchange) {
    // Keeps the exchange (and so the request) open for 2 s, then answers.
    std::thread([exchange] {
      std::this_thread::sleep_for(2s);
      exchange->respond(make_response(Status::ok, "late"));
    }).detach();
  });
  router.add(Verb::get, "/events", [events](std::shared_ptr<Exchange> exchange) {
    Response head{Status::ok, 11};
    head.set(Field::content_type, "application/recordio");
    auto writer = exchange->start_stream(std::move(head));
    writer->write_chunk(recordio_encode("event-1"));
    writer->on_close([events](StreamEnd end) {
      std::lock_guard lock(events->mu);
      events->ended = end;
    });
    std::lock_guard lock(events->mu);
    events->writer = writer;
  });
  return router;
}

std::shared_ptr<StreamWriter> writer_of(Events& events) {
  std::lock_guard lock(events.mu);
  return events.writer;
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds wait = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) {
      return true;
    }
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

TEST(HttpClient, ReusesOneKeepAliveConnection) {
  Peers peers;
  RunningServer server(client_test_router(&peers, nullptr));
  auto client = HttpClient::create("http://" + server.tcp_address());
  ASSERT_TRUE(client.ok());
  for (int i = 0; i < 3; ++i) {
    auto res = client->get("/whoami");
    ASSERT_TRUE(res.ok()) << res.error().to_string();
    EXPECT_EQ(res->result(), Status::ok);
  }
  std::lock_guard lock(peers.mu);
  ASSERT_EQ(peers.seen.size(), 3u);
  EXPECT_EQ(std::set<std::string>(peers.seen.begin(), peers.seen.end()).size(), 1u)
      << "three requests should share one connection";
}

TEST(HttpClient, RetriesOnceWhenTheServerClosedTheIdleConnection) {
  Peers peers;
  ServerOptions options;
  options.idle_timeout = 100ms;
  RunningServer server(client_test_router(&peers, nullptr), options);
  ASSERT_TRUE(eventually([&] { return server.server().connection_count() == 0; }));
  for (const auto& address : {server.tcp_address(), server.unix_address()}) {
    auto client = HttpClient::create(address);
    ASSERT_TRUE(client->get("/whoami").ok());
    // The server closes the idle connection; the client only finds out when it reuses it.
    ASSERT_TRUE(eventually([&] { return server.server().connection_count() == 0; }));
    auto res = client->get("/whoami");
    ASSERT_TRUE(res.ok()) << res.error().to_string();
    EXPECT_EQ(res->result(), Status::ok);
  }
  std::lock_guard lock(peers.mu);
  ASSERT_EQ(peers.seen.size(), 4u);
  EXPECT_NE(peers.seen[0], peers.seen[1]) << "the retry should use a new TCP connection";
}

TEST(HttpClient, ConnectionErrorsAreValuesNamingTheAddress) {
  // A port nobody listens on: bind one, then close it.
  std::uint16_t port = 0;
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor acceptor(
        io, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
    port = acceptor.local_endpoint().port();
  }
  auto client = HttpClient::create("127.0.0.1:" + std::to_string(port));
  auto res = client->get("/");
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), ECONNREFUSED);
  EXPECT_NE(res.error().message().find("connecting to 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << res.error().message();

  testing::TempDir dir;
  auto missing = HttpClient::create("unix:" + (dir.path() / "none.sock").string());
  res = missing->get("/");
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), ENOENT);

  EXPECT_FALSE(HttpClient::create("not an address").ok());
}

TEST(HttpClient, RequestTimeoutIsETIMEDOUTAndServerStaysUp) {
  Peers peers;
  RunningServer server(client_test_router(&peers, nullptr));
  ClientOptions options;
  options.request_timeout = 200ms;
  auto client = HttpClient::create(server.unix_address(), options);
  const auto start = std::chrono::steady_clock::now();
  auto res = client->get("/never");
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), ETIMEDOUT);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1900ms);
  EXPECT_NE(res.error().message().find("no complete response within 200 ms"), std::string::npos)
      << res.error().message();
  // The server still answers (a fresh client: 200 ms is too tight for a loaded machine).
  auto ok_res = HttpClient::create(server.unix_address())->get("/whoami");
  ASSERT_TRUE(ok_res.ok()) << ok_res.error().to_string();
}

TEST(HttpClient, ResponseOverBodyLimitIsEMSGSIZE) {
  RunningServer server(client_test_router(nullptr, nullptr));
  ClientOptions options;
  options.body_limit = 1000;
  auto client = HttpClient::create(server.tcp_address(), options);
  auto res = client->get("/big");
  ASSERT_FALSE(res.ok()) << res->result() << " " << res->body().size();
  EXPECT_EQ(res.error().code(), EMSGSIZE);
}

TEST(HttpClient, ReadsALargeBodyWholeTwiceOnOneClient) {
  // The read path of request() for a large answer (a GET_STATE of a big cluster): every byte,
  // in order, twice from one client (keep-alive), over TCP and a unix socket.
  RunningServer server(client_test_router(nullptr, nullptr));
  const std::string expected = large_body();
  for (const auto& address : {server.tcp_address(), server.unix_address()}) {
    auto client = HttpClient::create(address);
    for (int i = 0; i < 2; ++i) {
      auto res = client->get("/large");
      ASSERT_TRUE(res.ok()) << address << ": " << res.error().to_string();
      EXPECT_EQ(res->result(), Status::ok);
      ASSERT_EQ(res->body().size(), expected.size()) << address;
      EXPECT_TRUE(res->body() == expected) << address << ": the body differs";
    }
  }
}

TEST(HttpClient, StreamsABodyWithAContentLengthBeyondTheRequestLimit) {
  // A blob download: Content-Length known, larger than the client's request() body limit.
  RunningServer server(client_test_router(nullptr, nullptr));
  ClientOptions options;
  options.body_limit = 1000;
  auto client = HttpClient::create(server.tcp_address(), options);
  size_t received = 0;
  StreamCallbacks cb;
  cb.on_head = [](const Response& head) { return head.result() == Status::ok; };
  cb.on_data = [&](std::string_view data) {
    received += data.size();
    return true;
  };
  auto ended = client->stream(make_request(Verb::get, "/big"), cb);
  ASSERT_TRUE(ended.ok()) << ended.error().to_string();
  EXPECT_EQ(received, 100'000u);
}

TEST(HttpClient, StreamsRecordIoEventsAsTheyArrive) {
  Events events;
  RunningServer server(client_test_router(nullptr, &events));
  for (const auto& address : {server.tcp_address(), server.unix_address()}) {
    {
      std::lock_guard lock(events.mu);
      events.writer.reset();
      events.ended.reset();
    }
    auto client = HttpClient::create(address);
    RecordIoDecoder decoder;
    std::vector<std::string> received;
    std::optional<Response> head;
    StreamCallbacks callbacks;
    callbacks.on_head = [&](const Response& h) {
      head = h;
      return true;
    };
    // Each event is pushed by the server only after the client got the previous one: the
    // client cannot be waiting for the end of the body.
    callbacks.on_data = [&](std::string_view data) {
      auto records = decoder.feed(data);
      EXPECT_TRUE(records.ok());
      for (auto& r : *records) {
        received.push_back(r);
        auto writer = writer_of(events);
        if (received.size() < 3) {
          writer->write_chunk(recordio_encode("event-" + std::to_string(received.size() + 1)));
        } else {
          writer->close();
        }
      }
      return true;
    };
    auto end = client->stream(make_request(Verb::get, "/events"), callbacks);
    ASSERT_TRUE(end.ok()) << end.error().to_string();
    ASSERT_TRUE(head.has_value());
    EXPECT_EQ(head->result(), Status::ok);
    EXPECT_EQ((*head)[Field::content_type], "application/recordio");
    EXPECT_EQ(received, (std::vector<std::string>{"event-1", "event-2", "event-3"}));
    EXPECT_TRUE(decoder.finish().ok());
  }
}

TEST(HttpClient, CancellingAStreamClosesItOnTheServer) {
  Events events;
  RunningServer server(client_test_router(nullptr, &events));
  auto client = HttpClient::create(server.tcp_address());
  StreamCallbacks callbacks;
  callbacks.on_data = [](std::string_view) { return false; };  // stop at the first bytes
  auto end = client->stream(make_request(Verb::get, "/events"), callbacks);
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error().code(), ECANCELED);
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lock(events.mu);
    return events.ended == StreamEnd::kClientGone;
  }));
}

TEST(HttpClient, StreamIdleTimeoutEndsASilentStream) {
  Events events;
  RunningServer server(client_test_router(nullptr, &events));
  ClientOptions options;
  options.stream_idle_timeout = 200ms;
  auto client = HttpClient::create(server.unix_address(), options);
  std::string got;
  StreamCallbacks callbacks;
  callbacks.on_data = [&](std::string_view data) {
    got.append(data);
    return true;
  };
  auto end = client->stream(make_request(Verb::get, "/events"), callbacks);
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error().code(), ETIMEDOUT);
  EXPECT_EQ(got, recordio_encode("event-1"));
}

TEST(HttpClient, StreamCutShortIsAnErrorAndTheRecordTruncated) {
  // A "server" that sends half a chunked RecordIO stream and vanishes.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(
      io, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  std::thread fake([&] {
    auto socket = acceptor.accept();
    boost::asio::streambuf request;
    boost::system::error_code ec;
    boost::asio::read_until(socket, request, "\r\n\r\n", ec);
    const std::string record = recordio_encode("0123456789");
    const std::string partial = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                std::string("e\r\n") + record.substr(0, 7);
    boost::asio::write(socket, boost::asio::buffer(partial), ec);
    socket.close();
  });
  auto client = HttpClient::create("127.0.0.1:" + std::to_string(port));
  RecordIoDecoder decoder;
  StreamCallbacks callbacks;
  callbacks.on_data = [&](std::string_view data) { return decoder.feed(data).ok(); };
  auto end = client->stream(make_request(Verb::get, "/events"), callbacks);
  fake.join();
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error().code(), ECONNRESET);
  EXPECT_NE(end.error().message().find("closed the connection early"), std::string::npos)
      << end.error().message();
  auto truncated = decoder.finish();
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.error().message().find("got 4 of 10 bytes"), std::string::npos)
      << truncated.error().message();
}

TEST(AsyncHttpClient, SharesTheDaemonsIoContextWithAServer) {
  // One io_context, one thread, like a daemon: server, async requests and a stream together.
  boost::asio::io_context io;
  Events events;
  Server server(io, client_test_router(nullptr, &events));
  ASSERT_TRUE(server.listen("127.0.0.1:0").ok());
  AsyncHttpClient client(io, *parse_endpoint("127.0.0.1:" + std::to_string(server.tcp_port())));

  int answered = 0;
  std::optional<Result<void>> stream_end;
  boost::asio::steady_timer guard(io, 10s);  // a hang fails instead of blocking forever
  auto finish_when_done = [&] {
    if (answered == 5 && stream_end.has_value()) {
      server.stop([&] { guard.cancel(); });
    }
  };
  for (int i = 0; i < 5; ++i) {
    client.request(make_request(Verb::get, "/big"), [&](Result<Response> res) {
      EXPECT_TRUE(res.ok());
      if (res.ok()) {
        EXPECT_EQ(res->body().size(), 100'000u);
      }
      ++answered;
      finish_when_done();
    });
  }
  std::string streamed;
  StreamCallbacks callbacks;
  callbacks.on_data = [&](std::string_view data) {
    streamed.append(data);
    if (auto writer = writer_of(events)) {
      writer->close();
    }
    return true;
  };
  callbacks.on_end = [&](Result<void> end) {
    stream_end = end;
    finish_when_done();
  };
  auto handle = client.stream(make_request(Verb::get, "/events"), callbacks);
  guard.async_wait([&](const boost::system::error_code& ec) {
    if (!ec) {
      ADD_FAILURE() << "timed out";
      io.stop();
    }
  });
  io.run();
  EXPECT_EQ(answered, 5);
  ASSERT_TRUE(stream_end.has_value());
  EXPECT_TRUE(stream_end->ok());
  EXPECT_EQ(streamed, recordio_encode("event-1"));
}

}  // namespace
}  // namespace corral::http
