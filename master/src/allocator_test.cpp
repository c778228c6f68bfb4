#include "corral/master/allocator.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace corral::master {
namespace {

using namespace std::chrono_literals;

Resources cpus_mem(double cpus, double mem) {
  return Resources{Quantities{{"cpus", cpus}, {"mem", mem}}};
}

TimePoint t0() { return TimePoint{} + 1000s; }

std::map<std::string, Resources> by_framework(const std::vector<Allocation>& allocs) {
  std::map<std::string, Resources> out;
  for (const auto& a : allocs) out[a.framework_id].add(a.resources);
  return out;
}

TEST(Quantities, ArithmeticAndContainment) {
  Quantities a{{"cpus", 2}, {"mem", 1024}};
  Quantities b{{"cpus", 1}};
  EXPECT_TRUE(a.contains(b));
  EXPECT_FALSE(b.contains(a));
  a.subtract(b);
  EXPECT_DOUBLE_EQ(a.get("cpus"), 1);
  a.subtract(Quantities{{"cpus", 5}});
  EXPECT_DOUBLE_EQ(a.get("cpus"), 0);  // clamped
  EXPECT_EQ(a.to_string(), "mem:1024");
}

// Names are interned (an id per name, in first-use order), but what a user sees is by name:
// items() and to_string() sort by name whatever order the names were first met in.
TEST(Quantities, InternedNamesCompareAndPrintByName) {
  Quantities q{{"zz-test-resource", 1}, {"aa-test-resource", 2}, {"cpus", 3}};
  EXPECT_EQ(q.to_string(), "aa-test-resource:2;cpus:3;zz-test-resource:1");
  auto items = q.items();
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].first, "aa-test-resource");
  EXPECT_EQ(items[2].first, "zz-test-resource");
  EXPECT_EQ(resource_name(resource_name_id("zz-test-resource")), "zz-test-resource");
  EXPECT_EQ(resource_name_id("cpus"), resource_name_id(std::string("cpus")));
  // A name never seen reads as 0 (and is not registered by reading it).
  EXPECT_DOUBLE_EQ(q.get("never-used-resource-name"), 0);
  Quantities other{{"cpus", 1}, {"zz-test-resource", 1}};
  EXPECT_TRUE(q.contains(other));
  q.subtract(other);
  EXPECT_EQ(q.to_string(), "aa-test-resource:2;cpus:2");
  q.add(Quantities{{"zz-test-resource", 0.5}, {"bb-test-resource", 4}});
  EXPECT_EQ(q.to_string(), "aa-test-resource:2;bb-test-resource:4;cpus:2;zz-test-resource:0.5");
  EXPECT_EQ(q.min(Quantities{{"cpus", 1}, {"bb-test-resource", 9}}).to_string(),
            "bb-test-resource:4;cpus:1");
  EXPECT_EQ(q, (Quantities{{"zz-test-resource", 0.5},
                           {"cpus", 2},
                           {"bb-test-resource", 4},
                           {"aa-test-resource", 2}}));
}

