// HTTP/1.1 server: one ServerConnection per accepted socket, each on its own strand, driven by
// completion handlers (no coroutines: plain callbacks are well trodden on Boost 1.74 + GCC 12).
// Sockets use asio's generic stream protocol so one connection type serves TCP and unix
// sockets alike; TLS would wrap the same socket in an ssl::stream later.

#include "corral/common/http_server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "corral/common/log.hpp"

namespace corral::http {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using Strand = asio::strand<asio::io_context::executor_type>;
using Socket = asio::basic_stream_socket<asio::generic::stream_protocol, Strand>;
using Acceptor = asio::basic_socket_acceptor<asio::generic::stream_protocol, Strand>;

namespace {

// How long a connection we are closing keeps reading (and discarding) what the client still
// sends, so that closing does not reset the connection before the client read our response.
constexpr std::chrono::milliseconds kLingerTime{1000};
// Bytes asked of the socket per read.
constexpr std::size_t kReadSize = 16 * 1024;

std::string ms_text(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

bool is_beast_http_error(const error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category();
}

// "1.2.3.4:5", "[::1]:5" or "unix".
std::string describe_peer(const asio::generic::stream_protocol::endpoint& ep) {
  const int family = ep.protocol().family();
  if (family == AF_INET || family == AF_INET6) {
    asio::ip::tcp::endpoint tcp_ep;
    if (ep.size() <= tcp_ep.capacity()) {
      std::memcpy(tcp_ep.data(), ep.data(), ep.size());
      tcp_ep.resize(ep.size());
      Endpoint out{Endpoint::Kind::kTcp, tcp_ep.address().to_string(), tcp_ep.port(), {}};
      return out.to_string();
    }
  }
  return "unix";
}

std::string frame_chunk(std::string_view data) {
  char size[24];
  const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out;
  out.reserve(static_cast<std::size_t>(n) + data.size() + 2);
  out.append(size, static_cast<std::size_t>(n));
  out.append(data);
  out.append("\r\n");
  return out;
}

constexpr std::string_view kLastChunk = "0\r\n\r\n";

}  // namespace

std::string_view to_string(StreamEnd end) {
  switch (end) {
    case StreamEnd::kClosed:
      return "closed";
    case StreamEnd::kClientGone:
      return "client gone";
    case StreamEnd::kWriteFailed:
      return "write failed";
    case StreamEnd::kTooSlow:
      return "client too slow";
    case StreamEnd::kServerStopping:
      return "server stopping";
  }
  return "unknown";
}

namespace detail {

class StreamWriterImpl;

// State shared by the Server object, its listeners and its connections. Listener and stop
// bookkeeping runs on `strand`; the connection table is guarded by `mu` because connections
// leave it from their own strands.
class ServerState : public std::enable_shared_from_this<ServerState> {
 public:
  ServerState(asio::io_context& io_, Router router_, ServerOptions options_)
      : io(io_),
        strand(asio::make_strand(io_)),
        router(std::move(router_)),
        options(std::move(options_)),
        grace_timer(strand) {}

  struct Listener {
    explicit Listener(Strand s) : acceptor(s), retry(s) {}
    Acceptor acceptor;
    asio::steady_timer retry;
    Endpoint bound;
    bool unix_socket = false;
  };

  void accept(Listener& listener);
  void forget(std::uint64_t id);
  void stop(std::function<void()> on_stopped);
  void close_listeners();
  void cut_all(StreamEnd reason);
  void finish_stop_if_idle();

  asio::io_context& io;
  Strand strand;
  const Router router;
  const ServerOptions options;
  asio::steady_timer grace_timer;

  mutable std::mutex mu;  // guards the members below
  std::vector<std::unique_ptr<Listener>> listeners;
  std::unordered_map<std::uint64_t, std::weak_ptr<ServerConnection>> connections;
  std::uint64_t next_id = 1;
  bool stopping = false;
  bool stopped = false;
  std::vector<std::function<void()>> on_stopped_callbacks;
};

class ServerConnection : public std::enable_shared_from_this<ServerConnection> {
 public:
  ServerConnection(std::shared_ptr<ServerState> server, Socket socket, std::string remote,
                   std::uint64_t id)
      : server_(std::move(server)),
        options_(server_->options),
        socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        remote_(std::move(remote)),
        id_(id) {}

  ~ServerConnection() { server_->forget(id_); }

