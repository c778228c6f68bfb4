// Bridge networking for real: libnl-route veths, the agent's bridge, nftables port mapping,
// tasks started by the real corral-launcher through the native containerizer.
//
// Every test process first moves into a network namespace and mount namespace of its own
// (unshare in main, before any thread exists): that namespace plays "the host", so nothing of
// the real host's interfaces, routes, nftables or ip_forward is touched, and whatever a failing
// test leaves behind vanishes with its process.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/native/native.hpp"
#include "corral/network/cni.hpp"
#include "corral/network/network.hpp"
#include "net_test_util.hpp"

namespace corral::network {
namespace {
namespace fs = std::filesystem;
using containerizer::Termination;

using corral::network::testing::nft_elements;
using corral::network::testing::sh;
using corral::network::testing::veths;

// HTTP GET http://ip:port/path from this (the agent's) namespace.
std::string http_get(const std::string& ip, uint16_t port, const std::string& path,
                     int attempts = 100) {
  for (int attempt = 0; attempt < attempts; ++attempt) {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    timeval tv{2, 0};
    ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
    (void)!::write(s.get(), req.data(), req.size());
    std::string resp;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(s.get(), buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
    auto body = resp.find("\r\n\r\n");
    return body == std::string::npos ? resp : resp.substr(body + 4);
  }
  return "<no connection to " + ip + ":" + std::to_string(port) + ">";
}

class Collector {
 public:
  void operator()(const std::string& id, const Termination& t) {
    std::lock_guard lock(mu_);
    got_[id] = t;
    cv_.notify_all();
  }
  std::optional<Termination> wait(const std::string& id, std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return got_.count(id) > 0; });
    if (!got_.count(id)) return std::nullopt;
    return got_[id];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Termination> got_;
};

class NetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("network-test-");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(*d));
    ::chmod(dir_->path().c_str(), 0755);
    config_.subnet = "10.88.0.0/24";
    config_.state_dir = dir_->path() / "state";
    config_.netns_dir = dir_->path() / "netns";
    config_.nameservers = {"192.0.2.53"};
    config_.cni_config_dir = dir_->path() / "cni";
    fs::create_directories(config_.cni_config_dir);
  }

  std::shared_ptr<NetworkManager> manager() {
    auto m = NetworkManager::open(config_);
    EXPECT_TRUE(m.ok()) << m.error().message();
    return m ? std::shared_ptr<NetworkManager>(std::move(*m)) : nullptr;
  }

  std::unique_ptr<containerizer::Containerizer> containerizer(
      Collector& collector, std::shared_ptr<NetworkManager> network) {
    native::NativeOptions o;
    o.launcher_path = CORRAL_LAUNCHER_PATH;
    o.network = std::move(network);
    auto c = native::open_native_containerizer(o);
    EXPECT_TRUE(c.ok()) << c.error().message();
    (*c)->set_termination_callback(std::ref(collector));
    return std::move(*c);
  }

  containerizer::LaunchRequest request(const std::string& id, const std::string& command,
                                       const std::string& mode = "bridge") {
    containerizer::LaunchRequest r;
    r.container_id = id;
    r.task.mutable_task_id()->set_value(id);
    r.task.set_name(id);
    r.task.mutable_command()->set_value(command);
    r.task.mutable_container()->set_type(v1::ContainerInfo::MESOS);
    r.task.mutable_container()->add_network_infos()->set_name(mode);
    r.sandbox_dir = dir_->path() / id / "sandbox";
    r.run_dir = dir_->path() / id / "run";
    fs::create_directories(r.sandbox_dir);
    fs::create_directories(r.run_dir);
    ::chmod(r.sandbox_dir.c_str(), 0755);
    r.decision.capabilities = isolator::default_capabilities();
    r.decision.seccomp = "default";
    r.kill_grace = std::chrono::seconds(2);
    return r;
  }

  static void offer_ports(containerizer::LaunchRequest& r, uint64_t lo, uint64_t hi) {
    auto* res = r.task.add_resources();
    res->set_name("ports");
    res->set_type(v1::Value::RANGES);
    auto* range = res->mutable_ranges()->add_range();
    range->set_begin(lo);
    range->set_end(hi);
  }
  static void map_port(containerizer::LaunchRequest& r, uint32_t host, uint32_t container) {
    auto* m = r.task.mutable_container()->mutable_network_infos(0)->add_port_mappings();
    m->set_host_port(host);
    m->set_container_port(container);
    m->set_protocol("tcp");
  }

  std::string wait_for_file(const fs::path& p, const std::string& want) {
    std::string got;
    for (int i = 0; i < 200; ++i) {
      got = read_file(p).value_or("");
      if (got.find(want) != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return got;
  }

  // Nothing of any task's network is left: no veth, no netns file, no lease, no nft element.
  void expect_nothing_left() {
    EXPECT_TRUE(veths().empty()) << "stale veths: " << veths().size();
    EXPECT_TRUE(fs::is_empty(config_.netns_dir)) << "stale netns files";
    auto leases = read_file(config_.state_dir / "network.json").value_or("");
    EXPECT_NE(leases.find("\"leases\":[]"), std::string::npos) << leases;
    EXPECT_EQ(nft_elements(), "");
  }

  NetworkConfig config_;
  std::unique_ptr<TempDir> dir_;
};

// A server task in bridge mode: busybox httpd on port 8080 serving its sandbox.
const char* kServer =
    "echo served-by-$(busybox hostname) > index.html; exec busybox httpd -f -p 8080";

TEST_F(NetworkTest, TwoBridgeTasksReachEachOther) {
  Collector got;
  auto net = manager();
  ASSERT_TRUE(net);
  auto c = containerizer(got, net);
  auto server = request("server", kServer);
  ASSERT_TRUE(c->launch(server).ok());
  auto a = net->find("server");
  ASSERT_TRUE(a);
  const std::string ip = format_ipv4(a->address);
  EXPECT_TRUE(parse_subnet("10.88.0.0/24")->contains(a->address));
  // The agent's namespace reaches the task directly over the bridge (and knows it is up).
  ASSERT_EQ(http_get(ip, 8080, "/index.html"), "served-by-server\n");

  auto client = request("client", "busybox wget -q -O - http://" + ip +
                                      ":8080/index.html; echo; cat /etc/hosts /etc/resolv.conf; "
                                      "busybox ip -4 route; busybox hostname");
  ASSERT_TRUE(c->launch(client).ok());
  auto t = got.wait("client", std::chrono::seconds(30));
  ASSERT_TRUE(t);
  std::string out = read_file(client.sandbox_dir / "stdout").value_or("");
  EXPECT_EQ(t->code, 0) << out << read_file(client.sandbox_dir / "stderr").value_or("");
  EXPECT_NE(out.find("served-by-server"), std::string::npos) << out;
  // /etc/hosts names the task's own address; resolv.conf has the configured resolver; the
  // default route goes through the bridge's address; the hostname is the task's.
  EXPECT_NE(out.find("\tclient\n"), std::string::npos) << out;
  EXPECT_NE(out.find("nameserver 192.0.2.53"), std::string::npos) << out;
  EXPECT_NE(out.find("default via 10.88.0.1 dev eth0"), std::string::npos) << out;
  EXPECT_NE(out.find("\nclient\n"), std::string::npos) << out;
  ASSERT_TRUE(c->destroy("client").ok());

  ASSERT_TRUE(c->kill("server", std::chrono::seconds(1)).ok());
  ASSERT_TRUE(got.wait("server", std::chrono::seconds(30)));
  ASSERT_TRUE(c->destroy("server").ok());
  expect_nothing_left();
}

TEST_F(NetworkTest, MappedHostPortReachesTheTaskFromTheAgentsNamespace) {
  // The "host's" own address, on an interface of the test's namespace.
  ASSERT_EQ(sh("ip link add hostnic0 type veth peer name hostnic0p && ip link set hostnic0p up && "
               "ip addr add 192.0.2.10/24 dev hostnic0 && "
               "ip link set hostnic0 up && echo ok"),
            "ok\n");
  Collector got;
  auto net = manager();
  ASSERT_TRUE(net);
  auto c = containerizer(got, net);
  auto server = request("web", kServer);
  offer_ports(server, 31000, 31009);
  map_port(server, 31005, 8080);
  auto launched = c->launch(server);
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  EXPECT_NE(nft_elements().find("tcp . 31005 : 10.88.0."), std::string::npos) << nft_elements();
  EXPECT_EQ(http_get("192.0.2.10", 31005, "/index.html"), "served-by-web\n");
  // Not mapped: nothing answers on another host port.
  EXPECT_NE(http_get("192.0.2.10", 31006, "/", 3).find("<no connection"), std::string::npos);

  ASSERT_TRUE(c->kill("web", std::chrono::seconds(1)).ok());
  ASSERT_TRUE(got.wait("web", std::chrono::seconds(30)));
  ASSERT_TRUE(c->destroy("web").ok());
  expect_nothing_left();
}

TEST_F(NetworkTest, NoneModeHasOnlyLoopback) {
  Collector got;
  auto net = manager();
  ASSERT_TRUE(net);
  auto c = containerizer(got, net);
  auto r = request("alone", "ls /sys/class/net; busybox ip -4 addr", "none");
  ASSERT_TRUE(c->launch(r).ok());
  auto t = got.wait("alone", std::chrono::seconds(30));
  ASSERT_TRUE(t);
  std::string out = read_file(r.sandbox_dir / "stdout").value_or("");
  EXPECT_EQ(out.substr(0, 3), "lo\n") << out;
  EXPECT_EQ(out.find("eth0"), std::string::npos) << out;
  EXPECT_NE(out.find("inet 127.0.0.1/8"), std::string::npos) << out;  // loopback is up
  EXPECT_FALSE(net->find("alone"));
  ASSERT_TRUE(c->destroy("alone").ok());
  expect_nothing_left();
}

TEST_F(NetworkTest, NoLeaseCollisionOver200SequentialTasks) {
  auto net = manager();
  ASSERT_TRUE(net);
  fs::create_directories(dir_->path() / "etc");
  std::map<uint32_t, std::string> live;
  std::deque<std::string> order;
  for (int i = 0; i < 200; ++i) {
    NetworkRequest r;
    r.container_id = "t" + std::to_string(i);
    auto a = net->attach(r, dir_->path() / "etc");
    ASSERT_TRUE(a.ok()) << i << ": " << a.error().message();
    ASSERT_FALSE(live.count(a->address))
        << format_ipv4(a->address) << " leased to " << live[a->address] << " and " << i;
    live[a->address] = r.container_id;
    order.push_back(r.container_id);
    // A few tasks overlap, as on a busy agent: keep the 5 newest.
    if (order.size() > 5) {
      const std::string old = order.front();
      order.pop_front();
      auto found = net->find(old);
      ASSERT_TRUE(found);
      live.erase(found->address);
      ASSERT_TRUE(net->detach(old).ok());
    }
    ASSERT_EQ(veths().size(), order.size());
  }
  for (const auto& id : order) ASSERT_TRUE(net->detach(id).ok());
  expect_nothing_left();
}

TEST_F(NetworkTest, AgentKill9AndRestartLeaveNothingStaleAfterTheTasksEnd) {
  std::vector<std::pair<std::string, nlohmann::json>> checkpoints;
  {
    Collector got;
    auto net = manager();
    ASSERT_TRUE(net);
    auto c = containerizer(got, net);
    auto longer = request("long", kServer);
    offer_ports(longer, 31000, 31000);
    map_port(longer, 31000, 8080);
    auto l1 = c->launch(longer);
    ASSERT_TRUE(l1.ok()) << l1.error().message();
    checkpoints.emplace_back("long", l1->checkpoint);
    auto shorter = request("short", "exec sleep 1");
    offer_ports(shorter, 31001, 31001);
    map_port(shorter, 31001, 80);
    auto l2 = c->launch(shorter);
    ASSERT_TRUE(l2.ok()) << l2.error().message();
    checkpoints.emplace_back("short", l2->checkpoint);
    // The agent dies without cleaning anything (like kill -9: objects dropped, tasks running).
    // A veth without a lease and a netns file without a lease (a crash in the middle of attach).
    ASSERT_EQ(sh("ip link add cv0a5800fe type veth peer name xpeer && "
                 "ip link set cv0a5800fe master corral0 && echo ok"),
              "ok\n");
    std::ofstream(config_.netns_dir / "half-made").put('x');
  }
  EXPECT_EQ(veths().size(), 3u);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // "short" ends meanwhile

  Collector got;
  auto net = manager();
  ASSERT_TRUE(net);
  auto c = containerizer(got, net);
  auto rec = c->recover(checkpoints);
  ASSERT_TRUE(rec.ok()) << rec.error().message();
  ASSERT_TRUE(got.wait("short", std::chrono::seconds(10)));
  // Only the running task's network is left, and it still works.
  ASSERT_TRUE(net->find("long"));
  EXPECT_FALSE(net->find("short"));
  EXPECT_EQ(veths(), std::vector<std::string>{net->find("long")->host_veth});
  EXPECT_FALSE(fs::exists(config_.netns_dir / "half-made"));
  EXPECT_EQ(nft_elements().find("31001"), std::string::npos) << nft_elements();
  EXPECT_EQ(http_get(format_ipv4(net->find("long")->gateway), 31000, "/index.html"),
            "served-by-long\n");
  ASSERT_TRUE(c->destroy("short").ok());

  ASSERT_TRUE(c->kill("long", std::chrono::seconds(1)).ok());
  ASSERT_TRUE(got.wait("long", std::chrono::seconds(30)));
  ASSERT_TRUE(c->destroy("long").ok());
  expect_nothing_left();
}

TEST_F(NetworkTest, PortOutsideTheOfferFailsTheLaunchAndLeavesNothing) {
  Collector got;
  auto net = manager();
  ASSERT_TRUE(net);
  auto c = containerizer(got, net);
  auto r = request("greedy", kServer);
  offer_ports(r, 31000, 31001);
  map_port(r, 80, 8080);
  auto launched = c->launch(r);
  ASSERT_FALSE(launched.ok());
  EXPECT_EQ(launched.error().code(), EPERM);
  EXPECT_NE(launched.error().message().find("host port 80 is not among the task's ports "
                                            "resources (31000-31001)"),
            std::string::npos)
      << launched.error().message();
  expect_nothing_left();
}

TEST_F(NetworkTest, AFailureHalfwayThroughAttachLeavesNothing) {
  auto net = manager();
  ASSERT_TRUE(net);
  // A netns_dir entry with the container's name already there: attach fails after allocating
  // an address; nothing of it may stay.
  std::ofstream(config_.netns_dir / "clash").put('x');
  NetworkRequest r;
  r.container_id = "clash";
  auto a = net->attach(r, dir_->path());
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.error().message().find("clash"), std::string::npos) << a.error().message();
  EXPECT_TRUE(veths().empty());
  EXPECT_FALSE(net->find("clash"));
  fs::remove(config_.netns_dir / "clash");
  // The address it had is free again: the next task gets one and works.
  r.container_id = "next";
  ASSERT_TRUE(net->attach(r, dir_->path()).ok());
  ASSERT_TRUE(net->detach("next").ok());
  expect_nothing_left();
}

