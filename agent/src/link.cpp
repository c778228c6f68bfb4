// The agent's side of the agent link (docs/api/agent-link.md).
#include <random>

#include "agent_internal.hpp"
#include "corral/common/log.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/common/recordio.hpp"
#include "corral/common/version.hpp"
#include "wire_format.hpp"

namespace corral::agent {
namespace asio = boost::asio;

namespace {
constexpr const char* kStreamIdHeader = "Corral-Agent-Stream-Id";
}

void AgentImpl::post_call(const internal::AgentCall& call,
                          std::function<void(const Result<http::Response>&)> done) {
  post_body(to_binary(call), std::move(done));
}

void AgentImpl::post_body(std::string body,
                          std::function<void(const Result<http::Response>&)> done) {
  if (!call_client_) return;
  auto req =
      http::make_request(http::Verb::post, "/api/v1/agent", std::move(body), kProtobufContentType);
  req.set(http::Field::accept, kProtobufContentType);
  if (!stream_id_.empty()) req.set(kStreamIdHeader, stream_id_);
  call_client_->request(std::move(req), [this, done = std::move(done)](Result<http::Response> r) {
    if (r && r->result() != http::Status::accepted && r->result() != http::Status::ok) {
      log::warning("master refused a call: HTTP " + std::to_string(r->result_int()) + " " +
                   r->body());
      if (r->result() == http::Status::not_found || r->result() == http::Status::forbidden) {
        // The master does not know this stream: reconnect.
        if (link_stream_) link_stream_->cancel();
      }
    }
    if (done) done(r);
  });
}

namespace {
// Protobuf wire framing, to put already serialized StatusUpdates into a call without parsing or
// copying them as messages (AgentCall.status_update = 5, AgentCall.status_updates = 11,
// StatusUpdates.updates = 1; all length-delimited).
constexpr int kCallStatusUpdate = 5;
constexpr int kCallStatusUpdates = 11;
constexpr int kUpdatesUpdates = 1;
}  // namespace

void AgentImpl::post_update(std::string serialized_update) {
  update_queue_.push_back(std::move(serialized_update));
  // Everything queued in this turn of the loop (e.g. every task a checkpoint commit made
  // sendable) leaves in as few calls as the master allows.
  if (update_send_scheduled_) return;
  update_send_scheduled_ = true;
  asio::post(io_, [this] {
    update_send_scheduled_ = false;
    send_queued_updates();
  });
}

void AgentImpl::send_queued_updates() {
  while (updates_in_flight_ < kMaxUpdatesInFlight && !update_queue_.empty() && call_client_) {
    internal::AgentCall head;
    head.mutable_agent_id()->set_value(agent_id_);
    std::string body;
    auto sent = std::make_shared<std::vector<std::string>>();
    if (master_batches_) {
      size_t n = std::min(update_queue_.size(), kMaxUpdatesPerCall);
      size_t inner = 0;
      for (size_t i = 0; i < n; ++i) {
        const auto& u = update_queue_[i];
        inner += 1 + wire::varint_size(u.size()) + u.size();
      }
      head.set_type(internal::AgentCall::STATUS_UPDATES);
      body = to_binary(head);
      body.reserve(body.size() + 1 + wire::varint_size(inner) + inner);
      wire::put_tag(body, kCallStatusUpdates);
      wire::put_varint(body, inner);
      sent->reserve(n);
      for (size_t i = 0; i < n; ++i) {
        wire::put_field(body, kUpdatesUpdates, update_queue_.front());
        sent->push_back(std::move(update_queue_.front()));
        update_queue_.pop_front();
      }
    } else {
      head.set_type(internal::AgentCall::STATUS_UPDATE);
      body = to_binary(head);
      wire::put_field(body, kCallStatusUpdate, update_queue_.front());
      update_queue_.pop_front();
    }
    ++updates_in_flight_;
    ++metrics_.status_update_calls;
    const bool batch = master_batches_;
    post_body(std::move(body),
              [this, generation = link_generation_, batch, sent](const Result<http::Response>& r) {
                if (generation != link_generation_) return;  // a client that was replaced
                --updates_in_flight_;
                if (batch && r && r->result() == http::Status::bad_request && master_batches_) {
                  // A master that announced STATUS_UPDATES but refuses it (e.g. downgraded behind
                  // the same address): one update per call from now on, until the next registration
                  // says otherwise; these updates go again at once (the master ignores duplicates
                  // by uuid).
                  log::warning("the master refused a STATUS_UPDATES call (" + r->body() +
                               "); sending one status update per call");
                  master_batches_ = false;
                  ++metrics_.status_update_batch_fallbacks;
                  for (auto it = sent->rbegin(); it != sent->rend(); ++it)
                    update_queue_.push_front(std::move(*it));
                }
                send_queued_updates();
              });
  }
}

void AgentImpl::connect_master() {
  if (stopped_) return;
  auto ep = http::parse_endpoint(config_.master);
  if (!ep) {
    log::error("master address " + config_.master + ": " + ep.error().message());
    return;
  }
  http::ClientOptions stream_options;
  stream_options.stream_idle_timeout = heartbeat_ * 3;
  stream_options.connect_timeout = std::chrono::seconds(5);
  link_client_ = std::make_unique<http::AsyncHttpClient>(io_, *ep, stream_options);
  http::ClientOptions call_options;
  call_options.request_timeout = std::chrono::seconds(20);
  call_options.max_idle_connections = kMaxUpdatesInFlight;
  call_client_ = std::make_unique<http::AsyncHttpClient>(io_, *ep, call_options);
  // What was queued or in flight on the old client is resent after (re-)registration, when
  // every task's oldest unacknowledged update is pumped again.
  ++link_generation_;
  update_queue_.clear();
  updates_in_flight_ = 0;
  master_batches_ = false;  // until REGISTERED / REREGISTERED says so

  internal::AgentCall call;
  v1::AgentInfo* info = nullptr;
  std::string own_port = "5051";
  if (tcp_server_ && tcp_server_->tcp_port() != 0)
    own_port = std::to_string(tcp_server_->tcp_port());
  if (registered_before_) {
    call.set_type(internal::AgentCall::REREGISTER);
    call.mutable_agent_id()->set_value(agent_id_);
    auto* rr = call.mutable_reregister();
    info = rr->mutable_agent_info();
    info->mutable_id()->set_value(agent_id_);
    rr->set_version(kVersion);
    rr->set_boot_id(read_file("/proc/sys/kernel/random/boot_id", 128).value_or(""));
    for (auto& [id, t] : tasks_) {
      if (t->local || t->erase) continue;
      *rr->add_tasks() = t->to_task(agent_id_);
    }
    for (auto& [id, f] : frameworks_) {
      if (id != kLocalFramework) *rr->add_frameworks() = f;
    }
  } else {
    call.set_type(internal::AgentCall::REGISTER);
    auto* r = call.mutable_register_();
    info = r->mutable_agent_info();
    r->set_version(kVersion);
    r->set_boot_id(read_file("/proc/sys/kernel/random/boot_id", 128).value_or(""));
  }
  info->set_hostname(hostname_);
  info->set_port(std::stoi(own_port));
  for (const auto& r : resources_) *info->add_resources() = r;
  for (const auto& a : attributes_of(config_)) *info->add_attributes() = a;

  auto req =
      http::make_request(http::Verb::post, "/api/v1/agent", to_binary(call), kProtobufContentType);
  req.set(http::Field::accept, kProtobufContentType);
  auto decoder = std::make_shared<RecordIoDecoder>(64u << 20);
  auto error_body = std::make_shared<std::string>();
  auto ok = std::make_shared<bool>(false);
  ++metrics_.master_connects;
  http::StreamCallbacks cb;
  cb.on_head = [this, ok](const http::Response& head) {
    *ok = head.result() == http::Status::ok;
    if (*ok) {
      auto it = head.find(kStreamIdHeader);
      stream_id_ = it == head.end() ? std::string() : std::string(it->value());
    }
    return true;
  };
  cb.on_data = [this, decoder, error_body, ok](std::string_view data) {
    if (!*ok) {
      if (error_body->size() < 4096) error_body->append(data);
      return true;
    }
    auto records = decoder->feed(data);
    if (!records) {
      log::error("master stream: " + records.error().message());
      return false;
    }
    for (const auto& rec : *records) {
      internal::AgentEvent ev;
      if (auto p = parse_binary(rec, &ev); !p.ok()) {
        log::error("master stream: unreadable event: " + p.error().message());
        continue;
      }
      handle_event(ev);
    }
    return !stopped_;
  };
  cb.on_end = [this, error_body, ok](Result<void> end) {
    bool was = link_registered_;
    link_registered_ = false;
    stream_id_.clear();
    if (stopped_) return;
    ++metrics_.master_disconnects;
    link_error_ =
        !*ok ? "master refused the agent: " + *error_body
             : (end.ok() ? std::string("the master closed the stream") : end.error().message());
    if (was || link_backoff_.count() == 0) {
      log::warning("lost the master at " + config_.master + " (" + link_error_ +
                   "); tasks keep running, reconnecting");
    }
    // Exponential backoff with +-25% jitter.
    link_backoff_ = link_backoff_.count() == 0 ? config_.backoff_min
                                               : std::min(link_backoff_ * 2, config_.backoff_max);
    static thread_local std::mt19937 rng{std::random_device{}()};
    std::uniform_real_distribution<double> jitter(0.75, 1.25);
    auto delay = std::chrono::milliseconds(
        static_cast<int64_t>(static_cast<double>(link_backoff_.count()) * jitter(rng)));
    link_timer_.expires_after(delay);
    link_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) connect_master();
    });
  };
  link_stream_ = link_client_->stream(std::move(req), std::move(cb));
}