  void start() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->read_request(); });
  }
  void begin_shutdown() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->on_shutdown(); });
  }
  void cut(StreamEnd reason) {
    asio::post(socket_.get_executor(),
               [self = shared_from_this(), reason] { self->close_now(reason); });
  }
  void respond(Response response) {
    asio::post(socket_.get_executor(),
               [self = shared_from_this(), r = std::move(response)]() mutable {
                 self->write_response(std::move(r));
               });
  }
  std::shared_ptr<StreamWriter> start_stream(Response head);
  void stream_write(std::string framed, std::size_t payload) {
    asio::post(socket_.get_executor(),
               [self = shared_from_this(), f = std::move(framed), payload]() mutable {
                 self->enqueue(std::move(f), payload);
               });
  }
  void stream_close(StreamEnd reason) {
    asio::post(socket_.get_executor(),
               [self = shared_from_this(), reason] { self->end_stream(reason); });
  }

 private:
  enum class Phase { kReading, kHandling, kWriting, kStreaming, kClosing, kClosed };
  using TimeoutFn = void (ServerConnection::*)();

  void arm_timer(Clock::time_point when, TimeoutFn on_expiry) {
    timer_.expires_at(when);
    const auto generation = ++timer_generation_;
    timer_.async_wait([self = shared_from_this(), generation, on_expiry](const error_code& ec) {
      if (!ec && generation == self->timer_generation_) {
        ((*self).*on_expiry)();
      }
    });
  }
  void disarm_timer() {
    ++timer_generation_;
    timer_.cancel();
  }

  // --- reading a request ---
  void read_request();
  void read_some();
  void on_read(const error_code& ec, std::size_t bytes);
  // Our own socket reads rather than http::async_read_some: Beast's op completes only once a
  // whole header has arrived, so the idle timer would measure "since the header started"
  // instead of "since the last byte".
  void read_more() {
    arm_timer(std::min(Clock::now() + options_.idle_timeout, request_deadline_),
              &ServerConnection::on_read_timeout);
    socket_.async_read_some(buffer_.prepare(kReadSize),
                            [self = shared_from_this()](const error_code& ec, std::size_t n) {
                              self->buffer_.commit(n);
                              self->on_read(ec, n);
                            });
  }
  void on_read_timeout() {
    timed_out_ = true;
    error_code ignored;
    socket_.cancel(ignored);
  }
  void on_read_error(const error_code& ec);
  void handle_request();

  // --- answering ---
  void write_response(Response response);
  void send_error_and_close(Status status, const std::string& message);
  void on_write_timeout() {
    log::debug("http: response write timed out, closing", {{"CORRAL_PEER", remote_}});
    close_now(StreamEnd::kWriteFailed);
  }

  // --- streaming ---
  void begin_stream(Response head, std::shared_ptr<StreamWriterImpl> writer);
  void enqueue(std::string data, std::size_t payload);
  void end_stream(StreamEnd reason);
  void pump();
  void on_stream_write_timeout() {
    log::info("http: stream client stopped reading, closing", {{"CORRAL_PEER", remote_}});
    close_now(StreamEnd::kWriteFailed);
  }

  // --- closing ---
  void on_shutdown();
  void graceful_close();
  void read_and_discard();
  void linger_expired() { close_now(StreamEnd::kClientGone); }
  void close_now(StreamEnd reason);

  std::shared_ptr<ServerState> server_;
  const ServerOptions& options_;
  Socket socket_;
  asio::steady_timer timer_;
  std::uint64_t timer_generation_ = 0;
  std::string remote_;
  std::uint64_t id_;

  Phase phase_ = Phase::kReading;
  boost::beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Clock::time_point request_deadline_;
  bool request_started_ = false;
  bool timed_out_ = false;
  bool stopping_ = false;
  bool keep_alive_ = true;
  bool sent_continue_ = false;
  unsigned version_ = 11;

  std::shared_ptr<StreamWriterImpl> stream_;
  std::deque<std::pair<std::string, std::size_t>> out_queue_;  // bytes, payload size
  // The chunks of out_queue_'s front being written (one gathered write for all that were
  // queued: one syscall per burst of events, not one per event; each is still its own chunk).
  std::vector<asio::const_buffer> write_buffers_;
  bool writing_ = false;
  bool close_after_queue_ = false;
  bool discard_pending_ = false;
  std::array<char, 4096> scratch_{};
};

class StreamWriterImpl final : public StreamWriter {
 public:
  StreamWriterImpl(std::weak_ptr<ServerConnection> connection, std::size_t queue_limit)
      : connection_(std::move(connection)), queue_limit_(queue_limit) {}

  bool write_chunk(std::string data) override {
    if (!open_.load()) {
      return false;
    }
    if (data.empty()) {
      return true;
    }
    auto connection = connection_.lock();
    if (!connection) {
      open_ = false;
      return false;
    }
    const std::size_t size = data.size();
    if (queued_.load() + size > queue_limit_) {
      log::warning("http: stream client is not keeping up; closing its stream",
                   {{"CORRAL_QUEUED_BYTES", std::to_string(queued_.load())}});
      open_ = false;
      connection->cut(StreamEnd::kTooSlow);
      return false;
    }
    queued_ += size;
    connection->stream_write(frame_chunk(data), size);
    return true;
  }

