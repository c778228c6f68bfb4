// HTTP/1.1 client: one operation object per request or stream, driven by completion handlers on
// the io_context. Connections use asio's generic stream protocol, so TCP and unix sockets share
// all code past connect(). TLS wraps that socket in an asio::ssl::stream after connect; every
// read and write goes through with_stream(), which picks the TLS stream or the plain socket.

#include "corral/common/http_client.hpp"

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <limits>
#include <optional>
#include <system_error>
#include <unordered_map>
#include <vector>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "corral/common/log.hpp"

namespace corral::http {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using GenericEndpoint = asio::generic::stream_protocol::endpoint;

namespace {

// The most Beast's http::async_read_some asks of the socket per read.
constexpr std::size_t kReadChunk = 64 * 1024;

std::string ms_text(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

// Turns an Asio/Beast error into an Error with an errno-style code the caller can act on.
Error to_error(const error_code& ec, const std::string& what) {
  if (ec == asio::error::eof || ec == bhttp::error::end_of_stream ||
      ec == bhttp::error::partial_message) {
    return Error(ECONNRESET, what + ": the server closed the connection early");
  }
  if (ec == bhttp::error::body_limit || ec == bhttp::error::header_limit ||
      ec == bhttp::error::buffer_overflow) {
    return Error(EMSGSIZE, what + ": " + ec.message());
  }
  if (ec == asio::error::operation_aborted) {
    return Error(ECANCELED, what + ": cancelled");
  }
  if (ec == asio::ssl::error::stream_truncated) {
    return Error(ECONNRESET, what + ": the server closed the TLS connection early");
  }
  if (ec.category() == boost::system::system_category() ||
      ec.category() == boost::system::generic_category()) {
    return Error(ec.value(), what + ": " + ec.message());
  }
  if (ec.category() == asio::error::get_netdb_category() ||
      ec.category() == asio::error::get_addrinfo_category()) {
    return Error(EHOSTUNREACH, what + ": " + ec.message());
  }
  return Error(EPROTO, what + ": " + ec.message());
}

// A reused keep-alive connection the server had already closed fails like this, before any
// byte of a response.
bool is_stale_connection_error(const error_code& ec) {
  return ec == asio::error::eof || ec == bhttp::error::end_of_stream ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == bhttp::error::partial_message || ec == asio::ssl::error::stream_truncated;
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

// The TLS context of one client: TLS >= 1.2, peer verification against the system store or
// the configured CA file. Its errors are reported by every request (the constructor of the
// client cannot return them).
Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const TlsOptions& tls) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1);
  if (SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION) != 1) {
    return Error(EPROTO, "TLS: cannot require TLS 1.2 or newer");
  }
  context->set_verify_mode(asio::ssl::verify_peer);
  error_code ec;
  if (tls.ca_file.empty()) {
    context->set_default_verify_paths(ec);
    if (ec) {
      return Error(EPROTO, "TLS: cannot load the system's CA certificates: " + ec.message());
    }
  } else {
    if (::access(tls.ca_file.c_str(), R_OK) != 0) {
      const int err = errno;
      return Error(err, "TLS: cannot read the CA file " + tls.ca_file + " (" +
                            std::generic_category().message(err) +
                            "); give a PEM file of CA "
                            "certificates (" +
                            tls.ca_file_hint + ")");
    }
    context->load_verify_file(tls.ca_file, ec);
    if (ec) {
      return Error(EINVAL, "TLS: the CA file " + tls.ca_file +
                               " holds no usable PEM certificate (" + ec.message() +
                               "); give a "
                               "PEM file of CA certificates (" +
                               tls.ca_file_hint + ")");
    }
  }
  return context;
}

