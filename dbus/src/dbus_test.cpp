// Unit tests: the caller decision and a daemon without a system bus.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "corral/dbus/access.hpp"
#include "corral/dbus/avahi.hpp"
#include "corral/dbus/bus.hpp"

namespace corral::dbus {
namespace {

TEST(DbusAccess, RootAndOperatorGroupOnly) {
  EXPECT_TRUE(caller_allowed(Caller{0, {}}, std::nullopt));
  EXPECT_TRUE(caller_allowed(Caller{1000, {100, 997}}, 997));
  EXPECT_FALSE(caller_allowed(Caller{1000, {100}}, 997));
  // Without a group corral on the host, only root may call.
  EXPECT_FALSE(caller_allowed(Caller{1000, {997}}, std::nullopt));
  // An unknown caller is nobody's friend.
  EXPECT_FALSE(caller_allowed(Caller{}, 997));
}

TEST(DbusBus, NoSystemBusIsAClearError) {
  ::setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/corral-test/system_bus_socket", 1);
  boost::asio::io_context io;
  auto bus = Bus::open_system(io, "test");
  ::unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
  ASSERT_FALSE(bus.ok());
  EXPECT_NE(bus.error().message().find("cannot connect to the D-Bus system bus"), std::string::npos)
      << bus.error().message();
  EXPECT_NE(bus.error().message().find("/nonexistent/corral-test/system_bus_socket"),
            std::string::npos);
  EXPECT_NE(bus.error().message().find("dbus = false"), std::string::npos);
}

}  // namespace
}  // namespace corral::dbus

namespace corral::dbus {
namespace {

TEST(MasterChoice, StaysWithTheCurrentMasterAndFollowsTheNewestWhenItGoes) {
  MasterChoice c;
  EXPECT_TRUE(c.add("a%1", "http://10.0.0.1:5050"));
  EXPECT_EQ(c.chosen(), "http://10.0.0.1:5050");
  EXPECT_FALSE(c.add("b%1", "http://10.0.0.2:5050"));  // no flapping to the newcomer
  EXPECT_FALSE(c.add("c%1", "http://10.0.0.3:5050"));
  EXPECT_TRUE(c.remove("a%1"));
  EXPECT_EQ(c.chosen(), "http://10.0.0.3:5050");  // the newest announced
  EXPECT_FALSE(c.remove("b%1"));
  EXPECT_TRUE(c.add("c%1", "http://10.0.0.9:5050"));  // same master, new address
  EXPECT_EQ(c.chosen(), "http://10.0.0.9:5050");
  EXPECT_TRUE(c.remove("c%1"));
  EXPECT_EQ(c.chosen(), "");
  EXPECT_FALSE(c.remove("zzz"));
}

TEST(MasterChoice, AddressFormatting) {
  EXPECT_EQ(master_address("10.1.2.3", 5050), "http://10.1.2.3:5050");
  EXPECT_EQ(master_address("fe80::1", 5050), "http://[fe80::1]:5050");
}

TEST(MasterLocator, StaticAddressIsReportedOnce) {
  StaticMasterLocator l("http://m:5050");
  std::vector<std::string> seen;
  ASSERT_TRUE(l.start([&](const std::string& a) { seen.push_back(a); }).ok());
  EXPECT_EQ(seen, std::vector<std::string>{"http://m:5050"});
}

}  // namespace
}  // namespace corral::dbus
