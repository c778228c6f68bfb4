// The Mesos v1 operator API (POST /api/v1), GET /state and /metrics/snapshot
// (docs/api/operator.md).
#include <sys/mman.h>

#include <array>
#include <cstdint>

#include "corral/common/log.hpp"
#include "corral/common/recordio.hpp"
#include "corral/common/version.hpp"
#include "json_writer.hpp"
#include "master_impl.hpp"

namespace corral::master {
namespace {

using OpCall = v1::master::Call;
using OpResponse = v1::master::Response;

void set_time(v1::TimeInfo* t, double unix_seconds) {
  t->set_nanoseconds(static_cast<int64_t>(unix_seconds * 1e9));
}

Quantities scalars_of(const google::protobuf::Map<std::string, v1::Value::Scalar>& m) {
  Quantities q;
  for (const auto& [name, s] : m) q.set(name, s.value());
  return q;
}

// Scalars as numbers, ranges as Mesos writes them in /state: "ports": "[31000-31005]".
nlohmann::json quantities_json(const Quantities& q) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [n, v] : q.items()) j[n] = v;
  for (const auto& [n, r] : q.range_items()) j[n] = r.to_string();
  return j;
}

}  // namespace

void MasterImpl::operator_event(const v1::master::Event& event) {
  if (operator_streams_.empty()) return;
  std::string json_chunk = recordio_encode(fast_json(event));
  for (auto it = operator_streams_.begin(); it != operator_streams_.end();) {
    if (!(*it)->is_open()) {
      it = operator_streams_.erase(it);
      continue;
    }
    (*it)->write_chunk(json_chunk);
    ++it;
  }
}

void MasterImpl::agent_resources(const std::string& id, const AgentRec& a, Resources* total,
                                 Resources* allocated, Resources* offered) const {
  *total = allocator_.agent_total(id);
  *offered = Resources{};
  for (const auto& o : a.offers) {
    auto it = offers_.find(o);
    if (it != offers_.end()) offered->add(it->second.resources);
  }
  *allocated = allocator_.agent_allocated(id);
  allocated->subtract(*offered);
}

OpResponse::GetAgents::Agent MasterImpl::agent_message(const AgentRec& a, const Resources& total,
                                                       const Resources& allocated,
                                                       const Resources& offered) const {
  OpResponse::GetAgents::Agent agent;
  *agent.mutable_agent_info() = a.info;
  agent.set_active(a.state == AgentRec::State::kReachable);
  agent.set_deactivated(a.deactivated);
  agent.set_version(a.version);
  set_time(agent.mutable_registered_time(), a.registered_time);
  if (a.reregistered_time > 0) set_time(agent.mutable_reregistered_time(), a.reregistered_time);
  *agent.mutable_total_resources() = to_proto(total, "");
  *agent.mutable_allocated_resources() = to_proto(allocated, "");
  *agent.mutable_offered_resources() = to_proto(offered, "");
  for (const auto& c : a.capabilities) *agent.add_capabilities() = c;
  return agent;
}

OpResponse::GetAgents MasterImpl::get_agents() const {
  OpResponse::GetAgents out;
  for (const auto& [id, a] : agents_) {
    if (a.state == AgentRec::State::kRecovered) {
      *out.add_recovered_agents() = a.info;
      continue;
    }
    if (a.state == AgentRec::State::kGone || a.state == AgentRec::State::kUnreachable) continue;
    Resources total, allocated, offered;
    agent_resources(id, a, &total, &allocated, &offered);
    *out.add_agents() = agent_message(a, total, allocated, offered);
  }
  return out;
}

// GetAgents as JSON (the same bytes as to_json(get_agents())), each agent's object reused from
// its record's cache while its inputs are unchanged: at 5,000 agents most have not changed
// between two reads.
void MasterImpl::write_agents_json(JsonWriter& w) const {
  bool any_agent = false, any_recovered = false;
  for (const auto& [id, a] : agents_) {
    any_recovered |= a.state == AgentRec::State::kRecovered;
    any_agent |=
        a.state == AgentRec::State::kReachable || a.state == AgentRec::State::kDisconnected;
  }
  w.raw('{');
  if (any_agent) {
    w.raw("\"agents\":[");
    bool first = true;
    Resources total, allocated, offered;
    for (const auto& [id, a] : agents_) {
      if (a.state != AgentRec::State::kReachable && a.state != AgentRec::State::kDisconnected) {
        continue;
      }
      agent_resources(id, a, &total, &allocated, &offered);
      AgentRec::JsonCache& c = a.json_cache;
      const bool same = !c.json.empty() && c.stream_id == a.stream_id && c.state == a.state &&
                        c.deactivated == a.deactivated && c.registered_time == a.registered_time &&
                        c.reregistered_time == a.reregistered_time && c.total == total &&
                        c.allocated == allocated && c.offered == offered;
      if (!same) {
        c.json.clear();
        JsonWriter(c.json).message(agent_message(a, total, allocated, offered));
        c.stream_id = a.stream_id;
        c.state = a.state;
        c.deactivated = a.deactivated;
        c.registered_time = a.registered_time;
        c.reregistered_time = a.reregistered_time;
        c.total = total;
        c.allocated = allocated;
        c.offered = offered;
      }
#ifndef NDEBUG
      else {
        std::string fresh;
        JsonWriter(fresh).message(agent_message(a, total, allocated, offered));
        if (fresh != c.json) {
          log::error("stale cached agent JSON", {{"CORRAL_AGENT_ID", id}});
          std::abort();
        }
      }
#endif
      if (!first) w.raw(',');
      first = false;
      w.raw(c.json);
    }
    w.raw(']');
  }
  if (any_recovered) {
    if (any_agent) w.raw(',');
    w.raw("\"recovered_agents\":[");
    bool first = true;
    for (const auto& [id, a] : agents_) {
      if (a.state != AgentRec::State::kRecovered) continue;
      if (!first) w.raw(',');
      first = false;
      w.message(a.info);
    }
    w.raw(']');
  }
  w.raw('}');
}