TEST_F(NetworkTest, SubnetOverlappingARouteIsRefusedNamingIt) {
  ASSERT_EQ(sh("ip link add lan0 type veth peer name lan0p && ip link set lan0p up && ip addr add "
               "10.88.0.77/16 dev lan0 && "
               "ip link set lan0 up && echo ok"),
            "ok\n");
  auto m = NetworkManager::open(config_);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code(), EADDRINUSE);
  EXPECT_NE(m.error().message().find("overlaps the route 10.88.0.0/16 of interface lan0"),
            std::string::npos)
      << m.error().message();
  // Nothing was set up: no bridge, no table.
  EXPECT_FALSE(fs::exists("/sys/class/net/corral0"));
  EXPECT_EQ(sh("nft list tables").find("corral"), std::string::npos);
}

TEST_F(NetworkTest, UnknownNetworkAndPolicyRefusalsAreClearErrors) {
  Collector got;
  auto net = manager();
  ASSERT_TRUE(net);
  auto c = containerizer(got, net);
  auto r = request("cni", "true", "my-cni-net");
  auto launched = c->launch(r);
  ASSERT_FALSE(launched.ok());
  // Any other name is a CNI network: this one is in no conflist of the (empty) CNI dir.
  EXPECT_EQ(launched.error().code(), ENOENT);
  EXPECT_NE(launched.error().message().find("unknown CNI network \"my-cni-net\""),
            std::string::npos)
      << launched.error().message();
  r = request("bad", "true", "../../etc");
  launched = c->launch(r);
  ASSERT_FALSE(launched.ok());
  EXPECT_NE(launched.error().message().find("nor a CNI network name"), std::string::npos)
      << launched.error().message();

  auto p = request("strict", "true", "bridge");
  p.decision.network_modes = {"none"};
  p.decision.network_modes_origin = "/etc/corral/policy.d/10-net.toml:2";
  launched = c->launch(p);
  ASSERT_FALSE(launched.ok());
  EXPECT_EQ(launched.error().code(), EPERM);
  EXPECT_NE(launched.error().message().find("network.modes = [\"none\"] "
                                            "(/etc/corral/policy.d/10-net.toml:2)"),
            std::string::npos)
      << launched.error().message();
  expect_nothing_left();
}

