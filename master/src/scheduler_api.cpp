// The Mesos v1 scheduler HTTP API: POST /api/v1/scheduler (docs/api/scheduler.md).
//
// As liberal as Mesos in what it accepts: JSON or protobuf bodies (chunked or not), no Accept
// header (JSON), `null` for absent fields, enums by name or number, frameworks without
// MULTI_ROLE whose resources carry no allocation_info. Errors use Mesos's statuses and
// messages. Each streamed event is written in its own HTTP chunk.
#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"
#include "corral/common/recordio.hpp"
#include "master_impl.hpp"

namespace corral::master {
namespace {

constexpr const char* kStreamHeader = "Mesos-Stream-Id";

Result<std::string> stream_uuid() {
  CORRAL_ASSIGN_OR_RETURN(std::string id, read_file("/proc/sys/kernel/random/uuid", 64));
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

http::Response accepted_response(unsigned version) {
  http::Response r(http::Status::accepted, version);
  r.content_length(0);
  return r;
}

}  // namespace

v1::TaskState MasterImpl::visible_state(const FrameworkRec& fw, v1::TaskState state) const {
  if (fw.partition_aware) return state;
  switch (state) {
    case v1::TASK_UNREACHABLE:
    case v1::TASK_DROPPED:
    case v1::TASK_GONE:
    case v1::TASK_GONE_BY_OPERATOR:
    case v1::TASK_UNKNOWN:
      return v1::TASK_LOST;
    default:
      return state;
  }
}

v1::TaskStatus MasterImpl::master_status(const v1::TaskID& task_id, const std::string& agent_id,
                                         v1::TaskState state, v1::TaskStatus::Reason reason,
                                         const std::string& message) {
  v1::TaskStatus s;
  *s.mutable_task_id() = task_id;
  s.set_state(state);
  s.set_source(v1::TaskStatus::SOURCE_MASTER);
  s.set_reason(reason);
  s.set_message(message);
  s.set_timestamp(unix_now());
  if (!agent_id.empty()) s.mutable_agent_id()->set_value(agent_id);
  return s;
}

void MasterImpl::send_framework(FrameworkRec& fw, const v1::scheduler::Event& event) {
  if (!fw.stream) return;
  fw.stream->write_chunk(recordio_encode(serialize_message(fw.format, event)));
}

void MasterImpl::send_update(FrameworkRec& fw, const v1::TaskStatus& status) {
  v1::scheduler::Event ev;
  ev.set_type(v1::scheduler::Event::UPDATE);
  v1::TaskStatus* s = ev.mutable_update()->mutable_status();
  *s = status;
  s->set_state(visible_state(fw, status.state()));
  send_framework(fw, ev);
}

void MasterImpl::scheduler_api(const std::shared_ptr<http::Exchange>& ex) {
  const auto& req = ex->request();
  auto fail = [&](http::Status status, const std::string& message) {
    counters_.invalid_calls++;
    ex->respond(http::make_response(status, message, "text/plain; charset=utf-8", req.version()));
  };
  if (req.body().size() > config_.max_request_body) {
    return fail(http::Status::payload_too_large,
                "Request body is " + std::to_string(req.body().size()) +
                    " bytes, over the limit of " + std::to_string(config_.max_request_body));
  }
  auto in = wire_format_from_content_type(req[http::Field::content_type]);
  if (!in) return fail(http::Status::unsupported_media_type, in.error().message());
  auto out = wire_format_from_accept(req[http::Field::accept]);
  if (!out) return fail(http::Status::not_acceptable, out.error().message());

  v1::scheduler::Call call;
  if (auto parsed = parse_message(*in, req.body(), &call); !parsed) {
    return fail(http::Status::bad_request,
                "Failed to parse body into Call: " + parsed.error().message());
  }
  if (!call.has_type() || call.type() == v1::scheduler::Call::UNKNOWN) {
    return fail(http::Status::bad_request, "Expecting 'type' to be present");
  }
  if (call.type() == v1::scheduler::Call::SUBSCRIBE) {
    if (!req[kStreamHeader].empty()) {
      return fail(http::Status::bad_request,
                  "Subscribe calls should not include the 'Mesos-Stream-Id' header");
    }
    return subscribe(ex, *out, call);
  }
  if (!call.has_framework_id() || call.framework_id().value().empty()) {
    return fail(http::Status::bad_request, "Expecting 'framework_id' to be present");
  }
  const std::string fw_id = call.framework_id().value();
  auto it = frameworks_.find(fw_id);
  if (it == frameworks_.end() || !it->second.connected) {
    return fail(http::Status::forbidden, "Framework is not subscribed");
  }
  std::string sid(req[kStreamHeader]);
  if (sid.empty()) {
    return fail(http::Status::bad_request,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header");
  }
  if (sid != it->second.stream_id) {
    return fail(http::Status::bad_request,
                "The stream ID '" + sid +
                    "' included in this request didn't match the stream ID currently associated "
                    "with framework ID " +
                    fw_id);
  }
  ex->respond(handle_call(it->second, fw_id, call));
}

void MasterImpl::subscribe(const std::shared_ptr<http::Exchange>& ex, WireFormat out,
                           v1::scheduler::Call& call) {
  const auto& req = ex->request();
  auto fail = [&](const std::string& message) {
    counters_.invalid_calls++;
    ex->respond(http::make_response(http::Status::bad_request, message, "text/plain; charset=utf-8",
                                    req.version()));
  };
  if (!call.has_subscribe() || !call.subscribe().has_framework_info()) {
    return fail("Expecting 'subscribe.framework_info' to be present");
  }
  v1::FrameworkInfo info = call.subscribe().framework_info();
  if (call.has_framework_id() && info.has_id() &&
      call.framework_id().value() != info.id().value()) {
    return fail("'framework_id' differs from 'subscribe.framework_info.id'");
  }
  if (call.has_framework_id() && !info.has_id()) *info.mutable_id() = call.framework_id();
  if (info.failover_timeout() < 0 || std::isnan(info.failover_timeout())) {
    return fail("'FrameworkInfo.failover_timeout' must be a non-negative number of seconds");
  }
  bool multi_role = false, partition_aware = false;
  for (const auto& c : info.capabilities()) {
    multi_role |= c.type() == v1::FrameworkInfo::Capability::MULTI_ROLE;
    partition_aware |= c.type() == v1::FrameworkInfo::Capability::PARTITION_AWARE;
  }
  std::vector<std::string> roles;
  if (multi_role || info.roles_size() > 0) {
    for (const auto& r : info.roles()) roles.push_back(r);
    if (!multi_role && info.has_role()) roles.push_back(info.role());
  } else {
    roles.push_back(info.role());  // "*" by default
  }
  std::sort(roles.begin(), roles.end());
  roles.erase(std::unique(roles.begin(), roles.end()), roles.end());
  for (const auto& r : roles) {
    std::string why;
    if (!valid_role(r, &why)) return fail("Invalid role: " + why);
  }
  for (const auto& r : call.subscribe().suppressed_roles()) {
    if (std::find(roles.begin(), roles.end(), r) == roles.end()) {
      return fail("Suppressed role '" + r + "' is not one of the framework's roles");
    }
  }
  auto sid = stream_uuid();
  if (!sid) {
    ex->respond(http::error_response(http::Status::internal_server_error, sid.error().message(),
                                     req.version()));
    return;
  }

  std::string fw_id;
  bool failover = false;
  if (info.has_id() && !info.id().value().empty()) {
    fw_id = info.id().value();
    failover = frameworks_.count(fw_id) > 0;
  } else {
    auto next = next_id("framework_seq", "", 4);
    if (!next) {
      ex->respond(http::error_response(http::Status::service_unavailable,
                                       "cannot write the registry: " + next.error().message(),
                                       req.version()));
      return;
    }
    fw_id = *next;
    info.mutable_id()->set_value(fw_id);
  }
  FrameworkRec& fw = frameworks_[fw_id];
  if (fw.stream) {
    // The scheduler failed over to a new connection: the old one is told and closed.
    v1::scheduler::Event err;
    err.set_type(v1::scheduler::Event::ERROR);
    err.mutable_error()->set_message("Framework failed over");
    send_framework(fw, err);
    auto old = fw.stream;
    fw.stream.reset();
    fw.stream_id.clear();
    old->close();
  }
  for (const auto& offer_id : std::set<std::string>(fw.offers)) rescind_offer(offer_id, false);
  fw.info = info;
  fw.roles = roles;
  fw.multi_role = multi_role;
  fw.partition_aware = partition_aware;
  fw.connected = true;
  fw.recovered = false;
  fw.format = out;
  fw.stream_id = *sid;
  if (fw.registered_time == 0) fw.registered_time = unix_now();
  if (failover) fw.reregistered_time = unix_now();
  persist_framework(fw_id, fw);
  allocator_.add_framework(fw_id, roles, /*active=*/true);
  allocator_.revive(fw_id);
  if (call.subscribe().suppressed_roles_size() > 0) {
    allocator_.suppress(fw_id, {call.subscribe().suppressed_roles().begin(),
                                call.subscribe().suppressed_roles().end()});
  }
  log::info(failover ? "framework re-subscribed" : "framework subscribed",
            {{"CORRAL_FRAMEWORK_ID", fw_id}, {"CORRAL_FRAMEWORK_NAME", info.name()}});

  http::Response head(http::Status::ok, req.version());
  head.set(http::Field::content_type, content_type_of(out));
  head.set(kStreamHeader, *sid);
  head.set(http::Field::cache_control, "no-cache");
  fw.stream = ex->start_stream(std::move(head));
  fw.stream->on_close([this, fw_id, sid = *sid](http::StreamEnd) {
    if (!stopping_) framework_disconnected(fw_id, sid);
  });
  v1::scheduler::Event subscribed;
  subscribed.set_type(v1::scheduler::Event::SUBSCRIBED);
  subscribed.mutable_subscribed()->mutable_framework_id()->set_value(fw_id);
  subscribed.mutable_subscribed()->set_heartbeat_interval_seconds(
      std::chrono::duration<double>(config_.framework_heartbeat_interval).count());
  *subscribed.mutable_subscribed()->mutable_master_info() = master_info();
  send_framework(fw, subscribed);
  v1::scheduler::Event hb;
  hb.set_type(v1::scheduler::Event::HEARTBEAT);
  send_framework(fw, hb);

  v1::master::Event ev;
  ev.set_type(failover ? v1::master::Event::FRAMEWORK_UPDATED : v1::master::Event::FRAMEWORK_ADDED);
  auto* f = failover ? ev.mutable_framework_updated()->mutable_framework()
                     : ev.mutable_framework_added()->mutable_framework();
  *f->mutable_framework_info() = info;
  f->set_active(true);
  f->set_connected(true);
  operator_event(ev);
  request_allocation();
}

void MasterImpl::framework_disconnected(const std::string& fw_id, const std::string& stream_id) {
  auto it = frameworks_.find(fw_id);
  if (it == frameworks_.end() || it->second.stream_id != stream_id) return;
  FrameworkRec& fw = it->second;
  fw.stream.reset();
  fw.stream_id.clear();
  if (!fw.connected) return;
  fw.connected = false;
  fw.disconnected_at = SteadyClock::now();
  log::notice("framework disconnected; its tasks are kept for failover_timeout",
              {{"CORRAL_FRAMEWORK_ID", fw_id},
               {"CORRAL_FAILOVER_TIMEOUT", std::to_string(fw.info.failover_timeout())}});
  for (const auto& offer_id : std::set<std::string>(fw.offers)) rescind_offer(offer_id, false);
  allocator_.set_framework_active(fw_id, false);
}

void MasterImpl::remove_framework(const std::string& fw_id, const std::string& why) {
  auto it = frameworks_.find(fw_id);
  if (it == frameworks_.end()) return;
  FrameworkRec& fw = it->second;
  log::notice("removing framework: " + why, {{"CORRAL_FRAMEWORK_ID", fw_id}});
  for (const auto& offer_id : std::set<std::string>(fw.offers)) rescind_offer(offer_id, false);
  std::set<std::string> agents_with_tasks;
  for (const auto& key : fw.tasks) {
    auto t = tasks_.find(key);
    if (t == tasks_.end()) continue;
    const std::string& agent_id = t->second.task.agent_id().value();
    agents_with_tasks.insert(agent_id);
    auto a = agents_.find(agent_id);
    if (a != agents_.end()) a->second.tasks.erase(key);
    if (!is_terminal(t->second.task.state())) t->second.task.set_state(v1::TASK_KILLED);
    completed_tasks_.push_back(t->second.task);
    tasks_.erase(t);
  }
  for (const auto& agent_id : agents_with_tasks) {
    auto a = agents_.find(agent_id);
    if (a == agents_.end()) continue;
    internal::AgentEvent shut;
    shut.set_type(internal::AgentEvent::SHUTDOWN_FRAMEWORK);
    shut.mutable_shutdown_framework()->mutable_framework_id()->set_value(fw_id);
    send_agent(a->second, shut);
  }
  allocator_.remove_framework(fw_id);
  erase_framework_record(fw_id);
  if (fw.stream) {
    v1::scheduler::Event err;
    err.set_type(v1::scheduler::Event::ERROR);
    err.mutable_error()->set_message("Framework removed: " + why);
    send_framework(fw, err);
    auto s = fw.stream;
    fw.stream.reset();
    fw.stream_id.clear();
    s->close();
  }
  completed_frameworks_.emplace_back(fw_id, fw.info);
  if (completed_frameworks_.size() > 100)
    completed_frameworks_.erase(completed_frameworks_.begin());
  v1::master::Event ev;
  ev.set_type(v1::master::Event::FRAMEWORK_REMOVED);
  *ev.mutable_framework_removed()->mutable_framework_info() = fw.info;
  frameworks_.erase(it);
  operator_event(ev);
  request_allocation();
}

void MasterImpl::rescind_offer(const std::string& offer_id, bool notify) {
  auto it = offers_.find(offer_id);
  if (it == offers_.end()) return;
  OfferRec rec = std::move(it->second);
  offers_.erase(it);
  counters_.offers_rescinded++;
  auto fw = frameworks_.find(rec.framework_id);
  if (fw != frameworks_.end()) {
    fw->second.offers.erase(offer_id);
    if (notify && fw->second.connected) {
      v1::scheduler::Event ev;
      ev.set_type(v1::scheduler::Event::RESCIND);
      ev.mutable_rescind()->mutable_offer_id()->set_value(offer_id);
      send_framework(fw->second, ev);
    }
  }
  auto agent = agents_.find(rec.agent_id);
  if (agent != agents_.end()) agent->second.offers.erase(offer_id);
  allocator_.recover(rec.agent_id, rec.framework_id, rec.role, rec.resources, SteadyClock::now());
  request_allocation();
}

void MasterImpl::decline(FrameworkRec& fw, const std::string& fw_id,
                         const google::protobuf::RepeatedPtrField<v1::OfferID>& ids,
                         double refuse_seconds) {
  auto now = SteadyClock::now();
  if (!(refuse_seconds >= 0) || std::isinf(refuse_seconds)) refuse_seconds = 5.0;
  // Mesos caps filters at a year; so do we (a larger value would overflow the clock).
  refuse_seconds = std::min(refuse_seconds, 365.0 * 24 * 3600);
  for (const auto& oid : ids) {
    auto it = offers_.find(oid.value());
    if (it == offers_.end() || it->second.framework_id != fw_id) continue;
    OfferRec rec = std::move(it->second);
    offers_.erase(it);
    fw.offers.erase(oid.value());
    auto agent = agents_.find(rec.agent_id);
    if (agent != agents_.end()) agent->second.offers.erase(oid.value());
    allocator_.recover(rec.agent_id, fw_id, rec.role, rec.resources, now,
                       std::chrono::duration<double>(refuse_seconds));
    counters_.offers_declined++;
  }
  request_allocation();
}

void MasterImpl::accept(FrameworkRec& fw, const std::string& fw_id,
                        const v1::scheduler::Call::Accept& acc) {
  auto now = SteadyClock::now();
  double refuse = acc.has_filters() ? acc.filters().refuse_seconds() : 5.0;
  if (!(refuse >= 0) || std::isinf(refuse)) refuse = 5.0;
  refuse = std::min(refuse, 365.0 * 24 * 3600);

  // Validate the offers: known, this framework's, all on one agent.
  std::string error;
  std::string agent_id;
  std::vector<OfferRec> taken;
  for (const auto& oid : acc.offer_ids()) {
    auto it = offers_.find(oid.value());
    if (it == offers_.end()) {
      error = "Offer " + oid.value() + " is no longer valid";
      continue;
    }
    if (it->second.framework_id != fw_id) {
      error = "Offer " + oid.value() + " is not for framework " + fw_id;
      continue;
    }
    if (!agent_id.empty() && it->second.agent_id != agent_id) {
      error = "Aggregated offers must belong to one agent";
    }
    agent_id = it->second.agent_id;
    taken.push_back(std::move(it->second));
    offers_.erase(it);
    fw.offers.erase(oid.value());
    auto a = agents_.find(taken.back().agent_id);
    if (a != agents_.end()) a->second.offers.erase(oid.value());
  }
  if (acc.offer_ids_size() == 0) error = "No offers specified";
  auto agent_it = agents_.find(agent_id);
  if (error.empty() &&
      (agent_it == agents_.end() || agent_it->second.state != AgentRec::State::kReachable)) {
    error = "Agent " + agent_id + " is not reachable";
  }
  if (!error.empty()) {
    for (const auto& o : taken) allocator_.recover(o.agent_id, fw_id, o.role, o.resources, now);
    for (const auto& op : acc.operations()) {
      if (op.type() != v1::Offer::Operation::LAUNCH) continue;
      for (const auto& t : op.launch().task_infos()) {
        send_update(fw, master_status(t.task_id(), agent_id, v1::TASK_DROPPED,
                                      v1::TaskStatus::REASON_INVALID_OFFERS, error));
      }
    }
    request_allocation();
    return;
  }
  AgentRec& agent = agent_it->second;
  std::map<std::string, Resources> pools;  // allocation role -> what is left to use
  for (const auto& o : taken) pools[o.role].add(o.resources);
  auto role_of = [&](const google::protobuf::RepeatedPtrField<v1::Resource>& rs) {
    for (const auto& r : rs) {
      if (r.has_allocation_info() && pools.count(r.allocation_info().role())) {
        return r.allocation_info().role();
      }
    }
    return pools.begin()->first;
  };

  for (const auto& op : acc.operations()) {
    switch (op.type()) {
      case v1::Offer::Operation::RESERVE:
      case v1::Offer::Operation::UNRESERVE: {
        bool reserve = op.type() == v1::Offer::Operation::RESERVE;
        const auto& rs = reserve ? op.reserve().resources() : op.unreserve().resources();
        std::string alloc_role = role_of(rs);
        bool ok = true;
        for (const auto& r : rs) {
          std::string role = reservation_role(r);
          if (role.empty() || !r.has_scalar()) {
            ok = false;
            continue;
          }
          Quantities q{{r.name(), r.scalar().value()}};
          Resources& pool = pools[alloc_role];
          Resources need;
          need.pool(reserve ? "" : role) = q;
          if (!pool.contains(need)) {
            ok = false;
            continue;
          }
          bool done = reserve ? allocator_.reserve(agent_id, role, q, fw_id)
                              : allocator_.unreserve(agent_id, role, q, fw_id);
          if (!done) {
            ok = false;
            continue;
          }
          pool.subtract(need);
          Resources moved;
          moved.pool(reserve ? role : "") = q;
          pool.add(moved);
        }
        if (!ok) {
          log::warning("ignored part of an invalid RESERVE/UNRESERVE operation",
                       {{"CORRAL_FRAMEWORK_ID", fw_id}});
        }
        internal::AgentEvent apply;
        apply.set_type(internal::AgentEvent::APPLY_OPERATION);
        apply.mutable_apply_operation()->mutable_framework_id()->set_value(fw_id);
        *apply.mutable_apply_operation()->mutable_operation() = op;
        send_agent(agent, apply);
        break;
      }
      case v1::Offer::Operation::LAUNCH: {
        for (const auto& ti : op.launch().task_infos()) {
          const std::string& task_id = ti.task_id().value();
          auto invalid = [&](const std::string& why) {
            send_update(fw, master_status(ti.task_id(), agent_id, v1::TASK_ERROR,
                                          v1::TaskStatus::REASON_TASK_INVALID, why));
          };
          if (task_id.empty()) {
            invalid("Task has no task_id");
            continue;
          }
          TaskKey key{fw_id, task_id};
          auto existing = tasks_.find(key);
          if (existing != tasks_.end() && !is_terminal(existing->second.task.state())) {
            invalid("Task " + task_id + " has a duplicate ID");
            continue;
          }
          if (ti.has_agent_id() && !ti.agent_id().value().empty() &&
              ti.agent_id().value() != agent_id) {
            invalid("Task uses agent " + ti.agent_id().value() + " but the offers are for " +
                    agent_id);
            continue;
          }
          if (!ti.has_command() && !ti.has_executor() && !ti.has_container()) {
            invalid("Task needs a command, an executor or a container");
            continue;
          }
          bool too_many_ranges = false;
          for (const auto& r : ti.resources()) too_many_ranges |= r.ranges().range_size() > 1024;
          if (too_many_ranges) {
            invalid("Task has a resource with more than 1024 ranges");
            continue;
          }
          Resources need = to_pools(ti.resources());
          if (need.empty()) {
            invalid("Task uses no resources; give it at least cpus or mem");
            continue;
          }
          std::string role = role_of(ti.resources());
          if (!pools[role].contains(need)) {
            invalid("Task uses more resources " + need.to_string() +
                    " than available in the accepted offers " + pools[role].to_string());
            continue;
          }
          pools[role].subtract(need);
          v1::TaskInfo launch = ti;
          launch.mutable_agent_id()->set_value(agent_id);
          for (auto& r : *launch.mutable_resources()) r.mutable_allocation_info()->set_role(role);
          TaskRec& rec = tasks_[key];
          rec = TaskRec{};
          rec.role = role;
          rec.resources = need;
          v1::Task& t = rec.task;
          t.set_name(ti.name());
          *t.mutable_task_id() = ti.task_id();
          t.mutable_framework_id()->set_value(fw_id);
          t.mutable_agent_id()->set_value(agent_id);
          if (ti.has_executor()) *t.mutable_executor_id() = ti.executor().executor_id();
          t.set_state(v1::TASK_STAGING);
          *t.mutable_resources() = launch.resources();
          if (ti.has_labels()) *t.mutable_labels() = ti.labels();
          if (ti.has_container()) *t.mutable_container() = ti.container();
          if (ti.has_health_check()) *t.mutable_health_check() = ti.health_check();
          if (ti.has_kill_policy()) *t.mutable_kill_policy() = ti.kill_policy();
          if (ti.has_discovery()) *t.mutable_discovery() = ti.discovery();
          fw.tasks.insert(key);
          agent.tasks.insert(key);
          counters_.tasks_launched++;
          internal::AgentEvent run;
          run.set_type(internal::AgentEvent::RUN_TASK);
          *run.mutable_run_task()->mutable_framework() = fw.info;
          *run.mutable_run_task()->mutable_task() = std::move(launch);
          send_agent(agent, run);
          if (!operator_streams_.empty()) {
            v1::master::Event ev;
            ev.set_type(v1::master::Event::TASK_ADDED);
            *ev.mutable_task_added()->mutable_task() = t;
            operator_event(ev);
          }
        }
        break;
      }
      case v1::Offer::Operation::LAUNCH_GROUP:
        for (const auto& ti : op.launch_group().task_group().tasks()) {
          send_update(fw, master_status(ti.task_id(), agent_id, v1::TASK_ERROR,
                                        v1::TaskStatus::REASON_TASK_INVALID,
                                        "LAUNCH_GROUP is not supported by corral-master yet; "
                                        "launch the tasks one by one with LAUNCH"));
        }
        break;
      default:
        log::warning(
            "ignored an unsupported offer operation " + v1::Offer::Operation::Type_Name(op.type()),
            {{"CORRAL_FRAMEWORK_ID", fw_id}});
        break;
    }
  }
  for (auto& [role, left] : pools) {
    if (!left.empty()) {
      allocator_.recover(agent_id, fw_id, role, left, now, std::chrono::duration<double>(refuse));
    }
  }
  request_allocation();
}

void MasterImpl::reconcile(FrameworkRec& fw, const std::string& fw_id,
                           const v1::scheduler::Call::Reconcile& rec) {
  auto status_of = [&](const TaskRec& t) {
    v1::TaskStatus s =
        master_status(t.task.task_id(), t.task.agent_id().value(), t.task.state(),
                      v1::TaskStatus::REASON_RECONCILIATION, "Reconciliation: latest task status");
    if (t.task.has_executor_id()) *s.mutable_executor_id() = t.task.executor_id();
    return s;
  };
  if (rec.tasks_size() == 0) {
    for (const auto& key : fw.tasks) {
      auto t = tasks_.find(key);
      if (t != tasks_.end()) send_update(fw, status_of(t->second));
    }
    return;
  }
  bool agents_recovering = false;
  for (const auto& [id, a] : agents_) agents_recovering |= a.state == AgentRec::State::kRecovered;
  for (const auto& want : rec.tasks()) {
    auto t = tasks_.find({fw_id, want.task_id().value()});
    if (t != tasks_.end()) {
      send_update(fw, status_of(t->second));
      continue;
    }
    const std::string agent_id = want.agent_id().value();
    auto a = agent_id.empty() ? agents_.end() : agents_.find(agent_id);
    v1::TaskState state = v1::TASK_UNKNOWN;
    if (a != agents_.end()) {
      // An agent still expected back after a master restart: no answer yet (Mesos does the
      // same); the scheduler asks again.
      if (a->second.state == AgentRec::State::kRecovered) continue;
      if (a->second.state == AgentRec::State::kUnreachable) state = v1::TASK_UNREACHABLE;
      if (a->second.state == AgentRec::State::kGone) state = v1::TASK_GONE;
    } else if (agent_id.empty() && agents_recovering) {
      continue;
    }
    send_update(
        fw, master_status(want.task_id(), agent_id, state, v1::TaskStatus::REASON_RECONCILIATION,
                          "Reconciliation: task is unknown to the master"));
  }
}

http::Response MasterImpl::handle_call(FrameworkRec& fw, const std::string& fw_id,
                                       v1::scheduler::Call& call) {
  const unsigned version = 11;
  auto bad = [&](const std::string& message) {
    counters_.invalid_calls++;
    return http::make_response(http::Status::bad_request, message, "text/plain; charset=utf-8");
  };
  using Call = v1::scheduler::Call;
  switch (call.type()) {
    case Call::TEARDOWN:
      remove_framework(fw_id, "the scheduler sent TEARDOWN");
      break;
    case Call::ACCEPT:
      if (!call.has_accept()) return bad("Expecting 'accept' to be present");
      accept(fw, fw_id, call.accept());
      break;
    case Call::DECLINE:
      if (!call.has_decline()) return bad("Expecting 'decline' to be present");
      decline(fw, fw_id, call.decline().offer_ids(),
              call.decline().has_filters() ? call.decline().filters().refuse_seconds() : 5.0);
      break;
    case Call::REVIVE: {
      std::vector<std::string> roles(call.revive().roles().begin(), call.revive().roles().end());
      allocator_.revive(fw_id, roles);
      request_allocation();
      break;
    }
    case Call::SUPPRESS: {
      std::vector<std::string> roles(call.suppress().roles().begin(),
                                     call.suppress().roles().end());
      allocator_.suppress(fw_id, roles);
      break;
    }
    case Call::KILL: {
      if (!call.has_kill() || call.kill().task_id().value().empty()) {
        return bad("Expecting 'kill.task_id' to be present");
      }
      auto t = tasks_.find({fw_id, call.kill().task_id().value()});
      if (t == tasks_.end()) {
        send_update(fw, master_status(call.kill().task_id(), call.kill().agent_id().value(),
                                      v1::TASK_UNKNOWN, v1::TaskStatus::REASON_TASK_UNKNOWN,
                                      "Attempted to kill an unknown task"));
        break;
      }
      auto a = agents_.find(t->second.task.agent_id().value());
      if (a == agents_.end() || a->second.state != AgentRec::State::kReachable) {
        // The kill is retried by the scheduler; tell it where the task stands.
        send_update(fw,
                    master_status(call.kill().task_id(), t->second.task.agent_id().value(),
                                  t->second.task.state(), v1::TaskStatus::REASON_AGENT_DISCONNECTED,
                                  "the task's agent is not connected; kill again later"));
        break;
      }
      internal::AgentEvent kill;
      kill.set_type(internal::AgentEvent::KILL_TASK);
      kill.mutable_kill_task()->mutable_framework_id()->set_value(fw_id);
      *kill.mutable_kill_task()->mutable_task_id() = call.kill().task_id();
      if (call.kill().has_kill_policy()) {
        *kill.mutable_kill_task()->mutable_kill_policy() = call.kill().kill_policy();
      }
      send_agent(a->second, kill);
      break;
    }
    case Call::SHUTDOWN: {
      if (!call.has_shutdown() || call.shutdown().executor_id().value().empty() ||
          call.shutdown().agent_id().value().empty()) {
        return bad("Expecting 'shutdown.executor_id' and 'shutdown.agent_id' to be present");
      }
      auto a = agents_.find(call.shutdown().agent_id().value());
      if (a != agents_.end()) {
        internal::AgentEvent shut;
        shut.set_type(internal::AgentEvent::SHUTDOWN_EXECUTOR);
        shut.mutable_shutdown_executor()->mutable_framework_id()->set_value(fw_id);
        *shut.mutable_shutdown_executor()->mutable_executor_id() = call.shutdown().executor_id();
        send_agent(a->second, shut);
      }
      break;
    }
    case Call::ACKNOWLEDGE: {
      const auto& ack = call.acknowledge();
      if (!call.has_acknowledge() || ack.agent_id().value().empty() ||
          ack.task_id().value().empty() || ack.uuid().empty()) {
        return bad(
            "Expecting 'acknowledge.agent_id', 'acknowledge.task_id' and "
            "'acknowledge.uuid' to be present");
      }
      auto a = agents_.find(ack.agent_id().value());
      if (a == agents_.end()) return bad("Unknown agent " + ack.agent_id().value());
      internal::AgentEvent fwd;
      fwd.set_type(internal::AgentEvent::ACKNOWLEDGE);
      fwd.mutable_acknowledge()->mutable_framework_id()->set_value(fw_id);
      *fwd.mutable_acknowledge()->mutable_task_id() = ack.task_id();
      fwd.mutable_acknowledge()->set_uuid(ack.uuid());
      send_agent(a->second, fwd);
      TaskKey key{fw_id, ack.task_id().value()};
      auto t = tasks_.find(key);
      if (t != tasks_.end() && is_terminal(t->second.task.state()) &&
          t->second.task.status_update_uuid() == ack.uuid()) {
        completed_tasks_.push_back(t->second.task);
        if (completed_tasks_.size() > 1000) completed_tasks_.erase(completed_tasks_.begin());
        fw.tasks.erase(key);
        a->second.tasks.erase(key);
        tasks_.erase(t);
      }
      break;
    }
    case Call::RECONCILE:
      reconcile(fw, fw_id, call.reconcile());
      break;
    case Call::MESSAGE: {
      const auto& m = call.message();
      if (!call.has_message() || m.agent_id().value().empty() || m.executor_id().value().empty()) {
        return bad("Expecting 'message.agent_id' and 'message.executor_id' to be present");
      }
      auto a = agents_.find(m.agent_id().value());
      if (a == agents_.end()) return bad("Unknown agent " + m.agent_id().value());
      internal::AgentEvent fwd;
      fwd.set_type(internal::AgentEvent::FRAMEWORK_MESSAGE);
      fwd.mutable_framework_message()->mutable_framework_id()->set_value(fw_id);
      *fwd.mutable_framework_message()->mutable_executor_id() = m.executor_id();
      fwd.mutable_framework_message()->set_data(m.data());
      send_agent(a->second, fwd);
      break;
    }
    case Call::REQUEST:
      break;  // Mesos ignores resource requests too
    case Call::UPDATE_FRAMEWORK: {
      const auto& u = call.update_framework();
      if (!call.has_update_framework() || u.framework_info().id().value() != fw_id) {
        return bad("Expecting 'update_framework.framework_info.id' to equal 'framework_id'");
      }
      std::vector<std::string> roles(u.framework_info().roles().begin(),
                                     u.framework_info().roles().end());
      if (roles.empty()) roles.push_back(u.framework_info().role());
      for (const auto& r : roles) {
        std::string why;
        if (!valid_role(r, &why)) return bad("Invalid role: " + why);
      }
      fw.info = u.framework_info();
      fw.roles = roles;
      allocator_.update_framework_roles(fw_id, roles);
      persist_framework(fw_id, fw);
      request_allocation();
      break;
    }
    case Call::ACCEPT_INVERSE_OFFERS:
    case Call::DECLINE_INVERSE_OFFERS:
    case Call::ACKNOWLEDGE_OPERATION_STATUS:
    case Call::RECONCILE_OPERATIONS:
      break;  // no inverse offers or operation feedback yet: nothing to do
    default:
      return bad("Unsupported call type " + Call::Type_Name(call.type()));
  }
  return accepted_response(version);
}

}  // namespace corral::master