OpResponse::GetFrameworks::Framework MasterImpl::framework_message(const std::string& id,
                                                                   const FrameworkRec& f) const {
  OpResponse::GetFrameworks::Framework fw;
  *fw.mutable_framework_info() = f.info;
  fw.set_active(f.connected);
  fw.set_connected(f.connected);
  fw.set_recovered(f.recovered);
  set_time(fw.mutable_registered_time(), f.registered_time);
  if (f.reregistered_time > 0) set_time(fw.mutable_reregistered_time(), f.reregistered_time);
  Resources offered;
  for (const auto& o : f.offers) {
    auto it = offers_.find(o);
    if (it != offers_.end()) offered.add(it->second.resources);
  }
  Resources allocated = allocator_.framework_allocated(id);
  allocated.subtract(offered);
  *fw.mutable_allocated_resources() = to_proto(allocated, "");
  *fw.mutable_offered_resources() = to_proto(offered, "");
  return fw;
}

OpResponse::GetFrameworks MasterImpl::get_frameworks() const {
  OpResponse::GetFrameworks out;
  for (const auto& [id, f] : frameworks_) {
    auto* fw = out.add_frameworks();
    *fw = framework_message(id, f);
    for (const auto& o : f.offers) {
      auto it = offers_.find(o);
      if (it != offers_.end()) *fw->add_offers() = it->second.offer;
    }
  }
  for (const auto& [id, info] : completed_frameworks_) {
    *out.add_completed_frameworks()->mutable_framework_info() = info;
  }
  return out;
}

// GetFrameworks as JSON (the same bytes as to_json(get_frameworks())) without copying the
// outstanding offers into a message: each offer's JSON is written once and reused (at 5,000
// agents there are thousands of them, and copying them cost GET_STATE ~180 ms).
void MasterImpl::write_frameworks_json(JsonWriter& w) const {
  // Keys in nlohmann's order: "completed_frameworks" < "frameworks"; empty lists left out.
  w.raw('{');
  if (!completed_frameworks_.empty()) {
    w.raw("\"completed_frameworks\":[");
    bool first = true;
    for (const auto& [id, info] : completed_frameworks_) {
      if (!first) w.raw(',');
      first = false;
      OpResponse::GetFrameworks::Framework fw;
      *fw.mutable_framework_info() = info;
      w.message(fw);
    }
    w.raw(']');
  }
  if (!frameworks_.empty()) {
    if (!completed_frameworks_.empty()) w.raw(',');
    w.raw("\"frameworks\":[");
    bool first = true;
    for (const auto& [id, f] : frameworks_) {
      if (!first) w.raw(',');
      first = false;
      JsonWriter::Extra extra;
      std::string offers;
      for (const auto& o : f.offers) {
        auto it = offers_.find(o);
        if (it == offers_.end()) continue;
        const OfferRec& rec = it->second;
        if (rec.json.empty()) {
          JsonWriter(rec.json).message(rec.offer);
        }
#ifndef NDEBUG
        else {
          std::string fresh;
          JsonWriter(fresh).message(rec.offer);
          if (fresh != rec.json) {
            log::error("stale cached offer JSON", {{"CORRAL_OFFER_ID", o}});
            std::abort();
          }
        }
#endif
        offers += offers.empty() ? '[' : ',';
        offers += rec.json;
      }
      if (!offers.empty()) {
        offers += ']';
        extra.emplace_back("offers", std::move(offers));
      }
      w.message(framework_message(id, f), extra);
    }
    w.raw(']');
  }
  w.raw('}');
}

OpResponse::GetTasks MasterImpl::get_tasks() const {
  OpResponse::GetTasks out;
  for (const auto& [key, t] : tasks_) {
    if (t.task.state() == v1::TASK_UNREACHABLE) {
      *out.add_unreachable_tasks() = t.task;
    } else if (is_terminal(t.task.state())) {
      *out.add_completed_tasks() = t.task;
    } else {
      *out.add_tasks() = t.task;
    }
  }
  for (const auto& t : completed_tasks_) *out.add_completed_tasks() = t;
  return out;
}