// Filters of many agents, set, expired and set again over many cycles (the per-framework
// filter table grows, reuses freed slots and shrinks back to empty): every agent filtered
// for refuse_seconds is offered to nobody until then, and to the framework again after.
TEST(Allocator, FiltersOfManyAgentsSurviveChurn) {
  Allocator al;
  const int n = 300;
  for (int i = 0; i < n; ++i) al.add_agent("a" + std::to_string(i), cpus_mem(1, 1024));
  al.add_framework("f1", {"*"});
  TimePoint now = t0();
  auto offers = al.allocate(now);
  ASSERT_EQ(offers.size(), static_cast<size_t>(n));
  for (int round = 0; round < 5; ++round) {
    // Decline every other agent for 10 s, the rest for 1 s.
    for (size_t i = 0; i < offers.size(); ++i) {
      int idx = std::stoi(offers[i].agent_id.substr(1));
      al.recover(offers[i].agent_id, "f1", offers[i].role, offers[i].resources, now,
                 std::chrono::seconds(idx % 2 == 0 ? 10 : 1));
    }
    EXPECT_EQ(al.stats().filters_active, static_cast<uint64_t>(n));
    EXPECT_TRUE(al.allocate(now).empty());
    now += 2s;  // the 1 s filters expire
    offers = al.allocate(now);
    EXPECT_EQ(offers.size(), static_cast<size_t>(n / 2));
    for (const auto& o : offers) EXPECT_EQ(std::stoi(o.agent_id.substr(1)) % 2, 1) << o.agent_id;
    for (const auto& o : offers) al.recover(o.agent_id, "f1", o.role, o.resources, now);
    now += 10s;  // the 10 s filters expire too
    offers = al.allocate(now);
    ASSERT_EQ(offers.size(), static_cast<size_t>(n)) << "round " << round;
    EXPECT_EQ(al.stats().filters_active, 0u);
    EXPECT_EQ(al.check_invariants(), "");
  }
  EXPECT_DOUBLE_EQ(al.framework_allocated("f1").total().get("cpus"), n);
  al.remove_framework("f1");
  EXPECT_TRUE(al.agent_allocated("a0").empty());
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Role, ValidationLikeMesos) {
  std::string why;
  EXPECT_TRUE(valid_role("*"));
  EXPECT_TRUE(valid_role("eng/web"));
  EXPECT_FALSE(valid_role("", &why));
  EXPECT_FALSE(valid_role("eng//web", &why));
  EXPECT_NE(why.find("empty path component"), std::string::npos);
  EXPECT_FALSE(valid_role("eng/..", &why));
  EXPECT_FALSE(valid_role("-eng", &why));
  EXPECT_FALSE(valid_role("eng web", &why));
  EXPECT_FALSE(valid_role("eng/*", &why));
}

TEST(Allocator, OffersAWholeAgentToTheOnlyFramework) {
  Allocator al;
  al.add_agent("a1", cpus_mem(4, 4096));
  al.add_framework("f1", {"*"});
  auto allocs = al.allocate(t0());
  ASSERT_EQ(allocs.size(), 1u);
  EXPECT_EQ(allocs[0].agent_id, "a1");
  EXPECT_EQ(allocs[0].framework_id, "f1");
  EXPECT_EQ(allocs[0].role, "*");
  EXPECT_EQ(allocs[0].resources, cpus_mem(4, 4096));
  // Nothing is offered twice while it is outstanding.
  al.mark_all_dirty();
  EXPECT_TRUE(al.allocate(t0()).empty());
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Allocator, DrfGivesTheNextAgentToTheLowestDominantShare) {
  Allocator al;
  for (int i = 0; i < 4; ++i) al.add_agent("a" + std::to_string(i), cpus_mem(1, 1024));
  al.add_framework("f1", {"r1"});
  al.add_framework("f2", {"r2"});
  auto allocs = al.allocate(t0());
  auto got = by_framework(allocs);
  // Four equal agents, two roles of equal weight: two each.
  EXPECT_EQ(got["f1"], cpus_mem(2, 2048));
  EXPECT_EQ(got["f2"], cpus_mem(2, 2048));
  EXPECT_DOUBLE_EQ(al.role_share("r1"), 0.5);
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Allocator, DominantShareUsesEachFrameworksScarcestResource) {
  Allocator al;
  // f1 holds most of the memory, f2 a bit of cpu: f2's dominant share is lower, it gets the new
  // agent.
  al.add_agent("big-mem", Resources{Quantities{{"cpus", 1}, {"mem", 9000}}});
  al.add_agent("big-cpu", Resources{Quantities{{"cpus", 3}, {"mem", 100}}});
  al.add_framework("f1", {"a"});
  al.add_framework("f2", {"b"});
  al.track_used("big-mem", "f1", "a", Resources{Quantities{{"cpus", 1}, {"mem", 9000}}});
  al.track_used("big-cpu", "f2", "b", Resources{Quantities{{"cpus", 1}}});
  al.add_agent("new", cpus_mem(1, 100));
  auto allocs = al.allocate(t0());
  auto got = by_framework(allocs);
  ASSERT_TRUE(got.count("f2"));
  EXPECT_TRUE(got["f2"].contains(cpus_mem(1, 100)));
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Allocator, WeightsSkewTheSplit) {
  Allocator al;
  for (int i = 0; i < 8; ++i) al.add_agent("a" + std::to_string(i), cpus_mem(1, 1024));
  al.set_role_config("heavy", RoleConfig{.weight = 3.0});
  al.add_framework("f1", {"heavy"});
  al.add_framework("f2", {"light"});
  auto got = by_framework(al.allocate(t0()));
  EXPECT_EQ(got["f1"], cpus_mem(6, 6 * 1024));
  EXPECT_EQ(got["f2"], cpus_mem(2, 2 * 1024));
}