// Why a TLS handshake with `who` failed, in words a user can act on.
Error tls_handshake_error(SSL* ssl, const error_code& ec, const std::string& who,
                          const std::string& name, const TlsOptions& tls) {
  const long verify = SSL_get_verify_result(ssl);  // NOLINT(google-runtime-int): OpenSSL's type
  const std::string reason = X509_verify_cert_error_string(verify);
  switch (verify) {
    case X509_V_OK:
      break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return Error(EACCES, "TLS: the certificate of " + who + " is not valid for '" + name +
                               "' (hostname mismatch); connect with a name the certificate lists "
                               "(its subjectAltName), or reissue the certificate for '" +
                               name + "'");
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
      return Error(EACCES, "TLS: the certificate of " + who + " is not trusted (" + reason + ")" +
                               (tls.ca_file.empty() ? " by the system's CA store"
                                                    : " by the CA file " + tls.ca_file) +
                               "; give the PEM file of the CA that signed it with " +
                               tls.ca_file_hint);
    default:
      return Error(EACCES, "TLS: the certificate of " + who + " failed verification: " + reason);
  }
  std::string detail = ec.message();
  if (ec.category() == asio::error::get_ssl_category()) {
    char buffer[256] = {};
    ERR_error_string_n(static_cast<unsigned long>(ec.value()), buffer,  // NOLINT
                       sizeof buffer);
    detail = buffer;
  }
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
      ec == asio::error::connection_reset) {
    detail = "the server closed the connection";
  }
  return Error(EPROTO, "TLS handshake with " + who + " failed: " + detail +
                           " (does the server speak TLS 1.2 or newer on this port?)");
}

}  // namespace

namespace detail {

using TlsStream = asio::ssl::stream<asio::generic::stream_protocol::socket&>;

struct ClientConnection {
  explicit ClientConnection(asio::io_context& io) : socket(io) {}
  void close() {
    error_code ignored;
    if (resolver) {
      resolver->cancel();
    }
    socket.shutdown(asio::socket_base::shutdown_both, ignored);
    socket.close(ignored);
  }
  asio::generic::stream_protocol::socket socket;
  std::optional<asio::ip::tcp::resolver> resolver;
  boost::beast::flat_buffer buffer;
  // Over `socket` once the TLS handshake is done (declared after it: destroyed first).
  std::unique_ptr<TlsStream> tls;
};

// Calls f(stream) with the connection's TLS stream, or its socket for plain HTTP.
template <typename F>
void with_stream(ClientConnection& connection, F&& f) {
  if (connection.tls) {
    f(*connection.tls);
  } else {
    f(connection.socket);
  }
}

class Operation {
 public:
  virtual ~Operation() = default;
  virtual void abort() = 0;
};

class ClientState : public std::enable_shared_from_this<ClientState> {
 public:
  ClientState(asio::io_context& io_, Endpoint server_, ClientOptions options_)
      : io(io_), server(std::move(server_)), options(std::move(options_)) {
    host_header = server.kind == Endpoint::Kind::kUnix ? "localhost" : server.to_string();
    if (options.tls.enabled) {
      tls_name = options.tls.server_name.empty() ? server.host : options.tls.server_name;
      if (server.kind == Endpoint::Kind::kUnix) {
        tls_error =
            Error(EINVAL, "TLS is not supported over a unix socket (" + server.to_string() + ")");
      } else if (auto context = make_tls_context(options.tls); context.ok()) {
        tls_context = std::move(*context);
      } else {
        tls_error = std::move(context).error();
      }
    }
  }

  std::shared_ptr<ClientConnection> take_idle() {
    while (!idle.empty()) {
      auto connection = std::move(idle.back());
      idle.pop_back();
      if (connection->socket.is_open()) {
        return connection;
      }
    }
    return nullptr;
  }
  void put_idle(std::shared_ptr<ClientConnection> connection) {
    if (closed || idle.size() >= options.max_idle_connections || connection->buffer.size() != 0) {
      connection->close();
      return;
    }
    idle.push_back(std::move(connection));
  }
  void prepare(Request& request) const {
    if (request.find(Field::host) == request.end()) {
      request.set(Field::host, host_header);
    }
    if (request.find(Field::user_agent) == request.end() && !options.user_agent.empty()) {
      request.set(Field::user_agent, options.user_agent);
    }
    if (request.find(Field::transfer_encoding) == request.end()) {
      request.prepare_payload();
    }
  }