// GetTasks written straight from tasks_ (no copy of the Task messages): the same bytes as
// to_json(get_tasks()). Keys in nlohmann's (sorted) order; empty lists are left out. Each live
// task's JSON is cached in its record (TaskRec::json) until the task changes, so at 100,000
// tasks this is mostly copying fragments.
void MasterImpl::write_tasks_json(JsonWriter& w) const {
  std::vector<const TaskRec*> lists[3];  // completed, active, unreachable (key order)
  size_t bytes = 0;
  for (const auto& [key, t] : tasks_) {
    const int kind = t.task.state() == v1::TASK_UNREACHABLE ? 2
                     : is_terminal(t.task.state())          ? 0
                                                            : 1;
    lists[kind].push_back(&t);
    if (t.json.empty()) {
      JsonWriter(t.json).message(t.task);
    }
#ifndef NDEBUG
    else {
      // A stale fragment means a change to `task` without changed(): fail loudly in tests.
      std::string fresh;
      JsonWriter(fresh).message(t.task);
      if (fresh != t.json) {
        log::error("stale cached task JSON (a TaskRec change without changed())",
                   {{"CORRAL_TASK_ID", key.second}});
        std::abort();
      }
    }
#endif
    bytes += t.json.size() + 1;
  }
  w.buffer().reserve(w.buffer().size() + bytes + 64);
  w.raw('{');
  bool first_list = true;
  auto list = [&](int kind, std::string_view key) {
    if (lists[kind].empty() && (kind != 0 || completed_tasks_.empty())) return;
    if (!first_list) w.raw(',');
    first_list = false;
    w.raw(key);
    w.raw('[');
    bool first = true;
    for (const TaskRec* t : lists[kind]) {
      if (!first) w.raw(',');
      first = false;
      w.raw(t->json);
    }
    if (kind == 0) {
      for (const auto& t : completed_tasks_) {
        if (!first) w.raw(',');
        first = false;
        w.message(t);
      }
    }
    w.raw(']');
  };
  list(0, "\"completed_tasks\":");
  list(1, "\"tasks\":");
  list(2, "\"unreachable_tasks\":");
  w.raw('}');
}

// GetState as JSON; the same bytes as to_json() of the GetState message built from
// get_agents(), get_frameworks() and get_tasks().
void MasterImpl::write_state_json(JsonWriter& w) const {
  w.raw("{\"get_agents\":");
  write_agents_json(w);
  w.raw(",\"get_executors\":{},\"get_frameworks\":");
  write_frameworks_json(w);
  w.raw(",\"get_tasks\":");
  write_tasks_json(w);
  w.raw('}');
}

namespace {

// A large answer's buffer (GET_STATE: ~77 MB at 100,000 tasks) is a fresh mapping each time;
// with 4 KiB pages, filling it costs ~19,000 page faults (~30 ms). Asks for transparent huge
// pages on the buffer's 2 MiB-aligned interior (a hint: without THP nothing changes).
void advise_huge_pages(std::string& s) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (s.capacity() < 4 * kHuge) return;
  const auto start = reinterpret_cast<uintptr_t>(s.data());
  const uintptr_t begin = (start + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (start + s.capacity()) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

// Protobuf encoding by hand for the large answers: a length-delimited field's key and length.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void put_submessage(std::string& out, int field_number, std::string_view bytes) {
  put_varint(out, (static_cast<uint64_t>(field_number) << 3) | 2);
  put_varint(out, bytes.size());
  out.append(bytes);
}

void put_message(std::string& out, int field_number, const google::protobuf::Message& m) {
  put_varint(out, (static_cast<uint64_t>(field_number) << 3) | 2);
  put_varint(out, m.ByteSizeLong());
  m.AppendToString(&out);
}

}  // namespace

// GetTasks in the binary encoding, serialized task by task from tasks_ (parses as the message
// get_tasks() returns).
std::string MasterImpl::tasks_protobuf() const {
  std::string out;
  for (const auto& [key, t] : tasks_) {
    int field = t.task.state() == v1::TASK_UNREACHABLE
                    ? OpResponse::GetTasks::kUnreachableTasksFieldNumber
                : is_terminal(t.task.state()) ? OpResponse::GetTasks::kCompletedTasksFieldNumber
                                              : OpResponse::GetTasks::kTasksFieldNumber;
    put_message(out, field, t.task);
  }
  for (const auto& t : completed_tasks_) {
    put_message(out, OpResponse::GetTasks::kCompletedTasksFieldNumber, t);
  }
  return out;
}

std::string MasterImpl::state_protobuf() const {
  using GS = OpResponse::GetState;
  std::string state;
  put_message(state, GS::kGetAgentsFieldNumber, get_agents());
  put_message(state, GS::kGetFrameworksFieldNumber, get_frameworks());
  put_submessage(state, GS::kGetExecutorsFieldNumber, "");
  put_submessage(state, GS::kGetTasksFieldNumber, tasks_protobuf());
  return state;
}

OpResponse::GetRoles MasterImpl::get_roles() const {
  OpResponse::GetRoles out;
  std::map<std::string, std::vector<std::string>> members;
  for (const auto& [id, f] : frameworks_) {
    for (const auto& r : f.roles) members[r].push_back(id);
  }
  std::set<std::string> names;
  for (const auto& r : allocator_.known_roles()) names.insert(r);
  for (const auto& [r, m] : members) names.insert(r);
  for (const auto& name : names) {
    auto* role = out.add_roles();
    role->set_name(name);
    role->set_weight(allocator_.role_config(name).weight);
    for (const auto& f : members[name]) role->add_frameworks()->set_value(f);
    *role->mutable_resources() = to_proto(Resources{allocator_.role_allocated(name)}, "");
  }
  return out;
}

