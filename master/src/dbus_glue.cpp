// corral-master's D-Bus face (docs/dbus.md): org.corral.Master1 on the system bus over
// MasterImpl, read on the master's one io thread.
#include <unistd.h>

#include <boost/asio/steady_timer.hpp>
#include <cstdlib>

#include "corral/common/log.hpp"
#include "corral/dbus/avahi.hpp"
#include "corral/dbus/master1.hpp"
#include "corral/master/master.hpp"
#include "master_impl.hpp"

namespace corral::master {

class MasterDbusGlue : public dbus::MasterBackend {
 public:
  explicit MasterDbusGlue(MasterImpl& m) : m_(m), poll_(m.io_) {}
  ~MasterDbusGlue() override {
    poll_.cancel();
    publisher_.reset();
  }

  Result<void> start() {
    CORRAL_ASSIGN_OR_RETURN(bus_, dbus::Bus::open_system(m_.io_, "corral-master"));
    CORRAL_ASSIGN_OR_RETURN(service_, dbus::Master1Service::start(*bus_, *this));
    CORRAL_TRY(bus_->request_name(dbus::kMasterBusName));
    poll();
    if (m_.config_.publish) publish();
    return {};
  }

  // Agents without a static master find this one through DNS-SD (docs/dbus.md).
  void publish() {
    std::string address = m_.address();  // http://host:port or unix:/path
    auto colon = address.rfind(':');
    if (address.rfind("http://", 0) != 0 || colon == std::string::npos) {
      log::info("not published through Avahi: the master listens on " + address);
      return;
    }
    int port = std::atoi(address.c_str() + colon + 1);
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    auto p = dbus::AvahiPublisher::publish(*bus_, std::string("corral-master on ") + host,
                                           dbus::kMasterServiceType, static_cast<uint16_t>(port),
                                           {"id=" + m_.master_id_, "path=/api/v1"},
                                           /*wait_for_avahi=*/true);
    if (!p.ok()) {
      log::notice("not published through Avahi (agents need a static master address): " +
                  p.error().message());
      return;
    }
    if (!(*p)->absent_reason().empty())
      log::notice("not yet published: " + (*p)->absent_reason() +
                  "; published as soon as avahi-daemon starts");
    publisher_ = std::move(*p);
    if (address.find("//127.") != std::string::npos ||
        address.find("//localhost") != std::string::npos)
      log::warning("published through Avahi, but the master listens on " + address +
                   ": agents on other machines cannot reach it (set listen in master.toml)");
  }

  // A single master leads; with etcd-backed HA (later) this says "following" on the others.
  std::string state() const override { return m_.stopping_ ? "stopping" : "leading"; }
  std::string leader() const override { return m_.master_id_; }
  std::string address() const override { return m_.address(); }
  uint32_t agent_count() const override {
    uint32_t n = 0;
    for (const auto& [id, a] : m_.agents_) n += a.state == AgentRec::State::kGone ? 0 : 1;
    return n;
  }
  uint32_t framework_count() const override { return static_cast<uint32_t>(m_.frameworks_.size()); }
  std::vector<dbus::MasterEntry> list_agents() const override {
    std::vector<dbus::MasterEntry> out;
    for (const auto& [id, a] : m_.agents_) out.push_back({id, a.info.hostname(), name(a.state)});
    return out;
  }
  std::vector<dbus::MasterEntry> list_frameworks() const override {
    std::vector<dbus::MasterEntry> out;
    for (const auto& [id, f] : m_.frameworks_) {
      out.push_back({id, f.info.name(),
                     f.connected ? "CONNECTED" : (f.recovered ? "RECOVERED" : "DISCONNECTED")});
    }
    return out;
  }

 private:
  static std::string name(AgentRec::State s) {
    switch (s) {
      case AgentRec::State::kRecovered:
        return "RECOVERED";
      case AgentRec::State::kReachable:
        return "REACHABLE";
      case AgentRec::State::kDisconnected:
        return "DISCONNECTED";
      case AgentRec::State::kUnreachable:
        return "UNREACHABLE";
      case AgentRec::State::kGone:
        return "GONE";
    }
    return "UNKNOWN";
  }
  // Counts change on the master's many paths: compare once a second and emit what changed.
  void poll() {
    poll_.expires_after(std::chrono::seconds(1));
    poll_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      service_->refresh_properties();
      poll();
    });
  }

  MasterImpl& m_;
  std::unique_ptr<dbus::Bus> bus_;
  std::unique_ptr<dbus::Master1Service> service_;
  std::unique_ptr<dbus::AvahiPublisher> publisher_;
  boost::asio::steady_timer poll_;
};

Result<void> Master::start_dbus() {
  auto glue = std::make_shared<MasterDbusGlue>(*impl_);
  CORRAL_TRY(glue->start());
  dbus_ = std::move(glue);
  log::notice(std::string("D-Bus API ") + dbus::kMasterInterface + " at " +
              dbus::kMasterObjectPath + " on the system bus");
  return {};
}

}  // namespace corral::master