  asio::io_context& io;
  const Endpoint server;
  const ClientOptions options;
  std::string host_header;
  std::shared_ptr<asio::ssl::context> tls_context;  // set when TLS is on and usable
  std::optional<Error> tls_error;                   // TLS is on but unusable: why
  std::string tls_name;                             // the name the certificate must carry
  bool closed = false;
  std::vector<std::shared_ptr<ClientConnection>> idle;
  std::unordered_map<Operation*, std::weak_ptr<Operation>> in_flight;
};

// Resolves (TCP) and connects `connection`, trying each resolved address in turn.
class Connector : public std::enable_shared_from_this<Connector> {
 public:
  using Done = std::function<void(Result<void>)>;
  Connector(std::shared_ptr<ClientState> state, std::shared_ptr<ClientConnection> connection,
            Done done)
      : state_(std::move(state)), connection_(std::move(connection)), done_(std::move(done)) {}

  void start() {
    const Endpoint& server = state_->server;
    if (server.kind == Endpoint::Kind::kUnix) {
      endpoints_.emplace_back(asio::local::stream_protocol::endpoint(server.path));
      try_next();
      return;
    }
    error_code ec;
    auto address = asio::ip::make_address(server.host, ec);
    if (!ec) {
      endpoints_.emplace_back(asio::ip::tcp::endpoint(address, server.port));
      try_next();
      return;
    }
    connection_->resolver.emplace(state_->io);
    connection_->resolver->async_resolve(
        server.host, std::to_string(server.port),
        [self = shared_from_this()](const error_code& rec,
                                    const asio::ip::tcp::resolver::results_type& results) {
          if (rec) {
            self->done_(to_error(rec, "resolving " + self->state_->server.host));
            return;
          }
          for (const auto& entry : results) {
            self->endpoints_.emplace_back(entry.endpoint());
          }
          self->try_next();
        });
  }

 private:
  void try_next() {
    if (next_ >= endpoints_.size()) {
      done_(last_error_.code() != 0
                ? last_error_
                : Error(EHOSTUNREACH,
                        "connecting to " + state_->server.to_string() + ": no addresses"));
      return;
    }
    const GenericEndpoint endpoint = endpoints_[next_++];
    error_code ec;
    connection_->socket.close(ec);
    connection_->socket.open(endpoint.protocol(), ec);
    if (ec) {
      last_error_ = to_error(ec, "connecting to " + state_->server.to_string());
      try_next();
      return;
    }
    connection_->socket.async_connect(endpoint, [self = shared_from_this()](const error_code& cec) {
      if (!cec) {
        if (self->state_->server.kind == Endpoint::Kind::kTcp) {
          error_code ignored;
          self->connection_->socket.set_option(asio::ip::tcp::no_delay(true), ignored);
        }
        if (self->state_->tls_context) {
          self->handshake();
          return;
        }
        self->done_(ok());
        return;
      }
      self->last_error_ = to_error(cec, "connecting to " + self->state_->server.to_string());
      if (cec == asio::error::operation_aborted) {
        self->done_(self->last_error_);
        return;
      }
      self->try_next();
    });
  }

  void handshake() {
    auto& connection = *connection_;
    connection.tls = std::make_unique<TlsStream>(connection.socket, *state_->tls_context);
    SSL* ssl = connection.tls->native_handle();
    const std::string& name = state_->tls_name;
    const bool ip = is_ip_literal(name);
    // SNI carries names only (RFC 6066); the certificate is checked against the name or the
    // address.
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    if ((!ip && SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) ||
        (ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
            : X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size())) != 1) {
      done_(Error(EINVAL, "TLS: '" + name + "' cannot be used as the server name"));
      return;
    }
    if (!ip) {
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    connection.tls->async_handshake(
        asio::ssl::stream_base::client, [self = shared_from_this()](const error_code& hec) {
          if (!hec) {
            self->done_(ok());
            return;
          }
          if (hec == asio::error::operation_aborted) {
            self->done_(to_error(hec, "TLS handshake with " + self->state_->server.to_string()));
            return;
          }
          self->done_(tls_handshake_error(self->connection_->tls->native_handle(), hec,
                                          self->state_->server.to_string(), self->state_->tls_name,
                                          self->state_->options.tls));
        });
  }

