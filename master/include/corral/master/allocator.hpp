#pragma once
// The master's allocator: Dominant Resource Fairness over a hierarchy of roles ("eng/web" is a
// child of "eng"), with role weights, quota (guarantee and limit), static and dynamic
// reservations, per-agent filters from DECLINE (refuse_seconds), SUPPRESS/REVIVE per role, and
// incremental allocation cycles.
//
// It is pure logic with no I/O and no clock of its own: every call that depends on time takes
// `now`. The master owns one on its event loop (not thread-safe) and turns each Allocation into
// an offer; everything allocated stays allocated (offered or used by tasks) until the master
// gives it back with recover().
//
// Resources are scalar quantities by name (cpus, mem, disk, gpus, ...) and ranges by name
// (ports: [31000-32000]) in pools: the unreserved pool ("") and one pool per reservation role.
// Ranges are offered, allocated and recovered like scalars, port by port; they count for
// nothing in the dominant share (as in Mesos), and ranges alone are never offered. A role may use
// the unreserved pool and the pools reserved for itself or any of its ancestors.
//
// Incremental: a cycle re-examines only agents marked dirty since the last one (resources
// recovered or added, a filter expired, a reservation changed). Events that can change who
// gets what everywhere (a framework added, activated or revived, a weight or quota change)
// mark every agent that has free resources, which in a busy cluster are few.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corral::master {

using AllocatorClock = std::chrono::steady_clock;
using TimePoint = AllocatorClock::time_point;

// Sorted, disjoint, non-adjacent inclusive intervals of integers ([31000-31005, 31010-31010]).
class RangeSet {
 public:
  using Range = std::pair<uint64_t, uint64_t>;  // [first, second], first <= second
  RangeSet() = default;
  RangeSet(std::initializer_list<Range> ranges);
  void add(uint64_t begin, uint64_t end);
  void add(const RangeSet& other);
  void subtract(const RangeSet& other);
  bool contains(const RangeSet& other) const;
  RangeSet intersect(const RangeSet& other) const;
  bool empty() const { return ranges_.empty(); }
  uint64_t count() const;  // how many integers
  const std::vector<Range>& ranges() const { return ranges_; }
  std::string to_string() const;  // "[31000-31005, 31010-31010]"
  bool operator==(const RangeSet& other) const { return ranges_ == other.ranges_; }

 private:
  std::vector<Range> ranges_;
};

// Scalar quantities and range sets by resource name. Scalar names are interned process-wide
// (resource_name_id(): "cpus" -> a small integer), so a quantity is an (id, value) pair in a
// small vector sorted by id and the allocator's hot path compares integers, not strings.
// Agents have a handful of names; ranges (ports) are rare and kept by name.
class Quantities {
 public:
  using Item = std::pair<uint32_t, double>;  // (interned name id, value > 0)

  Quantities() = default;
  Quantities(std::initializer_list<std::pair<std::string, double>> init);

  double get(const std::string& name) const;
  void set(const std::string& name, double value);
  // The same by interned id (no lock, no string compare).
  double get(uint32_t id) const;
  void set(uint32_t id, double value);
  void add(const Quantities& other);
  // Subtracts, clamping at zero (callers check contains() first where it matters).
  void subtract(const Quantities& other);
  // The same, scalars only (ranges of `other` ignored).
  void add_scalars(const Quantities& other);
  void subtract_scalars(const Quantities& other);
  bool contains(const Quantities& other) const;
  // Element-wise minimum (names missing on either side are dropped); ranges intersected.
  Quantities min(const Quantities& other) const;
  bool empty() const;  // no positive quantity and no range
  bool has_scalars() const { return !items_.empty(); }
  // Scalars only (what shares, quota and the scalar views are made of), by name, sorted by
  // name: a copy, for the API and tests.
  std::vector<std::pair<std::string, double>> items() const;
  // Scalars by interned id, sorted by id: no copy (the allocator's hot path).
  const std::vector<Item>& id_items() const { return items_; }
  // Ranges by name.
  const RangeSet* ranges(const std::string& name) const;
  void add_ranges(const std::string& name, const RangeSet& r);
  const std::vector<std::pair<std::string, RangeSet>>& range_items() const { return ranges_; }
  bool has_ranges() const { return !ranges_.empty(); }
  // Only the scalars / only the ranges.
  Quantities scalars() const;
  std::string to_string() const;  // "cpus:2;mem:1024;ports:[31000-31005]"
  bool operator==(const Quantities& other) const;

 private:
  std::vector<Item> items_;                               // sorted by id, all > 0
  std::vector<std::pair<std::string, RangeSet>> ranges_;  // sorted by name, none empty
};

// The interned id of a resource name (registers it on first use; ids are never reused) and
// back. Thread-safe; names are few (cpus, mem, disk, gpus and whatever agents declare).
uint32_t resource_name_id(const std::string& name);
const std::string& resource_name(uint32_t id);