TEST(Allocator, HierarchicalRolesShareAtEachLevel) {
  Allocator al;
  for (int i = 0; i < 8; ++i) al.add_agent("a" + std::to_string(i), cpus_mem(1, 1024));
  // eng (two child roles) vs ops: eng as a whole gets half.
  al.add_framework("web", {"eng/web"});
  al.add_framework("db", {"eng/db"});
  al.add_framework("ops", {"ops"});
  auto got = by_framework(al.allocate(t0()));
  EXPECT_EQ(got["ops"], cpus_mem(4, 4096));
  EXPECT_EQ(got["web"], cpus_mem(2, 2048));
  EXPECT_EQ(got["db"], cpus_mem(2, 2048));
  EXPECT_EQ(al.role_allocated("eng"), (Quantities{{"cpus", 4}, {"mem", 4096}}));
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Allocator, QuotaGuaranteeIsHonouredUnderContention) {
  Allocator al;
  for (int i = 0; i < 10; ++i) al.add_agent("a" + std::to_string(i), cpus_mem(1, 1024));
  // Five busy roles and one with a guarantee of 6 cpus: plain DRF would give it 2.
  for (int i = 0; i < 5; ++i) {
    al.add_framework("busy" + std::to_string(i), {"busy" + std::to_string(i)});
  }
  al.set_role_config("prod", RoleConfig{.guarantee = Quantities{{"cpus", 6}}});
  al.add_framework("prod-fw", {"prod"});
  auto got = by_framework(al.allocate(t0()));
  EXPECT_GE(got["prod-fw"].total().get("cpus"), 6);
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Allocator, QuotaLimitCapsWhatARoleIsOffered) {
  Allocator al;
  al.add_agent("a1", cpus_mem(8, 8192));
  al.set_role_config("capped", RoleConfig{.limit = Quantities{{"cpus", 2}}});
  al.add_framework("f", {"capped"});
  auto allocs = al.allocate(t0());
  ASSERT_EQ(allocs.size(), 1u);
  EXPECT_DOUBLE_EQ(allocs[0].resources.total().get("cpus"), 2);
  EXPECT_DOUBLE_EQ(allocs[0].resources.total().get("mem"), 8192);  // not limited
  // Declining and re-offering never exceeds the limit either.
  al.recover("a1", "f", "capped", allocs[0].resources, t0());
  auto again = al.allocate(t0());
  ASSERT_EQ(again.size(), 1u);
  EXPECT_DOUBLE_EQ(again[0].resources.total().get("cpus"), 2);
}