  std::shared_ptr<ClientState> state_;
  std::shared_ptr<ClientConnection> connection_;
  Done done_;
  std::vector<GenericEndpoint> endpoints_;
  std::size_t next_ = 0;
  Error last_error_;
};

// Shared by request and stream operations: the connection, a deadline timer and bookkeeping.
template <typename Derived>
class OperationBase : public Operation, public std::enable_shared_from_this<Derived> {
 public:
  virtual void fail(Error error) = 0;

  explicit OperationBase(std::shared_ptr<ClientState> state)
      : state_(std::move(state)), timer_(state_->io) {}

  void abort() override {
    if (connection_) {
      connection_->close();
    }
    timer_.cancel();
  }

 protected:
  std::shared_ptr<Derived> self() { return this->shared_from_this(); }

  void register_in_flight() { state_->in_flight.emplace(this, self()); }
  void unregister_in_flight() { state_->in_flight.erase(this); }

  // If the timer fires, the connection is closed (failing whatever is pending) and
  // timed_out_ says why it failed.
  void arm(std::chrono::milliseconds after, std::string what) {
    timed_out_ = false;
    timeout_what_ = std::move(what);
    timer_.expires_after(after);
    const auto generation = ++timer_generation_;
    timer_.async_wait([s = self(), generation](const error_code& ec) {
      if (!ec && generation == s->timer_generation_) {
        s->timed_out_ = true;
        if (s->connection_) {
          s->connection_->close();
        }
      }
    });
  }
  void disarm() {
    ++timer_generation_;
    timer_.cancel();
  }
  Error timeout_error() const {
    return Error(ETIMEDOUT, timeout_what_ + " (" + state_->server.to_string() + ")");
  }

  void connect(std::function<void()> next) {
    if (state_->tls_error) {
      // Posted: the caller expects its callback after request()/stream() returned.
      asio::post(state_->io, [s = self(), error = *state_->tls_error] {
        static_cast<OperationBase*>(s.get())->fail(error);
      });
      return;
    }
    connection_ = std::make_shared<ClientConnection>(state_->io);
    arm(state_->options.connect_timeout,
        "could not connect within " + ms_text(state_->options.connect_timeout));
    auto connector = std::make_shared<Connector>(
        state_, connection_, [s = self(), next = std::move(next)](Result<void> result) {
          s->disarm();
          auto* base = static_cast<OperationBase*>(s.get());
          if (s->timed_out_) {
            base->fail(s->timeout_error());
          } else if (!result.ok()) {
            base->fail(std::move(result).error());
          } else {
            next();
          }
        });
    connector->start();
  }

  std::shared_ptr<ClientState> state_;
  std::shared_ptr<ClientConnection> connection_;
  asio::steady_timer timer_;
  std::uint64_t timer_generation_ = 0;
  bool timed_out_ = false;
  std::string timeout_what_;
};

class RequestOperation final : public OperationBase<RequestOperation> {
 public:
  using Done = std::function<void(Result<Response>)>;
  RequestOperation(std::shared_ptr<ClientState> state, Request request, Done done)
      : OperationBase(std::move(state)), request_(std::move(request)), done_(std::move(done)) {}

  void start() {
    register_in_flight();
    attempt(/*allow_reuse=*/true);
  }

 private:
  void attempt(bool allow_reuse) {
    connection_ = allow_reuse ? state_->take_idle() : nullptr;
    reused_ = connection_ != nullptr;
    if (reused_) {
      send();
    } else {
      connect([s = self()] { s->send(); });
    }
  }

  void send() {
    arm(state_->options.request_timeout,
        "no complete response within " + ms_text(state_->options.request_timeout));
    with_stream(*connection_, [this](auto& stream) {
      bhttp::async_write(stream, request_, [s = self()](const error_code& ec, std::size_t) {
        if (s->finished_) {
          return;
        }
        if (s->timed_out_) {
          s->fail(s->timeout_error());
        } else if (ec) {
          s->failed_io(ec, "sending the request");
        } else {
          s->receive();
        }
      });
    });
  }

