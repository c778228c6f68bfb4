// corral-agent's systemd and D-Bus faces (docs/dbus.md): org.corral.Agent1 on the system bus
// over AgentImpl, the STATUS= line, and the journald fields every agent line carries.
#include <boost/asio/steady_timer.hpp>

#include "agent_internal.hpp"
#include "corral/common/log.hpp"
#include "corral/dbus/agent1.hpp"
#include "corral/dbus/avahi.hpp"

namespace corral::agent {
namespace asio = boost::asio;

class DbusGlue : public dbus::AgentBackend {
 public:
  explicit DbusGlue(AgentImpl& agent) : agent_(agent), poll_(agent.io_) {}
  ~DbusGlue() override {
    poll_.cancel();
    locator_.reset();
    agent_.on_task_state_ = nullptr;
  }

  Result<void> start() {
    CORRAL_ASSIGN_OR_RETURN(bus_, dbus::Bus::open_system(agent_.io_, "corral-agent"));
    CORRAL_ASSIGN_OR_RETURN(service_, dbus::Agent1Service::start(*bus_, *this));
    CORRAL_TRY(bus_->request_name(dbus::kAgentBusName));
    agent_.on_task_state_ = [this](const TaskRecord& t, const v1::TaskStatus& s) {
      service_->task_state_changed(
          t.info.task_id().value(), v1::TaskState_Name(s.state()),
          s.has_reason() ? v1::TaskStatus::Reason_Name(s.reason()) : std::string());
      service_->refresh_properties();
    };
    poll();
    if (agent_.config_.master.empty() && agent_.config_.discovery == "avahi") start_discovery();
    return {};
  }

  bool discovering() const { return locator_ != nullptr; }

  std::string state() const override { return agent_state(agent_); }
  std::map<std::string, double> resources() const override {
    return scalar_totals(agent_.resources_);
  }
  uint32_t task_count() const override { return live_tasks(agent_); }
  std::vector<dbus::AgentTask> list_tasks() const override {
    std::vector<dbus::AgentTask> out;
    for (const auto& [id, t] : agent_.tasks_) {
      if (t->erase) continue;
      out.push_back({t->info.task_id().value(), t->framework.id().value(),
                     v1::TaskState_Name(t->state), t->container_id});
    }
    return out;
  }
  Result<void> kill_task(const std::string& id) override {
    // "framework_id/task_id", or a task id unique on this agent.
    TaskRecord* found = nullptr;
    if (auto slash = id.find('/'); slash != std::string::npos) {
      found = agent_.find(id.substr(0, slash), id.substr(slash + 1));
    } else {
      for (const auto& [cid, t] : agent_.tasks_) {
        if (t->erase || t->info.task_id().value() != id) continue;
        if (found) {
          return Error(EINVAL, "task id " + id + " is used by frameworks " +
                                   found->framework.id().value() + " and " +
                                   t->framework.id().value() +
                                   "; say which: KillTask(\"FRAMEWORK_ID/" + id + "\")");
        }
        found = t.get();
      }
    }
    if (!found) return Error(ENOENT, "no task " + id + " on this agent (ListTasks lists them)");
    if (is_terminal(found->state)) {
      return Error(ENOENT,
                   "task " + id + " has already ended (" + v1::TaskState_Name(found->state) + ")");
    }
    log::notice("KillTask " + id + " over D-Bus",
                {{"CORRAL_TASK_ID", found->info.task_id().value()},
                 {"CORRAL_FRAMEWORK_ID", found->framework.id().value()}});
    agent_.kill(*found, std::nullopt);
    return {};
  }
  Result<void> drain(uint32_t timeout_seconds) override {
    double deadline = timeout_seconds == 0 ? 0 : now_seconds() + timeout_seconds;
    agent_.drain(deadline, timeout_seconds > 0);
    return {};
  }
  Result<void> reload_policy() override {
    auto r = agent_.policy_.reload();
    if (r.ok()) {
      log::notice("policy reloaded from " + agent_.config_.policy_dir.string() + " (D-Bus)");
      return {};
    }
    log::error("policy NOT reloaded (the last good policy stays in force): " + r.error().message());
    return Error(
        EINVAL, "policy not reloaded, the last good policy stays in force: " + r.error().message());
  }