nlohmann::json MasterImpl::metrics_snapshot() const {
  size_t active = 0, disconnected = 0, unreachable = 0, gone = 0;
  for (const auto& [id, a] : agents_) {
    switch (a.state) {
      case AgentRec::State::kReachable:
        active++;
        break;
      case AgentRec::State::kDisconnected:
      case AgentRec::State::kRecovered:
        disconnected++;
        break;
      case AgentRec::State::kUnreachable:
        unreachable++;
        break;
      case AgentRec::State::kGone:
        gone++;
        break;
    }
  }
  size_t fw_connected = 0;
  for (const auto& [id, f] : frameworks_) fw_connected += f.connected ? 1 : 0;
  std::map<v1::TaskState, size_t> by_state;
  for (const auto& [k, t] : tasks_) by_state[t.task.state()]++;
  Quantities total = allocator_.cluster_total();
  Quantities used;
  for (const auto& [id, a] : agents_) used.add(allocator_.agent_allocated(id).total());
  double uptime = std::chrono::duration<double>(SteadyClock::now() - started_steady_).count();
  nlohmann::json j = {
      {"master/uptime_secs", uptime},
      {"master/elected", 1},
      {"master/slaves_active", active},
      {"master/slaves_connected", active},
      {"master/slaves_disconnected", disconnected},
      {"master/slaves_unreachable", unreachable},
      {"master/slaves_gone", gone},
      {"master/frameworks_active", fw_connected},
      {"master/frameworks_connected", fw_connected},
      {"master/frameworks_disconnected", frameworks_.size() - fw_connected},
      {"master/outstanding_offers", offers_.size()},
      {"master/tasks_staging", by_state[v1::TASK_STAGING]},
      {"master/tasks_starting", by_state[v1::TASK_STARTING]},
      {"master/tasks_running", by_state[v1::TASK_RUNNING]},
      {"master/tasks_killing", by_state[v1::TASK_KILLING]},
      {"master/tasks_unreachable", by_state[v1::TASK_UNREACHABLE]},
      {"master/tasks_launched_total", counters_.tasks_launched},
      {"master/messages_status_update", counters_.status_updates},
      {"master/offers_sent", counters_.offers_sent},
      {"master/offers_declined", counters_.offers_declined},
      {"master/offers_rescinded", counters_.offers_rescinded},
      {"master/invalid_calls", counters_.invalid_calls},
      {"allocator/allocation_runs", counters_.allocation_runs},
      {"allocator/allocation_run_ms", counters_.last_allocation_ms},
      {"master/get_state_write_ms", counters_.last_state_write_ms},
  };
  for (const char* name : {"cpus", "mem", "disk", "gpus"}) {
    double t = total.get(name), u = used.get(name);
    j[std::string("master/") + name + "_total"] = t;
    j[std::string("master/") + name + "_used"] = u;
    j[std::string("master/") + name + "_percent"] = t > 0 ? u / t : 0.0;
  }
  return j;
}