  void receive() {
    parser_.emplace();
    body_advised_ = false;
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(state_->options.header_limit, UINT32_MAX)));
    parser_->body_limit(state_->options.body_limit);
    if (request_.method() == Verb::head) {
      parser_->skip(true);
    }
    // Beast sizes each socket read by the buffer's free capacity (at least 512 bytes, at most
    // 64 KiB); the parser moves body bytes out of the buffer as they arrive, so without room
    // reserved the capacity stays where the head left it and a large body arrives ~512 bytes
    // per recvfrom and per completion (a 77 MB GET_STATE: ~150,000 of them). 64 KiB reads.
    connection_->buffer.reserve(kReadChunk);
    read_more();
  }

  // Not http::async_read: in Boost 1.74 it makes the parser eager, and an eager response
  // parser loses the body_limit error for a Content-Length over the limit. read_some keeps
  // the parser non-eager, so every error surfaces.
  void read_more() {
    with_stream(*connection_, [this](auto& stream) {
      bhttp::async_read_some(
          stream, connection_->buffer, *parser_, [s = self()](const error_code& ec, std::size_t) {
            if (!ec && !s->finished_ && !s->timed_out_ && !s->parser_->is_done()) {
              s->advise_body();
              s->read_more();
              return;
            }
            s->on_response(ec);
          });
    });
  }

  // Once the head is in, the body's string holds room for the whole Content-Length. For a
  // large body (a 77 MB GET_STATE) ask for transparent huge pages on it: with 4 KiB pages,
  // filling it costs ~19,000 page faults. A hint; nothing changes without THP.
  void advise_body() {
    if (body_advised_ || !parser_->is_header_done()) {
      return;
    }
    body_advised_ = true;
    std::string& body = parser_->get().body();
    constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
    if (body.capacity() < 4 * kHuge) {
      return;
    }
    const auto start = reinterpret_cast<std::uintptr_t>(body.data());
    const std::uintptr_t begin = (start + body.size() + kHuge - 1) & ~(kHuge - 1);
    const std::uintptr_t end = (start + body.capacity()) & ~(kHuge - 1);
    if (end > begin) {
      madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    }
  }

  void on_response(const error_code& ec) {
    disarm();
    if (finished_) {
      return;
    }
    if (timed_out_) {
      fail(timeout_error());
      return;
    }
    if (ec) {
      failed_io(ec, "reading the response");
      return;
    }
    Response response = parser_->release();
    if (response.keep_alive() && request_.keep_alive()) {
      state_->put_idle(std::move(connection_));
    } else {
      connection_->close();
    }
    connection_.reset();
    finish(std::move(response));
  }

  void failed_io(const error_code& ec, const std::string& what) {
    const bool nothing_received = !parser_ || !parser_->got_some();
    if (reused_ && nothing_received && is_stale_connection_error(ec)) {
      log::debug("http client: reused connection was closed by the server; retrying once");
      connection_->close();
      attempt(/*allow_reuse=*/false);
      return;
    }
    fail(to_error(ec, what + " (" + state_->server.to_string() + ")"));
  }

  void fail(Error error) override {  // NOLINT: called by OperationBase
    if (connection_) {
      connection_->close();
      connection_.reset();
    }
    finish(std::move(error));
  }

  void finish(Result<Response> result) {
    if (finished_) {
      return;
    }
    finished_ = true;
    disarm();
    unregister_in_flight();
    if (!state_->closed && done_) {
      auto done = std::move(done_);
      done(std::move(result));
    }
  }

  Request request_;
  Done done_;
  bool reused_ = false;
  bool finished_ = false;
  std::optional<bhttp::response_parser<bhttp::string_body>> parser_;
  bool body_advised_ = false;
};

class StreamOperation final : public OperationBase<StreamOperation>, public ClientStream {
 public:
  StreamOperation(std::shared_ptr<ClientState> state, Request request, StreamCallbacks callbacks)
      : OperationBase(std::move(state)),
        request_(std::move(request)),
        callbacks_(std::move(callbacks)) {}

