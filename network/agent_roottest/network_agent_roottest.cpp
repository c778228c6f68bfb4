// The REAL corral-agent with [network] in its agent.toml: bridge tasks, a port mapping, a CNI
// task, kill -9 of the agent and a restart, and nothing left once the tasks are gone.
//
// The test process first moves into a network and mount namespace of its own (unshare in main);
// the agent it starts inherits them, so the real host's interfaces, routes and nftables are never
// touched and whatever a failing test leaves vanishes with the process.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../src/net_test_util.hpp"
#include "agent_test_support.hpp"

namespace corral::agent {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using agent_testing::AgentProcess;

using corral::network::testing::nft_elements;
using corral::network::testing::sh;
using corral::network::testing::veths;

std::string http_get(const std::string& ip, uint16_t port, int attempts = 100) {
  for (int attempt = 0; attempt < attempts; ++attempt) {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    timeval tv{2, 0};
    ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::this_thread::sleep_for(50ms);
      continue;
    }
    std::string req = "GET /index.html HTTP/1.0\r\n\r\n";
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

// A task of the local framework in network `net`, optionally holding and mapping one host port.
std::string net_task(const std::string& id, const std::string& command, const std::string& net,
                     int host_port = 0, int container_port = 0) {
  nlohmann::json info = {{"name", net}};
  nlohmann::json t = {{"name", id},
                      {"task_id", {{"value", id}}},
                      {"agent_id", {{"value", "x"}}},
                      {"command", {{"value", command}}}};
  if (host_port) {
    nlohmann::json mapping = {
        {"host_port", host_port}, {"container_port", container_port}, {"protocol", "tcp"}};
    info["port_mappings"] = nlohmann::json::array({mapping});
    nlohmann::json range = {{"begin", host_port}, {"end", host_port}};
    nlohmann::json ports = {{"name", "ports"}, {"type", "RANGES"}};
    ports["ranges"]["range"] = nlohmann::json::array({range});
    t["resources"] = nlohmann::json::array({ports});
  }
  t["container"] = {{"type", "MESOS"}, {"network_infos", nlohmann::json::array({info})}};
  return t.dump();
}

const char* kServer =
    "echo served-by-$(busybox hostname) > index.html; exec busybox httpd -f -p 8080";

class AgentNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("agent-net-test-");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(*d));
    ::chmod(dir_->path().c_str(), 0755);
    fs::create_directories(path() / "policy");
    fs::create_directories(path() / "cni");
    // The host has no cgroup v2 controllers (the guest group `agent` covers cgroups).
    std::ofstream(path() / "policy" / "10-test.toml") << "[cgroups]\nrequire_v2 = false\n";
    std::ofstream(path() / "agent.toml") << "dbus = false\n"
                                            "discovery = \"none\"\n"
                                            "[resources]\n"
                                            "ports = \"31000-31010\"\n"
                                            "[network]\n"
                                            "subnet = \"10.99.0.0/24\"\n"
                                            "mtu = 1400\n"
                                            "nameservers = [\"192.0.2.53\"]\n"
                                            "netns_dir = \""
                                         << (path() / "netns").string()
                                         << "\"\n"
                                            "cni_config_dir = \""
                                         << (path() / "cni").string() << "\"\n";
    // A CNI network of Debian's bridge plugin with host-local IPAM (its state in the test's dir).
    nlohmann::json conf = {{"cniVersion", "1.0.0"},
                           {"name", "testnet"},
                           {"plugins",
                            {{{"type", "bridge"},
                              {"bridge", "cni-test0"},
                              {"isGateway", true},
                              {"ipMasq", false},
                              {"ipam",
                               {{"type", "host-local"},
                                {"ranges", {{{{"subnet", "10.77.0.0/24"}}}}},
                                {"dataDir", (path() / "cni-ipam").string()}}}}}}};
    std::ofstream(path() / "cni" / "testnet.conflist") << conf.dump(2);
  }
  fs::path path() const { return dir_->path(); }

  std::unique_ptr<AgentProcess> agent() {
    auto a = std::make_unique<AgentProcess>(path(), "");
    a->extra_args = {"--config", (path() / "agent.toml").string()};
    return a;
  }
  // Launches a task of the local framework; returns its container id.
  std::string launch(AgentProcess& a, const std::string& task_json) {
    auto r = a.launch(task_json);
    EXPECT_TRUE(r.ok());
    if (!r) return "";
    EXPECT_EQ(r->result(), http::Status::accepted) << r->body();
    auto j = nlohmann::json::parse(r->body(), nullptr, false);
    return j.is_object() ? j.value("container_id", "") : "";
  }
  nlohmann::json leases() {
    auto text = read_file(path() / "work" / "network" / "network.json").value_or("{}");
    auto j = nlohmann::json::parse(text, nullptr, false);
    return j.is_object() && j.contains("leases") ? j["leases"] : nlohmann::json::array();
  }
  std::string address_of(const std::string& container_id) {
    for (const auto& l : leases())
      if (l.value("container_id", "") == container_id) return l.value("address", "");
    return "";
  }
  std::string stdout_of(AgentProcess& a, const std::string& task_id) {
    auto t = a.task(task_id);
    if (!t) return "";
    std::string cid;  // the RUNNING status names the container; the terminal one may not
    for (const auto& st : t->statuses())
      if (!st.container_status().container_id().value().empty())
        cid = st.container_status().container_id().value();
    if (cid.empty()) return "";
    return read_file(path() / "work" / "sandboxes" / "local" / task_id / cid / "stdout")
        .value_or("");
  }
  void kill_task(AgentProcess& a, const std::string& container_id) {
    auto r = a.post_json("/api/v1",
                         R"({"type":"KILL_CONTAINER","kill_container":{"container_id":{"value":")" +
                             container_id + R"("}}})");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->result(), http::Status::ok) << r->body();
  }

  std::unique_ptr<TempDir> dir_;
};

