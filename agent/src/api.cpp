// The agent HTTP API (docs/agent.md): the Mesos v1 agent API calls at POST /api/v1, plus
// Corral's own endpoints under /corral/v1. The unix socket serves everything (access by the
// socket file's permissions); TCP serves the calls that read (state, containers, files, logs,
// metrics) to anyone who can connect, and the calls that change the agent only to requests
// carrying the bearer token of api_token_file (without one configured, TCP is read-only).
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cctype>
#include <cstdio>
#include <cstring>

#include "agent_internal.hpp"
#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/common/version.hpp"

namespace corral::agent {
namespace fs = std::filesystem;
namespace asio = boost::asio;
using http::Status;

namespace {

constexpr uint64_t kMaxReadLength = 16ull << 20;

http::Response proto_response(const http::Request& req, const google::protobuf::Message& m) {
  auto fmt = wire_format_from_accept(req[http::Field::accept]);
  WireFormat f = fmt ? *fmt : WireFormat::kJson;
  return http::make_response(Status::ok, serialize_message(f, m), content_type_of(f));
}

std::string query_param(std::string_view target, std::string_view key) {
  std::string_view q = http::target_query(target);
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    auto eq = kv.find('=');
    if (kv.substr(0, eq) == key)
      return eq == std::string_view::npos ? "" : std::string(kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    q = q.substr(amp + 1);
  }
  return {};
}

std::string sha256(std::string_view data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  ::SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return std::string(reinterpret_cast<const char*>(md), sizeof md);
}

constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 4096;

}  // namespace

Result<void> AgentImpl::load_api_token() {
  const std::string path = config_.api_token_file.string();
  if (path.empty()) return {};
  const std::string fix = " (create it with: umask 077; openssl rand -hex 32 > " + path +
                          "; or remove api_token_file from agent.toml to keep the TCP API "
                          "read-only)";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    int err = errno;
    return Error(err, "cannot read api_token_file " + path + ": " + std::strerror(err) + fix);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return Error(EINVAL, "api_token_file " + path + " is not a regular file" + fix);
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    return Error(EPERM, "api_token_file " + path +
                            " is readable or writable by other users (mode " + mode +
                            "); run: chmod 600 " + path);
  }
  if (st.st_size > static_cast<off_t>(kMaxTokenLength) + 2)
    return Error(EINVAL, "api_token_file " + path +
                             " is larger than 4 KiB: it must hold one "
                             "line, the token" +
                             fix);
  std::string token(static_cast<size_t>(st.st_size), '\0');
  ssize_t got = ::pread(fd.get(), token.data(), token.size(), 0);
  token.resize(got > 0 ? static_cast<size_t>(got) : 0);
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (token.size() < kMinTokenLength)
    return Error(EINVAL,
                 "the token in api_token_file " + path + " is shorter than 16 characters" + fix);
  for (unsigned char c : token) {
    if (c <= 0x20 || c >= 0x7f)
      return Error(EINVAL, "the token in api_token_file " + path +
                               " holds a space or a control character (one line of printable "
                               "ASCII is expected)" +
                               fix);
  }
  api_token_sha256_ = sha256(token);
  return {};
}

std::optional<http::Response> AgentImpl::unauthorized(const http::Request& req) const {
  auto deny = [&](const std::string& message, const char* error) {
    auto r = http::error_response(Status::unauthorized, message);
    std::string challenge = "Bearer realm=\"corral-agent\"";
    if (error) challenge += std::string(", error=\"") + error + "\"";
    r.set(http::Field::www_authenticate, challenge);
    return r;
  };
  const std::string how = "send \"Authorization: Bearer <token>\" with the token in " +
                          config_.api_token_file.string() +
                          " (api_token_file in agent.toml), or use the agent's unix socket " +
                          config_.socket;
  auto it = req.find(http::Field::authorization);
  if (it == req.end())
    return deny("this call changes the agent and needs authentication over TCP: " + how, nullptr);
  std::string_view value = it->value();
  constexpr std::string_view kScheme = "Bearer ";
  if (value.size() <= kScheme.size() ||
      !std::equal(kScheme.begin(), kScheme.end(), value.begin(), [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) ==
               std::tolower(static_cast<unsigned char>(b));
      })) {
    return deny("the Authorization header is not a bearer token: " + how, "invalid_request");
  }
  std::string_view presented = value.substr(kScheme.size());
  while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
  // Digests of equal length, compared in constant time: neither the token's content nor its
  // length leaks through the time the comparison takes.
  std::string digest = sha256(presented);
  if (api_token_sha256_.size() != digest.size() ||
      CRYPTO_memcmp(digest.data(), api_token_sha256_.data(), digest.size()) != 0)
    return deny("wrong bearer token: " + how, "invalid_token");
  return std::nullopt;
}