// Quantities by pool: "" is unreserved, otherwise the reservation's role.
class Resources {
 public:
  Resources() = default;
  Resources(Quantities unreserved) { pools_.emplace("", std::move(unreserved)); }
  Quantities& pool(const std::string& role) { return pools_[role]; }
  const std::map<std::string, Quantities>& pools() const { return pools_; }
  void add(const Resources& other);
  void subtract(const Resources& other);
  bool contains(const Resources& other) const;
  bool empty() const;
  // All pools summed.
  Quantities total() const;
  std::string to_string() const;
  bool operator==(const Resources& other) const;

 private:
  void prune();
  std::map<std::string, Quantities> pools_;
};

struct Allocation {
  std::string agent_id;
  std::string framework_id;
  std::string role;  // the role the framework receives it in
  Resources resources;
};

struct RoleConfig {
  double weight = 1.0;
  Quantities guarantee;             // quota guarantee
  std::optional<Quantities> limit;  // quota limit (absent: unlimited)
};

struct AllocatorStats {
  uint64_t cycles = 0;
  uint64_t agents_examined = 0;  // over all cycles
  uint64_t allocations = 0;
  uint64_t filters_active = 0;
};

class Allocator {
 public:
  Allocator();
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Agents. `used` is what tasks already use (e.g. on re-registration), by framework and role.
  void add_agent(const std::string& agent_id, const Resources& total);
  void remove_agent(const std::string& agent_id);  // its allocations vanish with it
  // New total; allocations stay (an agent's total never drops below what is allocated here:
  // the difference is kept allocated until recovered).
  void update_agent_total(const std::string& agent_id, const Resources& total);
  // An inactive agent (disconnected, unreachable, draining) is offered nothing.
  void set_agent_active(const std::string& agent_id, bool active);
  bool has_agent(const std::string& agent_id) const;

  // Frameworks and their roles ("*" is a role like any other).
  void add_framework(const std::string& framework_id, const std::vector<std::string>& roles,
                     bool active = true);
  // Recovers everything allocated to it.
  void remove_framework(const std::string& framework_id);
  void update_framework_roles(const std::string& framework_id,
                              const std::vector<std::string>& roles);
  void set_framework_active(const std::string& framework_id, bool active);
  bool has_framework(const std::string& framework_id) const;
  // Empty `roles` means all of the framework's roles. REVIVE also clears its filters.
  void suppress(const std::string& framework_id, const std::vector<std::string>& roles = {});
  void revive(const std::string& framework_id, const std::vector<std::string>& roles = {});

  // Marks resources as allocated outside a cycle (tasks found on a re-registering agent).
  void track_used(const std::string& agent_id, const std::string& framework_id,
                  const std::string& role, const Resources& resources);
  // Gives back resources that were allocated to the framework on the agent (a declined or
  // rescinded offer, the unused part of an accepted one, a finished task). With
  // `refuse` > 0 the framework is not offered that agent's resources again until now+refuse.
  void recover(const std::string& agent_id, const std::string& framework_id,
               const std::string& role, const Resources& resources, TimePoint now,
               std::chrono::duration<double> refuse = {});

  // Reserves unreserved resources of the agent for `role`. If `framework_id` is set, the
  // resources are taken from what is allocated to that framework (ACCEPT with RESERVE) and stay
  // allocated to it; otherwise they must be free (operator RESERVE_RESOURCES). False if the
  // resources are not there.
  bool reserve(const std::string& agent_id, const std::string& role, const Quantities& amount,
               const std::string& framework_id = {});
  bool unreserve(const std::string& agent_id, const std::string& role, const Quantities& amount,
                 const std::string& framework_id = {});

  void set_role_config(const std::string& role, const RoleConfig& config);
  RoleConfig role_config(const std::string& role) const;

  // One allocation cycle: re-examines dirty agents (and filter expiries up to `now`), returns
  // what to offer. Each agent goes whole (all it has free that the role may use) to the
  // framework with the lowest weighted dominant share, walking the role tree.
  std::vector<Allocation> allocate(TimePoint now);
  // Marks every agent dirty (the next allocate() examines all of them).
  void mark_all_dirty();
  // True when something is dirty (the master then runs a cycle early).
  bool has_pending_work() const;

  // Introspection (operator API, tests, invariants).
  Resources agent_total(const std::string& agent_id) const;
  Resources agent_allocated(const std::string& agent_id) const;
  Resources framework_allocated(const std::string& framework_id) const;
  // Allocated to the role's subtree, all agents, all pools.
  Quantities role_allocated(const std::string& role) const;
  Quantities cluster_total() const;
  // The role's weighted dominant share (0..1 / weight).
  double role_share(const std::string& role) const;
  std::vector<std::string> known_roles() const;
  AllocatorStats stats() const;
  // Checks the bookkeeping: per agent allocated <= total and equal to the sum of framework
  // allocations; role sums equal framework sums. Empty string when consistent, else what broke.
  std::string check_invariants() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "eng/web" -> {"eng", "eng/web"}. Validates like Mesos: non-empty components, no ".", "..",
// leading '-', whitespace or control characters; "*" alone is allowed.
bool valid_role(const std::string& role, std::string* why = nullptr);

}  // namespace corral::master
