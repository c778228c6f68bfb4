#include "corral/master/master.hpp"

#include <sys/stat.h>

#include <filesystem>

#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"
#include "corral/common/version.hpp"

namespace corral::master {
namespace {

constexpr const char* kStateNs = "master";

Result<std::string> new_uuid() {
  CORRAL_ASSIGN_OR_RETURN(std::string id, read_file("/proc/sys/kernel/random/uuid", 64));
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

Result<void> ensure_work_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Error(ec.value(), "cannot create the master's work_dir " + dir.string() + ": " +
                                 ec.message() +
                                 " (set work_dir in master.toml or --work-dir to a writable path)");
  }
  ::chmod(dir.c_str(), 0700);  // state is the master's alone
  return {};
}

}  // namespace

Result<std::unique_ptr<Master>> Master::start(boost::asio::io_context& io, MasterConfig config) {
  std::unique_ptr<Master> m(new Master(std::move(config)));
  m->started_ = std::chrono::system_clock::now();
  CORRAL_TRY(ensure_work_dir(m->config_.work_dir));
  CORRAL_ASSIGN_OR_RETURN(m->store_, SqliteStateStore::open(m->config_.work_dir / "state.db"));

  // Identity survives restarts; every start is counted (it is how an operator sees restarts).
  CORRAL_ASSIGN_OR_RETURN(auto id, m->store_->get(kStateNs, "master_id"));
  CORRAL_ASSIGN_OR_RETURN(auto starts, m->store_->get(kStateNs, "start_count"));
  if (id) {
    m->master_id_ = *id;
  } else {
    CORRAL_ASSIGN_OR_RETURN(m->master_id_, new_uuid());
  }
  m->start_count_ = (starts ? std::stoll(*starts) : 0) + 1;
  CORRAL_TRY(m->store_->atomically([&](StateStore& tx) -> Result<void> {
    CORRAL_TRY(tx.put(kStateNs, "master_id", m->master_id_));
    return tx.put(kStateNs, "start_count", std::to_string(m->start_count_));
  }));

  m->metrics_.gauge("corral_master_start_count", "Times this master's state has been started")
      .set(static_cast<double>(m->start_count_));
  m->metrics_.gauge("corral_master_start_time_seconds", "Unix time this master started")
      .set(static_cast<double>(
          std::chrono::duration_cast<std::chrono::seconds>(m->started_.time_since_epoch())
              .count()));

  http::ServerOptions opts;
  opts.body_limit = m->config_.max_request_body;
  opts.idle_timeout = m->config_.idle_timeout;
  opts.server_header = std::string("corral-master/") + kVersion;
  m->server_ = std::make_unique<http::Server>(io, m->routes(), opts);
  auto listened = m->server_->listen(m->config_.listen);
  if (!listened.ok()) {
    return listened.error().context("cannot listen on " + m->config_.listen +
                                    " (is another corral-master running? set listen in "
                                    "master.toml or --listen)");
  }
  log::info("corral-master started", {{"CORRAL_MASTER_ID", m->master_id_},
                                      {"CORRAL_ADDRESS", m->address()},
                                      {"CORRAL_START_COUNT", std::to_string(m->start_count_)}});
  return m;
}

std::string Master::address() const {
  auto eps = server_->endpoints();
  if (eps.empty()) return config_.listen;
  if (eps[0].kind == http::Endpoint::Kind::kUnix) return eps[0].to_string();
  return "http://" + eps[0].to_string();
}

void Master::stop(std::function<void()> on_stopped) { server_->stop(std::move(on_stopped)); }

http::Response Master::version() const {
  nlohmann::json body = {{"version", kVersion},
                         {"cluster", config_.cluster},
                         {"master_id", master_id_},
                         {"start_count", start_count_}};
  return http::json_response(http::Status::ok, body);
}