void AgentImpl::handle_event(const internal::AgentEvent& ev) {
  switch (ev.type()) {
    case internal::AgentEvent::REGISTERED:
    case internal::AgentEvent::REREGISTERED: {
      bool fresh = ev.type() == internal::AgentEvent::REGISTERED;
      const auto& id = fresh ? ev.registered().agent_id() : ev.reregistered().agent_id();
      const auto& mi = fresh ? ev.registered().master_info() : ev.reregistered().master_info();
      double hb = fresh ? ev.registered().heartbeat_interval_seconds()
                        : ev.reregistered().heartbeat_interval_seconds();
      if (hb > 0) heartbeat_ = std::chrono::milliseconds(static_cast<int64_t>(hb * 1000));
      master_batches_ =
          fresh ? ev.registered().status_updates_call() : ev.reregistered().status_updates_call();
      if (!id.value().empty() && id.value() != agent_id_) {
        agent_id_ = id.value();
      }
      master_id_ = mi.id();
      link_registered_ = true;
      link_backoff_ = std::chrono::milliseconds(0);
      link_error_.clear();
      master_connected_since_ = now_seconds();
      if (!registered_before_ || fresh) {
        registered_before_ = true;
        pending_batch_.meta["agent_id"] = agent_id_;
        pending_batch_.meta["registered"] = "true";
        schedule_flush();
      }
      log::notice(std::string(fresh ? "registered" : "re-registered") + " with master " +
                  master_id_ + " as agent " + agent_id_);
      if (!fresh) {
        for (const auto& f : ev.reregistered().shutdown_frameworks()) {
          for (auto& [cid, t] : tasks_) {
            if (t->framework.id().value() == f.value()) kill(*t, std::nullopt);
          }
        }
      }
      for (auto& [cid, t] : tasks_) {
        t->inflight_uuid.clear();
        pump(*t);
      }
      break;
    }
    case internal::AgentEvent::PING: {
      internal::AgentCall pong;
      pong.set_type(internal::AgentCall::PONG);
      pong.mutable_agent_id()->set_value(agent_id_);
      pong.mutable_pong()->set_sequence(ev.ping().sequence());
      post_call(pong, {});
      break;
    }
    case internal::AgentEvent::RUN_TASK: {
      const auto& rt = ev.run_task();
      auto r = run_task(rt.framework(), rt.task(), false);
      if (!r) {
        log::warning("RUN_TASK " + rt.task().task_id().value() + " refused: " + r.error().message(),
                     {{"CORRAL_TASK_ID", rt.task().task_id().value()},
                      {"CORRAL_FRAMEWORK_ID", rt.framework().id().value()}});
        if (r.error().code() != EEXIST) {
          // Report it as the task's own failure (unless it would clash with a live task).
          v1::FrameworkInfo f = rt.framework();
          if (check_id("framework id", f.id().value()).ok() &&
              check_id("task id", rt.task().task_id().value()).ok()) {
            auto t = std::make_unique<TaskRecord>();
            t->container_id = random_hex(16);
            t->framework = f;
            t->info = rt.task();
            t->sandbox = (config_.work_dir / "sandboxes" / "refused").string();
            t->run_dir = (config_.work_dir / "runs" / t->container_id).string();
            auto& rec = *t;
            index_[key_of(f.id().value(), rt.task().task_id().value())] = t->container_id;
            tasks_[t->container_id] = std::move(t);
            update(rec, r.error().code() == EBUSY ? v1::TASK_DROPPED : v1::TASK_ERROR,
                   v1::TaskStatus::SOURCE_AGENT,
                   r.error().code() == EBUSY ? v1::TaskStatus::REASON_AGENT_DRAINING
                                             : v1::TaskStatus::REASON_TASK_INVALID,
                   r.error().message());
          }
        }
      }
      break;
    }
    case internal::AgentEvent::KILL_TASK: {
      const auto& k = ev.kill_task();
      std::optional<std::chrono::milliseconds> grace;
      if (k.has_kill_policy() && k.kill_policy().has_grace_period())
        grace = std::chrono::milliseconds(k.kill_policy().grace_period().nanoseconds() / 1000000);
      kill_task(k.framework_id().value(), k.task_id().value(), grace);
      break;
    }
    case internal::AgentEvent::ACKNOWLEDGE: {
      const auto& a = ev.acknowledge();
      if (auto* t = find(a.framework_id().value(), a.task_id().value())) acknowledge(*t, a.uuid());
      break;
    }
    case internal::AgentEvent::SHUTDOWN_FRAMEWORK: {
      for (auto& [cid, t] : tasks_) {
        if (t->framework.id().value() == ev.shutdown_framework().framework_id().value())
          kill(*t, std::nullopt);
      }
      break;
    }
    case internal::AgentEvent::DRAIN: {
      double deadline = 0;
      if (ev.drain().config().has_max_grace_period())
        deadline = now_seconds() +
                   static_cast<double>(ev.drain().config().max_grace_period().nanoseconds()) / 1e9;
      drain(deadline, true);
      break;
    }
    case internal::AgentEvent::SHUTDOWN: {
      log::error("the master told this agent to shut down: " + ev.shutdown().message() +
                 "; killing its tasks");
      for (auto& [cid, t] : tasks_) kill(*t, std::nullopt);
      break;
    }
    case internal::AgentEvent::ERROR:
      log::error("master: " + ev.error().message());
      link_error_ = ev.error().message();
      break;
    case internal::AgentEvent::UPDATE_FRAMEWORK:
      if (ev.update_framework().framework_info().has_id())
        frameworks_[ev.update_framework().framework_info().id().value()] =
            ev.update_framework().framework_info();
      break;
    default:
      log::info("master event " + internal::AgentEvent::Type_Name(ev.type()) +
                " is not supported by this agent yet; ignored");
      break;
  }
}

}  // namespace corral::agent