TEST_F(NetworkTest, EgressDeniedTaskReachesItsBridgeButNotBeyond) {
  // "Beyond": a server in another namespace behind the host, reached by routing through it.
  fs::create_directories(dir_->path() / "www");
  std::ofstream(dir_->path() / "www" / "index.html") << "outside\n";
  ASSERT_EQ(sh("ip netns add outside && ip link add out0 type veth peer name out0p && "
               "ip link set out0p netns outside && ip addr add 198.51.100.1/24 dev out0 && "
               "ip link set out0 up && ip -n outside addr add 198.51.100.2/24 dev out0p && "
               "ip -n outside link set out0p up && ip -n outside link set lo up && echo ok"),
            "ok\n");
  const std::string pid = sh("ip netns exec outside busybox httpd -f -p 198.51.100.2:8099 -h " +
                             (dir_->path() / "www").string() + " >/dev/null 2>&1 & echo $!");
  Collector got;
  auto net = manager();
  ASSERT_TRUE(net);
  auto c = containerizer(got, net);
  auto server = request("srv", kServer);
  ASSERT_TRUE(c->launch(server).ok());
  const std::string ip = format_ipv4(net->find("srv")->address);
  ASSERT_EQ(http_get(ip, 8080, "/index.html"), "served-by-srv\n");  // the server is up

  const std::string probe =
      "busybox timeout 3 busybox wget -q -O - http://" + ip +
      ":8080/index.html && echo bridge-ok; "
      "busybox timeout 3 busybox wget -q -O - http://198.51.100.2:8099/index.html && "
      "echo outside-ok; true";
  auto open_task = request("open", probe);
  ASSERT_TRUE(c->launch(open_task).ok());
  ASSERT_TRUE(got.wait("open", std::chrono::seconds(30)));
  auto closed = request("closed", probe);
  closed.decision.network_egress = false;
  ASSERT_TRUE(c->launch(closed).ok());
  ASSERT_TRUE(got.wait("closed", std::chrono::seconds(30)));
  std::string open_out = read_file(open_task.sandbox_dir / "stdout").value_or("");
  std::string closed_out = read_file(closed.sandbox_dir / "stdout").value_or("");
  EXPECT_NE(open_out.find("bridge-ok"), std::string::npos)
      << open_out << read_file(open_task.sandbox_dir / "stderr").value_or("");
  EXPECT_NE(open_out.find("outside-ok"), std::string::npos) << open_out;
  EXPECT_NE(closed_out.find("bridge-ok"), std::string::npos) << closed_out;
  EXPECT_EQ(closed_out.find("outside-ok"), std::string::npos) << closed_out;
  ASSERT_TRUE(c->destroy("open").ok());
  ASSERT_TRUE(c->destroy("closed").ok());
  ASSERT_TRUE(c->kill("srv", std::chrono::seconds(1)).ok());
  ASSERT_TRUE(got.wait("srv", std::chrono::seconds(30)));
  ASSERT_TRUE(c->destroy("srv").ok());
  ::kill(std::stoi(pid), SIGKILL);
  expect_nothing_left();
}

