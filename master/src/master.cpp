#include "corral/master/master.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"
#include "corral/common/recordio.hpp"
#include "corral/common/version.hpp"
#include "master_impl.hpp"

namespace corral::master {
namespace {

constexpr const char* kStateNs = "master";
constexpr const char* kAgentsNs = "agents";
constexpr const char* kFrameworksNs = "frameworks";

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

// ---------------------------------------------------------------------------------------------
// Resource conversion

std::string reservation_role(const v1::Resource& r) {
  if (r.reservations_size() > 0) return r.reservations(r.reservations_size() - 1).role();
  if (r.has_reservation() && r.reservation().has_role()) return r.reservation().role();
  if (r.has_role() && r.role() != "*") return r.role();
  return "";
}

Resources to_pools(const google::protobuf::RepeatedPtrField<v1::Resource>& resources) {
  Resources out;
  for (const auto& r : resources) {
    if (r.type() == v1::Value::RANGES || (!r.has_type() && r.has_ranges())) {
      RangeSet set;
      for (const auto& range : r.ranges().range()) set.add(range.begin(), range.end());
      out.pool(reservation_role(r)).add_ranges(r.name(), set);
      continue;
    }
    if (!r.has_scalar()) continue;  // sets: not allocated yet
    if (r.has_type() && r.type() != v1::Value::SCALAR) continue;
    Quantities& pool = out.pool(reservation_role(r));
    pool.set(r.name(), pool.get(r.name()) + r.scalar().value());
  }
  Resources pruned;
  pruned.add(out);
  return pruned;
}

google::protobuf::RepeatedPtrField<v1::Resource> to_proto(const Resources& pools,
                                                          const std::string& allocation_role) {
  google::protobuf::RepeatedPtrField<v1::Resource> out;
  for (const auto& [role, q] : pools.pools()) {
    for (const auto& [name, value] : q.items()) {
      v1::Resource* r = out.Add();
      r->set_name(name);
      r->set_type(v1::Value::SCALAR);
      // Mesos rounds scalars to three decimals on the wire.
      r->mutable_scalar()->set_value(std::round(value * 1000.0) / 1000.0);
      if (!role.empty()) {
        auto* res = r->add_reservations();
        res->set_type(v1::Resource::ReservationInfo::DYNAMIC);
        res->set_role(role);
      }
      if (!allocation_role.empty()) r->mutable_allocation_info()->set_role(allocation_role);
    }
    for (const auto& [name, set] : q.range_items()) {
      v1::Resource* r = out.Add();
      r->set_name(name);
      r->set_type(v1::Value::RANGES);
      for (const auto& [b, e] : set.ranges()) {
        auto* range = r->mutable_ranges()->add_range();
        range->set_begin(b);
        range->set_end(e);
      }
      if (!role.empty()) {
        auto* res = r->add_reservations();
        res->set_type(v1::Resource::ReservationInfo::DYNAMIC);
        res->set_role(role);
      }
      if (!allocation_role.empty()) r->mutable_allocation_info()->set_role(allocation_role);
    }
  }
  return out;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------------------------------------
// Master (public face)

Master::Master(std::unique_ptr<MasterImpl> impl) : impl_(std::move(impl)) {}
Master::~Master() = default;

Result<std::unique_ptr<Master>> Master::start(boost::asio::io_context& io, MasterConfig config) {
  auto impl = std::make_unique<MasterImpl>(io, std::move(config));
  CORRAL_TRY(impl->start());
  return std::unique_ptr<Master>(new Master(std::move(impl)));
}

void Master::stop(std::function<void()> on_stopped) { impl_->stop(std::move(on_stopped)); }
const std::string& Master::master_id() const { return impl_->master_id(); }
int64_t Master::start_count() const { return impl_->start_count(); }
std::string Master::address() const { return impl_->address(); }

// ---------------------------------------------------------------------------------------------
// MasterImpl: start, registry, timers

MasterImpl::MasterImpl(boost::asio::io_context& io, MasterConfig config)
    : io_(io), config_(std::move(config)), tick_timer_(io), allocation_timer_(io) {}

MasterImpl::~MasterImpl() {
  stopping_ = true;
  server_.reset();
}

Result<void> MasterImpl::start() {
  started_ = std::chrono::system_clock::now();
  started_steady_ = SteadyClock::now();
  CORRAL_TRY(ensure_work_dir(config_.work_dir));
  CORRAL_ASSIGN_OR_RETURN(store_, SqliteStateStore::open(config_.work_dir / "state.db"));

  // Identity survives restarts; every start is counted (it is how an operator sees restarts).
  CORRAL_ASSIGN_OR_RETURN(auto id, store_->get(kStateNs, "master_id"));
  CORRAL_ASSIGN_OR_RETURN(auto starts, store_->get(kStateNs, "start_count"));
  if (id) {
    master_id_ = *id;
  } else {
    CORRAL_ASSIGN_OR_RETURN(master_id_, new_uuid());
  }
  start_count_ = (starts ? std::stoll(*starts) : 0) + 1;
  CORRAL_TRY(store_->atomically([&](StateStore& tx) -> Result<void> {
    CORRAL_TRY(tx.put(kStateNs, "master_id", master_id_));
    return tx.put(kStateNs, "start_count", std::to_string(start_count_));
  }));
  CORRAL_TRY(load_registry());

  metrics_.gauge("corral_master_start_count", "Times this master's state has been started")
      .set(static_cast<double>(start_count_));
  metrics_.gauge("corral_master_start_time_seconds", "Unix time this master started")
      .set(static_cast<double>(
          std::chrono::duration_cast<std::chrono::seconds>(started_.time_since_epoch()).count()));

  http::ServerOptions opts;
  // The agent link accepts REREGISTER bodies up to 16 MiB (docs/api/agent-link.md); the
  // scheduler and operator APIs check config_.max_request_body themselves.
  opts.body_limit = std::max<uint64_t>(config_.max_request_body, 16u << 20);
  opts.idle_timeout = config_.idle_timeout;
  // Every agent and every framework holds a stream open, plus its calls' connections.
  opts.max_connections = 200'000;
  opts.server_header = std::string("corral-master/") + kVersion;
  // Streams (agents, frameworks) idle between heartbeats; writes must still make progress.
  server_ = std::make_unique<http::Server>(io_, routes(), opts);
  auto listened = server_->listen(config_.listen);
  if (!listened.ok()) {
    return listened.error().context("cannot listen on " + config_.listen +
                                    " (is another corral-master running? set listen in "
                                    "master.toml or --listen)");
  }
  auto now = SteadyClock::now();
  next_full_allocation_ = now + config_.allocation_interval;
  next_agent_ping_ = now + config_.agent_ping_timeout;
  next_framework_heartbeat_ = now + config_.framework_heartbeat_interval;
  schedule_tick();
  log::info("corral-master started", {{"CORRAL_MASTER_ID", master_id_},
                                      {"CORRAL_ADDRESS", address()},
                                      {"CORRAL_START_COUNT", std::to_string(start_count_)},
                                      {"CORRAL_AGENTS", std::to_string(agents_.size())},
                                      {"CORRAL_FRAMEWORKS", std::to_string(frameworks_.size())}});
  return {};
}

std::string MasterImpl::address() const {
  auto eps = server_->endpoints();
  if (eps.empty()) return config_.listen;
  if (eps[0].kind == http::Endpoint::Kind::kUnix) return eps[0].to_string();
  return "http://" + eps[0].to_string();
}

void MasterImpl::stop(std::function<void()> on_stopped) {
  stopping_ = true;
  tick_timer_.cancel();
  allocation_timer_.cancel();
  server_->stop(std::move(on_stopped));
}

Result<void> MasterImpl::load_registry() {
  auto now = SteadyClock::now();
  CORRAL_ASSIGN_OR_RETURN(auto agents, store_->list(kAgentsNs));
  for (const auto& [id, value] : agents) {
    auto j = nlohmann::json::parse(value, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      log::warning("ignoring an unreadable agent record in the registry",
                   {{"CORRAL_AGENT_ID", id}});
      continue;
    }
    AgentRec rec;
    if (j.contains("info")) (void)parse_json_value(j["info"], &rec.info);
    std::string state = j.value("state", "REACHABLE");
    rec.unreachable_time = j.value("unreachable_time", 0.0);
    rec.registered_time = j.value("registered_time", 0.0);
    rec.version = j.value("version", "");
    if (state == "GONE") {
      rec.state = AgentRec::State::kGone;
    } else if (state == "UNREACHABLE") {
      rec.state = AgentRec::State::kUnreachable;
    } else {
      rec.state = AgentRec::State::kRecovered;  // expected back within reregister_timeout
    }
    rec.state_since = now;
    if (rec.state == AgentRec::State::kUnreachable && rec.unreachable_time > 0) {
      // Keep the removal clock running across master restarts.
      auto elapsed = std::chrono::duration<double>(unix_now() - rec.unreachable_time);
      rec.state_since = now - std::chrono::duration_cast<SteadyClock::duration>(elapsed);
    }
    agents_.emplace(id, std::move(rec));
  }
  CORRAL_ASSIGN_OR_RETURN(auto frameworks, store_->list(kFrameworksNs));
  for (const auto& [id, value] : frameworks) {
    auto j = nlohmann::json::parse(value, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("info")) continue;
    FrameworkRec fw;
    (void)parse_json_value(j["info"], &fw.info);
    fw.recovered = true;
    fw.connected = false;
    fw.disconnected_at = now;
    fw.registered_time = j.value("registered_time", 0.0);
    for (const auto& r : fw.info.roles()) fw.roles.push_back(r);
    if (fw.roles.empty()) fw.roles.push_back(fw.info.has_role() ? fw.info.role() : "*");
    for (const auto& c : fw.info.capabilities()) {
      if (c.type() == v1::FrameworkInfo::Capability::PARTITION_AWARE) fw.partition_aware = true;
      if (c.type() == v1::FrameworkInfo::Capability::MULTI_ROLE) fw.multi_role = true;
    }
    allocator_.add_framework(id, fw.roles, /*active=*/false);
    frameworks_.emplace(id, std::move(fw));
  }
  // Weights and quota.
  CORRAL_ASSIGN_OR_RETURN(auto roles, store_->list("roles"));
  for (const auto& [role, value] : roles) {
    auto j = nlohmann::json::parse(value, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    RoleConfig rc;
    rc.weight = j.value("weight", 1.0);
    if (j.contains("guarantee")) {
      for (auto& [k, v] : j["guarantee"].items()) rc.guarantee.set(k, v.get<double>());
    }
    if (j.contains("limit")) {
      Quantities l;
      for (auto& [k, v] : j["limit"].items()) l.set(k, v.get<double>());
      rc.limit = l;
    }
    allocator_.set_role_config(role, rc);
  }
  return {};
}

void MasterImpl::persist_agent(const AgentRec& agent, int64_t next_agent_seq) {
  nlohmann::json j = {{"info", to_json_value(agent.info)},
                      {"state", agent.state == AgentRec::State::kGone          ? "GONE"
                                : agent.state == AgentRec::State::kUnreachable ? "UNREACHABLE"
                                                                               : "REACHABLE"},
                      {"unreachable_time", agent.unreachable_time},
                      {"registered_time", agent.registered_time},
                      {"version", agent.version}};
  auto r = store_->atomically([&](StateStore& tx) -> Result<void> {
    if (next_agent_seq >= 0) {
      CORRAL_TRY(tx.put(kStateNs, "agent_seq", std::to_string(next_agent_seq)));
    }
    return tx.put(kAgentsNs, agent.info.id().value(), j.dump());
  });
  if (!r.ok()) {
    log::error("cannot write the agent registry: " + r.error().message(),
               {{"CORRAL_AGENT_ID", agent.info.id().value()}});
  }
}

void MasterImpl::persist_framework(const std::string& id, const FrameworkRec& fw) {
  nlohmann::json j = {{"info", to_json_value(fw.info)}, {"registered_time", fw.registered_time}};
  auto r = store_->put(kFrameworksNs, id, j.dump());
  if (!r.ok()) {
    log::error("cannot write the framework registry: " + r.error().message(),
               {{"CORRAL_FRAMEWORK_ID", id}});
  }
}

void MasterImpl::erase_framework_record(const std::string& id) {
  auto r = store_->erase(kFrameworksNs, id);
  if (!r.ok()) log::error("cannot update the framework registry: " + r.error().message());
}

// "<master id>-<prefix><n>" with a counter that survives restarts.
Result<std::string> MasterImpl::next_id(const std::string& counter, const std::string& prefix,
                                        int width) {
  CORRAL_ASSIGN_OR_RETURN(auto cur, store_->get(kStateNs, counter));
  int64_t n = cur ? std::stoll(*cur) : 0;
  CORRAL_TRY(store_->put(kStateNs, counter, std::to_string(n + 1)));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*lld", width, static_cast<long long>(n));
  return master_id_ + "-" + prefix + buf;
}

v1::MasterInfo MasterImpl::master_info() const {
  v1::MasterInfo info;
  info.set_id(master_id_);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  info.set_hostname(host);
  info.set_version(kVersion);
  auto eps = server_ ? server_->endpoints() : std::vector<http::Endpoint>{};
  if (!eps.empty() && eps[0].kind == http::Endpoint::Kind::kTcp) {
    info.set_port(eps[0].port);
    info.mutable_address()->set_ip(eps[0].host);
    info.mutable_address()->set_port(eps[0].port);
    info.mutable_address()->set_hostname(host);
  }
  info.add_capabilities()->set_type(v1::MasterInfo::Capability::AGENT_UPDATE);
  info.add_capabilities()->set_type(v1::MasterInfo::Capability::QUOTA_V2);
  return info;
}

http::Response MasterImpl::version() const {
  nlohmann::json body = {{"version", kVersion},
                         {"cluster", config_.cluster},
                         {"master_id", master_id_},
                         {"start_count", start_count_}};
  return http::json_response(http::Status::ok, body);
}

http::Router MasterImpl::routes() {
  http::Router r;
  auto& requests = metrics_.counter("corral_master_http_requests_total", "HTTP requests handled",
                                    {{"endpoint", "api_v1"}});
  r.add(http::Verb::get, "/health",
        [](const http::Request&) { return http::make_response(http::Status::ok, ""); });
  r.add(http::Verb::get, "/version", [this](const http::Request&) { return version(); });
  r.add(http::Verb::get, "/metrics", [this](const http::Request&) {
    metrics_.gauge("corral_master_agents", "Agents by state", {{"state", "active"}})
        .set(static_cast<double>(std::count_if(agents_.begin(), agents_.end(), [](auto& a) {
          return a.second.state == AgentRec::State::kReachable;
        })));
    metrics_.gauge("corral_master_frameworks", "Frameworks known to the master")
        .set(static_cast<double>(frameworks_.size()));
    metrics_.gauge("corral_master_tasks", "Tasks known to the master")
        .set(static_cast<double>(tasks_.size()));
    metrics_.gauge("corral_master_outstanding_offers", "Offers sent and not yet answered")
        .set(static_cast<double>(offers_.size()));
    metrics_.gauge("corral_master_allocation_run_ms", "Duration of the last allocation cycle")
        .set(counters_.last_allocation_ms);
    metrics_.gauge("corral_master_tasks_launched", "Tasks launched since start")
        .set(static_cast<double>(counters_.tasks_launched));
    return http::make_response(http::Status::ok, metrics_.render(), MetricsRegistry::kContentType);
  });
  r.add(http::Verb::get, "/metrics/snapshot", [this](const http::Request&) {
    return http::json_response(http::Status::ok, metrics_snapshot());
  });
  r.add(http::Verb::get, "/state", [this](const http::Request&) {
    return http::make_response(http::Status::ok, state_json(), "application/json");
  });
  r.add(http::Verb::get, "/master/state", [this](const http::Request&) {
    return http::make_response(http::Status::ok, state_json(), "application/json");
  });
  r.add(http::Verb::post, "/api/v1", [this, &requests](std::shared_ptr<http::Exchange> ex) {
    requests.inc();
    operator_api(ex);
  });
  r.add(http::Verb::post, "/api/v1/scheduler",
        [this](std::shared_ptr<http::Exchange> ex) { scheduler_api(ex); });
  r.add(http::Verb::post, "/api/v1/agent",
        [this](std::shared_ptr<http::Exchange> ex) { agent_api(ex); });
  return r;
}

void MasterImpl::schedule_tick() {
  if (stopping_) return;
  // The finest timeout a test configures is tens of milliseconds; a 50 ms tick (or faster for
  // very short pings) keeps every timeout within one tick of its setting.
  auto period = std::min<std::chrono::milliseconds>(
      {std::chrono::milliseconds(50), config_.agent_ping_timeout / 2, config_.allocation_interval});
  tick_timer_.expires_after(std::max(period, std::chrono::milliseconds(5)));
  tick_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    tick();
    schedule_tick();
  });
}

void MasterImpl::tick() {
  auto now = SteadyClock::now();
  if (now >= next_agent_ping_) {
    next_agent_ping_ = now + config_.agent_ping_timeout;
    for (auto& [id, agent] : agents_) {
      if (agent.state != AgentRec::State::kReachable || !agent.stream) continue;
      internal::AgentEvent ping;
      ping.set_type(internal::AgentEvent::PING);
      ping.mutable_ping()->set_sequence(++agent.ping_sequence);
      send_agent(agent, ping);
    }
  }
  if (now >= next_framework_heartbeat_) {
    next_framework_heartbeat_ = now + config_.framework_heartbeat_interval;
    v1::scheduler::Event hb;
    hb.set_type(v1::scheduler::Event::HEARTBEAT);
    for (auto& [id, fw] : frameworks_) {
      if (fw.connected) send_framework(fw, hb);
    }
    v1::master::Event ohb;
    ohb.set_type(v1::master::Event::HEARTBEAT);
    operator_event(ohb);
  }
  check_agent_timeouts(now);
  check_framework_timeouts(now);
  check_offer_timeouts(now);
  if (now >= next_full_allocation_) {
    next_full_allocation_ = now + config_.allocation_interval;
    run_allocation();
  }
}

void MasterImpl::check_agent_timeouts(SteadyClock::time_point now) {
  const auto unreachable_after = config_.agent_ping_timeout * config_.max_agent_ping_timeouts;
  std::vector<std::string> to_unreachable, to_gone;
  for (auto& [id, agent] : agents_) {
    switch (agent.state) {
      case AgentRec::State::kReachable:
      case AgentRec::State::kDisconnected:
        if (now - agent.last_contact > unreachable_after) to_unreachable.push_back(id);
        break;
      case AgentRec::State::kRecovered:
        if (now - agent.state_since > config_.agent_reregister_timeout) {
          to_unreachable.push_back(id);
        }
        break;
      case AgentRec::State::kUnreachable:
        if (now - agent.state_since > config_.agent_removal_timeout) to_gone.push_back(id);
        break;
      case AgentRec::State::kGone:
        break;
    }
  }
  for (const auto& id : to_unreachable) mark_unreachable(id);
  for (const auto& id : to_gone) mark_gone(id, /*by_operator=*/false);
}

void MasterImpl::check_framework_timeouts(SteadyClock::time_point now) {
  std::vector<std::string> expired;
  for (auto& [id, fw] : frameworks_) {
    if (fw.connected) continue;
    auto timeout = std::chrono::duration<double>(fw.info.failover_timeout());
    // After a master restart, a framework gets at least as long to come back as its agents
    // (a failover_timeout of 0 must not tear it down before it could re-subscribe).
    if (fw.recovered) {
      timeout = std::max<std::chrono::duration<double>>(timeout, config_.agent_reregister_timeout);
    }
    if (now - fw.disconnected_at >= timeout) expired.push_back(id);
  }
  for (const auto& id : expired) {
    remove_framework(id, "its failover_timeout expired without the scheduler re-subscribing");
  }
}

void MasterImpl::check_offer_timeouts(SteadyClock::time_point now) {
  if (config_.offer_timeout.count() <= 0) return;
  std::vector<std::string> expired;
  for (const auto& [id, offer] : offers_) {
    if (now - offer.created >= config_.offer_timeout) expired.push_back(id);
  }
  for (const auto& id : expired) rescind_offer(id, /*notify=*/true);
}

void MasterImpl::request_allocation() {
  if (allocation_scheduled_ || stopping_) return;
  allocation_scheduled_ = true;
  allocation_timer_.expires_after(config_.allocation_batch_delay);
  allocation_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    allocation_scheduled_ = false;
    run_allocation();
  });
}