TEST(Allocator, ReservationsAreOfferedOnlyToTheirRoleAndItsChildren) {
  Allocator al;
  Resources total;
  total.pool("") = Quantities{{"cpus", 1}};
  total.pool("db") = Quantities{{"cpus", 3}};
  al.add_agent("a1", total);
  al.add_framework("web", {"web"});
  auto allocs = al.allocate(t0());
  ASSERT_EQ(allocs.size(), 1u);
  EXPECT_EQ(allocs[0].resources.pools().count("db"), 0u);
  EXPECT_DOUBLE_EQ(allocs[0].resources.total().get("cpus"), 1);

  al.add_framework("dbfw", {"db/primary"});  // a child of the reserving role
  auto db = al.allocate(t0());
  ASSERT_EQ(db.size(), 1u);
  EXPECT_EQ(db[0].framework_id, "dbfw");
  EXPECT_DOUBLE_EQ(db[0].resources.pools().at("db").get("cpus"), 3);
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Allocator, DynamicReserveAndUnreserve) {
  Allocator al;
  al.add_agent("a1", cpus_mem(4, 4096));
  // Operator reservation of free resources.
  EXPECT_TRUE(al.reserve("a1", "db", Quantities{{"cpus", 2}}));
  EXPECT_FALSE(al.reserve("a1", "db", Quantities{{"cpus", 5}}));  // not there
  EXPECT_DOUBLE_EQ(al.agent_total("a1").pools().at("db").get("cpus"), 2);
  al.add_framework("web", {"web"});
  auto allocs = al.allocate(t0());
  ASSERT_EQ(allocs.size(), 1u);
  EXPECT_DOUBLE_EQ(allocs[0].resources.total().get("cpus"), 2);
  // The framework reserves part of its offer for its own role; it stays allocated to it.
  EXPECT_TRUE(al.reserve("a1", "web", Quantities{{"cpus", 1}}, "web"));
  EXPECT_DOUBLE_EQ(al.agent_allocated("a1").pools().at("web").get("cpus"), 1);
  EXPECT_TRUE(al.unreserve("a1", "web", Quantities{{"cpus", 1}}, "web"));
  EXPECT_TRUE(al.unreserve("a1", "db", Quantities{{"cpus", 2}}));
  EXPECT_EQ(al.agent_total("a1"), cpus_mem(4, 4096));
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Allocator, DeclineFiltersTheAgentForRefuseSeconds) {
  Allocator al;
  al.add_agent("a1", cpus_mem(1, 1024));
  al.add_framework("f1", {"*"});
  auto allocs = al.allocate(t0());
  ASSERT_EQ(allocs.size(), 1u);
  al.recover("a1", "f1", "*", allocs[0].resources, t0(), 10s);
  EXPECT_TRUE(al.allocate(t0() + 1s).empty());
  EXPECT_TRUE(al.allocate(t0() + 9s).empty());
  auto later = al.allocate(t0() + 10s);
  ASSERT_EQ(later.size(), 1u);  // the filter expired: offered again, without any other event
  EXPECT_EQ(later[0].framework_id, "f1");
}

TEST(Allocator, DeclinedResourcesGoToTheNextFramework) {
  Allocator al;
  al.add_agent("a1", cpus_mem(1, 1024));
  al.add_framework("f1", {"*"});
  al.add_framework("f2", {"*"});
  auto first = al.allocate(t0());
  ASSERT_EQ(first.size(), 1u);
  al.recover("a1", first[0].framework_id, "*", first[0].resources, t0(), 60s);
  auto second = al.allocate(t0());
  ASSERT_EQ(second.size(), 1u);
  EXPECT_NE(second[0].framework_id, first[0].framework_id);
}

TEST(Allocator, ReviveClearsFilters) {
  Allocator al;
  al.add_agent("a1", cpus_mem(1, 1024));
  al.add_framework("f1", {"*"});
  auto allocs = al.allocate(t0());
  al.recover("a1", "f1", "*", allocs[0].resources, t0(), 3600s);
  EXPECT_TRUE(al.allocate(t0()).empty());
  al.revive("f1");
  EXPECT_EQ(al.allocate(t0()).size(), 1u);
}

TEST(Allocator, SuppressedFrameworksGetNothing) {
  Allocator al;
  al.add_agent("a1", cpus_mem(1, 1024));
  al.add_framework("f1", {"*"});
  al.suppress("f1");
  EXPECT_TRUE(al.allocate(t0()).empty());
  al.add_framework("f2", {"*"});
  auto allocs = al.allocate(t0());
  ASSERT_EQ(allocs.size(), 1u);
  EXPECT_EQ(allocs[0].framework_id, "f2");
  al.recover("a1", "f2", "*", allocs[0].resources, t0());
  al.suppress("f2");
  al.revive("f1");
  allocs = al.allocate(t0());
  ASSERT_EQ(allocs.size(), 1u);
  EXPECT_EQ(allocs[0].framework_id, "f1");
}