// ---- CNI: Debian's containernetworking-plugins -------------------------------------------------

class CniTest : public NetworkTest {
 protected:
  // A network "testnet" of the CNI bridge plugin with host-local IPAM, state in the test's dir.
  void write_conflist(const std::string& name, const std::string& plugin_type,
                      const std::string& subnet = "10.77.0.0/24") {
    nlohmann::json conf = {{"cniVersion", "1.0.0"},
                           {"name", name},
                           {"plugins",
                            {{{"type", plugin_type},
                              {"bridge", "cni-test0"},
                              {"isGateway", true},
                              {"ipMasq", false},
                              {"ipam",
                               {{"type", "host-local"},
                                {"ranges", {{{{"subnet", subnet}}}}},
                                {"routes", {{{"dst", "0.0.0.0/0"}}}},
                                {"dataDir", (dir_->path() / "cni-ipam").string()}}}}}}};
    std::ofstream(config_.cni_config_dir / (name + ".conflist")) << conf.dump(2);
  }
  // Addresses host-local still holds for the network (one file per leased address).
  std::vector<std::string> ipam_leases(const std::string& name) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_->path() / "cni-ipam" / name, ec)) {
      std::string f = e.path().filename().string();
      if (f != "lock" && f.rfind("last_reserved_ip", 0) != 0) out.push_back(f);
    }
    return out;
  }
  std::vector<std::string> cni_bridge_ports() {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/sys/class/net/cni-test0/brif", ec))
      out.push_back(e.path().filename().string());
    return out;
  }
  void expect_no_cni_left(const std::string& name) {
    EXPECT_TRUE(fs::is_empty(config_.netns_dir)) << "stale netns files";
    auto leases = read_file(config_.state_dir / "network.json").value_or("");
    EXPECT_NE(leases.find("\"leases\":[]"), std::string::npos) << leases;
    EXPECT_TRUE(ipam_leases(name).empty()) << "host-local still leases " << ipam_leases(name)[0];
    EXPECT_TRUE(cni_bridge_ports().empty()) << "veths left on cni-test0";
  }
};