void MasterImpl::run_allocation() {
  auto start = SteadyClock::now();
  auto allocations = allocator_.allocate(start);
  counters_.allocation_runs++;
  std::map<std::string, v1::scheduler::Event> events;
  for (auto& a : allocations) {
    auto fw_it = frameworks_.find(a.framework_id);
    auto agent_it = agents_.find(a.agent_id);
    if (fw_it == frameworks_.end() || agent_it == agents_.end() || !fw_it->second.connected) {
      allocator_.recover(a.agent_id, a.framework_id, a.role, a.resources, start);
      continue;
    }
    FrameworkRec& fw = fw_it->second;
    AgentRec& agent = agent_it->second;
    OfferRec rec;
    rec.framework_id = a.framework_id;
    rec.agent_id = a.agent_id;
    rec.role = a.role;
    rec.resources = a.resources;
    rec.created = start;
    std::string id = master_id_ + "-O" + std::to_string(offer_seq_++);
    v1::Offer& offer = rec.offer;
    offer.mutable_id()->set_value(id);
    offer.mutable_framework_id()->set_value(a.framework_id);
    offer.mutable_agent_id()->set_value(a.agent_id);
    offer.set_hostname(agent.info.hostname());
    *offer.mutable_resources() = to_proto(a.resources, a.role);
    *offer.mutable_attributes() = agent.info.attributes();
    offer.mutable_allocation_info()->set_role(a.role);
    if (agent.info.has_domain()) *offer.mutable_domain() = agent.info.domain();
    offer.mutable_url()->set_scheme("http");
    offer.mutable_url()->mutable_address()->set_hostname(agent.info.hostname());
    offer.mutable_url()->mutable_address()->set_port(agent.info.port());
    offer.mutable_url()->set_path("/api/v1");
    auto& ev = events[a.framework_id];
    ev.set_type(v1::scheduler::Event::OFFERS);
    *ev.mutable_offers()->add_offers() = offer;
    fw.offers.insert(id);
    agent.offers.insert(id);
    offers_.emplace(id, std::move(rec));
    counters_.offers_sent++;
  }
  for (auto& [fw_id, ev] : events) send_framework(frameworks_.at(fw_id), ev);
  counters_.last_allocation_ms =
      std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
}

}  // namespace corral::master
