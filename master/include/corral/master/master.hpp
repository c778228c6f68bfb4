#pragma once
// The corral-master daemon as a library object, so tests run it in-process.
//
// It keeps the registry of agents and frameworks (SQLite, WAL), runs the DRF allocator, serves
// the agent link (POST /api/v1/agent, docs/api/agent-link.md), the Mesos v1 scheduler API
// (POST /api/v1/scheduler), the operator API (POST /api/v1), GET /state, /metrics/snapshot,
// /metrics, /health and /version. See docs/master.md.
//
// Threading: run the io_context on ONE thread; the master is single-threaded on it.

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>

#include "corral/common/result.hpp"
#include "corral/master/config.hpp"

namespace corral::master {

class MasterImpl;

class Master {
 public:
  // Opens (creating) the state under config.work_dir and starts listening. Errors name what to
  // fix (a busy port, an unwritable work dir, a state database from a newer Corral).
  static Result<std::unique_ptr<Master>> start(boost::asio::io_context& io, MasterConfig config);
  ~Master();

  // Graceful stop: finish in-flight requests, then call on_stopped on the io_context.
  void stop(std::function<void()> on_stopped = {});

  const std::string& master_id() const;
  int64_t start_count() const;
  // "http://127.0.0.1:5050" (with the real port when configured with port 0), or "unix:/path".
  std::string address() const;
  // org.corral.Master1 on the system bus (master/src/dbus_glue.cpp, docs/dbus.md). An error
  // says why (no system bus, name taken, policy); the master runs on without it.
  Result<void> start_dbus();

 private:
  explicit Master(std::unique_ptr<MasterImpl> impl);
  std::unique_ptr<MasterImpl> impl_;
  std::shared_ptr<void> dbus_;  // destroyed before impl_
};

}  // namespace corral::master