TEST_F(CniTest, BridgePluginTaskGetsAnAddressAndReachesAPeerEndToEnd) {
  ASSERT_TRUE(fs::exists("/usr/lib/cni/bridge"))
      << "the CNI bridge plugin is missing: apt-get install containernetworking-plugins";
  write_conflist("testnet", "bridge");
  Collector got;
  auto net = manager();
  ASSERT_TRUE(net);
  auto c = containerizer(got, net);
  auto server = request("cserver", kServer, "testnet");
  auto launched = c->launch(server);
  ASSERT_TRUE(launched.ok()) << launched.error().message();
  auto a = net->find("cserver");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->cni_network, "testnet");
  EXPECT_TRUE(parse_subnet("10.77.0.0/24")->contains(a->address)) << format_ipv4(a->address);
  EXPECT_EQ(format_ipv4(a->gateway), "10.77.0.1");
  const std::string ip = format_ipv4(a->address);
  EXPECT_EQ(ipam_leases("testnet"), std::vector<std::string>{ip});
  // The agent's namespace reaches it through the plugin's bridge (isGateway).
  ASSERT_EQ(http_get(ip, 8080, "/index.html"), "served-by-cserver\n");
  // CHECK through the plugins agrees the network is there.
  auto checked = net->check("cserver");
  EXPECT_TRUE(checked.ok()) << checked.error().message();

  auto client = request("cclient",
                        "busybox wget -q -O - http://" + ip +
                            ":8080/index.html; echo; busybox ip -4 addr; "
                            "busybox ip -4 route",
                        "testnet");
  ASSERT_TRUE(c->launch(client).ok());
  auto t = got.wait("cclient", std::chrono::seconds(30));
  ASSERT_TRUE(t);
  std::string out = read_file(client.sandbox_dir / "stdout").value_or("");
  EXPECT_EQ(t->code, 0) << out << read_file(client.sandbox_dir / "stderr").value_or("");
  EXPECT_NE(out.find("served-by-cserver"), std::string::npos) << out;
  EXPECT_NE(out.find("inet 10.77.0."), std::string::npos) << out;
  EXPECT_NE(out.find("default via 10.77.0.1 dev eth0"), std::string::npos) << out;
  ASSERT_TRUE(c->destroy("cclient").ok());
  ASSERT_TRUE(c->kill("cserver", std::chrono::seconds(1)).ok());
  ASSERT_TRUE(got.wait("cserver", std::chrono::seconds(30)));
  ASSERT_TRUE(c->destroy("cserver").ok());
  expect_no_cni_left("testnet");
}