http::Router Master::routes() {
  http::Router r;
  auto& requests = metrics_.counter("corral_master_http_requests_total", "HTTP requests handled",
                                    {{"endpoint", "api_v1"}});
  r.add(http::Verb::get, "/health",
        [](const http::Request&) { return http::make_response(http::Status::ok, ""); });
  r.add(http::Verb::get, "/version", [this](const http::Request&) { return version(); });
  r.add(http::Verb::get, "/metrics", [this](const http::Request&) {
    return http::make_response(http::Status::ok, metrics_.render(), MetricsRegistry::kContentType);
  });
  r.add(http::Verb::post, "/api/v1", [this, &requests](const http::Request& req) {
    requests.inc();
    return operator_api(req);
  });
  r.add(http::Verb::post, "/api/v1/scheduler", [](const http::Request&) {
    return http::error_response(
        http::Status::not_implemented,
        std::string("the scheduler API is not implemented yet by corral-master ") + kVersion +
            "; frameworks cannot subscribe to this master");
  });
  return r;
}

// The Mesos v1 operator API: POST /api/v1 with {"type": "<CALL>", ...}. Answers in JSON.
http::Response Master::operator_api(const http::Request& req) {
  auto body = http::parse_json_body(req);
  if (!body) return http::error_response(http::Status::bad_request, body.error().message());
  if (!body->is_object() || !body->contains("type") || !(*body)["type"].is_string()) {
    return http::error_response(http::Status::bad_request,
                                "expected a JSON object with a string field \"type\", e.g. "
                                "{\"type\": \"GET_HEALTH\"}");
  }
  const std::string type = (*body)["type"];
  if (type == "GET_HEALTH") {
    return http::json_response(http::Status::ok,
                               {{"type", "GET_HEALTH"}, {"get_health", {{"healthy", true}}}});
  }
  if (type == "GET_VERSION") {
    return http::json_response(
        http::Status::ok,
        {{"type", "GET_VERSION"}, {"get_version", {{"version_info", {{"version", kVersion}}}}}});
  }
  static const char* kKnownLater[] = {"GET_FLAGS",
                                      "GET_METRICS",
                                      "GET_LOGGING_LEVEL",
                                      "SET_LOGGING_LEVEL",
                                      "LIST_FILES",
                                      "READ_FILE",
                                      "GET_STATE",
                                      "GET_AGENTS",
                                      "GET_FRAMEWORKS",
                                      "GET_EXECUTORS",
                                      "GET_OPERATIONS",
                                      "GET_TASKS",
                                      "GET_ROLES",
                                      "GET_WEIGHTS",
                                      "UPDATE_WEIGHTS",
                                      "GET_MASTER",
                                      "SUBSCRIBE",
                                      "RESERVE_RESOURCES",
                                      "UNRESERVE_RESOURCES",
                                      "CREATE_VOLUMES",
                                      "DESTROY_VOLUMES",
                                      "GET_MAINTENANCE_STATUS",
                                      "GET_MAINTENANCE_SCHEDULE",
                                      "UPDATE_MAINTENANCE_SCHEDULE",
                                      "START_MAINTENANCE",
                                      "STOP_MAINTENANCE",
                                      "DRAIN_AGENT",
                                      "DEACTIVATE_AGENT",
                                      "REACTIVATE_AGENT",
                                      "GET_QUOTA",
                                      "UPDATE_QUOTA",
                                      "SET_QUOTA",
                                      "REMOVE_QUOTA",
                                      "TEARDOWN",
                                      "MARK_AGENT_GONE"};
  for (const char* known : kKnownLater) {
    if (type == known) {
      return http::error_response(http::Status::not_implemented,
                                  "operator call " + type +
                                      " is not implemented yet by corral-master " + kVersion +
                                      "; GET_HEALTH and GET_VERSION are");
    }
  }
  return http::error_response(
      http::Status::bad_request,
      "unknown operator call type \"" + type + "\"; see the Mesos v1 operator API for call names");
}

}  // namespace corral::master