TEST_F(AgentNetworkTest, BridgeTasksPortMappingAndCniThroughTheRealAgentSurviveKill9) {
  // The "host's" own address, on an interface of the test's namespace (mapped ports answer on
  // the agent's addresses other than 127.0.0.1).
  ASSERT_EQ(sh("ip link add hostnic0 type veth peer name hostnic0p && ip link set hostnic0p up && "
               "ip addr add 192.0.2.10/24 dev hostnic0 && ip link set hostnic0 up && echo ok"),
            "ok\n");
  auto a = agent();
  a->start();
  ASSERT_TRUE(a->alive()) << a->log();
  // The agent made its bridge from agent.toml's [network].
  EXPECT_NE(sh("ip -4 addr show dev corral0").find("inet 10.99.0.1/24"), std::string::npos)
      << a->log();
  EXPECT_EQ(read_file("/sys/class/net/corral0/mtu").value_or(""), "1400\n");

  const std::string server = launch(*a, net_task("web", kServer, "bridge", 31005, 8080));
  ASSERT_TRUE(a->wait_state("web", {v1::TASK_RUNNING}).has_value());
  const std::string ip = address_of(server);
  ASSERT_NE(ip, "") << leases().dump();
  EXPECT_EQ(ip.rfind("10.99.0.", 0), 0u) << ip;
  // Reached from the agent's namespace on the mapped host port, and directly over the bridge.
  EXPECT_EQ(http_get("192.0.2.10", 31005), "served-by-web\n") << a->log();
  EXPECT_EQ(http_get(ip, 8080), "served-by-web\n");

  // A second bridge task reaches the first; it sees its own /etc files and route.
  launch(*a, net_task("client",
                      "busybox wget -q -O - http://" + ip +
                          ":8080/index.html; cat /etc/resolv.conf; busybox ip -4 route",
                      "bridge"));
  auto c = a->wait_state("client", {v1::TASK_FINISHED, v1::TASK_FAILED});
  ASSERT_TRUE(c.has_value());
  std::string out = stdout_of(*a, "client");
  EXPECT_EQ(c->state(), v1::TASK_FINISHED) << out;
  EXPECT_NE(out.find("served-by-web"), std::string::npos) << out;
  EXPECT_NE(out.find("nameserver 192.0.2.53"), std::string::npos) << out;
  EXPECT_NE(out.find("default via 10.99.0.1 dev eth0"), std::string::npos) << out;

  // A task in the CNI network of agent.toml's cni_config_dir.
  const std::string cni =
      launch(*a, net_task("cni", "busybox ip -4 addr show eth0; sleep 600", "testnet"));
  ASSERT_TRUE(a->wait_state("cni", {v1::TASK_RUNNING}).has_value());
  for (int i = 0; i < 100 && stdout_of(*a, "cni").find("inet ") == std::string::npos; ++i)
    std::this_thread::sleep_for(50ms);
  EXPECT_NE(stdout_of(*a, "cni").find("inet 10.77.0."), std::string::npos) << stdout_of(*a, "cni");

  // One more bridge task that ends while the agent is down.
  launch(*a, net_task("short", "sleep 3", "bridge"));
  ASSERT_TRUE(a->wait_state("short", {v1::TASK_RUNNING}).has_value());
  for (int i = 0; i < 100 && veths().size() != 2; ++i) std::this_thread::sleep_for(50ms);
  ASSERT_EQ(veths().size(), 2u);  // web, short (client's went when it finished)
  a->kill9();
  std::this_thread::sleep_for(5s);
  a->start();
  ASSERT_TRUE(a->alive()) << a->log();
  auto s = a->wait_state("short", {v1::TASK_FAILED, v1::TASK_FINISHED, v1::TASK_LOST});
  ASSERT_TRUE(s.has_value());
  // After recovery: the ended task's network is gone, the running ones' stay and still work.
  for (int i = 0; i < 100 && veths().size() != 1; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_EQ(veths().size(), 1u) << a->log();
  EXPECT_EQ(leases().size(), 2u) << leases().dump();  // web and cni
  EXPECT_EQ(http_get("192.0.2.10", 31005), "served-by-web\n") << a->log();
  EXPECT_NE(nft_elements().find("tcp . 31005 : " + ip + " . 8080"), std::string::npos)
      << nft_elements();

  kill_task(*a, server);
  kill_task(*a, cni);
  ASSERT_TRUE(a->wait_state("web", {v1::TASK_KILLED}).has_value());
  ASSERT_TRUE(a->wait_state("cni", {v1::TASK_KILLED}).has_value());
  for (int i = 0; i < 100 && (!veths().empty() || !leases().empty()); ++i)
    std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(veths().empty()) << veths().size() << " veth(s) left";
  EXPECT_TRUE(leases().empty()) << leases().dump();
  EXPECT_EQ(nft_elements(), "");
  EXPECT_TRUE(fs::is_empty(path() / "netns"));
  std::error_code ec;
  size_t ipam_files = 0;
  for (const auto& e : fs::directory_iterator(path() / "cni-ipam" / "testnet", ec)) {
    std::string f = e.path().filename().string();
    if (f != "lock" && f.rfind("last_reserved_ip", 0) != 0) ++ipam_files;
  }
  EXPECT_EQ(ipam_files, 0u) << "host-local still holds an address";
  EXPECT_TRUE(fs::is_empty("/sys/class/net/cni-test0/brif", ec));
  EXPECT_TRUE(a->alive());
}

TEST_F(AgentNetworkTest, ABadNetworkSectionStopsTheAgentNamingTheKey) {
  std::ofstream(path() / "bad.toml") << "[network]\nmtu = 70000\n";
  // The config file is read before anything else: the agent exits with the key named.
  const std::string out =
      sh(std::string(CORRAL_AGENT_PATH) + " --config " + (path() / "bad.toml").string() +
         " --work-dir " + (path() / "work").string() + " --socket " + (path() / "a.sock").string() +
         " --listen '' 2>&1; echo rc=$?");
  EXPECT_NE(out.find("network.mtu"), std::string::npos) << out;
  EXPECT_EQ(out.find("rc=0"), std::string::npos) << out;
  // A subnet overlapping a route of this host: the agent refuses to start, naming both.
  ASSERT_EQ(sh("ip link add lan0 type veth peer name lan0p && ip link set lan0p up && "
               "ip addr add 10.98.0.77/16 dev lan0 && ip link set lan0 up && echo ok"),
            "ok\n");
  std::ofstream(path() / "agent2.toml")
      << "dbus = false\ndiscovery = \"none\"\n[network]\nbridge = \"corral9\"\n"
         "subnet = \"10.98.0.0/24\"\n"
         "netns_dir = \""
      << (path() / "netns").string() << "\"\n";
  const std::string out2 =
      sh(std::string(CORRAL_AGENT_PATH) + " --config " + (path() / "agent2.toml").string() +
         " --work-dir " + (path() / "work").string() + " --policy-dir " +
         (path() / "policy").string() + " --launcher " + CORRAL_LAUNCHER_PATH + " --socket " +
         (path() / "a.sock").string() + " --listen '' 2>&1; echo rc=$?");
  EXPECT_NE(out2.find("overlaps the route 10.98.0.0/16 of interface lan0"), std::string::npos)
      << out2;
  EXPECT_EQ(out2.find("rc=0"), std::string::npos) << out2;
  EXPECT_FALSE(fs::exists("/sys/class/net/corral9"));  // no bridge was made
}

}  // namespace
}  // namespace corral::agent

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (::testing::GTEST_FLAG(list_tests)) return RUN_ALL_TESTS();
  // Private "host" namespaces for this test process and the agents it starts.
  if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) {
    std::perror("network agent roottest: unshare(CLONE_NEWNET|CLONE_NEWNS) (run as root)");
    return 1;
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
      ::mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    std::perror("network agent roottest: private / and a sysfs of this namespace");
    return 1;
  }
  if (std::system("ip link set lo up") != 0) {
    std::fprintf(stderr, "network agent roottest: ip link set lo up failed\n");
    return 1;
  }
  return RUN_ALL_TESTS();
}
