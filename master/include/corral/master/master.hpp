#pragma once
// The corral-master daemon as a library object, so tests run it in-process.
//
// Today it is the master's foundation: durable identity in its SQLite state, and an HTTP API
// with /health, /version, /metrics and the Mesos v1 operator API's GET_HEALTH and GET_VERSION
// calls. The registry, the allocator and the scheduler API are not implemented yet; their
// endpoints answer 501 with a message saying so.

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "corral/common/http_server.hpp"
#include "corral/common/metrics.hpp"
#include "corral/common/sqlite.hpp"
#include "corral/master/config.hpp"

namespace corral::master {

class Master {
 public:
  // Opens (creating) the state under config.work_dir and starts listening. Errors name what to
  // fix (a busy port, an unwritable work dir, a state database from a newer Corral).
  static Result<std::unique_ptr<Master>> start(boost::asio::io_context& io, MasterConfig config);

  // Graceful stop: finish in-flight requests, then call on_stopped on the io_context.
  void stop(std::function<void()> on_stopped = {});

  const std::string& master_id() const { return master_id_; }
  int64_t start_count() const { return start_count_; }
  // "http://127.0.0.1:5050" (with the real port when configured with port 0), or "unix:/path".
  std::string address() const;

 private:
  Master(MasterConfig config) : config_(std::move(config)) {}
  http::Router routes();
  http::Response operator_api(const http::Request& request);
  http::Response version() const;

  MasterConfig config_;
  std::unique_ptr<SqliteStateStore> store_;
  std::unique_ptr<http::Server> server_;
  MetricsRegistry metrics_;
  std::string master_id_;
  int64_t start_count_ = 0;
  std::chrono::system_clock::time_point started_;
};

}  // namespace corral::master