  void close() override {
    if (!open_.exchange(false)) {
      return;
    }
    if (auto connection = connection_.lock()) {
      connection->stream_close(StreamEnd::kClosed);
    } else {
      finished(StreamEnd::kClientGone);
    }
  }

  bool is_open() const override { return open_.load(); }

  void on_close(CloseCallback callback) override {
    std::unique_lock lock(mu_);
    if (ended_) {
      const StreamEnd reason = reason_;
      lock.unlock();
      if (callback) {
        callback(reason);
      }
      return;
    }
    callback_ = std::move(callback);
  }

  std::size_t queued_bytes() const override { return queued_.load(); }

  // Connection side, on its strand.
  void consumed(std::size_t n) { queued_ -= n; }
  void finished(StreamEnd reason) {
    open_ = false;
    CloseCallback callback;
    {
      std::lock_guard lock(mu_);
      if (ended_) {
        return;
      }
      ended_ = true;
      reason_ = reason;
      callback = std::move(callback_);
    }
    if (callback) {
      try {
        callback(reason);
      } catch (const std::exception& e) {
        log::warning(std::string("http: stream on_close callback threw: ") + e.what());
      }
    }
  }

 private:
  std::weak_ptr<ServerConnection> connection_;
  const std::size_t queue_limit_;
  std::atomic<bool> open_{true};
  std::atomic<std::size_t> queued_{0};
  std::mutex mu_;
  bool ended_ = false;
  StreamEnd reason_ = StreamEnd::kClosed;
  CloseCallback callback_;
};

// ---------------------------------------------------------------------------------------------
// ServerConnection: reading

void ServerConnection::read_request() {
  phase_ = Phase::kReading;
  if (stopping_ && buffer_.size() == 0) {
    close_now(StreamEnd::kServerStopping);
    return;
  }
  parser_.emplace();
  parser_->header_limit(
      static_cast<std::uint32_t>(std::min<std::size_t>(options_.header_limit, UINT32_MAX)));
  parser_->body_limit(options_.body_limit);
  // Bytes of a pipelined request may already be buffered: then the request has started.
  request_started_ = buffer_.size() > 0;
  request_deadline_ =
      request_started_ ? Clock::now() + options_.read_timeout : Clock::time_point::max();
  timed_out_ = false;
  sent_continue_ = false;
  read_some();
}

void ServerConnection::read_some() {
  // Bytes already buffered (a pipelined request) are parsed before reading more.
  if (buffer_.size() > 0) {
    on_read(error_code{}, 0);
  } else {
    read_more();
  }
}

void ServerConnection::on_read(const error_code& ec, std::size_t bytes) {
  disarm_timer();
  if (phase_ != Phase::kReading) {
    return;  // closed meanwhile
  }
  if (timed_out_) {
    if (request_started_ || buffer_.size() > 0) {
      const bool idle = Clock::now() < request_deadline_;
      send_error_and_close(
          Status::request_timeout,
          idle ? "no data received for " + ms_text(options_.idle_timeout) +
                     " in the middle of a request"
               : "the request did not arrive within " + ms_text(options_.read_timeout));
    } else {
      close_now(StreamEnd::kClientGone);  // an idle keep-alive connection: just close it
    }
    return;
  }
  if (ec && bytes == 0) {
    // EOF or a reset: the client went away, cleanly between requests or mid-request. Nobody
    // is left to answer.
    close_now(StreamEnd::kClientGone);
    return;
  }
  if (!request_started_) {
    request_started_ = true;
    request_deadline_ = Clock::now() + options_.read_timeout;
  }
  // Feed the parser. It is not eager: each put() parses the header or a piece of the body, so
  // every limit error surfaces (an eager parser in Boost 1.74 can lose body_limit).
  while (buffer_.size() > 0 && !parser_->is_done()) {
    error_code perr;
    const std::size_t used = parser_->put(buffer_.data(), perr);
    buffer_.consume(used);
    if (perr == bhttp::error::need_more) {
      break;
    }
    if (perr) {
      on_read_error(perr);
      return;
    }
    if (used == 0) {
      break;
    }
  }
  if (parser_->is_done()) {
    handle_request();
    return;
  }
  if (parser_->is_header_done() && !sent_continue_) {
    sent_continue_ = true;
    const auto& req = parser_->get();
    auto expect = req.find(Field::expect);
    if (expect != req.end() && req.version() >= 11 &&
        boost::beast::iequals(expect->value(), "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      arm_timer(Clock::now() + options_.write_timeout, &ServerConnection::on_write_timeout);
      asio::async_write(socket_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](const error_code& wec, std::size_t) {
                          self->disarm_timer();
                          if (self->phase_ != Phase::kReading) {
                            return;
                          }
                          if (wec) {
                            self->close_now(StreamEnd::kClientGone);
                            return;
                          }
                          self->read_some();
                        });
      return;
    }
  }
  if (ec) {
    close_now(StreamEnd::kClientGone);  // data and then an error: the client is gone
    return;
  }
  // Guard against a buffer that grows without the parser making progress.
  if (buffer_.size() > options_.header_limit + kReadSize) {
    send_error_and_close(
        Status::request_header_fields_too_large,
        "request header exceeds the limit of " + std::to_string(options_.header_limit) + " bytes");
    return;
  }
  read_more();
}