TEST(Allocator, InactiveAgentsAndFrameworksGetAndGiveNothing) {
  Allocator al;
  al.add_agent("a1", cpus_mem(1, 1024));
  al.add_framework("f1", {"*"}, /*active=*/false);
  EXPECT_TRUE(al.allocate(t0()).empty());
  al.set_framework_active("f1", true);
  al.set_agent_active("a1", false);
  EXPECT_TRUE(al.allocate(t0()).empty());
  al.set_agent_active("a1", true);
  EXPECT_EQ(al.allocate(t0()).size(), 1u);
}

TEST(Allocator, IncrementalCyclesExamineOnlyDirtyAgents) {
  Allocator al;
  for (int i = 0; i < 100; ++i) al.add_agent("a" + std::to_string(i), cpus_mem(1, 1024));
  al.add_framework("f1", {"*"});
  auto allocs = al.allocate(t0());
  EXPECT_EQ(allocs.size(), 100u);
  uint64_t before = al.stats().agents_examined;
  al.recover("a7", "f1", "*", cpus_mem(1, 1024), t0());
  auto again = al.allocate(t0());
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].agent_id, "a7");
  EXPECT_EQ(al.stats().agents_examined - before, 1u);
  // Nothing changed: nothing examined.
  al.allocate(t0());
  EXPECT_EQ(al.stats().agents_examined - before, 1u);
}

TEST(Allocator, RemovingAFrameworkFreesItsResourcesForOthers) {
  Allocator al;
  al.add_agent("a1", cpus_mem(2, 2048));
  al.add_framework("f1", {"*"});
  ASSERT_EQ(al.allocate(t0()).size(), 1u);
  al.add_framework("f2", {"*"});
  EXPECT_TRUE(al.allocate(t0()).empty());
  al.remove_framework("f1");
  auto allocs = al.allocate(t0());
  ASSERT_EQ(allocs.size(), 1u);
  EXPECT_EQ(allocs[0].framework_id, "f2");
  EXPECT_EQ(allocs[0].resources, cpus_mem(2, 2048));
  EXPECT_EQ(al.check_invariants(), "");
}

// Randomized operation sequences: whatever happens, nothing is offered twice at once (the
// outstanding offers never exceed an agent's total), and after everything is recovered nothing
// is leaked.
TEST(RangeSet, UnionDifferenceContainmentIntersection) {
  RangeSet r{{31000, 31005}, {31010, 31010}};
  r.add(31006, 31008);  // touches: merged
  EXPECT_EQ(r.to_string(), "[31000-31008, 31010-31010]");
  EXPECT_EQ(r.count(), 10u);
  r.add(31009, 31009);
  EXPECT_EQ(r.to_string(), "[31000-31010]");
  RangeSet used{{31002, 31003}, {31010, 31010}};
  EXPECT_TRUE(r.contains(used));
  r.subtract(used);
  EXPECT_EQ(r.to_string(), "[31000-31001, 31004-31009]");
  EXPECT_FALSE(r.contains(used));
  EXPECT_FALSE(r.contains(RangeSet{{31001, 31004}}));
  EXPECT_TRUE(r.contains(RangeSet{{31004, 31009}}));
  EXPECT_EQ(r.intersect(RangeSet{{30000, 31000}, {31005, 40000}}).to_string(),
            "[31000-31000, 31005-31009]");
  r.subtract(RangeSet{{0, 100000}});
  EXPECT_TRUE(r.empty());
  RangeSet wide{{5, 1}};  // reversed bounds are normalised
  EXPECT_EQ(wide.to_string(), "[1-5]");
}

TEST(Quantities, RangesTravelWithScalars) {
  Quantities a{{"cpus", 2}};
  a.add_ranges("ports", RangeSet{{31000, 31009}});
  Quantities b{{"cpus", 1}};
  b.add_ranges("ports", RangeSet{{31000, 31001}});
  EXPECT_TRUE(a.contains(b));
  a.subtract(b);
  EXPECT_EQ(a.to_string(), "cpus:1;ports:[31002-31009]");
  EXPECT_FALSE(a.contains(b));
  a.add(b);
  EXPECT_EQ(a.to_string(), "cpus:2;ports:[31000-31009]");
  Quantities only_ports;
  only_ports.add_ranges("ports", RangeSet{{1, 2}});
  EXPECT_FALSE(only_ports.empty());
  EXPECT_FALSE(only_ports.has_scalars());
}