// The Mesos /state JSON (the subset tools read: frameworks, slaves, tasks, resources).
std::string MasterImpl::state_json() const {
  auto res_json = [](const Resources& r) {
    nlohmann::json j = quantities_json(r.total());
    for (const char* n : {"cpus", "mem", "disk", "gpus"}) {
      if (!j.contains(n)) j[n] = 0.0;
    }
    return j;
  };
  nlohmann::json slaves = nlohmann::json::array();
  for (const auto& [id, a] : agents_) {
    if (a.state == AgentRec::State::kGone || a.state == AgentRec::State::kUnreachable) continue;
    Resources total = allocator_.agent_total(id);
    Resources used = allocator_.agent_allocated(id);
    Resources offered;
    for (const auto& o : a.offers) {
      auto it = offers_.find(o);
      if (it != offers_.end()) offered.add(it->second.resources);
    }
    Resources unreserved;
    unreserved.pool("") = total.pools().count("") ? total.pools().at("") : Quantities{};
    nlohmann::json reserved = nlohmann::json::object();
    for (const auto& [role, q] : total.pools()) {
      if (!role.empty()) reserved[role] = quantities_json(q);
    }
    nlohmann::json attrs = nlohmann::json::object();
    for (const auto& at : a.info.attributes()) {
      if (at.has_text()) attrs[at.name()] = at.text().value();
      if (at.has_scalar()) attrs[at.name()] = at.scalar().value();
    }
    slaves.push_back(
        {{"id", id},
         {"hostname", a.info.hostname()},
         {"port", a.info.port()},
         {"pid", "slave(1)@" + a.info.hostname() + ":" + std::to_string(a.info.port())},
         {"active", a.state == AgentRec::State::kReachable},
         {"deactivated", a.deactivated},
         {"version", a.version},
         {"registered_time", a.registered_time},
         {"reregistered_time", a.reregistered_time},
         {"resources", res_json(total)},
         {"used_resources", res_json(used)},
         {"offered_resources", res_json(offered)},
         {"reserved_resources", reserved},
         {"unreserved_resources", res_json(unreserved)},
         {"attributes", attrs},
         {"state", a.state == AgentRec::State::kReachable ? "ACTIVE" : "DISCONNECTED"}});
  }
  // Tasks are the bulk (100,000 at scale): each is streamed (json_writer.hpp) as the Task's
  // JSON with Mesos's /state keys set on it: id, framework_id, slave_id, state and resources as
  // an object of scalars.
  auto write_task = [&](JsonWriter& w, const v1::Task& t) {
    Quantities q = to_pools(t.resources()).total();
    std::string res_text = res_json(Resources{q}).dump();
    auto text = [](const std::string& s) {
      std::string out;
      JsonWriter(out).string(s);
      return out;
    };
    w.message(t, JsonWriter::Extra{{"framework_id", text(t.framework_id().value())},
                                   {"id", text(t.task_id().value())},
                                   {"resources", std::move(res_text)},
                                   {"slave_id", text(t.agent_id().value())},
                                   {"state", text(v1::TaskState_Name(t.state()))}});
  };
  nlohmann::json frameworks = nlohmann::json::array();
  std::vector<std::array<std::vector<const v1::Task*>, 3>> framework_tasks;
  for (const auto& [id, f] : frameworks_) {
    std::array<std::vector<const v1::Task*>, 3> lists;  // tasks, unreachable, completed
    Resources used;
    for (const auto& key : f.tasks) {
      auto t = tasks_.find(key);
      if (t == tasks_.end()) continue;
      if (t->second.task.state() == v1::TASK_UNREACHABLE) {
        lists[1].push_back(&t->second.task);
      } else if (is_terminal(t->second.task.state())) {
        lists[2].push_back(&t->second.task);
      } else {
        lists[0].push_back(&t->second.task);
        used.add(t->second.resources);
      }
    }
    framework_tasks.push_back(std::move(lists));
    Resources offered;
    nlohmann::json offers = nlohmann::json::array();
    for (const auto& o : f.offers) {
      auto it = offers_.find(o);
      if (it == offers_.end()) continue;
      offered.add(it->second.resources);
      offers.push_back({{"id", o},
                        {"framework_id", id},
                        {"slave_id", it->second.agent_id},
                        {"resources", res_json(it->second.resources)}});
    }
    nlohmann::json roles = nlohmann::json::array();
    for (const auto& r : f.roles) roles.push_back(r);
    frameworks.push_back({{"id", id},
                          {"name", f.info.name()},
                          {"user", f.info.user()},
                          {"principal", f.info.principal()},
                          {"hostname", f.info.hostname()},
                          {"webui_url", f.info.webui_url()},
                          {"role", f.roles.empty() ? "*" : f.roles.front()},
                          {"roles", roles},
                          {"failover_timeout", f.info.failover_timeout()},
                          {"active", f.connected},
                          {"connected", f.connected},
                          {"recovered", f.recovered},
                          {"registered_time", f.registered_time},
                          {"reregistered_time", f.reregistered_time},
                          {"resources", res_json(used)},
                          {"used_resources", res_json(used)},
                          {"offered_resources", res_json(offered)},
                          {"offers", offers}});
  }
  nlohmann::json completed_frameworks = nlohmann::json::array();
  for (const auto& [id, info] : completed_frameworks_) {
    completed_frameworks.push_back({{"id", id}, {"name", info.name()}});
  }
  size_t activated = 0, deactivated = 0;
  for (const auto& [id, a] : agents_) {
    if (a.state == AgentRec::State::kReachable) {
      activated++;
    } else if (a.state != AgentRec::State::kGone) {
      deactivated++;
    }
  }
  auto eps = server_->endpoints();
  std::string hostport = eps.empty() ? config_.listen : eps[0].to_string();
  nlohmann::json top = {
      {"version", kVersion},
      {"id", master_id_},
      {"pid", "master@" + hostport},
      {"hostname", master_info().hostname()},
      {"cluster", config_.cluster},
      {"leader", "master@" + hostport},
      {"start_time", std::chrono::duration<double>(started_.time_since_epoch()).count()},
      {"elected_time", std::chrono::duration<double>(started_.time_since_epoch()).count()},
      {"activated_slaves", activated},
      {"deactivated_slaves", deactivated},
      {"slaves", slaves},
      {"completed_frameworks", completed_frameworks},
      {"unregistered_frameworks", nlohmann::json::array()}};
  std::string body;
  JsonWriter w(body);
  w.object(top, {{"frameworks", [&](JsonWriter& out) {
                    out.raw('[');
                    for (size_t i = 0; i < frameworks.size(); ++i) {
                      if (i > 0) out.raw(',');
                      auto list = [&](size_t which) {
                        return [&, which](JsonWriter& lw) {
                          lw.raw('[');
                          bool first = true;
                          for (const v1::Task* t : framework_tasks[i][which]) {
                            if (!first) lw.raw(',');
                            first = false;
                            write_task(lw, *t);
                          }
                          lw.raw(']');
                        };
                      };
                      out.object(frameworks[i], {{"completed_tasks", list(2)},
                                                 {"tasks", list(0)},
                                                 {"unreachable_tasks", list(1)}});
                    }
                    out.raw(']');
                  }}});
  return body;
}