void ServerConnection::on_read_error(const error_code& ec) {
  if (parser_->is_header_done()) {
    version_ = parser_->get().version();
  }
  if (ec == bhttp::error::header_limit) {
    send_error_and_close(
        Status::request_header_fields_too_large,
        "request header exceeds the limit of " + std::to_string(options_.header_limit) + " bytes");
  } else if (ec == bhttp::error::body_limit) {
    send_error_and_close(
        Status::payload_too_large,
        "request body exceeds the limit of " + std::to_string(options_.body_limit) + " bytes");
  } else if (is_beast_http_error(ec) && ec != bhttp::error::end_of_stream &&
             ec != bhttp::error::partial_message) {
    log::debug("http: malformed request: " + ec.message(), {{"CORRAL_PEER", remote_}});
    send_error_and_close(Status::bad_request, "malformed request: " + ec.message());
  } else {
    // The client went away (cleanly between requests, or mid-request): nobody to answer.
    close_now(StreamEnd::kClientGone);
  }
}

void ServerConnection::handle_request() {
  phase_ = Phase::kHandling;
  Request request = parser_->release();
  parser_.reset();
  version_ = request.version();
  keep_alive_ = request.keep_alive();
  auto exchange =
      std::shared_ptr<Exchange>(new Exchange(shared_from_this(), std::move(request), remote_));
  try {
    server_->router.dispatch(exchange);
  } catch (const std::exception& e) {
    log::warning(std::string("http: handler threw: ") + e.what(),
                 {{"CORRAL_HTTP_TARGET", std::string(exchange->request().target())}});
    exchange->respond(
        error_response(Status::internal_server_error, "internal error while handling the request"));
  } catch (...) {
    log::warning("http: handler threw a non-standard exception");
    exchange->respond(
        error_response(Status::internal_server_error, "internal error while handling the request"));
  }
}

// ---------------------------------------------------------------------------------------------
// ServerConnection: answering

void ServerConnection::write_response(Response response) {
  if (phase_ != Phase::kHandling) {
    return;  // the connection was closed while the handler worked
  }
  phase_ = Phase::kWriting;
  // Read before the version changes: a handler's "Connection: close" is honoured.
  const bool handler_keeps_alive = response.keep_alive();
  response.version(version_);
  if (response.find(Field::server) == response.end() && !options_.server_header.empty()) {
    response.set(Field::server, options_.server_header);
  }
  keep_alive_ = keep_alive_ && !stopping_ && handler_keeps_alive;
  response.keep_alive(keep_alive_);
  response.prepare_payload();
  auto message = std::make_shared<Response>(std::move(response));
  arm_timer(Clock::now() + options_.write_timeout, &ServerConnection::on_write_timeout);
  bhttp::async_write(socket_, *message,
                     [self = shared_from_this(), message](const error_code& ec, std::size_t) {
                       self->disarm_timer();
                       if (self->phase_ != Phase::kWriting) {
                         return;
                       }
                       if (ec) {
                         self->close_now(StreamEnd::kClientGone);
                       } else if (self->keep_alive_ && !self->stopping_) {
                         self->read_request();
                       } else {
                         self->graceful_close();
                       }
                     });
}

void ServerConnection::send_error_and_close(Status status, const std::string& message) {
  phase_ = Phase::kHandling;
  keep_alive_ = false;
  parser_.reset();
  write_response(error_response(status, message));
}

// ---------------------------------------------------------------------------------------------
// ServerConnection: streaming

std::shared_ptr<StreamWriter> ServerConnection::start_stream(Response head) {
  auto writer = std::make_shared<StreamWriterImpl>(weak_from_this(), options_.stream_queue_limit);
  asio::post(socket_.get_executor(),
             [self = shared_from_this(), writer, h = std::move(head)]() mutable {
               self->begin_stream(std::move(h), std::move(writer));
             });
  return writer;
}