Resources with_ports(double cpus, double mem, RangeSet ports) {
  Resources r = cpus_mem(cpus, mem);
  r.pool("").add_ranges("ports", ports);
  return r;
}

TEST(Allocator, PortsAreOfferedAllocatedAndReleasedPortByPort) {
  Allocator al;
  al.add_agent("a1", with_ports(4, 4096, RangeSet{{31000, 31009}}));
  al.add_framework("f1", {"*"});
  auto offers = al.allocate(t0());
  ASSERT_EQ(offers.size(), 1u);
  const RangeSet* offered = offers[0].resources.pools().at("").ranges("ports");
  ASSERT_NE(offered, nullptr);
  EXPECT_EQ(offered->to_string(), "[31000-31009]");
  // f1 launches a task on 2 cpus and ports 31000-31002; the rest comes back.
  Resources task = with_ports(2, 1024, RangeSet{{31000, 31002}});
  Resources rest = offers[0].resources;
  rest.subtract(task);
  EXPECT_EQ(rest.to_string(), "*{cpus:2;mem:3072;ports:[31003-31009]}");
  al.recover("a1", "f1", "*", rest, t0());
  al.add_framework("f2", {"*"});
  offers = al.allocate(t0() + 1s);
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0].resources.to_string(), "*{cpus:2;mem:3072;ports:[31003-31009]}");
  EXPECT_EQ(al.check_invariants(), "");
  // The task ends: its ports are free again and offered with its cpus.
  al.recover("a1", "f1", "*", task, t0() + 2s);
  offers = al.allocate(t0() + 2s);
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0].resources.to_string(), "*{cpus:2;mem:1024;ports:[31000-31002]}");
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Allocator, PortsAloneAreNotOffered) {
  Allocator al;
  al.add_agent("a1", with_ports(1, 512, RangeSet{{31000, 31009}}));
  al.add_framework("f1", {"*"});
  auto offers = al.allocate(t0());
  ASSERT_EQ(offers.size(), 1u);
  // f1 keeps every scalar and no port: the ports stay free but are not offered alone.
  Resources rest;
  rest.pool("").add_ranges("ports", RangeSet{{31000, 31009}});
  al.recover("a1", "f1", "*", rest, t0());
  al.add_framework("f2", {"*"});
  EXPECT_TRUE(al.allocate(t0() + 1s).empty());
  EXPECT_EQ(al.check_invariants(), "");
}

