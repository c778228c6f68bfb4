#pragma once
// Corral's HTTP/1.1 client (Boost.Beast) for TCP and unix sockets, optionally over TLS.
//
//   AsyncHttpClient  for daemons: runs on the daemon's io_context, callbacks on that io_context.
//   HttpClient       blocking, for the CLI and tests: owns a private io_context.
//
// Both reuse keep-alive connections, enforce connect/request timeouts and response limits, and
// can stream a response body (e.g. a Mesos SUBSCRIBE stream) to a callback as it arrives.
// Errors come back as values: ECONNREFUSED, ENOENT (no unix socket), ETIMEDOUT, EMSGSIZE (a
// limit), ECONNRESET (closed early), EPROTO (not HTTP), ECANCELED. An HTTP error status
// (4xx/5xx) is not an Error: it is a Response like any other.
// TLS (ClientOptions::tls, or an "https://" address): TLS 1.2 or newer, the server certificate
// verified against the system store or a CA file, and against the host name (SNI is sent for
// names). TLS errors: EACCES for a certificate that fails verification (not trusted, hostname
// mismatch, expired; the message says which and how to fix it), EPROTO for a failed handshake
// (e.g. the server does not speak TLS on that port), EINVAL/ENOENT for an unusable CA file.
// See docs/api/http.md.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>

#include "corral/common/http.hpp"
#include "corral/common/result.hpp"

namespace corral::http {

struct TlsOptions {
  bool enabled = false;
  // PEM file of the CA certificates to trust. Empty: the system store (/etc/ssl/certs).
  std::string ca_file;
  // The name the certificate must carry (and the SNI sent). Empty: the endpoint's host (a name
  // or an IP address literal).
  std::string server_name;
  // How the user sets ca_file, named in the "not trusted" error (e.g. "--ca-file FILE").
  std::string ca_file_hint = "a CA bundle file";
};

struct ClientOptions {
  // Resolving the host and establishing the connection.
  std::chrono::milliseconds connect_timeout{5'000};
  // Sending the request and receiving the whole response (for streams: the response head).
  std::chrono::milliseconds request_timeout{30'000};
  // Streams only: no body bytes for this long ends the stream with ETIMEDOUT. 0 = no limit.
  // (A Mesos scheduler sets this to a few heartbeat intervals.)
  std::chrono::milliseconds stream_idle_timeout{0};
  // Largest response body accepted by request() (EMSGSIZE beyond); streams are not limited.
  std::uint64_t body_limit = 64 * 1024 * 1024;
  // Largest response head (status line plus headers).
  std::size_t header_limit = 64 * 1024;
  // Keep-alive connections kept open for reuse.
  std::size_t max_idle_connections = 4;
  std::string user_agent = "corral";
  // HTTPS. Not for unix sockets.
  TlsOptions tls;
};

// Callbacks for a streamed response. on_head gets the status and headers (empty body) once;
// on_data gets body bytes as they arrive (already de-chunked; chunk boundaries are not
// preserved, so feed a RecordIoDecoder rather than assuming one record per call). Return false
// from either to stop: the stream ends with ECANCELED. on_end is called exactly once, last: OK
// when the body ended properly, otherwise the Error.
struct StreamCallbacks {
  std::function<bool(const Response& head)> on_head;
  std::function<bool(std::string_view data)> on_data;
  std::function<void(Result<void> end)> on_end;
};

// Handle on an in-flight stream.
class ClientStream {
 public:
  virtual ~ClientStream() = default;
  // Ends the stream (on_end gets ECANCELED unless it already ended). Call on the io_context's
  // thread.
  virtual void cancel() = 0;
};

namespace detail {
class ClientState;
}

// Not thread-safe: use it from the io_context's thread. Destroying it cancels what is in flight
// without calling those callbacks.
class AsyncHttpClient {
 public:
  AsyncHttpClient(boost::asio::io_context& io, Endpoint server, ClientOptions options = {});
  ~AsyncHttpClient();
  AsyncHttpClient(const AsyncHttpClient&) = delete;
  AsyncHttpClient& operator=(const AsyncHttpClient&) = delete;

  // Sends `request` and calls `done` with the whole response. Host, User-Agent and
  // Content-Length are filled in when missing. A request that fails on a reused keep-alive
  // connection before any response byte arrived (the server had closed it as idle) is retried
  // once on a fresh connection.
  void request(Request request, std::function<void(Result<Response>)> done);
  // Sends `request` on a fresh connection and streams the response into `callbacks`.
  std::shared_ptr<ClientStream> stream(Request request, StreamCallbacks callbacks);

  const Endpoint& server() const;

 private:
  std::shared_ptr<detail::ClientState> state_;
};

// Blocking client; each call returns when the exchange is complete. Not thread-safe: one
// HttpClient per thread.
class HttpClient {
 public:
  explicit HttpClient(Endpoint server, ClientOptions options = {});
  // Parses "http://host:port", "host:port", "unix:/path", or "https://host[:port]" (which turns
  // on options.tls; the port defaults to 443).
  static Result<HttpClient> create(std::string_view address, ClientOptions options = {});
  ~HttpClient();
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;

  Result<Response> request(Request request);
  Result<Response> get(std::string_view target);
  Result<Response> post(std::string_view target, std::string body,
                        std::string_view content_type = "application/json");
  // Streams the response into `callbacks` (on this thread) and returns how it ended (the same
  // value on_end gets; on_end may be left empty).
  Result<void> stream(Request request, StreamCallbacks callbacks);

 private:
  std::unique_ptr<boost::asio::io_context> io_;
  std::unique_ptr<AsyncHttpClient> client_;
};

// A request with the given method, target and body (Content-Type set when body is non-empty).
Request make_request(Verb method, std::string_view target, std::string body = {},
                     std::string_view content_type = "application/json");

}  // namespace corral::http