void ServerConnection::begin_stream(Response head, std::shared_ptr<StreamWriterImpl> writer) {
  if (phase_ != Phase::kHandling) {
    writer->finished(StreamEnd::kClientGone);
    return;
  }
  phase_ = Phase::kStreaming;
  stream_ = std::move(writer);
  head.version(version_);
  head.body().clear();
  head.erase(Field::content_length);
  head.chunked(true);
  head.keep_alive(false);
  if (head.find(Field::server) == head.end() && !options_.server_header.empty()) {
    head.set(Field::server, options_.server_header);
  }
  std::ostringstream header_text;
  header_text << head.base();
  out_queue_.emplace_back(header_text.str(), 0);
  // A read stays pending for the whole stream: it is how we notice the client going away.
  read_and_discard();
  if (stopping_) {
    end_stream(StreamEnd::kServerStopping);
    return;
  }
  pump();
}

void ServerConnection::enqueue(std::string data, std::size_t payload) {
  if (phase_ != Phase::kStreaming || close_after_queue_) {
    if (stream_) {
      stream_->consumed(payload);
    }
    return;
  }
  out_queue_.emplace_back(std::move(data), payload);
  pump();
}

void ServerConnection::end_stream(StreamEnd reason) {
  if (phase_ != Phase::kStreaming || close_after_queue_) {
    return;
  }
  out_queue_.emplace_back(std::string(kLastChunk), 0);
  close_after_queue_ = true;
  if (auto stream = std::move(stream_)) {
    stream->finished(reason);
  }
  pump();
}

void ServerConnection::pump() {
  if (phase_ != Phase::kStreaming || writing_) {
    return;
  }
  if (out_queue_.empty()) {
    if (close_after_queue_) {
      graceful_close();
    }
    return;
  }
  writing_ = true;
  arm_timer(Clock::now() + options_.write_timeout, &ServerConnection::on_stream_write_timeout);
  // Every chunk queued so far, up to 64 or 1 MiB, goes in one write (deque elements keep their
  // addresses while more are appended; they leave the queue only when written).
  constexpr std::size_t kMaxGather = 64;
  constexpr std::size_t kMaxGatherBytes = 1 << 20;
  write_buffers_.clear();
  std::size_t gathered_bytes = 0;
  for (const auto& item : out_queue_) {
    if (!write_buffers_.empty() && (write_buffers_.size() == kMaxGather ||
                                    gathered_bytes + item.first.size() > kMaxGatherBytes)) {
      break;
    }
    write_buffers_.push_back(asio::buffer(item.first));
    gathered_bytes += item.first.size();
  }
  asio::async_write(
      socket_, write_buffers_, [self = shared_from_this()](const error_code& ec, std::size_t) {
        self->writing_ = false;
        self->disarm_timer();
        if (self->phase_ != Phase::kStreaming) {
          return;
        }
        if (ec) {
          // A peer that went away shows up here first when we were writing.
          const bool gone = ec == asio::error::broken_pipe || ec == asio::error::connection_reset ||
                            ec == asio::error::eof;
          self->close_now(gone ? StreamEnd::kClientGone : StreamEnd::kWriteFailed);
          return;
        }
        for (std::size_t i = 0; i < self->write_buffers_.size(); ++i) {
          if (self->stream_) {
            self->stream_->consumed(self->out_queue_.front().second);
          }
          self->out_queue_.pop_front();
        }
        self->write_buffers_.clear();
        self->pump();
      });
}

// ---------------------------------------------------------------------------------------------
// ServerConnection: closing

void ServerConnection::on_shutdown() {
  stopping_ = true;
  switch (phase_) {
    case Phase::kReading:
      // Idle keep-alive connections go now; a request already arriving may finish.
      if (!request_started_ && !(parser_ && parser_->got_some()) && buffer_.size() == 0) {
        close_now(StreamEnd::kServerStopping);
      }
      break;
    case Phase::kStreaming:
      end_stream(StreamEnd::kServerStopping);
      break;
    default:
      break;  // the response in progress is sent with "Connection: close"
  }
}

void ServerConnection::graceful_close() {
  phase_ = Phase::kClosing;
  error_code ignored;
  socket_.shutdown(asio::socket_base::shutdown_send, ignored);
  arm_timer(Clock::now() + kLingerTime, &ServerConnection::linger_expired);
  if (!discard_pending_) {
    read_and_discard();
  }
}

void ServerConnection::read_and_discard() {
  discard_pending_ = true;
  socket_.async_read_some(
      asio::buffer(scratch_), [self = shared_from_this()](const error_code& ec, std::size_t) {
        self->discard_pending_ = false;
        if (self->phase_ != Phase::kStreaming && self->phase_ != Phase::kClosing) {
          return;
        }
        if (ec) {
          self->close_now(StreamEnd::kClientGone);
          return;
        }
        self->read_and_discard();
      });
}