TEST(Allocator, RandomizedOperationsKeepTheBooksAndLeakNothing) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 20; ++round) {
    Allocator al;
    const int kAgents = 12;
    const int kFws = 5;
    std::vector<std::string> roles = {"*", "eng", "eng/web", "ops", "db"};
    for (int i = 0; i < kAgents; ++i) {
      Resources r = with_ports(1 + i % 4, 1024 * (1 + i % 3), RangeSet{{31000, 31000 + i % 7}});
      if (i % 5 == 0) r.pool("db") = Quantities{{"cpus", 1}};
      al.add_agent("a" + std::to_string(i), r);
    }
    for (int f = 0; f < kFws; ++f) {
      al.add_framework("f" + std::to_string(f), {roles[f % roles.size()], roles[(f + 2) % 5]});
    }
    al.set_role_config("ops", RoleConfig{.weight = 2, .guarantee = Quantities{{"cpus", 3}}});
    al.set_role_config("eng", RoleConfig{.limit = Quantities{{"cpus", 6}}});
    std::vector<Allocation> outstanding;
    std::vector<Allocation> tasks;  // the used part of accepted offers
    TimePoint now = t0();
    for (int step = 0; step < 300; ++step) {
      now += std::chrono::milliseconds(rng() % 3000);
      switch (rng() % 10) {
        case 8: {  // accept: a task uses one cpu and one offered port, the rest comes back
          if (outstanding.empty()) break;
          size_t i = rng() % outstanding.size();
          auto o = outstanding[i];
          outstanding.erase(outstanding.begin() + static_cast<long>(i));
          Allocation used = o;
          used.resources = Resources{};
          for (const auto& [pool, q] : o.resources.pools()) {
            Quantities take{{"cpus", std::min(1.0, q.get("cpus"))}};
            if (const RangeSet* ports = q.ranges("ports"); ports && !ports->empty()) {
              uint64_t p = ports->ranges().front().first + rng() % ports->count();
              if (ports->contains(RangeSet{{p, p}})) take.add_ranges("ports", RangeSet{{p, p}});
            }
            used.resources.pool(pool) = take;
          }
          Resources rest = o.resources;
          rest.subtract(used.resources);
          al.recover(o.agent_id, o.framework_id, o.role, rest, now, std::chrono::seconds(1));
          tasks.push_back(used);
          break;
        }
        case 9: {  // a task ends
          if (tasks.empty()) break;
          size_t i = rng() % tasks.size();
          auto t = tasks[i];
          tasks.erase(tasks.begin() + static_cast<long>(i));
          al.recover(t.agent_id, t.framework_id, t.role, t.resources, now);
          break;
        }
        case 0:
        case 1:
        case 2: {
          auto allocs = al.allocate(now);
          outstanding.insert(outstanding.end(), allocs.begin(), allocs.end());
          break;
        }
        case 3:
        case 4: {  // decline / rescind / timeout of one outstanding offer
          if (outstanding.empty()) break;
          size_t i = rng() % outstanding.size();
          auto o = outstanding[i];
          outstanding.erase(outstanding.begin() + static_cast<long>(i));
          al.recover(o.agent_id, o.framework_id, o.role, o.resources, now,
                     std::chrono::seconds(rng() % 3 == 0 ? 0 : rng() % 10));
          break;
        }
        case 5:
          al.suppress("f" + std::to_string(rng() % kFws));
          break;
        case 6:
          al.revive("f" + std::to_string(rng() % kFws));
          break;
        case 7: {
          std::string a = "a" + std::to_string(rng() % kAgents);
          al.set_agent_active(a, rng() % 4 != 0);
          break;
        }
      }
      ASSERT_EQ(al.check_invariants(), "") << "round " << round << " step " << step;
      // Outstanding offers and tasks per agent never exceed its total, and no port is
      // handed out twice.
      std::map<std::string, Resources> per_agent;
      std::map<std::string, uint64_t> ports_out;
      for (const auto* list : {&outstanding, &tasks}) {
        for (const auto& o : *list) {
          per_agent[o.agent_id].add(o.resources);
          for (const auto& [pool, q] : o.resources.pools()) {
            if (const RangeSet* p = q.ranges("ports")) ports_out[o.agent_id] += p->count();
          }
        }
      }
      for (const auto& [agent, r] : per_agent) {
        ASSERT_TRUE(al.agent_total(agent).contains(r)) << agent << " offered " << r.to_string();
        ASSERT_EQ(al.agent_allocated(agent), r) << agent;
        const RangeSet* p = r.pools().count("") ? r.pools().at("").ranges("ports") : nullptr;
        ASSERT_EQ(p ? p->count() : 0u, ports_out[agent]) << agent << ": a port given twice";
      }
    }
    for (const auto& o : outstanding)
      al.recover(o.agent_id, o.framework_id, o.role, o.resources, now);
    for (const auto& t : tasks) al.recover(t.agent_id, t.framework_id, t.role, t.resources, now);
    for (int i = 0; i < kAgents; ++i) {
      EXPECT_TRUE(al.agent_allocated("a" + std::to_string(i)).empty()) << "leaked on a" << i;
    }
    for (int f = 0; f < kFws; ++f) {
      EXPECT_TRUE(al.framework_allocated("f" + std::to_string(f)).empty());
    }
    EXPECT_EQ(al.check_invariants(), "");
  }
}

}  // namespace
}  // namespace corral::master