void MasterImpl::operator_api(const std::shared_ptr<http::Exchange>& ex) {
  const auto& req = ex->request();
  auto fail = [&](http::Status status, const std::string& message) {
    ex->respond(http::error_response(status, message, req.version()));
  };
  if (req.body().size() > config_.max_request_body) {
    return fail(
        http::Status::payload_too_large,
        "request body over the limit of " + std::to_string(config_.max_request_body) + " bytes");
  }
  auto in = wire_format_from_content_type(req[http::Field::content_type]);
  if (!in) return fail(http::Status::unsupported_media_type, in.error().message());
  auto out = wire_format_from_accept(req[http::Field::accept]);
  if (!out) return fail(http::Status::not_acceptable, out.error().message());
  OpCall call;
  if (auto parsed = parse_message(*in, req.body(), &call); !parsed) {
    return fail(http::Status::bad_request,
                "Failed to parse body into Call: " + parsed.error().message());
  }
  if (!call.has_type() || call.type() == OpCall::UNKNOWN) {
    return fail(http::Status::bad_request,
                "Expecting 'type' to be present, e.g. "
                "{\"type\": \"GET_HEALTH\"}");
  }
  auto reply = [&](const OpResponse& r) {
    ex->respond(http::make_response(http::Status::ok, serialize_message(*out, r),
                                    content_type_of(*out), req.version()));
  };
  auto ok_empty = [&] {
    http::Response r(http::Status::ok, req.version());
    r.content_length(0);
    ex->respond(std::move(r));
  };
  OpResponse r;
  switch (call.type()) {
    case OpCall::GET_HEALTH:
      r.set_type(OpResponse::GET_HEALTH);
      r.mutable_get_health()->set_healthy(true);
      return reply(r);
    case OpCall::GET_VERSION:
      r.set_type(OpResponse::GET_VERSION);
      r.mutable_get_version()->mutable_version_info()->set_version(kVersion);
      return reply(r);
    case OpCall::GET_FLAGS: {
      r.set_type(OpResponse::GET_FLAGS);
      auto add = [&](const std::string& n, const std::string& v) {
        auto* f = r.mutable_get_flags()->add_flags();
        f->set_name(n);
        f->set_value(v);
      };
      auto secs = [](std::chrono::milliseconds ms) {
        return std::to_string(std::chrono::duration<double>(ms).count()) + "secs";
      };
      add("listen", config_.listen);
      add("work_dir", config_.work_dir.string());
      add("cluster", config_.cluster);
      add("log_level", config_.log_level);
      add("max_request_body", std::to_string(config_.max_request_body));
      add("agent_ping_timeout", secs(config_.agent_ping_timeout));
      add("max_agent_ping_timeouts", std::to_string(config_.max_agent_ping_timeouts));
      add("agent_reregister_timeout", secs(config_.agent_reregister_timeout));
      add("agent_removal_timeout", secs(config_.agent_removal_timeout));
      add("framework_heartbeat_interval", secs(config_.framework_heartbeat_interval));
      add("offer_timeout", secs(config_.offer_timeout));
      add("allocation_interval", secs(config_.allocation_interval));
      return reply(r);
    }
    case OpCall::GET_METRICS: {
      r.set_type(OpResponse::GET_METRICS);
      const nlohmann::json snapshot = metrics_snapshot();
      for (const auto& [name, value] : snapshot.items()) {
        auto* m = r.mutable_get_metrics()->add_metrics();
        m->set_name(name);
        m->set_value(value.is_number() ? value.get<double>() : 0.0);
      }
      return reply(r);
    }
    case OpCall::GET_MASTER:
      r.set_type(OpResponse::GET_MASTER);
      *r.mutable_get_master()->mutable_master_info() = master_info();
      r.mutable_get_master()->set_start_time(
          std::chrono::duration<double>(started_.time_since_epoch()).count());
      r.mutable_get_master()->set_elected_time(r.get_master().start_time());
      return reply(r);
    case OpCall::GET_STATE: {
      // Streamed from the master's structures (no Response copy of 100,000 tasks): the same
      // bytes as serializing the Response message.
      const auto write_start = SteadyClock::now();
      std::string body;
      if (*out == WireFormat::kJson) {
        // One allocation of about the last answer's size (no regrowth copies).
        if (counters_.last_state_bytes > 0) {
          body.reserve(counters_.last_state_bytes + counters_.last_state_bytes / 8 + 4096);
          advise_huge_pages(body);
        }
        JsonWriter w(body);
        w.raw("{\"get_state\":");
        write_state_json(w);
        w.raw(",\"type\":\"GET_STATE\"}");
      } else {
        put_varint(body, (OpResponse::kTypeFieldNumber << 3) | 0);
        put_varint(body, OpResponse::GET_STATE);
        put_submessage(body, OpResponse::kGetStateFieldNumber, state_protobuf());
      }
      counters_.last_state_write_ms =
          std::chrono::duration<double, std::milli>(SteadyClock::now() - write_start).count();
      if (*out == WireFormat::kJson) counters_.last_state_bytes = body.size();
      return ex->respond(http::make_response(http::Status::ok, std::move(body),
                                             content_type_of(*out), req.version()));
    }
    case OpCall::GET_AGENTS:
      r.set_type(OpResponse::GET_AGENTS);
      *r.mutable_get_agents() = get_agents();
      return reply(r);
    case OpCall::GET_FRAMEWORKS:
      r.set_type(OpResponse::GET_FRAMEWORKS);
      *r.mutable_get_frameworks() = get_frameworks();
      return reply(r);
    case OpCall::GET_TASKS: {
      std::string body;
      if (*out == WireFormat::kJson) {
        JsonWriter w(body);
        w.raw("{\"get_tasks\":");
        write_tasks_json(w);
        w.raw(",\"type\":\"GET_TASKS\"}");
      } else {
        put_varint(body, (OpResponse::kTypeFieldNumber << 3) | 0);
        put_varint(body, OpResponse::GET_TASKS);
        put_submessage(body, OpResponse::kGetTasksFieldNumber, tasks_protobuf());
      }
      return ex->respond(http::make_response(http::Status::ok, std::move(body),
                                             content_type_of(*out), req.version()));
    }
    case OpCall::GET_EXECUTORS:
      r.set_type(OpResponse::GET_EXECUTORS);
      r.mutable_get_executors();
      return reply(r);
    case OpCall::GET_ROLES:
      r.set_type(OpResponse::GET_ROLES);
      *r.mutable_get_roles() = get_roles();
      return reply(r);
    case OpCall::GET_WEIGHTS:
      r.set_type(OpResponse::GET_WEIGHTS);
      for (const auto& role : allocator_.known_roles()) {
        auto* w = r.mutable_get_weights()->add_weight_infos();
        w->set_role(role);
        w->set_weight(allocator_.role_config(role).weight);
      }
      return reply(r);
    case OpCall::UPDATE_WEIGHTS: {
      for (const auto& w : call.update_weights().weight_infos()) {
        std::string why;
        if (!valid_role(w.role(), &why)) return fail(http::Status::bad_request, why);
        if (!(w.weight() > 0)) {
          return fail(http::Status::bad_request,
                      "weight of role '" + w.role() + "' must be a positive number");
        }
      }
      for (const auto& w : call.update_weights().weight_infos()) {
        RoleConfig rc = allocator_.role_config(w.role());
        rc.weight = w.weight();
        allocator_.set_role_config(w.role(), rc);
        nlohmann::json j = {{"weight", rc.weight}, {"guarantee", quantities_json(rc.guarantee)}};
        if (rc.limit) j["limit"] = quantities_json(*rc.limit);
        (void)store_->put("roles", w.role(), j.dump());
      }
      request_allocation();
      return ok_empty();
    }
    case OpCall::GET_QUOTA: {
      r.set_type(OpResponse::GET_QUOTA);
      auto* status = r.mutable_get_quota()->mutable_status();
      for (const auto& role : allocator_.known_roles()) {
        RoleConfig rc = allocator_.role_config(role);
        if (rc.guarantee.empty() && !rc.limit) continue;
        auto* c = status->add_configs();
        c->set_role(role);
        for (const auto& [n, v] : rc.guarantee.items()) (*c->mutable_guarantees())[n].set_value(v);
        if (rc.limit) {
          for (const auto& [n, v] : rc.limit->items()) (*c->mutable_limits())[n].set_value(v);
        }
      }
      return reply(r);
    }
    case OpCall::UPDATE_QUOTA: {
      for (const auto& c : call.update_quota().quota_configs()) {
        std::string why;
        if (!valid_role(c.role(), &why) || c.role() == "*") {
          return fail(http::Status::bad_request,
                      "invalid quota role '" + c.role() +
                          "': " + (why.empty() ? "quota cannot be set on '*'" : why));
        }
        for (const auto& [n, g] : c.guarantees()) {
          if (g.value() < 0) return fail(http::Status::bad_request, "negative guarantee for " + n);
          auto l = c.limits().find(n);
          if (l != c.limits().end() && l->second.value() < g.value()) {
            return fail(http::Status::bad_request,
                        "role '" + c.role() + "': guarantee of " + n + " is above its limit");
          }
        }
      }
      for (const auto& c : call.update_quota().quota_configs()) {
        RoleConfig rc = allocator_.role_config(c.role());
        rc.guarantee = scalars_of(c.guarantees());
        if (c.limits().empty()) {
          rc.limit.reset();
        } else {
          rc.limit = scalars_of(c.limits());
        }
        allocator_.set_role_config(c.role(), rc);
        nlohmann::json j = {{"weight", rc.weight}, {"guarantee", quantities_json(rc.guarantee)}};
        if (rc.limit) j["limit"] = quantities_json(*rc.limit);
        auto put = store_->put("roles", c.role(), j.dump());
        if (!put) return fail(http::Status::service_unavailable, put.error().message());
      }
      request_allocation();
      return ok_empty();
    }
    case OpCall::RESERVE_RESOURCES:
    case OpCall::UNRESERVE_RESOURCES: {
      bool reserve = call.type() == OpCall::RESERVE_RESOURCES;
      const auto& agent_id = reserve ? call.reserve_resources().agent_id().value()
                                     : call.unreserve_resources().agent_id().value();
      const auto& rs =
          reserve ? call.reserve_resources().resources() : call.unreserve_resources().resources();
      auto a = agents_.find(agent_id);
      if (a == agents_.end() || a->second.state != AgentRec::State::kReachable) {
        return fail(http::Status::bad_request, "unknown or unreachable agent '" + agent_id + "'");
      }
      if (rs.empty()) return fail(http::Status::bad_request, "no resources given");
      // Resources currently offered are rescinded first so they can be (un)reserved.
      for (const auto& o : std::set<std::string>(a->second.offers)) rescind_offer(o, true);
      for (const auto& res : rs) {
        std::string role = reservation_role(res);
        if (role.empty() || !res.has_scalar()) {
          return fail(http::Status::bad_request,
                      "each resource needs a scalar value and 'reservations' naming the role");
        }
        Quantities q{{res.name(), res.scalar().value()}};
        bool done = reserve ? allocator_.reserve(agent_id, role, q)
                            : allocator_.unreserve(agent_id, role, q);
        if (!done) {
          return fail(http::Status::conflict,
                      std::string(reserve ? "cannot reserve " : "cannot unreserve ") +
                          q.to_string() + " for role " + role + " on agent " + agent_id +
                          ": not available (in use by tasks, or not there)");
        }
      }
      internal::AgentEvent apply;
      apply.set_type(internal::AgentEvent::APPLY_OPERATION);
      auto* op = apply.mutable_apply_operation()->mutable_operation();
      op->set_type(reserve ? v1::Offer::Operation::RESERVE : v1::Offer::Operation::UNRESERVE);
      if (reserve) {
        *op->mutable_reserve()->mutable_resources() = rs;
      } else {
        *op->mutable_unreserve()->mutable_resources() = rs;
      }
      send_agent(a->second, apply);
      request_allocation();
      return ex->respond(http::Response(http::Status::accepted, req.version()));
    }
    case OpCall::START_MAINTENANCE:
    case OpCall::STOP_MAINTENANCE: {
      bool start = call.type() == OpCall::START_MAINTENANCE;
      const auto& machines =
          start ? call.start_maintenance().machines() : call.stop_maintenance().machines();
      if (machines.empty()) return fail(http::Status::bad_request, "no machines given");
      for (const auto& m : machines) {
        for (auto& [id, a] : agents_) {
          if (a.info.hostname() != m.hostname()) continue;
          a.deactivated = start;
          if (start) remove_agent_offers(a);
          allocator_.set_agent_active(id, !start && a.state == AgentRec::State::kReachable);
        }
        if (start) {
          machines_down_[m.hostname()] = "DOWN";
        } else {
          machines_down_.erase(m.hostname());
        }
      }
      request_allocation();
      return ok_empty();
    }
    case OpCall::DEACTIVATE_AGENT:
    case OpCall::REACTIVATE_AGENT: {
      bool deact = call.type() == OpCall::DEACTIVATE_AGENT;
      const std::string& id = deact ? call.deactivate_agent().agent_id().value()
                                    : call.reactivate_agent().agent_id().value();
      auto a = agents_.find(id);
      if (a == agents_.end()) return fail(http::Status::not_found, "unknown agent '" + id + "'");
      a->second.deactivated = deact;
      if (deact) remove_agent_offers(a->second);
      allocator_.set_agent_active(id, !deact && a->second.state == AgentRec::State::kReachable);
      request_allocation();
      return ok_empty();
    }
    case OpCall::MARK_AGENT_GONE: {
      const std::string& id = call.mark_agent_gone().agent_id().value();
      auto a = agents_.find(id);
      if (id.empty() || a == agents_.end()) {
        return fail(http::Status::not_found, "unknown agent '" + id + "'");
      }
      if (a->second.state == AgentRec::State::kGone) return ok_empty();
      mark_gone(id, /*by_operator=*/true);
      return ok_empty();
    }
    case OpCall::TEARDOWN: {
      const std::string& id = call.teardown().framework_id().value();
      if (!frameworks_.count(id)) {
        return fail(http::Status::bad_request, "unknown framework '" + id + "'");
      }
      remove_framework(id, "an operator sent TEARDOWN");
      return ok_empty();
    }
    case OpCall::SUBSCRIBE: {
      http::Response head(http::Status::ok, req.version());
      head.set(http::Field::content_type, content_type_of(WireFormat::kJson));
      auto w = ex->start_stream(std::move(head));
      // {"subscribed":{"get_state":...,"heartbeat_interval_seconds":N},"type":"SUBSCRIBED"}
      std::string event;
      JsonWriter jw(event);
      jw.raw("{\"subscribed\":{\"get_state\":");
      write_state_json(jw);
      jw.raw(",\"heartbeat_interval_seconds\":");
      jw.number(std::chrono::duration<double>(config_.framework_heartbeat_interval).count());
      jw.raw("},\"type\":\"SUBSCRIBED\"}");
      w->write_chunk(recordio_encode(event));
      operator_streams_.push_back(w);
      return;
    }
    default:
      return fail(http::Status::not_implemented,
                  "operator call " + OpCall::Type_Name(call.type()) +
                      " is not implemented by corral-master; see docs/api/operator.md");
  }
}

}  // namespace corral::master