void ServerConnection::close_now(StreamEnd reason) {
  if (phase_ == Phase::kClosed) {
    return;
  }
  phase_ = Phase::kClosed;
  disarm_timer();
  error_code ignored;
  socket_.shutdown(asio::socket_base::shutdown_both, ignored);
  socket_.close(ignored);
  out_queue_.clear();
  if (auto stream = std::move(stream_)) {
    stream->finished(reason);
  }
}

// ---------------------------------------------------------------------------------------------
// ServerState

void ServerState::accept(Listener& listener) {
  listener.acceptor.async_accept(asio::make_strand(io), [self = shared_from_this(), &listener](
                                                            const error_code& ec, Socket socket) {
    if (ec == asio::error::operation_aborted || !listener.acceptor.is_open()) {
      return;
    }
    if (ec) {
      // EMFILE and friends: back off instead of spinning on a failing accept.
      log::warning("http: accept failed on " + listener.bound.to_string() + ": " + ec.message() +
                   "; retrying in 100 ms");
      listener.retry.expires_after(std::chrono::milliseconds(100));
      listener.retry.async_wait([self, &listener](const error_code& wec) {
        if (!wec && listener.acceptor.is_open()) {
          self->accept(listener);
        }
      });
      return;
    }
    std::shared_ptr<ServerConnection> connection;
    {
      std::lock_guard lock(self->mu);
      if (self->connections.size() >= self->options.max_connections) {
        log::warning("http: refusing a connection on " + listener.bound.to_string() +
                     ": max_connections (" + std::to_string(self->options.max_connections) +
                     ") reached");
      } else {
        error_code ignored;
        std::string remote = "unix";
        if (!listener.unix_socket) {
          socket.set_option(asio::ip::tcp::no_delay(true), ignored);
          auto peer = socket.remote_endpoint(ignored);
          if (!ignored) {
            remote = describe_peer(peer);
          }
        }
        const auto id = self->next_id++;
        connection =
            std::make_shared<ServerConnection>(self, std::move(socket), std::move(remote), id);
        self->connections.emplace(id, connection);
      }
    }
    if (connection) {
      connection->start();
    }
    self->accept(listener);
  });
}

void ServerState::forget(std::uint64_t id) {
  std::lock_guard lock(mu);
  connections.erase(id);
  if (stopping && connections.empty()) {
    asio::post(strand, [self = shared_from_this()] { self->finish_stop_if_idle(); });
  }
}

void ServerState::close_listeners() {
  std::lock_guard lock(mu);
  for (auto& listener : listeners) {
    error_code ignored;
    if (listener->acceptor.is_open()) {
      listener->acceptor.close(ignored);
      if (listener->unix_socket) {
        ::unlink(listener->bound.path.c_str());
      }
    }
    listener->retry.cancel();
  }
}

void ServerState::cut_all(StreamEnd reason) {
  std::vector<std::shared_ptr<ServerConnection>> live;
  {
    std::lock_guard lock(mu);
    for (auto& [id, weak] : connections) {
      if (auto connection = weak.lock()) {
        live.push_back(std::move(connection));
      }
    }
  }
  for (auto& connection : live) {
    connection->cut(reason);
  }
}

void ServerState::stop(std::function<void()> on_stopped) {
  asio::post(strand, [self = shared_from_this(), cb = std::move(on_stopped)]() mutable {
    std::vector<std::shared_ptr<ServerConnection>> live;
    {
      std::lock_guard lock(self->mu);
      if (cb) {
        if (self->stopped) {
          asio::post(self->io, std::move(cb));
        } else {
          self->on_stopped_callbacks.push_back(std::move(cb));
        }
      }
      if (self->stopping) {
        return;
      }
      self->stopping = true;
      for (auto& [id, weak] : self->connections) {
        if (auto connection = weak.lock()) {
          live.push_back(std::move(connection));
        }
      }
    }
    self->close_listeners();
    for (auto& connection : live) {
      connection->begin_shutdown();
    }
    live.clear();
    self->grace_timer.expires_after(self->options.shutdown_grace);
    self->grace_timer.async_wait([self](const error_code& ec) {
      if (!ec) {
        log::info("http: shutdown grace period over; closing remaining connections");
        self->cut_all(StreamEnd::kServerStopping);
      }
    });
    self->finish_stop_if_idle();
  });
}

