// Unit tests of the pure parts of corral_network: subnet parsing, IPAM, request validation,
// lease records. The real netlink/nftables path is in network_roottest.cpp.
#include <gtest/gtest.h>

#include <set>

#include "corral/network/network.hpp"

namespace corral::network {
namespace {

TEST(Subnet, ParsesAndRejectsWithReasons) {
  auto n = parse_subnet("10.88.0.0/16");
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(format_ipv4(n->address), "10.88.0.0");
  EXPECT_EQ(n->prefix, 16);
  EXPECT_TRUE(n->contains(*parse_ipv4("10.88.255.254")));
  EXPECT_FALSE(n->contains(*parse_ipv4("10.89.0.1")));

  auto host_bits = parse_subnet("10.88.0.1/16");
  ASSERT_FALSE(host_bits);
  EXPECT_NE(host_bits.error().message().find("use 10.88.0.0/16"), std::string::npos);
  EXPECT_FALSE(parse_subnet("10.88.0.0"));
  EXPECT_FALSE(parse_subnet("10.88.0.0/31"));
  EXPECT_FALSE(parse_subnet("10.88.0.0/x"));
  EXPECT_FALSE(parse_subnet("300.1.0.0/16"));
}

TEST(Subnet, Overlap) {
  auto a = *parse_subnet("10.88.0.0/16");
  EXPECT_TRUE(a.overlaps(*parse_subnet("10.88.4.0/24")));
  EXPECT_TRUE(a.overlaps(*parse_subnet("10.0.0.0/8")));
  EXPECT_FALSE(a.overlaps(*parse_subnet("10.89.0.0/16")));
}

TEST(Ipam, NoCollisionOver200SequentialTasksAndNoImmediateReuse) {
  Ipam ipam(*parse_subnet("10.88.0.0/24"));
  std::set<uint32_t> live;
  uint32_t previous = 0;
  for (int i = 0; i < 200; ++i) {
    auto ip = ipam.allocate("task" + std::to_string(i));
    ASSERT_TRUE(ip) << ip.error().message();
    EXPECT_NE(*ip, ipam.gateway());
    EXPECT_NE(format_ipv4(*ip), "10.88.0.0");
    EXPECT_NE(format_ipv4(*ip), "10.88.0.255");
    EXPECT_TRUE(live.insert(*ip).second) << "address handed out twice: " << format_ipv4(*ip);
    EXPECT_NE(*ip, previous) << "a just-freed address was reused at once";
    // Keep the last 10 alive, release the rest: like tasks that overlap a little.
    if (live.size() > 10) {
      ipam.release(*live.begin());
      live.erase(live.begin());
    }
    previous = *ip;
  }
}

TEST(Ipam, FullSubnetSaysSo) {
  Ipam ipam(*parse_subnet("10.88.0.0/30"));  // one task address: .2
  ASSERT_TRUE(ipam.allocate("a"));
  auto full = ipam.allocate("b");
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code(), ENOSPC);
  EXPECT_NE(full.error().message().find("larger [network] subnet"), std::string::npos);
}

TEST(Ipam, ClaimRefusesSomeoneElsesAddress) {
  Ipam ipam(*parse_subnet("10.88.0.0/24"));
  ASSERT_TRUE(ipam.claim(*parse_ipv4("10.88.0.7"), "a"));
  EXPECT_EQ(ipam.claim(*parse_ipv4("10.88.0.7"), "b").error().code(), EEXIST);
  EXPECT_FALSE(ipam.claim(*parse_ipv4("10.88.0.1"), "c"));  // the gateway
  EXPECT_FALSE(ipam.claim(*parse_ipv4("10.9.0.7"), "c"));
}

TEST(Request, PortOutsideTheOfferIsRefusedWithTheOffer) {
  NetworkRequest r;
  r.container_id = "c1";
  r.allowed_host_ports = {{31000, 31005}};
  r.ports = {{31002, 80, Protocol::tcp}};
  EXPECT_TRUE(validate_request(r));
  r.ports = {{8080, 80, Protocol::tcp}};
  auto e = validate_request(r);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code(), EPERM);
  EXPECT_NE(e.error().message().find("8080"), std::string::npos);
  EXPECT_NE(e.error().message().find("31000-31005"), std::string::npos);
  r.allowed_host_ports = {{31000, 31005}};
  r.ports = {{31001, 80, Protocol::tcp}, {31001, 81, Protocol::tcp}};
  EXPECT_NE(validate_request(r).error().message().find("mapped twice"), std::string::npos);
  r.ports = {{31001, 80, Protocol::tcp}, {31001, 80, Protocol::udp}};
  EXPECT_TRUE(validate_request(r));
}

TEST(Request, BadIdsAndHostnames) {
  NetworkRequest r;
  r.container_id = "../etc";
  EXPECT_FALSE(validate_request(r));
  r.container_id = "ok";
  r.hostname = "a b";
  EXPECT_NE(validate_request(r).error().message().find("hostname"), std::string::npos);
}

TEST(Lease, RoundTripsAndRejectsForeignVeths) {
  Attachment a;
  a.container_id = "c1";
  a.netns_path = "/run/corral/netns/c1";
  a.address = *parse_ipv4("10.88.0.9");
  a.gateway = *parse_ipv4("10.88.0.1");
  a.prefix = 16;
  a.host_veth = "cv0a580009";
  a.ports = {{31000, 80, Protocol::udp}};
  a.egress = false;
  auto back = attachment_from_json(to_json(a));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->address, a.address);
  EXPECT_EQ(back->ports, a.ports);
  EXPECT_FALSE(back->egress);
  auto j = to_json(a);
  j["host_veth"] = "eth0";  // a lease must never make the manager delete another interface
  EXPECT_FALSE(attachment_from_json(j));
}

}  // namespace
}  // namespace corral::network