Result<void> AgentImpl::start_api() {
  CORRAL_TRY(load_api_token());
  // full: the calls that change the agent are routed; auth: they need the bearer token.
  auto make_router = [this](bool full, bool auth) {
    auto guarded = [this, auth](http::Router::SimpleHandler handler) {
      return http::Router::SimpleHandler([this, auth, handler](const http::Request& req) {
        if (auth) {
          if (auto deny = unauthorized(req)) return std::move(*deny);
        }
        return handler(req);
      });
    };
    http::Router r;
    r.add(http::Verb::get, "/health",
          [](const http::Request&) { return http::make_response(Status::ok, "ok\n"); });
    r.add(http::Verb::get, "/version", [](const http::Request&) {
      return http::json_response(Status::ok, {{"version", kVersion}, {"binary", "corral-agent"}});
    });
    r.add(http::Verb::get, "/metrics", [this](const http::Request&) {
      const auto& m = metrics_;
      std::string out;
      auto line = [&](const char* name, const char* type, const char* help, double v) {
        out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
               name + " " + std::to_string(v) + "\n";
      };
      int live = 0;
      for (auto& [id, t] : tasks_) live += is_terminal(t->state) ? 0 : 1;
      line("corral_agent_tasks_running", "gauge", "Tasks not yet terminal.", live);
      line("corral_agent_tasks_started_total", "counter", "Tasks accepted.",
           static_cast<double>(m.tasks_started));
      line("corral_agent_tasks_finished_total", "counter", "Tasks that finished.",
           static_cast<double>(m.tasks_finished));
      line("corral_agent_tasks_failed_total", "counter", "Tasks that failed.",
           static_cast<double>(m.tasks_failed));
      line("corral_agent_tasks_killed_total", "counter", "Tasks killed.",
           static_cast<double>(m.tasks_killed));
      line("corral_agent_status_updates_total", "counter", "Status updates generated.",
           static_cast<double>(m.status_updates));
      line("corral_agent_status_updates_sent_total", "counter", "Status updates sent.",
           static_cast<double>(m.status_updates_sent));
      line("corral_agent_status_update_retries_total", "counter", "Status updates resent.",
           static_cast<double>(m.status_update_retries));
      line("corral_agent_status_update_calls_total", "counter",
           "Agent-link calls that carried status updates (STATUS_UPDATE or STATUS_UPDATES).",
           static_cast<double>(m.status_update_calls));
      line("corral_agent_status_update_batch_fallbacks_total", "counter",
           "Times a master refused STATUS_UPDATES and the agent went back to one update per "
           "call.",
           static_cast<double>(m.status_update_batch_fallbacks));
      line("corral_agent_status_updates_acknowledged_total", "counter",
           "Status updates acknowledged.", static_cast<double>(m.status_updates_acked));
      line("corral_agent_checkpoint_commits_total", "counter", "Checkpoint transactions.",
           static_cast<double>(m.checkpoint_commits));
      line("corral_agent_checkpoint_failures_total", "counter", "Failed checkpoint commits.",
           static_cast<double>(m.checkpoint_failures));
      line("corral_agent_checkpoint_corrupt_records_total", "counter",
           "Unreadable checkpoint records skipped at recovery.",
           static_cast<double>(m.corrupt_records));
      line("corral_agent_master_connected", "gauge", "1 while registered with a master.",
           link_registered_ ? 1 : 0);
      line("corral_agent_health_checks_total", "counter", "Health checks run.",
           static_cast<double>(m.health_checks));
      line("corral_agent_health_check_failures_total", "counter", "Health checks failed.",
           static_cast<double>(m.health_check_failures));
      line("corral_agent_sandboxes_collected_total", "counter", "Sandboxes garbage-collected.",
           static_cast<double>(m.sandboxes_collected));
      return http::make_response(Status::ok, out, "text/plain; version=0.0.4; charset=utf-8");
    });

    r.add(http::Verb::post, "/api/v1", [this, full, auth](std::shared_ptr<http::Exchange> ex) {
      const auto& req = ex->request();
      auto fmt = wire_format_from_content_type(req[http::Field::content_type]);
      if (!fmt)
        return ex->respond(
            http::error_response(Status::unsupported_media_type, fmt.error().message()));
      v1::agent::Call call;
      if (auto p = parse_message(*fmt, req.body(), &call); !p.ok())
        return ex->respond(http::error_response(Status::bad_request, p.error().message()));
      if (auth && full && call.type() == v1::agent::Call::KILL_CONTAINER) {
        if (auto deny = unauthorized(req)) return ex->respond(std::move(*deny));
      }
      api_call(ex, call, full);
    });

    // Corral's own endpoints.
    r.add_prefix(http::Verb::get, "/corral/v1/logs/",
                 [this](std::shared_ptr<http::Exchange> ex) { stream_log(ex); });
    r.add(http::Verb::get, "/corral/v1/drain", [this](const http::Request&) {
      return http::json_response(Status::ok, drain_progress());
    });
    if (!full) {
      // Read-only TCP (no api_token_file): say so rather than 404.
      for (const char* path : {"/corral/v1/tasks", "/corral/v1/drain", "/corral/v1/reload"}) {
        r.add(http::Verb::post, path, [](const http::Request& req) {
          return http::error_response(
              Status::forbidden, "POST " + std::string(req.target()) +
                                     " changes the agent: it is served on the agent's unix socket, "
                                     "or over TCP with a bearer token once api_token_file is set "
                                     "in agent.toml (docs/agent.md)");
        });
      }
    }
    if (full) {
      r.add(http::Verb::post, "/corral/v1/tasks", guarded([this](const http::Request& req) {
              auto body = http::parse_json_body(req);
              if (!body) return http::error_response(Status::bad_request, body.error().message());
              if (!body->is_object() || !body->contains("task"))
                return http::error_response(
                    Status::bad_request,
                    "expected {\"framework_id\": \"local\", \"task\": {TaskInfo}}");
              v1::TaskInfo task;
              if (auto p = parse_json_value((*body)["task"], &task); !p.ok())
                return http::error_response(Status::bad_request, p.error().message());
              std::string fid = body->value("framework_id", std::string(kLocalFramework));
              v1::FrameworkInfo framework;
              if (fid != kLocalFramework) {
                auto it = frameworks_.find(fid);
                if (it == frameworks_.end()) {
                  return http::error_response(
                      Status::not_found,
                      "unknown framework \"" + fid +
                          "\": local tasks run under framework \"local\", or under "
                          "a framework this agent already runs tasks for");
                }
                framework = it->second;
              } else {
                framework.mutable_id()->set_value(kLocalFramework);
                framework.set_name("corral local tasks");
                framework.set_user("");
              }
              if (!task.has_agent_id()) task.mutable_agent_id()->set_value(agent_id_);
              auto r = run_task(framework, task, true);
              if (!r) {
                Status s = r.error().code() == EEXIST  ? Status::conflict
                           : r.error().code() == EBUSY ? Status::service_unavailable
                                                       : Status::bad_request;
                return http::error_response(s, r.error().message());
              }
              auto* t = find(*r);
              return http::json_response(Status::accepted,
                                         {{"container_id", *r},
                                          {"framework_id", fid},
                                          {"task_id", task.task_id().value()},
                                          {"state", t ? v1::TaskState_Name(t->state) : "UNKNOWN"},
                                          {"sandbox", t ? t->sandbox : ""}});
            }));
      r.add(http::Verb::post, "/corral/v1/drain", guarded([this](const http::Request& req) {
              nlohmann::json body = nlohmann::json::object();
              if (!req.body().empty()) {
                auto b = http::parse_json_body(req);
                if (!b) return http::error_response(Status::bad_request, b.error().message());
                body = *b;
              }
              double deadline = 0;
              if (body.contains("deadline_seconds")) {
                if (!body["deadline_seconds"].is_number() ||
                    body["deadline_seconds"].get<double>() < 0)
                  return http::error_response(Status::bad_request,
                                              "deadline_seconds must be a non-negative number");
                deadline = now_seconds() + body["deadline_seconds"].get<double>();
              }
              drain(deadline, body.value("kill", true));
              return http::json_response(Status::accepted, drain_progress());
            }));
      r.add(
          http::Verb::post, "/corral/v1/reload", guarded([this](const http::Request&) {
            if (auto p = policy_.reload(); !p.ok())
              return http::error_response(
                  Status::unprocessable_entity,
                  "the policy was NOT reloaded (the last good one stays): " + p.error().message());
            return http::json_response(Status::ok, {{"reloaded", true}});
          }));
    }
    return r;
  };

  if (!config_.socket.empty()) {
    std::error_code ec;
    fs::create_directories(fs::path(config_.socket).parent_path(), ec);
    unix_server_ = std::make_unique<http::Server>(io_, make_router(true, false));
    if (auto l = unix_server_->listen("unix:" + config_.socket, 0660); !l.ok()) {
      return Error(l.error().code(), "cannot listen on " + config_.socket + ": " +
                                         l.error().message() +
                                         " (is another agent running? set socket in agent.toml)");
    }
  }
  if (!config_.listen.empty()) {
    // With a token the TCP API serves every call, those that change the agent behind it.
    tcp_server_ = std::make_unique<http::Server>(
        io_, make_router(!api_token_sha256_.empty(), !api_token_sha256_.empty()));
    if (auto l = tcp_server_->listen(config_.listen); !l.ok()) {
      return Error(l.error().code(), "cannot listen on " + config_.listen + ": " +
                                         l.error().message() + " (set listen in agent.toml)");
    }
  }
  return {};
}