void ServerState::finish_stop_if_idle() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mu);
    if (!stopping || stopped || !connections.empty()) {
      return;
    }
    stopped = true;
    callbacks.swap(on_stopped_callbacks);
  }
  grace_timer.cancel();
  for (auto& cb : callbacks) {
    asio::post(io, std::move(cb));
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Exchange

Exchange::Exchange(std::shared_ptr<detail::ServerConnection> connection, Request request,
                   std::string remote)
    : connection_(std::move(connection)),
      request_(std::move(request)),
      remote_(std::move(remote)) {}

Exchange::~Exchange() {
  if (!answered_.exchange(true)) {
    log::warning("http: handler dropped a request without answering it",
                 {{"CORRAL_HTTP_TARGET", std::string(request_.target())}});
    connection_->respond(
        error_response(Status::internal_server_error, "the handler did not send a response"));
  }
}

void Exchange::respond(Response response) {
  if (answered_.exchange(true)) {
    log::warning("http: second answer to one request ignored",
                 {{"CORRAL_HTTP_TARGET", std::string(request_.target())}});
    return;
  }
  connection_->respond(std::move(response));
}

std::shared_ptr<StreamWriter> Exchange::start_stream(Response head) {
  if (answered_.exchange(true)) {
    log::warning("http: start_stream after the request was answered; ignored",
                 {{"CORRAL_HTTP_TARGET", std::string(request_.target())}});
    auto dead =
        std::make_shared<detail::StreamWriterImpl>(std::weak_ptr<detail::ServerConnection>(), 0);
    dead->finished(StreamEnd::kClosed);
    return dead;
  }
  return connection_->start_stream(std::move(head));
}

// ---------------------------------------------------------------------------------------------
// Router

Router& Router::add(Verb method, std::string path, Handler handler) {
  routes_.push_back(Route{method, std::move(path), false, std::move(handler)});
  return *this;
}

Router& Router::add_prefix(Verb method, std::string prefix, Handler handler) {
  routes_.push_back(Route{method, std::move(prefix), true, std::move(handler)});
  return *this;
}

namespace {
Router::Handler adapt(Router::SimpleHandler handler) {
  return [h = std::move(handler)](std::shared_ptr<Exchange> exchange) {
    exchange->respond(h(exchange->request()));
  };
}
}  // namespace

Router& Router::add(Verb method, std::string path, SimpleHandler handler) {
  return add(method, std::move(path), adapt(std::move(handler)));
}

Router& Router::add_prefix(Verb method, std::string prefix, SimpleHandler handler) {
  return add_prefix(method, std::move(prefix), adapt(std::move(handler)));
}

void Router::dispatch(const std::shared_ptr<Exchange>& exchange) const {
  const Request& request = exchange->request();
  const std::string_view path = exchange->path();
  const Route* best = nullptr;
  std::vector<Verb> allowed;
  for (const auto& route : routes_) {
    const bool path_matches = route.prefix ? path.starts_with(route.path) : path == route.path;
    if (!path_matches) {
      continue;
    }
    if (route.method != request.method()) {
      if (std::find(allowed.begin(), allowed.end(), route.method) == allowed.end()) {
        allowed.push_back(route.method);
      }
      continue;
    }
    const bool better = best == nullptr || (best->prefix && !route.prefix) ||
                        (best->prefix && route.prefix && route.path.size() > best->path.size());
    if (better) {
      best = &route;
    }
  }
  if (best != nullptr) {
    best->handler(exchange);
    return;
  }
  const std::string what = std::string(request.method_string()) + " " + std::string(path);
  if (!allowed.empty()) {
    std::string allow;
    for (Verb v : allowed) {
      if (!allow.empty()) {
        allow += ", ";
      }
      allow += std::string(beast_http::to_string(v));
    }
    Response res = error_response(Status::method_not_allowed,
                                  "method not allowed: " + what + " (allowed: " + allow + ")");
    res.set(Field::allow, allow);
    exchange->respond(std::move(res));
    return;
  }
  exchange->respond(error_response(Status::not_found, "no such endpoint: " + what));
}

// ---------------------------------------------------------------------------------------------
// Server

Server::Server(asio::io_context& io, Router router, ServerOptions options)
    : state_(std::make_shared<detail::ServerState>(io, std::move(router), std::move(options))) {}

Server::~Server() {
  {
    std::lock_guard lock(state_->mu);
    state_->stopping = true;
  }
  state_->close_listeners();
  state_->cut_all(StreamEnd::kServerStopping);
  state_->grace_timer.cancel();
}

Result<void> Server::listen(std::string_view address, mode_t unix_mode) {
  CORRAL_ASSIGN_OR_RETURN(Endpoint endpoint, parse_endpoint(address));
  return listen(endpoint, unix_mode);
}

namespace {

// A unix socket file nobody accepts on is left over from a crashed process and may go; a live
// one, or any other kind of file, must not be touched.
Result<void> clear_stale_unix_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return ok();
    }
    return Error::from_errno("checking unix socket path " + path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Error(EEXIST, "cannot listen on " + path +
                             ": a file that is not a socket exists there; remove it or choose "
                             "another path");
  }
  asio::io_context probe_io;
  asio::local::stream_protocol::socket probe(probe_io);
  error_code ec;
  probe.connect(asio::local::stream_protocol::endpoint(path), ec);
  if (!ec) {
    return Error(EADDRINUSE, "cannot listen on " + path +
                                 ": another process is already accepting connections there");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Error::from_errno("removing stale unix socket " + path);
  }
  return ok();
}

}  // namespace