  void start() {
    register_in_flight();
    connect([s = self()] { s->send(); });
  }

  void cancel() override { finish(Error(ECANCELED, "stream cancelled by the client")); }

 private:
  void send() {
    arm(state_->options.request_timeout,
        "no response head within " + ms_text(state_->options.request_timeout));
    with_stream(*connection_, [this](auto& stream) {
      bhttp::async_write(stream, request_, [s = self()](const error_code& ec, std::size_t) {
        if (s->finished_) {
          return;
        }
        if (s->timed_out_) {
          s->fail(s->timeout_error());
        } else if (ec) {
          s->fail(to_error(ec, "sending the request (" + s->state_->server.to_string() + ")"));
        } else {
          s->read_head();
        }
      });
    });
  }

  void read_head() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(state_->options.header_limit, UINT32_MAX)));
    // Streams are not limited. Not boost::none: Boost 1.74's parser compares the Content-Length
    // with the optional (len > none is true) and refuses every body with a Content-Length.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    // Beast sizes each socket read by the buffer's free capacity (at least 512 bytes): without
    // room reserved, a large body arrives 512 bytes per recvfrom (and per timer re-arm).
    connection_->buffer.reserve(chunk_.size());
    with_stream(*connection_, [this](auto& stream) {
      bhttp::async_read_header(stream, connection_->buffer, *parser_,
                               [s = self()](const error_code& ec, std::size_t) { s->on_head(ec); });
    });
  }

  void on_head(const error_code& ec) {
    disarm();
    if (finished_) {
      return;
    }
    if (timed_out_) {
      fail(timeout_error());
      return;
    }
    if (ec) {
      fail(to_error(ec, "reading the response head (" + state_->server.to_string() + ")"));
      return;
    }
    Response head;
    head.base() = parser_->get().base();
    if (callbacks_.on_head && !callbacks_.on_head(head)) {
      cancel();
      return;
    }
    if (finished_) {
      return;  // cancelled from inside on_head
    }
    read_body();
  }

  void read_body() {
    if (parser_->is_done()) {
      finish(ok());
      return;
    }
    parser_->get().body().data = chunk_.data();
    parser_->get().body().size = chunk_.size();
    parser_->get().body().more = true;
    const auto idle = state_->options.stream_idle_timeout;
    if (idle.count() > 0) {
      arm(idle, "no data on the stream for " + ms_text(idle));
    }
    with_stream(*connection_, [this](auto& stream) {
      bhttp::async_read_some(stream, connection_->buffer, *parser_,
                             [s = self()](const error_code& ec, std::size_t) { s->on_body(ec); });
    });
  }

  void on_body(error_code ec) {
    disarm();
    if (finished_) {
      return;
    }
    if (timed_out_) {
      fail(timeout_error());
      return;
    }
    if (ec == bhttp::error::need_buffer) {
      ec = {};  // our chunk_ buffer is full: deliver it and go on
    }
    const std::size_t n = chunk_.size() - parser_->get().body().size;
    if (n > 0 && callbacks_.on_data && !callbacks_.on_data(std::string_view(chunk_.data(), n))) {
      cancel();
      return;
    }
    if (finished_) {
      return;  // cancelled from inside on_data
    }
    if (ec) {
      fail(to_error(ec, "reading the response stream (" + state_->server.to_string() + ")"));
      return;
    }
    read_body();
  }

  void fail(Error error) override { finish(std::move(error)); }

  void finish(Result<void> result) {
    if (finished_) {
      return;
    }
    finished_ = true;
    disarm();
    if (connection_) {
      connection_->close();
    }
    unregister_in_flight();
    if (!state_->closed && callbacks_.on_end) {
      auto on_end = std::move(callbacks_.on_end);
      on_end(std::move(result));
    }
    callbacks_ = {};
  }

  Request request_;
  StreamCallbacks callbacks_;
  bool finished_ = false;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser_;
  std::array<char, 16 * 1024> chunk_{};
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------