void AgentImpl::api_call(const std::shared_ptr<http::Exchange>& ex, const v1::agent::Call& call,
                         bool full) {
  using v1::agent::Call;
  using v1::agent::Response;
  const auto& req = ex->request();
  Response resp;
  switch (call.type()) {
    case Call::GET_HEALTH:
      resp.set_type(Response::GET_HEALTH);
      resp.mutable_get_health()->set_healthy(true);
      break;
    case Call::GET_VERSION: {
      resp.set_type(Response::GET_VERSION);
      auto* v = resp.mutable_get_version()->mutable_version_info();
      v->set_version(kVersion);
      break;
    }
    case Call::GET_AGENT: {
      resp.set_type(Response::GET_AGENT);
      auto* info = resp.mutable_get_agent()->mutable_agent_info();
      info->set_hostname(hostname_);
      info->mutable_id()->set_value(agent_id_);
      if (tcp_server_) info->set_port(tcp_server_->tcp_port());
      for (const auto& r : resources_) *info->add_resources() = r;
      for (const auto& a : attributes_of(config_)) *info->add_attributes() = a;
      break;
    }
    case Call::GET_TASKS:
    case Call::GET_STATE: {
      Response::GetTasks tasks;
      for (const auto& [id, t] : tasks_) {
        v1::Task task = t->to_task(agent_id_);
        if (is_terminal(t->state)) {
          *tasks.add_terminated_tasks() = task;
        } else if (t->state == v1::TASK_STAGING) {
          *tasks.add_pending_tasks() = task;
        } else {
          *tasks.add_launched_tasks() = task;
        }
      }
      for (const auto& t : completed_) *tasks.add_completed_tasks() = t;
      if (call.type() == Call::GET_TASKS) {
        resp.set_type(Response::GET_TASKS);
        *resp.mutable_get_tasks() = tasks;
      } else {
        resp.set_type(Response::GET_STATE);
        *resp.mutable_get_state()->mutable_get_tasks() = tasks;
        auto* fw = resp.mutable_get_state()->mutable_get_frameworks();
        for (const auto& [id, f] : frameworks_) *fw->add_frameworks()->mutable_framework_info() = f;
        resp.mutable_get_state()->mutable_get_executors();
      }
      break;
    }
    case Call::GET_FRAMEWORKS: {
      resp.set_type(Response::GET_FRAMEWORKS);
      for (const auto& [id, f] : frameworks_)
        *resp.mutable_get_frameworks()->add_frameworks()->mutable_framework_info() = f;
      break;
    }
    case Call::GET_CONTAINERS: {
      // Usage is read on the pool (cgroup files, docker stats), then answered.
      struct Item {
        std::string container_id, framework_id, containerizer, task_id;
      };
      std::vector<Item> items;
      for (const auto& [id, t] : tasks_) {
        if (t->launched && !is_terminal(t->state))
          items.push_back(
              {id, t->framework.id().value(), t->containerizer, t->info.task_id().value()});
      }
      auto* native = native_.get();
      auto* docker = docker_.get();
      asio::post(pool_, [ex, items, native, docker, req] {
        Response r;
        r.set_type(Response::GET_CONTAINERS);
        for (const auto& it : items) {
          auto* c = r.mutable_get_containers()->add_containers();
          c->mutable_framework_id()->set_value(it.framework_id);
          c->mutable_executor_id()->set_value(it.task_id);
          c->set_executor_name("corral " + it.containerizer + " containerizer");
          c->mutable_container_id()->set_value(it.container_id);
          auto* z = it.containerizer == "docker" ? docker : native;
          if (z) {
            if (auto u = z->usage(it.container_id); u) *c->mutable_resource_statistics() = *u;
          }
        }
        ex->respond(proto_response(req, r));
      });
      return;
    }
    case Call::KILL_CONTAINER: {
      if (!full)
        return ex->respond(http::error_response(
            Status::forbidden,
            "KILL_CONTAINER is only served on the agent's unix socket, or over TCP with a "
            "bearer token once api_token_file is set in agent.toml (docs/agent.md)"));
      auto* t = find(call.kill_container().container_id().value());
      if (!t)
        return ex->respond(http::error_response(
            Status::not_found, "no container " + call.kill_container().container_id().value()));
      int sig = call.kill_container().has_signal() ? call.kill_container().signal() : 9;
      kill(*t, sig == 9 ? std::optional(std::chrono::milliseconds(0)) : std::nullopt);
      return ex->respond(http::make_response(Status::ok, ""));
    }
    case Call::WAIT_CONTAINER: {
      auto* t = find(call.wait_container().container_id().value());
      if (!t)
        return ex->respond(http::error_response(
            Status::not_found, "no container " + call.wait_container().container_id().value()));
      waiters_[t->container_id].push_back(ex);
      if (is_terminal(t->state)) notify_waiters(*t);
      return;
    }
    case Call::LIST_FILES:
    case Call::READ_FILE: {
      bool list = call.type() == Call::LIST_FILES;
      std::string path = list ? call.list_files().path() : call.read_file().path();
      uint64_t offset = list ? 0 : call.read_file().offset();
      uint64_t length =
          list ? 0 : (call.read_file().has_length() ? call.read_file().length() : kMaxReadLength);
      if (length > kMaxReadLength) length = kMaxReadLength;
      fs::path root = config_.work_dir / "sandboxes";
      std::string rel = path;
      if (rel.rfind(root.string(), 0) == 0) rel = rel.substr(root.string().size());
      while (!rel.empty() && rel.front() == '/') rel.erase(0, 1);
      asio::post(pool_, [ex, root, rel, list, offset, length, req] {
        UniqueFd rootfd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!rootfd)
          return ex->respond(
              http::error_response(Status::internal_server_error, "sandboxes directory missing"));
        auto fd = open_beneath(rootfd.get(), rel, O_RDONLY);
        if (!fd) {
          Status s = fd.error().code() == EACCES   ? Status::forbidden
                     : fd.error().code() == ENOENT ? Status::not_found
                                                   : Status::bad_request;
          return ex->respond(http::error_response(s, fd.error().message()));
        }
        struct stat st {};
        ::fstat(fd->get(), &st);
        Response r;
        if (list) {
          r.set_type(Response::LIST_FILES);
          if (!S_ISDIR(st.st_mode))
            return ex->respond(
                http::error_response(Status::bad_request, rel + " is not a directory"));
          std::error_code ec;
          fs::path dir = "/proc/self/fd/" + std::to_string(fd->get());
          for (const auto& e : fs::directory_iterator(dir, ec)) {
            struct stat es {};
            if (::fstatat(fd->get(), e.path().filename().c_str(), &es, AT_SYMLINK_NOFOLLOW) != 0)
              continue;
            auto* fi = r.mutable_list_files()->add_file_infos();
            fi->set_path((root / rel / e.path().filename()).lexically_normal().string());
            fi->set_size(static_cast<uint64_t>(es.st_size));
            fi->set_mode(es.st_mode);
            fi->set_nlink(static_cast<int32_t>(es.st_nlink));
            fi->mutable_mtime()->set_nanoseconds(static_cast<int64_t>(es.st_mtim.tv_sec) *
                                                 1000000000);
          }
        } else {
          r.set_type(Response::READ_FILE);
          if (!S_ISREG(st.st_mode))
            return ex->respond(
                http::error_response(Status::bad_request, rel + " is not a regular file"));
          r.mutable_read_file()->set_size(static_cast<uint64_t>(st.st_size));
          std::string data;
          if (offset < static_cast<uint64_t>(st.st_size)) {
            uint64_t n = std::min<uint64_t>(length, static_cast<uint64_t>(st.st_size) - offset);
            data.resize(n);
            ssize_t got = ::pread(fd->get(), data.data(), n, static_cast<off_t>(offset));
            data.resize(got > 0 ? static_cast<size_t>(got) : 0);
          }
          r.mutable_read_file()->set_data(data);
        }
        ex->respond(proto_response(req, r));
      });
      return;
    }
    default:
      return ex->respond(http::error_response(
          Status::not_implemented,
          "agent API call " + v1::agent::Call::Type_Name(call.type()) +
              " is not implemented by corral-agent (supported: GET_HEALTH, GET_VERSION, "
              "GET_AGENT, GET_STATE, GET_TASKS, GET_FRAMEWORKS, GET_CONTAINERS, KILL_CONTAINER, "
              "WAIT_CONTAINER, LIST_FILES, READ_FILE)"));
  }
  ex->respond(proto_response(req, resp));
}