TEST_F(CniTest, AttachmentsOfDeadTasksAreDeletedThroughThePluginsAfterARestart) {
  write_conflist("testnet", "bridge");
  {
    auto net = manager();
    ASSERT_TRUE(net);
    NetworkRequest r;
    r.container_id = "gone";
    r.cni_network = "testnet";
    auto a = net->attach(r, dir_->path());
    ASSERT_TRUE(a.ok()) << a.error().message();
    ASSERT_EQ(ipam_leases("testnet").size(), 1u);
    ASSERT_EQ(cni_bridge_ports().size(), 1u);
  }  // the agent "dies": nothing is detached
  auto net = manager();
  ASSERT_TRUE(net);
  ASSERT_TRUE(net->find("gone"));  // the record survived
  auto rep = net->reconcile({});
  ASSERT_TRUE(rep.ok()) << rep.error().message();
  EXPECT_EQ(rep->removed_leases, std::vector<std::string>{"gone"});
  expect_no_cni_left("testnet");
}

TEST_F(CniTest, AMissingPluginOrABadConfigIsRefusedCleanly) {
  write_conflist("ghost", "no-such-plugin");
  write_conflist("badnet", "bridge", "10.77.0.0/33");  // host-local refuses the subnet at ADD
  std::ofstream(config_.cni_config_dir / "broken.conflist") << "{not json";
  Collector got;
  auto net = manager();
  ASSERT_TRUE(net);
  auto c = containerizer(got, net);
  auto launched = c->launch(request("g", "true", "ghost"));
  ASSERT_FALSE(launched.ok());
  EXPECT_EQ(launched.error().code(), ENOENT);
  EXPECT_NE(launched.error().message().find("CNI plugin \"no-such-plugin\" is not in /usr/lib/cni"),
            std::string::npos)
      << launched.error().message();
  launched = c->launch(request("b", "true", "badnet"));
  ASSERT_FALSE(launched.ok());
  EXPECT_NE(launched.error().message().find("CNI plugin bridge ADD (network badnet"),
            std::string::npos)
      << launched.error().message();
  launched = c->launch(request("u", "true", "nonet"));
  ASSERT_FALSE(launched.ok());
  EXPECT_NE(launched.error().message().find("has the networks badnet, ghost"), std::string::npos)
      << launched.error().message();
  // Port mappings belong to bridge mode.
  auto mapped = request("m", "true", "badnet");
  offer_ports(mapped, 31000, 31001);
  map_port(mapped, 31000, 80);
  launched = c->launch(mapped);
  ASSERT_FALSE(launched.ok());
  EXPECT_NE(launched.error().message().find("port mappings need network bridge"), std::string::npos)
      << launched.error().message();
  expect_no_cni_left("badnet");
  EXPECT_TRUE(veths().empty());
}

}  // namespace
}  // namespace corral::network

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Listing tests (ctest's discovery) needs no namespaces.
  if (::testing::GTEST_FLAG(list_tests)) return RUN_ALL_TESTS();
  // Private "host" namespaces for this test process; nothing here may reach the real host.
  if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) {
    std::perror("network roottest: unshare(CLONE_NEWNET|CLONE_NEWNS) (run as root)");
    return 1;
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    std::perror("network roottest: make / private");
    return 1;
  }
  // `ip netns` (the egress test's outside namespace) writes under /run/netns: keep it private.
  if (::mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0) {
    std::perror("network roottest: mount a private /run");
    return 1;
  }
  // /sys shows the network namespace of whoever mounted it: mount one for this namespace.
  if (::mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    std::perror("network roottest: mount sysfs");
    return 1;
  }
  if (std::system("ip link set lo up") != 0) {
    std::fprintf(stderr, "network roottest: ip link set lo up failed (iproute2 installed?)\n");
    return 1;
  }
  return RUN_ALL_TESTS();
}
