// The master side of the agent link: POST /api/v1/agent, as docs/api/agent-link.md specifies.
#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"
#include "corral/common/recordio.hpp"
#include "corral/common/version.hpp"
#include "master_impl.hpp"

namespace corral::master {
namespace {

constexpr const char* kStreamHeader = "Corral-Agent-Stream-Id";
constexpr uint64_t kAgentBodyLimit = 16u << 20;

Result<std::string> stream_uuid() {
  CORRAL_ASSIGN_OR_RETURN(std::string id, read_file("/proc/sys/kernel/random/uuid", 64));
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

}  // namespace

void MasterImpl::send_agent(AgentRec& agent, const internal::AgentEvent& event) {
  if (!agent.stream) return;
  agent.stream->write_chunk(recordio_encode(serialize_message(agent.format, event)));
}

void MasterImpl::agent_api(const std::shared_ptr<http::Exchange>& ex) {
  const auto& req = ex->request();
  auto fail = [&](http::Status status, const std::string& message) {
    ex->respond(http::error_response(status, message, req.version()));
  };
  if (req.body().size() > kAgentBodyLimit) {
    return fail(http::Status::payload_too_large, "agent call body over 16 MiB");
  }
  auto in = wire_format_from_content_type(req[http::Field::content_type]);
  if (!in) return fail(http::Status::unsupported_media_type, in.error().message());
  WireFormat out = *in;
  if (!req[http::Field::accept].empty()) {
    auto accepted = wire_format_from_accept(req[http::Field::accept]);
    if (!accepted) return fail(http::Status::not_acceptable, accepted.error().message());
    out = *accepted;
  }
  internal::AgentCall call;
  JsonParseOptions opts;
  if (auto parsed = parse_message(*in, req.body(), &call, opts); !parsed) {
    return fail(http::Status::bad_request,
                "cannot parse the body as an AgentCall: " + parsed.error().message());
  }
  if (!call.has_type() || call.type() == internal::AgentCall::UNKNOWN) {
    return fail(http::Status::bad_request, "AgentCall.type is missing");
  }
  if (call.type() == internal::AgentCall::REGISTER ||
      call.type() == internal::AgentCall::REREGISTER) {
    return agent_register(ex, *in, out, call);
  }

  // Every other call: agent_id, a known agent, and its current stream.
  if (!call.has_agent_id() || call.agent_id().value().empty()) {
    return fail(http::Status::bad_request, "AgentCall.agent_id is required for " +
                                               internal::AgentCall::Type_Name(call.type()));
  }
  const std::string& id = call.agent_id().value();
  auto it = agents_.find(id);
  if (it == agents_.end()) {
    return fail(http::Status::not_found,
                "agent " + id + " is not registered with this master; REREGISTER first");
  }
  AgentRec& agent = it->second;
  if (agent.state == AgentRec::State::kGone) {
    return fail(http::Status::forbidden, "agent " + id +
                                             " was marked GONE; it must not come back with "
                                             "this id (start it with a fresh work directory)");
  }
  std::string sid(req[kStreamHeader]);
  if (agent.stream_id.empty() || sid != agent.stream_id) {
    return fail(http::Status::forbidden, "the Corral-Agent-Stream-Id header does not match agent " +
                                             id +
                                             "'s current stream (a stale connection); REREGISTER");
  }
  switch (call.type()) {
    case internal::AgentCall::STATUS_UPDATE: {
      const auto& u = call.status_update();
      if (!u.has_status() || !u.status().has_task_id() || !u.has_framework_id()) {
        return fail(http::Status::bad_request,
                    "STATUS_UPDATE needs status_update.framework_id and status.task_id");
      }
      if (u.uuid().empty() && u.status().uuid().empty()) {
        return fail(http::Status::bad_request, "STATUS_UPDATE needs status_update.uuid");
      }
      agent_status_update(agent, u);
      break;
    }
    case internal::AgentCall::STATUS_UPDATES: {
      // Several updates in one call (announced in REGISTERED/REREGISTERED): all are checked
      // first, so a bad one refuses the call without applying any; then each is applied in the
      // order listed, exactly as if it had come alone.
      const auto& us = call.status_updates().updates();
      if (us.empty()) {
        return fail(http::Status::bad_request, "STATUS_UPDATES needs status_updates.updates");
      }
      for (int i = 0; i < us.size(); ++i) {
        const auto& u = us.Get(i);
        if (!u.has_status() || !u.status().has_task_id() || !u.has_framework_id()) {
          return fail(http::Status::bad_request,
                      "STATUS_UPDATES: updates[" + std::to_string(i) +
                          "] needs framework_id and status.task_id; no update was applied");
        }
        if (u.uuid().empty() && u.status().uuid().empty()) {
          return fail(http::Status::bad_request, "STATUS_UPDATES: updates[" + std::to_string(i) +
                                                     "] needs a uuid; no update was applied");
        }
      }
      for (const auto& u : us) agent_status_update(agent, u);
      break;
    }
    case internal::AgentCall::PONG:
      agent.last_contact = SteadyClock::now();
      break;
    case internal::AgentCall::UPDATE_STATE: {
      agent.info.mutable_resources()->CopyFrom(call.update_state().total_resources());
      if (agent.state == AgentRec::State::kReachable) {
        allocator_.update_agent_total(id, to_pools(agent.info.resources()));
        request_allocation();
      }
      persist_agent(agent);
      break;
    }
    case internal::AgentCall::EXECUTOR_MESSAGE: {
      const auto& m = call.executor_message();
      auto fw = frameworks_.find(m.framework_id().value());
      if (fw != frameworks_.end() && fw->second.connected) {
        v1::scheduler::Event ev;
        ev.set_type(v1::scheduler::Event::MESSAGE);
        ev.mutable_message()->mutable_agent_id()->set_value(id);
        *ev.mutable_message()->mutable_executor_id() = m.executor_id();
        ev.mutable_message()->set_data(m.data());
        send_framework(fw->second, ev);
      }
      break;
    }
    case internal::AgentCall::OPERATION_STATUS_UPDATE:
      break;  // operations are applied synchronously by agents today; nothing to route
    case internal::AgentCall::UNREGISTER: {
      log::notice("agent unregistered: " + call.unregister().message(), {{"CORRAL_AGENT_ID", id}});
      auto stream = agent.stream;
      agent.stream.reset();
      agent.stream_id.clear();
      if (stream) stream->close();
      mark_gone(id, /*by_operator=*/false);
      break;
    }
    default:
      return fail(http::Status::bad_request, "AgentCall type " +
                                                 internal::AgentCall::Type_Name(call.type()) +
                                                 " is not accepted on this endpoint");
  }
  http::Response accepted(http::Status::accepted, req.version());
  accepted.content_length(0);
  ex->respond(std::move(accepted));
}

void MasterImpl::add_agent_to_allocator(
    const std::string& id, AgentRec& agent,
    const google::protobuf::RepeatedPtrField<v1::Resource>& checkpointed) {
  Resources total = to_pools(agent.info.resources());
  // Dynamic reservations the agent checkpointed are carved out of its unreserved resources.
  for (const auto& r : checkpointed) {
    std::string role = reservation_role(r);
    if (role.empty() || !r.has_scalar()) continue;
    Quantities q{{r.name(), r.scalar().value()}};
    total.pool("").subtract(q);
    total.pool(role).add(q);
  }
  Resources pruned;
  pruned.add(total);
  allocator_.add_agent(id, pruned);
  allocator_.set_agent_active(id, !agent.deactivated);
}

void MasterImpl::agent_register(const std::shared_ptr<http::Exchange>& ex, WireFormat in,
                                WireFormat out, internal::AgentCall& call) {
  (void)in;
  const auto& req = ex->request();
  const bool reregister = call.type() == internal::AgentCall::REREGISTER;
  auto open_stream = [&](const std::string& sid) {
    http::Response head(http::Status::ok, req.version());
    head.set(http::Field::content_type, content_type_of(out));
    head.set(kStreamHeader, sid);
    return ex->start_stream(std::move(head));
  };
  auto refuse = [&](const std::string& message) {
    log::warning("refused an agent: " + message);
    auto sid = stream_uuid();
    auto w = open_stream(sid ? *sid : "refused");
    internal::AgentEvent ev;
    ev.set_type(internal::AgentEvent::ERROR);
    ev.mutable_error()->set_message(message);
    w->write_chunk(recordio_encode(serialize_message(out, ev)));
    w->close();
  };

  v1::AgentInfo info = reregister ? call.reregister().agent_info() : call.register_().agent_info();
  if (info.hostname().empty()) {
    ex->respond(http::error_response(http::Status::bad_request, "agent_info.hostname is required",
                                     req.version()));
    return;
  }
  std::string id;
  int64_t agent_seq = -1;
  if (reregister) {
    if (!info.has_id() || info.id().value().empty()) {
      ex->respond(http::error_response(
          http::Status::bad_request,
          "REREGISTER needs reregister.agent_info.id; an agent without an id must REGISTER",
          req.version()));
      return;
    }
    id = info.id().value();
    auto it = agents_.find(id);
    if (it != agents_.end() && it->second.state == AgentRec::State::kGone) {
      return refuse("agent " + id +
                    " was marked GONE by this master and may not re-register with that id; "
                    "remove the agent's work directory to register it as a new agent");
    }
  } else {
    if (info.has_id() && !info.id().value().empty() && agents_.count(info.id().value())) {
      return refuse("agent id " + info.id().value() +
                    " is already known to this master; an agent with an id must REREGISTER");
    }
    // The counter is written together with the agent's record below (one transaction).
    auto cur = store_->get("master", "agent_seq");
    if (!cur) {
      ex->respond(http::error_response(http::Status::service_unavailable,
                                       "cannot read the registry: " + cur.error().message(),
                                       req.version()));
      return;
    }
    agent_seq = *cur ? std::stoll(**cur) : 0;
    id = master_id_ + "-S" + std::to_string(agent_seq);
    info.mutable_id()->set_value(id);
  }
  auto sid = stream_uuid();
  if (!sid) {
    ex->respond(http::error_response(http::Status::internal_server_error, sid.error().message(),
                                     req.version()));
    return;
  }

  auto now = SteadyClock::now();
  AgentRec& agent = agents_[id];
  const bool known_before = agent.info.has_id();
  const AgentRec::State previous = agent.state;
  // Replace the previous stream, if any: its close must not count as a disconnect.
  if (agent.stream) {
    auto old = agent.stream;
    agent.stream.reset();
    agent.stream_id.clear();
    old->close();
  }
  // An agent coming back with the same id: forget what the allocator knew about it; tasks are
  // re-added from the agent's own list below.
  remove_agent_offers(agent);
  if (allocator_.has_agent(id)) allocator_.remove_agent(id);

  agent.info = info;
  agent.state = AgentRec::State::kReachable;
  agent.state_since = now;
  agent.last_contact = now;
  agent.unreachable_time = 0;
  agent.format = out;
  agent.version = reregister ? call.reregister().version() : call.register_().version();
  agent.capabilities.assign(
      reregister ? call.reregister().capabilities().begin()
                 : call.register_().capabilities().begin(),
      reregister ? call.reregister().capabilities().end() : call.register_().capabilities().end());
  if (!known_before || agent.registered_time == 0) agent.registered_time = unix_now();
  if (reregister) agent.reregistered_time = unix_now();
  const auto& checkpointed = reregister ? call.reregister().checkpointed_resources()
                                        : call.register_().checkpointed_resources();
  add_agent_to_allocator(id, agent, checkpointed);

  internal::AgentEvent first;
  if (reregister) {
    // The agent's task list is the truth about what runs there.
    std::set<TaskKey> reported;
    std::set<std::string> shutdown;
    for (const auto& t : call.reregister().tasks()) {
      const std::string& fw_id = t.framework_id().value();
      auto fw = frameworks_.find(fw_id);
      if (fw == frameworks_.end()) {
        shutdown.insert(fw_id);
        continue;
      }
      TaskKey key{fw_id, t.task_id().value()};
      reported.insert(key);
      TaskRec& rec = tasks_[key];
      rec.task = t;
      rec.task.mutable_agent_id()->set_value(id);
      rec.changed();
      rec.resources = to_pools(t.resources());
      rec.role = fw->second.roles.empty() ? "*" : fw->second.roles.front();
      for (const auto& r : t.resources()) {
        if (r.has_allocation_info() && !r.allocation_info().role().empty()) {
          rec.role = r.allocation_info().role();
        }
      }
      rec.resources_released = is_terminal(t.state());
      if (!rec.resources_released) {
        allocator_.track_used(id, fw_id, rec.role, rec.resources);
      }
      agent.tasks.insert(key);
      fw->second.tasks.insert(key);
    }
    for (const auto& f : call.reregister().frameworks()) {
      if (!frameworks_.count(f.id().value())) shutdown.insert(f.id().value());
    }
    // Tasks the master had on this agent that the agent no longer knows are lost.
    for (auto it = agent.tasks.begin(); it != agent.tasks.end();) {
      if (reported.count(*it)) {
        ++it;
        continue;
      }
      auto t = tasks_.find(*it);
      if (t != tasks_.end()) {
        auto fw = frameworks_.find(it->first);
        if (fw != frameworks_.end()) {
          fw->second.tasks.erase(*it);
          if (!is_terminal(t->second.task.state())) {
            send_update(fw->second, master_status(t->second.task.task_id(), id, v1::TASK_LOST,
                                                  v1::TaskStatus::REASON_AGENT_RESTARTED,
                                                  "the agent re-registered without this task"));
          }
        }
        completed_tasks_.push_back(t->second.task);
        tasks_.erase(t);
      }
      it = agent.tasks.erase(it);
    }
    first.set_type(internal::AgentEvent::REREGISTERED);
    auto* r = first.mutable_reregistered();
    r->mutable_agent_id()->set_value(id);
    *r->mutable_master_info() = master_info();
    r->set_heartbeat_interval_seconds(
        std::chrono::duration<double>(config_.agent_ping_timeout).count());
    for (const auto& f : shutdown) r->add_shutdown_frameworks()->set_value(f);
    r->set_status_updates_call(true);
    log::info(std::string("agent re-registered (was ") +
                  (known_before ? "known" : "unknown to this master") + ")",
              {{"CORRAL_AGENT_ID", id},
               {"CORRAL_HOSTNAME", info.hostname()},
               {"CORRAL_TASKS", std::to_string(reported.size())}});
  } else {
    first.set_type(internal::AgentEvent::REGISTERED);
    auto* r = first.mutable_registered();
    r->mutable_agent_id()->set_value(id);
    *r->mutable_master_info() = master_info();
    r->set_heartbeat_interval_seconds(
        std::chrono::duration<double>(config_.agent_ping_timeout).count());
    r->set_status_updates_call(true);
    log::info("agent registered", {{"CORRAL_AGENT_ID", id}, {"CORRAL_HOSTNAME", info.hostname()}});
  }
  if (!known_before || previous != AgentRec::State::kReachable || !reregister) {
    persist_agent(agent, agent_seq >= 0 ? agent_seq + 1 : -1);
  }

  agent.stream_id = *sid;
  agent.stream = open_stream(*sid);
  agent.stream->on_close([this, id, sid = *sid](http::StreamEnd) {
    if (!stopping_) agent_disconnected(id, sid);
  });
  send_agent(agent, first);

  v1::master::Event ev;
  ev.set_type(v1::master::Event::AGENT_ADDED);
  *ev.mutable_agent_added()->mutable_agent()->mutable_agent_info() = agent.info;
  ev.mutable_agent_added()->mutable_agent()->set_active(true);
  operator_event(ev);
  request_allocation();
}

void MasterImpl::agent_disconnected(const std::string& agent_id, const std::string& stream_id) {
  auto it = agents_.find(agent_id);
  if (it == agents_.end() || it->second.stream_id != stream_id) return;
  AgentRec& agent = it->second;
  agent.stream.reset();
  agent.stream_id.clear();
  if (agent.state != AgentRec::State::kReachable) return;
  log::notice("agent disconnected; it becomes UNREACHABLE unless it re-registers in time",
              {{"CORRAL_AGENT_ID", agent_id}});
  agent.state = AgentRec::State::kDisconnected;
  agent.state_since = SteadyClock::now();
  remove_agent_offers(agent);
  allocator_.set_agent_active(agent_id, false);
}

void MasterImpl::remove_agent_offers(AgentRec& agent) {
  for (const auto& offer_id : std::set<std::string>(agent.offers)) {
    rescind_offer(offer_id, /*notify=*/true);
  }
}

void MasterImpl::release_task_resources(TaskRec& task) {
  if (task.resources_released) return;
  task.resources_released = true;
  allocator_.recover(task.task.agent_id().value(), task.task.framework_id().value(), task.role,
                     task.resources, SteadyClock::now());
  request_allocation();
}

void MasterImpl::agent_status_update(AgentRec& agent, const internal::StatusUpdate& update) {
  counters_.status_updates++;
  const std::string& agent_id = agent.info.id().value();
  const std::string& fw_id = update.framework_id().value();
  v1::TaskStatus status = update.status();
  if (status.uuid().empty()) status.set_uuid(update.uuid());
  status.mutable_agent_id()->set_value(agent_id);
  if (!status.has_source()) status.set_source(v1::TaskStatus::SOURCE_EXECUTOR);
  if (!status.has_timestamp()) status.set_timestamp(unix_now());

  TaskKey key{fw_id, status.task_id().value()};
  auto fw_it = frameworks_.find(fw_id);
  if (fw_it == frameworks_.end()) {
    // The framework is gone for good: acknowledge so the agent stops resending, and have it
    // shut the framework's tasks down.
    internal::AgentEvent ack;
    ack.set_type(internal::AgentEvent::ACKNOWLEDGE);
    ack.mutable_acknowledge()->mutable_framework_id()->set_value(fw_id);
    *ack.mutable_acknowledge()->mutable_task_id() = status.task_id();
    ack.mutable_acknowledge()->set_uuid(status.uuid());
    send_agent(agent, ack);
    internal::AgentEvent shut;
    shut.set_type(internal::AgentEvent::SHUTDOWN_FRAMEWORK);
    shut.mutable_shutdown_framework()->mutable_framework_id()->set_value(fw_id);
    send_agent(agent, shut);
    return;
  }
  FrameworkRec& fw = fw_it->second;
  TaskRec& rec = tasks_[key];
  if (!rec.task.has_task_id()) {
    // A task the master did not know (e.g. launched before a master restart whose agent
    // re-registered without it): record what the agent says.
    *rec.task.mutable_task_id() = status.task_id();
    rec.task.mutable_framework_id()->set_value(fw_id);
    rec.task.mutable_agent_id()->set_value(agent_id);
    rec.role = fw.roles.empty() ? "*" : fw.roles.front();
    rec.resources_released = true;
    agent.tasks.insert(key);
    fw.tasks.insert(key);
  }
  v1::TaskState newest = update.has_latest_state() ? update.latest_state() : status.state();
  rec.task.set_state(newest);
  rec.task.set_status_update_state(status.state());
  rec.task.set_status_update_uuid(status.uuid());
  // Keep the last few statuses (Mesos keeps them all; a bounded list keeps /state small).
  bool duplicate = false;
  for (const auto& s : rec.task.statuses()) duplicate |= s.uuid() == status.uuid();
  if (!duplicate) {
    *rec.task.add_statuses() = status;
    if (rec.task.statuses_size() > 4) rec.task.mutable_statuses()->DeleteSubrange(0, 1);
  }
  rec.changed();
  if (is_terminal(newest)) release_task_resources(rec);
  if (fw.connected) send_update(fw, status);

  if (operator_streams_.empty()) return;  // no event to build (the per-task hot path)
  v1::master::Event ev;
  ev.set_type(v1::master::Event::TASK_UPDATED);
  ev.mutable_task_updated()->mutable_framework_id()->set_value(fw_id);
  *ev.mutable_task_updated()->mutable_status() = status;
  ev.mutable_task_updated()->set_state(newest);
  operator_event(ev);
}

void MasterImpl::mark_unreachable(const std::string& agent_id) {
  auto it = agents_.find(agent_id);
  if (it == agents_.end()) return;
  AgentRec& agent = it->second;
  log::warning(std::string("agent is UNREACHABLE (was ") +
                   (agent.state == AgentRec::State::kRecovered ? "not re-registered after a "
                                                                 "master restart"
                                                               : "not answering pings") +
                   ")",
               {{"CORRAL_AGENT_ID", agent_id}});
  if (agent.stream) {
    auto s = agent.stream;
    agent.stream.reset();
    agent.stream_id.clear();
    s->close();
  }
  agent.state = AgentRec::State::kUnreachable;
  agent.state_since = SteadyClock::now();
  agent.unreachable_time = unix_now();
  remove_agent_offers(agent);
  allocator_.remove_agent(agent_id);
  for (const auto& key : agent.tasks) {
    auto t = tasks_.find(key);
    if (t == tasks_.end()) continue;
    t->second.resources_released = true;
    if (is_terminal(t->second.task.state())) continue;
    t->second.task.set_state(v1::TASK_UNREACHABLE);
    t->second.changed();
    auto fw = frameworks_.find(key.first);
    if (fw != frameworks_.end()) {
      auto st = master_status(t->second.task.task_id(), agent_id, v1::TASK_UNREACHABLE,
                              v1::TaskStatus::REASON_AGENT_REMOVED,
                              "agent " + agent_id + " is unreachable");
      st.mutable_unreachable_time()->set_nanoseconds(
          static_cast<int64_t>(agent.unreachable_time * 1e9));
      send_update(fw->second, st);
    }
  }
  persist_agent(agent);
  v1::master::Event ev;
  ev.set_type(v1::master::Event::AGENT_REMOVED);
  ev.mutable_agent_removed()->mutable_agent_id()->set_value(agent_id);
  operator_event(ev);
}

void MasterImpl::mark_gone(const std::string& agent_id, bool by_operator) {
  auto it = agents_.find(agent_id);
  if (it == agents_.end()) return;
  AgentRec& agent = it->second;
  log::warning(by_operator ? "agent marked GONE by the operator" : "agent is GONE",
               {{"CORRAL_AGENT_ID", agent_id}});
  if (agent.stream) {
    internal::AgentEvent shut;
    shut.set_type(internal::AgentEvent::SHUTDOWN);
    shut.mutable_shutdown()->set_message("this agent was marked GONE by the master");
    send_agent(agent, shut);
    auto s = agent.stream;
    agent.stream.reset();
    agent.stream_id.clear();
    s->close();
  }
  agent.state = AgentRec::State::kGone;
  agent.state_since = SteadyClock::now();
  remove_agent_offers(agent);
  allocator_.remove_agent(agent_id);
  for (const auto& key : agent.tasks) {
    auto t = tasks_.find(key);
    if (t == tasks_.end()) continue;
    auto fw = frameworks_.find(key.first);
    if (fw != frameworks_.end()) {
      fw->second.tasks.erase(key);
      if (!is_terminal(t->second.task.state())) {
        auto state = by_operator ? v1::TASK_GONE_BY_OPERATOR : v1::TASK_GONE;
        send_update(fw->second,
                    master_status(t->second.task.task_id(), agent_id, state,
                                  by_operator ? v1::TaskStatus::REASON_AGENT_REMOVED_BY_OPERATOR
                                              : v1::TaskStatus::REASON_AGENT_REMOVED,
                                  "agent " + agent_id + " is gone"));
        t->second.task.set_state(state);
      }
    }
    completed_tasks_.push_back(t->second.task);
    tasks_.erase(t);
  }
  agent.tasks.clear();
  for (auto& [fw_id, fw] : frameworks_) {
    if (!fw.connected) continue;
    v1::scheduler::Event failure;
    failure.set_type(v1::scheduler::Event::FAILURE);
    failure.mutable_failure()->mutable_agent_id()->set_value(agent_id);
    send_framework(fw, failure);
  }
  persist_agent(agent);
  v1::master::Event ev;
  ev.set_type(v1::master::Event::AGENT_REMOVED);
  ev.mutable_agent_removed()->mutable_agent_id()->set_value(agent_id);
  operator_event(ev);
}

}  // namespace corral::master