AsyncHttpClient::AsyncHttpClient(asio::io_context& io, Endpoint server, ClientOptions options)
    : state_(std::make_shared<detail::ClientState>(io, std::move(server), std::move(options))) {}

AsyncHttpClient::~AsyncHttpClient() {
  state_->closed = true;
  for (auto& connection : state_->idle) {
    connection->close();
  }
  state_->idle.clear();
  auto in_flight = std::move(state_->in_flight);
  for (auto& [raw, weak] : in_flight) {
    if (auto operation = weak.lock()) {
      operation->abort();
    }
  }
}

const Endpoint& AsyncHttpClient::server() const { return state_->server; }

void AsyncHttpClient::request(Request request, std::function<void(Result<Response>)> done) {
  state_->prepare(request);
  auto operation =
      std::make_shared<detail::RequestOperation>(state_, std::move(request), std::move(done));
  operation->start();
}

std::shared_ptr<ClientStream> AsyncHttpClient::stream(Request request, StreamCallbacks callbacks) {
  state_->prepare(request);
  auto operation =
      std::make_shared<detail::StreamOperation>(state_, std::move(request), std::move(callbacks));
  operation->start();
  return operation;
}

// ---------------------------------------------------------------------------------------------

HttpClient::HttpClient(Endpoint server, ClientOptions options)
    : io_(std::make_unique<asio::io_context>(1)),
      client_(std::make_unique<AsyncHttpClient>(*io_, std::move(server), std::move(options))) {}

Result<HttpClient> HttpClient::create(std::string_view address, ClientOptions options) {
  if (address.starts_with("https://")) {
    std::string authority(address.substr(8));
    if (auto slash = authority.find('/'); slash != std::string::npos) {
      authority.resize(slash);
    }
    const auto close = authority.rfind(']');
    const auto colon = authority.rfind(':');
    if (colon == std::string::npos || (close != std::string::npos && colon < close)) {
      authority += ":443";
    }
    options.tls.enabled = true;
    CORRAL_ASSIGN_OR_RETURN(Endpoint endpoint, parse_endpoint(authority));
    return HttpClient(std::move(endpoint), std::move(options));
  }
  CORRAL_ASSIGN_OR_RETURN(Endpoint endpoint, parse_endpoint(address));
  return HttpClient(std::move(endpoint), std::move(options));
}

HttpClient::~HttpClient() {
  client_.reset();
  if (io_) {
    io_->restart();
    io_->poll();  // let aborted handlers release their resources
  }
}

HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;

Result<Response> HttpClient::request(Request request) {
  std::optional<Result<Response>> out;
  client_->request(std::move(request), [&out](Result<Response> r) { out.emplace(std::move(r)); });
  io_->restart();
  io_->run();
  if (!out) {
    return Error(EIO, "HTTP request did not complete");
  }
  return std::move(*out);
}

Result<Response> HttpClient::get(std::string_view target) {
  return request(make_request(Verb::get, target));
}

Result<Response> HttpClient::post(std::string_view target, std::string body,
                                  std::string_view content_type) {
  return request(make_request(Verb::post, target, std::move(body), content_type));
}

Result<void> HttpClient::stream(Request request, StreamCallbacks callbacks) {
  std::optional<Result<void>> out;
  auto on_end = std::move(callbacks.on_end);
  callbacks.on_end = [&out, on_end = std::move(on_end)](Result<void> r) {
    if (on_end) {
      on_end(r);
    }
    out.emplace(std::move(r));
  };
  auto handle = client_->stream(std::move(request), std::move(callbacks));
  io_->restart();
  io_->run();
  if (!out) {
    return Error(EIO, "HTTP stream did not complete");
  }
  return std::move(*out);
}

Request make_request(Verb method, std::string_view target, std::string body,
                     std::string_view content_type) {
  Request request{method, target, 11};
  if (!body.empty()) {
    request.set(Field::content_type, content_type);
  }
  request.body() = std::move(body);
  request.prepare_payload();
  return request;
}

}  // namespace corral::http
