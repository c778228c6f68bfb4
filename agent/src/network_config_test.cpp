// agent.toml [network] (docs/network.md): parsing and the errors that name the key.
#include <gtest/gtest.h>

#include "corral/agent/config.hpp"

namespace corral::agent {
namespace {

TEST(AgentNetworkConfigTest, NoSectionMeansNoBridgeNetworking) {
  auto c = parse_agent_config("", "agent.toml");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_FALSE(c->network.enabled);
}

TEST(AgentNetworkConfigTest, EveryKeyIsRead) {
  auto c = parse_agent_config(
      "[network]\n"
      "bridge = \"br-tasks\"\n"
      "subnet = \"10.200.0.0/20\"\n"
      "mtu = 9000\n"
      "nameservers = [\"192.0.2.53\", \"2001:db8::53\"]\n"
      "search = [\"example.org\"]\n"
      "ip_forward = false\n"
      "masquerade = false\n"
      "netns_dir = \"/run/x/netns\"\n"
      "cni_config_dir = \"/etc/x/cni\"\n"
      "cni_plugin_dirs = [\"/opt/cni/bin\", \"/usr/lib/cni\"]\n",
      "agent.toml");
  ASSERT_TRUE(c.ok()) << c.error().message();
  const NetworkSettings& n = c->network;
  EXPECT_TRUE(n.enabled);
  EXPECT_EQ(n.bridge, "br-tasks");
  EXPECT_EQ(n.subnet, "10.200.0.0/20");
  EXPECT_EQ(n.mtu, 9000u);
  EXPECT_EQ(n.nameservers, (std::vector<std::string>{"192.0.2.53", "2001:db8::53"}));
  EXPECT_EQ(n.search, std::vector<std::string>{"example.org"});
  EXPECT_FALSE(n.ip_forward);
  EXPECT_FALSE(n.masquerade);
  EXPECT_EQ(n.netns_dir, "/run/x/netns");
  EXPECT_EQ(n.cni_config_dir, "/etc/x/cni");
  EXPECT_EQ(n.cni_plugin_dirs.size(), 2u);
  auto off = parse_agent_config("[network]\nenabled = false\n", "agent.toml");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->network.enabled);
  auto defaults = parse_agent_config("[network]\n", "agent.toml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->network.enabled);
  EXPECT_EQ(defaults->network.subnet, "10.88.0.0/16");
  EXPECT_EQ(defaults->network.cni_plugin_dirs, std::vector<std::filesystem::path>{"/usr/lib/cni"});
}

TEST(AgentNetworkConfigTest, BadValuesNameTheKeyAndTheFix) {
  struct Case {
    const char* toml;
    const char* want;
  };
  for (const Case& c : {
           Case{"[network]\nbridge = \"Corral 0\"\n", "network.bridge"},
           Case{"[network]\nbridge = \"averyveryverylongname\"\n", "1-15 characters"},
           Case{"[network]\nsubnet = \"10.88.0.1/16\"\n", "network.subnet"},
           Case{"[network]\nsubnet = \"10.88.0.0\"\n", "prefix length"},
           Case{"[network]\nmtu = 100\n", "network.mtu"},
           Case{"[network]\nnameservers = [\"dns.example.org\"]\n", "not an IP address"},
           Case{"[network]\nsearch = [\"bad domain\"]\n", "network.search"},
           Case{"[network]\nnetns_dir = \"run/netns\"\n", "absolute path"},
           Case{"[network]\ncni_plugin_dirs = [\"bin\"]\n", "network.cni_plugin_dirs"},
           Case{"[network]\nsubnets = \"10.1.0.0/16\"\n", "subnets"},
       }) {
    auto r = parse_agent_config(c.toml, "agent.toml");
    ASSERT_FALSE(r.ok()) << c.toml;
    EXPECT_NE(r.error().message().find(c.want), std::string::npos)
        << c.toml << " -> " << r.error().message();
  }
}

}  // namespace
}  // namespace corral::agent
