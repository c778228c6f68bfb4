#pragma once
// Corral's HTTP/1.1 server (Boost.Beast over Boost.Asio) for TCP and unix stream sockets.
//
// Threading: a Server runs on the daemon's one io_context. Each connection runs on its own strand
// of that io_context, so handlers may be invoked on whichever thread runs the io_context, but
// never concurrently for the same connection. Exchange::respond/start_stream and every
// StreamWriter method may be called from any thread; they post onto the connection's strand.
// Server::listen must be called before the io_context runs or from a thread running it.
//
// Limits, timeouts, error bodies and streaming semantics are documented in docs/api/http.md.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "corral/common/http.hpp"
#include "corral/common/result.hpp"

namespace corral::http {

struct ServerOptions {
  // Request line plus header fields, in bytes. A request over it gets 431 and is closed.
  std::size_t header_limit = 64 * 1024;
  // Decoded request body (Content-Length or the sum of chunks), in bytes. Over it: 413, closed.
  // A Content-Length over the limit is refused before the body is read.
  std::uint64_t body_limit = 8 * 1024 * 1024;
  // A connection on which no byte arrives for this long while the server waits for (or is in
  // the middle of) a request is closed; if part of a request had arrived it first gets 408.
  std::chrono::milliseconds idle_timeout{60'000};
  // A whole request (head and body) must arrive within this much time of its first byte, so a
  // client trickling one byte at a time cannot hold a connection. Over it: 408, closed.
  std::chrono::milliseconds read_timeout{30'000};
  // One response write (or one queued stream chunk) that makes no progress for this long means
  // the client stopped reading: the connection is closed.
  std::chrono::milliseconds write_timeout{30'000};
  // stop(): how long in-flight requests may take to finish before connections are cut.
  std::chrono::milliseconds shutdown_grace{5'000};
  // Bytes a StreamWriter may have queued but not yet sent. A client that reads more slowly than
  // events are produced is cut off here instead of growing the queue without bound.
  std::size_t stream_queue_limit = 16 * 1024 * 1024;
  // Connections beyond this are accepted and closed at once (logged).
  std::size_t max_connections = 10'000;
  // Value of the Server header on responses that do not set one.
  std::string server_header = "corral";
};

// Why a stream ended; passed to StreamWriter's on_close callback.
enum class StreamEnd {
  kClosed,          // the server code called close(); the last chunk was sent
  kClientGone,      // the client closed the connection or it failed
  kWriteFailed,     // a write failed or made no progress within write_timeout
  kTooSlow,         // more than stream_queue_limit bytes were waiting for the client
  kServerStopping,  // Server::stop(); the last chunk was sent
};
std::string_view to_string(StreamEnd end);

// The sending half of a chunked streaming response (Transfer-Encoding: chunked). Obtained from
// Exchange::start_stream; keep the shared_ptr for as long as you want to send. Each
// write_chunk() becomes exactly one HTTP chunk on the wire, in call order. Streaming
// responses carry "Connection: close": the connection ends with the stream.
class StreamWriter {
 public:
  using CloseCallback = std::function<void(StreamEnd)>;
  virtual ~StreamWriter() = default;

  // Queues `data` as one chunk. Returns false (and sends nothing) once the stream has ended;
  // an empty `data` is ignored (a zero-size chunk would end the stream).
  virtual bool write_chunk(std::string data) = 0;
  // Ends the stream: queued chunks are sent, then the last chunk, then the connection closes.
  virtual void close() = 0;
  // False once the stream ended for any reason.
  virtual bool is_open() const = 0;
  // Called once when the stream ends, for whatever reason, on the connection's strand. If the
  // stream already ended, `callback` is called at once on the calling thread.
  virtual void on_close(CloseCallback callback) = 0;
  // Bytes queued and not yet written to the socket.
  virtual std::size_t queued_bytes() const = 0;
};

namespace detail {
class ServerConnection;
class ServerState;
}  // namespace detail

// One request and its response. Handlers get a shared_ptr and may answer at once or keep it
// and answer later (from any thread). Exactly one of respond() or start_stream() takes effect;
// later calls are ignored. If the last reference is dropped without an answer, the client gets
// 500 {"error":"the handler did not send a response"}.
class Exchange {
 public:
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  const Request& request() const { return request_; }
  Request& request() { return request_; }
  // The request target without "?query".
  std::string_view path() const { return target_path(request_.target()); }
  // "203.0.113.7:51234", "[::1]:40000", or "unix" for unix-socket peers.
  const std::string& remote() const { return remote_; }

  // Sends `response`. Content-Length is computed; Connection follows the request's keep-alive
  // unless the server is stopping or the response says "close"; the HTTP version is the
  // request's.
  void respond(Response response);
  // Sends `head` (status and headers; its body is ignored) as the start of a chunked response
  // and returns the writer for its body.
  std::shared_ptr<StreamWriter> start_stream(Response head);
  bool answered() const { return answered_.load(); }

 private:
  friend class detail::ServerConnection;
  Exchange(std::shared_ptr<detail::ServerConnection> connection, Request request,
           std::string remote);

  std::shared_ptr<detail::ServerConnection> connection_;
  Request request_;
  std::string remote_;
  std::atomic<bool> answered_{false};
};

// Maps method + path to handlers. A route matches a request whose target path (without the
// query) equals `path`, or, for add_prefix, starts with `prefix`. Among routes whose method
// matches, an exact route beats a prefix route and a longer prefix beats a shorter one. If a
// path matches only routes of other methods the answer is 405 with an Allow header; if nothing
// matches, 404. A handler that throws gets the client a 500 (and a log line); exceptions never
// leave the server.
class Router {
 public:
  // Full control: answer through the Exchange, now or later.
  using Handler = std::function<void(std::shared_ptr<Exchange>)>;
  // Request in, response out, on the connection's strand (must not block).
  using SimpleHandler = std::function<Response(const Request&)>;

  Router& add(Verb method, std::string path, Handler handler);
  Router& add(Verb method, std::string path, SimpleHandler handler);
  Router& add_prefix(Verb method, std::string prefix, Handler handler);
  Router& add_prefix(Verb method, std::string prefix, SimpleHandler handler);

  void dispatch(const std::shared_ptr<Exchange>& exchange) const;

 private:
  struct Route {
    Verb method;
    std::string path;
    bool prefix;
    Handler handler;
  };
  std::vector<Route> routes_;
};

class Server {
 public:
  Server(boost::asio::io_context& io, Router router, ServerOptions options = {});
  // Closes listeners (removing unix socket files) and cuts every connection. For a graceful
  // end call stop() first and let it finish. Destroy on the io_context's thread or after it
  // stopped running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts accepting on `endpoint`; may be called several times (e.g. TCP and a unix socket).
  // TCP: the host is resolved once and the first address is bound; port 0 picks a free port
  // (see endpoints()/tcp_port()). Unix: a stale socket file (nobody accepting on it) is
  // removed; a live one is EADDRINUSE; any other file at the path is EEXIST and left alone.
  // The socket file gets `unix_mode` and is removed when the server stops.
  Result<void> listen(const Endpoint& endpoint, mode_t unix_mode = 0660);
  // Same, from text: "host:port", "http://host:port", "[::1]:port", "unix:/path".
  Result<void> listen(std::string_view address, mode_t unix_mode = 0660);

  // Bound addresses, in listen() order, with the real port for TCP port 0.
  std::vector<Endpoint> endpoints() const;
  // Port of the first TCP listener, 0 if there is none.
  std::uint16_t tcp_port() const;
  std::size_t connection_count() const;

  // Graceful shutdown, callable from any thread: stop accepting and remove unix socket files;
  // close idle keep-alive connections; let requests already arriving or being handled finish
  // (their responses say "Connection: close"); end open streams (last chunk, on_close with
  // kServerStopping). Whatever is still open after options.shutdown_grace is cut.
  // `on_stopped` runs on the io_context once every connection is gone. Calling it again only
  // adds the callback.
  void stop(std::function<void()> on_stopped = {});

 private:
  std::shared_ptr<detail::ServerState> state_;
};

}  // namespace corral::http