Result<void> Server::listen(const Endpoint& endpoint, mode_t unix_mode) {
  auto listener = std::make_unique<detail::ServerState::Listener>(state_->strand);
  error_code ec;
  asio::generic::stream_protocol::endpoint bind_ep;
  listener->bound = endpoint;
  const std::string where = endpoint.to_string();
  if (endpoint.kind == Endpoint::Kind::kUnix) {
    if (endpoint.path.size() >= sizeof(sockaddr_un::sun_path)) {
      return Error(ENAMETOOLONG, "cannot listen on " + endpoint.path +
                                     ": a unix socket path must be shorter than " +
                                     std::to_string(sizeof(sockaddr_un::sun_path)) + " bytes");
    }
    CORRAL_TRY(clear_stale_unix_socket(endpoint.path));
    listener->unix_socket = true;
    bind_ep = asio::local::stream_protocol::endpoint(endpoint.path);
  } else {
    asio::ip::address address = asio::ip::make_address(endpoint.host, ec);
    if (ec) {
      asio::ip::tcp::resolver resolver(state_->io);
      auto results = resolver.resolve(endpoint.host, std::to_string(endpoint.port),
                                      asio::ip::tcp::resolver::passive, ec);
      if (ec || results.empty()) {
        return Error(ENXIO, "cannot listen on " + where + ": cannot resolve host '" +
                                endpoint.host + "': " + (ec ? ec.message() : "no addresses"));
      }
      address = results.begin()->endpoint().address();
    }
    bind_ep = asio::ip::tcp::endpoint(address, endpoint.port);
  }

  auto& acceptor = listener->acceptor;
  acceptor.open(bind_ep.protocol(), ec);
  if (ec) {
    return Error(ec.value(), "cannot listen on " + where + ": socket: " + ec.message());
  }
  if (!listener->unix_socket) {
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  }
  acceptor.bind(bind_ep, ec);
  if (ec) {
    return Error(ec.value(), "cannot listen on " + where + ": " + ec.message());
  }
  if (listener->unix_socket && ::chmod(endpoint.path.c_str(), unix_mode) != 0) {
    const int err = errno;
    ::unlink(endpoint.path.c_str());
    return Error::from_errno("cannot set the mode of unix socket " + endpoint.path, err);
  }
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    if (listener->unix_socket) {
      ::unlink(endpoint.path.c_str());
    }
    return Error(ec.value(), "cannot listen on " + where + ": " + ec.message());
  }
  if (!listener->unix_socket) {
    auto local = acceptor.local_endpoint(ec);
    asio::ip::tcp::endpoint tcp_ep;
    if (!ec && local.size() <= tcp_ep.capacity()) {
      std::memcpy(tcp_ep.data(), local.data(), local.size());
      tcp_ep.resize(local.size());
      listener->bound.host = tcp_ep.address().to_string();
      listener->bound.port = tcp_ep.port();
    }
  }
  log::info("http: listening on " + listener->bound.to_string());
  detail::ServerState::Listener* raw = listener.get();
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopping) {
      error_code ignored;
      acceptor.close(ignored);
      if (listener->unix_socket) {
        ::unlink(endpoint.path.c_str());
      }
      return Error(ESHUTDOWN, "cannot listen on " + where + ": the server is stopping");
    }
    state_->listeners.push_back(std::move(listener));
  }
  asio::post(state_->strand, [state = state_, raw] { state->accept(*raw); });
  return ok();
}

std::vector<Endpoint> Server::endpoints() const {
  std::lock_guard lock(state_->mu);
  std::vector<Endpoint> out;
  for (const auto& listener : state_->listeners) {
    out.push_back(listener->bound);
  }
  return out;
}

std::uint16_t Server::tcp_port() const {
  std::lock_guard lock(state_->mu);
  for (const auto& listener : state_->listeners) {
    if (!listener->unix_socket) {
      return listener->bound.port;
    }
  }
  return 0;
}

std::size_t Server::connection_count() const {
  std::lock_guard lock(state_->mu);
  return state_->connections.size();
}

void Server::stop(std::function<void()> on_stopped) { state_->stop(std::move(on_stopped)); }

}  // namespace corral::http