  static std::string agent_state(const AgentImpl& a) {
    if (a.stopped_) return "stopping";
    if (a.drain_) return "draining";
    if (a.config_.master.empty())
      return a.dbus_ && a.dbus_->discovering() ? "discovering" : "standalone";
    return a.link_registered_ ? "registered" : "connecting";
  }
  static uint32_t live_tasks(const AgentImpl& a) {
    uint32_t n = 0;
    for (const auto& [id, t] : a.tasks_) n += is_terminal(t->state) ? 0 : 1;
    return n;
  }

 private:
  // No static master: find it through Avahi and follow it when it moves (docs/dbus.md).
  void start_discovery() {
    auto locator = std::make_unique<dbus::AvahiMasterLocator>(*bus_);
    auto r = locator->start([this](const std::string& address) { follow(address); },
                            /*wait_for_avahi=*/true);
    if (!r.ok()) {
      log::notice("master discovery off, the agent stays standalone: " + r.error().message());
      return;
    }
    if (!locator->absent_reason().empty()) {
      log::notice("no master address configured and " + locator->absent_reason() +
                  "; standalone until avahi-daemon starts");
    } else {
      log::notice("no master address configured: looking for one through Avahi (" +
                  std::string(dbus::kMasterServiceType) + ")");
    }
    locator_ = std::move(locator);
  }

  void follow(const std::string& address) {
    if (address.empty()) {
      log::warning("no master is announced through DNS-SD any more; the link to " +
                   agent_.config_.master + " stays until it fails");
      return;
    }
    if (address == agent_.config_.master) return;
    log::notice(
        "following the master found through DNS-SD at " + address +
        (agent_.config_.master.empty() ? std::string() : " (was " + agent_.config_.master + ")"));
    agent_.config_.master = address;
    if (agent_.stopped_) return;
    bool backing_off = agent_.link_timer_.expiry() > std::chrono::steady_clock::now();
    if (!agent_.link_client_ || backing_off) {
      agent_.link_timer_.cancel();
      agent_.link_backoff_ = std::chrono::milliseconds(0);
      agent_.connect_master();
    } else if (agent_.link_stream_) {
      // The link's end handler reconnects, now to the new address.
      agent_.link_backoff_ = std::chrono::milliseconds(0);
      agent_.link_stream_->cancel();
    }
    service_->refresh_properties();
  }

  // State (registration, drain) changes without a task update: look once a second.
  void poll() {
    poll_.expires_after(std::chrono::seconds(1));
    poll_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      service_->refresh_properties();
      poll();
    });
  }

  AgentImpl& agent_;
  std::unique_ptr<dbus::Bus> bus_;
  std::unique_ptr<dbus::Agent1Service> service_;
  std::unique_ptr<dbus::AvahiMasterLocator> locator_;
  asio::steady_timer poll_;
};

Result<void> Agent::start_dbus() {
  auto glue = std::make_shared<DbusGlue>(*impl_);
  auto r = glue->start();
  if (!r.ok()) return r;
  impl_->dbus_ = std::move(glue);
  log::notice(std::string("D-Bus API ") + dbus::kAgentInterface + " at " + dbus::kAgentObjectPath +
              " on the system bus");
  return {};
}

std::string Agent::status_line() const {
  const AgentImpl& a = *impl_;
  std::string tasks = std::to_string(DbusGlue::live_tasks(a)) + " tasks";
  std::string state = DbusGlue::agent_state(a);
  if (state == "registered")
    return "registered with master " + a.config_.master + " as " + a.agent_id_ + ", " + tasks;
  if (state == "connecting")
    return "connecting to master " + a.config_.master +
           (a.link_error_.empty() ? std::string() : " (" + a.link_error_ + ")") + ", " + tasks;
  return state + ", agent " + a.agent_id_ + ", " + tasks;
}

std::string Agent::state() const { return DbusGlue::agent_state(*impl_); }

size_t Agent::task_count() const { return DbusGlue::live_tasks(*impl_); }

}  // namespace corral::agent