void AgentImpl::notify_waiters(TaskRecord& t) {
  auto it = waiters_.find(t.container_id);
  if (it == waiters_.end()) return;
  v1::agent::Response r;
  r.set_type(v1::agent::Response::WAIT_CONTAINER);
  auto* w = r.mutable_wait_container();
  w->set_state(t.state);
  if (!t.statuses.empty()) {
    const auto& s = t.statuses.back();
    if (s.has_reason()) w->set_reason(s.reason());
    if (s.has_message()) w->set_message(s.message());
  }
  for (auto& ex : it->second) ex->respond(proto_response(ex->request(), r));
  waiters_.erase(it);
}

// GET /corral/v1/logs/<container_id>/<stdout|stderr>?offset=N&follow=1
// offset < 0 counts from the end (tail). With follow the response is a chunked stream of new
// bytes as the task writes them (polled every 250 ms, at most 1 MiB per chunk), ending when the
// task has ended and everything was sent.
void AgentImpl::stream_log(const std::shared_ptr<http::Exchange>& ex) {
  std::string rest(ex->path().substr(std::string_view("/corral/v1/logs/").size()));
  auto slash = rest.find('/');
  std::string id = rest.substr(0, slash);
  std::string which = slash == std::string::npos ? "stdout" : rest.substr(slash + 1);
  if (which != "stdout" && which != "stderr")
    return ex->respond(http::error_response(Status::bad_request, "log must be stdout or stderr"));
  std::string sandbox;
  if (auto* t = find(id)) {
    sandbox = t->sandbox;
  } else if (auto c = completed_sandboxes_.find(id); c != completed_sandboxes_.end()) {
    sandbox = c->second;  // completed: its sandbox stays until garbage collection
  } else {
    return ex->respond(
        http::error_response(Status::not_found, "no container " + id + " on this agent"));
  }
  std::string path = sandbox + "/" + which;
  int64_t offset = 0;
  std::string off = query_param(ex->request().target(), "offset");
  if (!off.empty()) {
    try {
      offset = std::stoll(off);
    } catch (...) {
      return ex->respond(http::error_response(Status::bad_request, "offset must be an integer"));
    }
  }
  bool follow = query_param(ex->request().target(), "follow") == "1" ||
                query_param(ex->request().target(), "follow") == "true";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return ex->respond(http::error_response(Status::not_found, "no " + which + " yet"));
  struct stat st {};
  ::fstat(fd.get(), &st);
  int64_t pos = offset >= 0 ? std::min<int64_t>(offset, st.st_size)
                            : std::max<int64_t>(0, st.st_size + offset);
  if (!follow) {
    uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(st.st_size - pos), kMaxReadLength);
    std::string data(n, '\0');
    ssize_t got = ::pread(fd.get(), data.data(), n, pos);
    data.resize(got > 0 ? static_cast<size_t>(got) : 0);
    return ex->respond(http::make_response(Status::ok, data, "application/octet-stream"));
  }
  auto head = http::make_response(Status::ok, "", "application/octet-stream");
  auto writer = ex->start_stream(head);
  struct State {
    UniqueFd fd;
    int64_t pos;
    std::string path;
    ino_t ino;
  };
  auto state = std::make_shared<State>(State{std::move(fd), pos, path, st.st_ino});
  auto timer = std::make_shared<asio::steady_timer>(io_);
  auto tick = std::make_shared<std::function<void()>>();
  *tick = [this, writer, state, timer, tick, id] {
    if (!writer->is_open() || stopped_) {
      *tick = nullptr;
      return;
    }
    // Bounded chunks: a task writing a 1 GB line is streamed in 1 MiB pieces.
    for (int i = 0; i < 4 && writer->queued_bytes() < (4u << 20); ++i) {
      std::string data(1u << 20, '\0');
      ssize_t got = ::pread(state->fd.get(), data.data(), data.size(), state->pos);
      if (got <= 0) break;
      data.resize(static_cast<size_t>(got));
      state->pos += got;
      writer->write_chunk(std::move(data));
    }
    // Rotated: continue with the new file from its start.
    struct stat now {};
    if (::stat(state->path.c_str(), &now) == 0 && now.st_ino != state->ino) {
      state->fd.reset(::open(state->path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
      state->pos = 0;
      state->ino = now.st_ino;
    }
    auto* t = find(id);
    if (!t || is_terminal(t->state)) {
      struct stat fst {};
      ::fstat(state->fd.get(), &fst);
      if (state->pos >= fst.st_size) {
        writer->close();
        *tick = nullptr;
        return;
      }
    }
    timer->expires_after(std::chrono::milliseconds(250));
    timer->async_wait([tick](boost::system::error_code ec) {
      if (!ec && *tick) (*tick)();
    });
  };
  (*tick)();
}

}  // namespace corral::agent
