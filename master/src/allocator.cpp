#include "corral/master/allocator.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <queue>
#include <sstream>

namespace corral::master {

namespace {
constexpr double kEpsilon = 1e-9;

// Interned resource names: id -> name (stable addresses) and name -> id, under one mutex. The
// usual names get the first ids, in name order.
class NameTable {
 public:
  static NameTable& instance() {
    static NameTable table;
    return table;
  }
  uint32_t id(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return id_locked(name);
  }
  // The id if the name was ever interned.
  std::optional<uint32_t> find(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ids_.find(name);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  const std::string& name(uint32_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    return *names_.at(id);
  }

 private:
  NameTable() {
    for (const char* n : {"cpus", "disk", "gpus", "mem"}) id_locked(n);
  }
  uint32_t id_locked(const std::string& name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    auto id = static_cast<uint32_t>(names_.size());
    names_.push_back(std::make_unique<std::string>(name));
    ids_.emplace(name, id);
    return id;
  }
  std::mutex mu_;
  std::vector<std::unique_ptr<std::string>> names_;
  std::unordered_map<std::string, uint32_t> ids_;
};

using Item = Quantities::Item;
inline bool item_before(const Item& item, uint32_t id) { return item.first < id; }
}  // namespace

// ---------------------------------------------------------------------------------------------
// RangeSet

RangeSet::RangeSet(std::initializer_list<Range> ranges) {
  for (const auto& [b, e] : ranges) add(b, e);
}

void RangeSet::add(uint64_t begin, uint64_t end) {
  if (begin > end) std::swap(begin, end);
  // Merge with every range that overlaps or touches [begin, end].
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), begin,
                             [](const Range& r, uint64_t b) { return r.second + 1 < b; });
  auto last = it;
  while (last != ranges_.end() && (end == UINT64_MAX || last->first <= end + 1)) {
    begin = std::min(begin, last->first);
    end = std::max(end, last->second);
    ++last;
  }
  it = ranges_.erase(it, last);
  ranges_.insert(it, {begin, end});
}

void RangeSet::add(const RangeSet& other) {
  for (const auto& [b, e] : other.ranges_) add(b, e);
}

void RangeSet::subtract(const RangeSet& other) {
  std::vector<Range> out;
  size_t j = 0;
  for (auto [b, e] : ranges_) {
    while (j < other.ranges_.size() && other.ranges_[j].second < b) ++j;
    size_t k = j;
    bool alive = true;
    while (alive && k < other.ranges_.size() && other.ranges_[k].first <= e) {
      const auto& [ob, oe] = other.ranges_[k];
      if (ob > b) out.push_back({b, ob - 1});
      if (oe >= e) {
        alive = false;
      } else {
        b = oe + 1;
        ++k;
      }
    }
    if (alive) out.push_back({b, e});
  }
  ranges_ = std::move(out);
}

bool RangeSet::contains(const RangeSet& other) const {
  for (const auto& [b, e] : other.ranges_) {
    auto it = std::upper_bound(ranges_.begin(), ranges_.end(), b,
                               [](uint64_t v, const Range& r) { return v < r.first; });
    if (it == ranges_.begin()) return false;
    --it;
    if (it->second < e) return false;
  }
  return true;
}

RangeSet RangeSet::intersect(const RangeSet& other) const {
  RangeSet out;
  size_t i = 0, j = 0;
  while (i < ranges_.size() && j < other.ranges_.size()) {
    uint64_t b = std::max(ranges_[i].first, other.ranges_[j].first);
    uint64_t e = std::min(ranges_[i].second, other.ranges_[j].second);
    if (b <= e) out.ranges_.push_back({b, e});
    if (ranges_[i].second < other.ranges_[j].second) {
      ++i;
    } else {
      ++j;
    }
  }
  return out;
}

uint64_t RangeSet::count() const {
  uint64_t n = 0;
  for (const auto& [b, e] : ranges_) n += e - b + 1;
  return n;
}

std::string RangeSet::to_string() const {
  std::string out = "[";
  for (size_t i = 0; i < ranges_.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(ranges_[i].first) + "-" + std::to_string(ranges_[i].second);
  }
  return out + "]";
}

// ---------------------------------------------------------------------------------------------
// Quantities / Resources

uint32_t resource_name_id(const std::string& name) { return NameTable::instance().id(name); }
const std::string& resource_name(uint32_t id) { return NameTable::instance().name(id); }

Quantities::Quantities(std::initializer_list<std::pair<std::string, double>> init) {
  for (const auto& [name, value] : init) set(name, value);
}

const RangeSet* Quantities::ranges(const std::string& name) const {
  for (const auto& [n, r] : ranges_) {
    if (n == name) return &r;
  }
  return nullptr;
}

void Quantities::add_ranges(const std::string& name, const RangeSet& r) {
  if (r.empty()) return;
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), name,
                             [](const auto& item, const std::string& n) { return item.first < n; });
  if (it != ranges_.end() && it->first == name) {
    it->second.add(r);
  } else {
    ranges_.insert(it, {name, r});
  }
}

Quantities Quantities::scalars() const {
  Quantities out;
  out.items_ = items_;
  return out;
}

std::vector<std::pair<std::string, double>> Quantities::items() const {
  std::vector<std::pair<std::string, double>> out;
  out.reserve(items_.size());
  for (const auto& [id, v] : items_) out.emplace_back(resource_name(id), v);
  std::sort(out.begin(), out.end());
  return out;
}

double Quantities::get(uint32_t id) const {
  for (const auto& [i, v] : items_) {
    if (i == id) return v;
    if (i > id) break;
  }
  return 0;
}

double Quantities::get(const std::string& name) const {
  if (items_.empty()) return 0;
  auto id = NameTable::instance().find(name);
  return id ? get(*id) : 0;
}

void Quantities::set(uint32_t id, double value) {
  auto it = std::lower_bound(items_.begin(), items_.end(), id, item_before);
  bool found = it != items_.end() && it->first == id;
  if (value <= kEpsilon) {
    if (found) items_.erase(it);
  } else if (found) {
    it->second = value;
  } else {
    items_.insert(it, {id, value});
  }
}

void Quantities::set(const std::string& name, double value) { set(resource_name_id(name), value); }

void Quantities::add(const Quantities& other) {
  add_scalars(other);
  for (const auto& [n, r] : other.ranges_) add_ranges(n, r);
}

void Quantities::add_scalars(const Quantities& other) {
  if (items_.empty()) {
    items_ = other.items_;  // one allocation, not one per name
    return;
  }
  // Both sorted by id: one merge walk; a new id is inserted in place (agents have a handful).
  auto it = items_.begin();
  for (const auto& [id, v] : other.items_) {
    while (it != items_.end() && it->first < id) ++it;
    if (it != items_.end() && it->first == id) {
      it->second += v;
      if (it->second <= kEpsilon) {
        it = items_.erase(it);
        continue;
      }
    } else if (v > kEpsilon) {
      it = items_.insert(it, {id, v});
    }
    ++it;
  }
}

void Quantities::subtract(const Quantities& other) {
  subtract_scalars(other);
  for (const auto& [n, r] : other.ranges_) {
    for (auto ri = ranges_.begin(); ri != ranges_.end(); ++ri) {
      if (ri->first != n) continue;
      ri->second.subtract(r);
      if (ri->second.empty()) ranges_.erase(ri);
      break;
    }
  }
}

void Quantities::subtract_scalars(const Quantities& other) {
  auto it = items_.begin();
  for (const auto& [id, v] : other.items_) {
    while (it != items_.end() && it->first < id) ++it;
    if (it == items_.end()) break;
    if (it->first != id) continue;
    double left = std::max(0.0, it->second - v);
    if (left <= kEpsilon) {
      it = items_.erase(it);
    } else {
      it->second = left;
      ++it;
    }
  }
}

bool Quantities::contains(const Quantities& other) const {
  auto it = items_.begin();
  for (const auto& [id, v] : other.items_) {
    while (it != items_.end() && it->first < id) ++it;
    double mine = it != items_.end() && it->first == id ? it->second : 0.0;
    if (mine + kEpsilon < v) return false;
  }
  for (const auto& [n, r] : other.ranges_) {
    const RangeSet* mine = ranges(n);
    if (mine == nullptr || !mine->contains(r)) return false;
  }
  return true;
}

Quantities Quantities::min(const Quantities& other) const {
  Quantities out;
  auto it = other.items_.begin();
  for (const auto& [id, v] : items_) {
    while (it != other.items_.end() && it->first < id) ++it;
    if (it == other.items_.end()) break;
    if (it->first != id) continue;
    double m = std::min(v, it->second);
    if (m > kEpsilon) out.items_.emplace_back(id, m);
  }
  for (const auto& [n, r] : ranges_) {
    if (const RangeSet* theirs = other.ranges(n)) out.add_ranges(n, r.intersect(*theirs));
  }
  return out;
}

bool Quantities::empty() const { return items_.empty() && ranges_.empty(); }

std::string Quantities::to_string() const {
  std::string out;
  char buf[64];
  for (const auto& [n, v] : items()) {
    if (!out.empty()) out += ';';
    std::snprintf(buf, sizeof buf, "%g", v);
    out += n + ":" + buf;
  }
  for (const auto& [n, r] : ranges_) {
    if (!out.empty()) out += ';';
    out += n + ":" + r.to_string();
  }
  return out;
}

bool Quantities::operator==(const Quantities& other) const {
  return contains(other) && other.contains(*this);
}

void Resources::prune() {
  for (auto it = pools_.begin(); it != pools_.end();) {
    it = it->second.empty() ? pools_.erase(it) : std::next(it);
  }
}

void Resources::add(const Resources& other) {
  for (const auto& [role, q] : other.pools_) pools_[role].add(q);
  prune();
}

void Resources::subtract(const Resources& other) {
  for (const auto& [role, q] : other.pools_) {
    auto it = pools_.find(role);
    if (it != pools_.end()) it->second.subtract(q);
  }
  prune();
}

bool Resources::contains(const Resources& other) const {
  for (const auto& [role, q] : other.pools_) {
    if (q.empty()) continue;
    auto it = pools_.find(role);
    if (it == pools_.end() || !it->second.contains(q)) return false;
  }
  return true;
}

bool Resources::empty() const {
  for (const auto& [role, q] : pools_) {
    if (!q.empty()) return false;
  }
  return true;
}

Quantities Resources::total() const {
  Quantities out;
  for (const auto& [role, q] : pools_) out.add(q);
  return out;
}

std::string Resources::to_string() const {
  std::string out;
  for (const auto& [role, q] : pools_) {
    if (q.empty()) continue;
    if (!out.empty()) out += ' ';
    out += (role.empty() ? std::string("*") : "reserved(" + role + ")") + "{" + q.to_string() + "}";
  }
  return out.empty() ? "{}" : out;
}

bool Resources::operator==(const Resources& other) const {
  return contains(other) && other.contains(*this);
}

bool valid_role(const std::string& role, std::string* why) {
  auto fail = [&](std::string msg) {
    if (why) *why = std::move(msg);
    return false;
  };
  if (role == "*") return true;
  if (role.empty()) return fail("a role must not be empty");
  if (role.size() > 256) return fail("a role is at most 256 characters");
  size_t start = 0;
  while (true) {
    size_t slash = role.find('/', start);
    std::string part =
        role.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty()) return fail("role '" + role + "' has an empty path component");
    if (part == "." || part == "..") return fail("role '" + role + "' has a '.' or '..' component");
    if (part[0] == '-') return fail("role '" + role + "' has a component starting with '-'");
    if (part == "*") return fail("'*' is only valid as a whole role, not in '" + role + "'");
    for (unsigned char c : part) {
      if (c <= 0x20 || c == 0x7f || c == '\\') {
        return fail("role '" + role + "' contains whitespace, a control character or '\\'");
      }
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Allocator internals

namespace {

// A small open-addressing hash map from a non-negative int (an agent index) to V: linear
// probing over a power-of-two table, Fibonacci hashing, tombstones. Used for the per-framework
// filters and "agents with an allocation", looked up and changed for every examined agent of a
// cycle: no node allocation per insert (std::set/unordered_map were ~20 % of a cycle).
template <typename V>
class IntMap {
 public:
  V* find(int key) {
    if (size_ == 0) return nullptr;
    for (size_t i = slot(key);; i = (i + 1) & mask()) {
      if (keys_[i] == key) return &vals_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }
  const V* find(int key) const { return const_cast<IntMap*>(this)->find(key); }
  bool contains(int key) const { return find(key) != nullptr; }
  // Inserts (key, value) unless the key is there; returns the value and whether it was new.
  std::pair<V*, bool> emplace(int key, V value) {
    if (V* v = find(key)) return {v, false};
    if ((used_ + 1) * 4 > keys_.size() * 3) grow();
    size_t i = slot(key);
    while (keys_[i] >= 0) i = (i + 1) & mask();
    if (keys_[i] == kEmpty) used_++;
    keys_[i] = key;
    vals_[i] = std::move(value);
    size_++;
    return {&vals_[i], true};
  }
  bool erase(int key) {
    if (size_ == 0) return false;
    for (size_t i = slot(key);; i = (i + 1) & mask()) {
      if (keys_[i] == key) {
        keys_[i] = kTomb;
        size_--;
        if (size_ == 0) clear();  // all tombstones: start clean
        return true;
      }
      if (keys_[i] == kEmpty) return false;
    }
  }
  void clear() {
    std::fill(keys_.begin(), keys_.end(), kEmpty);
    size_ = used_ = 0;
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  template <typename F>
  void for_each(F&& f) const {
    for (size_t i = 0; i < keys_.size(); ++i) {
      if (keys_[i] >= 0) f(keys_[i], vals_[i]);
    }
  }
  std::vector<int> keys() const {
    std::vector<int> out;
    out.reserve(size_);
    for_each([&](int k, const V&) { out.push_back(k); });
    return out;
  }

 private:
  static constexpr int kEmpty = -1;
  static constexpr int kTomb = -2;
  size_t mask() const { return keys_.size() - 1; }
  size_t slot(int key) const {
    return static_cast<size_t>(
        (static_cast<uint64_t>(static_cast<uint32_t>(key)) * 0x9E3779B97F4A7C15ull) >>
        (64 - bits_));
  }
  void grow() {
    std::vector<int> old_keys = std::move(keys_);
    std::vector<V> old_vals = std::move(vals_);
    // Double only when live entries need it; otherwise just drop the tombstones.
    size_t cap = old_keys.empty() ? 8 : old_keys.size();
    while ((size_ + 1) * 2 > cap) cap *= 2;
    bits_ = 0;
    while ((size_t{1} << bits_) < cap) bits_++;
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, V{});
    size_ = used_ = 0;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] >= 0) emplace(old_keys[i], std::move(old_vals[i]));
    }
  }
  std::vector<int> keys_;
  std::vector<V> vals_;
  size_t size_ = 0;  // live entries
  size_t used_ = 0;  // live entries and tombstones
  unsigned bits_ = 0;
};

struct RoleNode;

// An entry of a role's share order: a child role, or the role's own frameworks (node ==
// nullptr, name ""). Ordered by (key, name); the node pointer saves a lookup by name on every
// step of the walk.
// The name points at the role node's own name (or kSelfName), so moving an entry in the order
// copies no string.
const std::string kSelfName;

struct OrderEntry {
  double key;
  const std::string* name;
  RoleNode* node;
  bool operator<(const OrderEntry& o) const {
    return key < o.key || (key == o.key && *name < *o.name);
  }
};

struct AgentRec {
  std::string id;
  bool present = false;
  bool active = true;
  bool dirty = false;
  Resources total;
  Resources allocated;
  // (framework index, role) -> resources allocated to it here.
  std::map<std::pair<int, std::string>, Resources> allocs;
  int filter_count = 0;
};

struct FwRec {
  std::string id;
  bool present = false;
  bool active = true;
  std::vector<std::string> roles;
  std::set<std::string> suppressed;
  IntMap<TimePoint> filters;                  // agent index -> until
  IntMap<char> agents;                        // agents with allocations
  std::map<std::string, Quantities> by_role;  // allocated in each role
  std::map<std::string, double> share;        // cached sort key per role
};

struct RoleNode {
  std::string name;  // full path; "" for the root
  RoleNode* parent = nullptr;
  std::map<std::string, std::unique_ptr<RoleNode>> children;  // by full name
  RoleConfig config;
  Quantities alloc;       // whole subtree
  Quantities self_alloc;  // frameworks registered in exactly this role
  int fw_count = 0;       // framework memberships in the subtree
  double sort_key = 0;    // this node's key in parent->order
  double self_key = 0;    // the self group's key in this->order
  // Children (by name) and the self group ("" key) in ascending share.
  std::set<OrderEntry> order;
  // Frameworks in exactly this role, ascending share.
  std::set<std::pair<double, int>> fw_order;
  std::set<int> frameworks;
};

struct FilterExpiry {
  TimePoint until;
  int fw;
  int agent;
  bool operator>(const FilterExpiry& o) const { return until > o.until; }
};

}  // namespace

struct Allocator::Impl {
  std::vector<AgentRec> agents;
  std::unordered_map<std::string, int> agent_index;
  std::vector<FwRec> fws;
  std::unordered_map<std::string, int> fw_index;
  RoleNode root;
  std::unordered_map<std::string, RoleNode*> roles;
  std::map<std::string, RoleConfig> configs;  // configured roles (weights/quota)
  Quantities cluster;
  std::vector<double> cluster_by_id;  // cluster's scalars indexed by name id
  bool shares_stale = true;
  std::vector<int> dirty;
  bool any_dirty = false;
  int active_fw_count = 0;
  std::priority_queue<FilterExpiry, std::vector<FilterExpiry>, std::greater<>> expiries;
  AllocatorStats stats;

  // -- shares --------------------------------------------------------------------------------

  double dominant(const Quantities& q) const {
    double best = 0;
    for (const auto& [id, v] : q.id_items()) {
      double t = id < cluster_by_id.size() ? cluster_by_id[id] : 0.0;
      if (t > kEpsilon) best = std::max(best, v / t);
    }
    return best;
  }

  // After every change of `cluster`: the totals by name id, for dominant().
  void cluster_changed() {
    std::fill(cluster_by_id.begin(), cluster_by_id.end(), 0.0);
    for (const auto& [id, v] : cluster.id_items()) {
      if (id >= cluster_by_id.size()) cluster_by_id.resize(id + 1, 0.0);
      cluster_by_id[id] = v;
    }
    shares_stale = true;
  }

  RoleNode* role_node(const std::string& role) {
    auto it = roles.find(role);
    if (it != roles.end()) return it->second;
    RoleNode* parent = &root;
    size_t slash = role == "*" ? std::string::npos : role.rfind('/');
    if (slash != std::string::npos) parent = role_node(role.substr(0, slash));
    auto node = std::make_unique<RoleNode>();
    node->name = role;
    node->parent = parent;
    auto cfg = configs.find(role);
    if (cfg != configs.end()) node->config = cfg->second;
    RoleNode* raw = node.get();
    parent->children.emplace(role, std::move(node));
    roles[role] = raw;
    raw->sort_key = 0;
    parent->order.insert({0.0, &raw->name, raw});
    return raw;
  }

  double node_key(const RoleNode* n) const {
    return dominant(n->alloc) / std::max(n->config.weight, kEpsilon);
  }
  double self_key(const RoleNode* n) const {
    return dominant(n->self_alloc) / std::max(n->config.weight, kEpsilon);
  }

  // `mine` is fws[f].by_role[n->name] (the caller has it: one map lookup less).
  void reposition_fw(int f, RoleNode* n, const Quantities& mine) {
    double& share = fws[f].share[n->name];
    double old = share;
    double now = dominant(mine);
    if (old == now) return;
    // Moved by node handle: no allocation per step.
    auto node = n->fw_order.extract({old, f});
    if (node) {
      node.value() = {now, f};
      n->fw_order.insert(std::move(node));
    } else {
      n->fw_order.insert({now, f});
    }
    share = now;
  }

  void reposition_up(RoleNode* n) {
    // The self group of n, then n in its parent, and so on up.
    // Entries move by node handle (no allocation per step).
    double sk = self_key(n);
    if (sk != n->self_key) {
      auto node = n->order.extract({n->self_key, &kSelfName, nullptr});
      if (node) {
        node.value().key = sk;
        n->order.insert(std::move(node));
      }
      n->self_key = sk;
    }
    for (RoleNode* cur = n; cur->parent != nullptr; cur = cur->parent) {
      double k = node_key(cur);
      if (k == cur->sort_key) continue;
      auto node = cur->parent->order.extract({cur->sort_key, &cur->name, cur});
      if (node) {
        node.value().key = k;
        cur->parent->order.insert(std::move(node));
      } else {
        cur->parent->order.insert({k, &cur->name, cur});
      }
      cur->sort_key = k;
    }
  }

  void rebuild_shares() {
    for (auto& [name, n] : roles) {
      (void)name;
      n->order.clear();
      n->fw_order.clear();
    }
    root.order.clear();
    for (auto& [name, n] : roles) {
      n->sort_key = node_key(n);
      n->parent->order.insert({n->sort_key, &n->name, n});
      n->self_key = self_key(n);
      if (!n->frameworks.empty()) n->order.insert({n->self_key, &kSelfName, nullptr});
      for (int f : n->frameworks) {
        double s = dominant(fws[f].by_role[name]);
        fws[f].share[name] = s;
        n->fw_order.insert({s, f});
      }
    }
    shares_stale = false;
  }

  // Adds `q` (positive) or removes it (negative) from a framework's allocation in a role.
  // Only scalars are summed over agents (port 31000 on one agent and on another are two
  // resources: a union of ranges across agents would mean nothing).
  void account(int f, const std::string& role, const Quantities& q, bool add) {
    account(f, role_node(role), q, add);
  }
  void account(int f, RoleNode* n, const Quantities& q, bool add) {
    Quantities& mine = fws[f].by_role[n->name];
    if (add) {
      mine.add_scalars(q);
      n->self_alloc.add_scalars(q);
      for (RoleNode* cur = n; cur != nullptr && cur != &root; cur = cur->parent) {
        cur->alloc.add_scalars(q);
      }
    } else {
      mine.subtract_scalars(q);
      n->self_alloc.subtract_scalars(q);
      for (RoleNode* cur = n; cur != nullptr && cur != &root; cur = cur->parent) {
        cur->alloc.subtract_scalars(q);
      }
    }
    if (!shares_stale) {
      if (n->frameworks.count(f)) reposition_fw(f, n, mine);
      reposition_up(n);
    }
  }
  // The same for all pools of `r` (no summed copy when there is one pool, the usual case).
  void account(int f, RoleNode* n, const Resources& r, bool add) {
    if (r.pools().size() == 1) return account(f, n, r.pools().begin()->second, add);
    account(f, n, r.total(), add);
  }

  void join_role(int f, const std::string& role) {
    RoleNode* n = role_node(role);
    if (!n->frameworks.insert(f).second) return;
    if (n->frameworks.size() == 1 && !shares_stale)
      n->order.insert({n->self_key, &kSelfName, nullptr});
    double s = dominant(fws[f].by_role[role]);
    fws[f].share[role] = s;
    if (!shares_stale) n->fw_order.insert({s, f});
    for (RoleNode* cur = n; cur != nullptr; cur = cur->parent) cur->fw_count++;
  }

  void leave_role(int f, const std::string& role) {
    RoleNode* n = role_node(role);
    if (!n->frameworks.erase(f)) return;
    n->fw_order.erase({fws[f].share[role], f});
    if (n->frameworks.empty()) n->order.erase({n->self_key, &kSelfName, nullptr});
    for (RoleNode* cur = n; cur != nullptr; cur = cur->parent) cur->fw_count--;
  }

  // -- dirtiness -------------------------------------------------------------------------------

  // Free scalars (free ranges alone, such as ports, are not worth an offer).
  // No copies: this runs for every agent of a cycle.
  bool has_free(const AgentRec& a) const {
    for (const auto& [pool, q] : a.total.pools()) {
      auto it = a.allocated.pools().find(pool);
      for (const auto& [id, v] : q.id_items()) {
        double used = it == a.allocated.pools().end() ? 0.0 : it->second.get(id);
        if (v - used > kEpsilon) return true;
      }
    }
    return false;
  }

  void mark_dirty(int a) {
    AgentRec& rec = agents[a];
    if (!rec.present || rec.dirty) return;
    rec.dirty = true;
    dirty.push_back(a);
    any_dirty = true;
  }

  void mark_all_dirty() {
    for (size_t i = 0; i < agents.size(); ++i) {
      if (agents[i].present && agents[i].active && has_free(agents[i])) {
        mark_dirty(static_cast<int>(i));
      }
    }
  }

  void clear_filters(int f) {
    FwRec& fw = fws[f];
    fw.filters.for_each([&](int a, const TimePoint&) {
      agents[a].filter_count--;
      mark_dirty(a);
    });
    fw.filters.clear();
  }

  // -- allocation ------------------------------------------------------------------------------

  // What `role` may be offered on agent `a` right now: free unreserved resources (clamped by
  // the quota limits of the role and its ancestors) and free resources reserved for the role or
  // an ancestor.
  Resources offerable(const AgentRec& a, const RoleNode* role) const {
    Resources out;
    for (const auto& [pool, q] : a.total.pools()) {
      bool usable = pool.empty();
      for (const RoleNode* cur = role; !usable && cur != nullptr && cur != &root;
           cur = cur->parent) {
        usable = cur->name == pool;
      }
      if (!usable) continue;
      Quantities free = q;
      auto it = a.allocated.pools().find(pool);
      if (it != a.allocated.pools().end()) free.subtract(it->second);
      if (pool.empty()) {
        for (const RoleNode* cur = role; cur != nullptr && cur != &root; cur = cur->parent) {
          if (!cur->config.limit) continue;
          Quantities headroom = *cur->config.limit;
          headroom.subtract(cur->alloc);
          // Names the limit does not mention are unlimited (ranges are never limited).
          Quantities clamped;
          for (const auto& [id, v] : free.id_items()) {
            bool limited = false;
            for (const auto& [lid, lv] : cur->config.limit->id_items()) limited |= lid == id;
            clamped.set(id, limited ? std::min(v, headroom.get(id)) : v);
          }
          for (const auto& [n, r] : free.range_items()) clamped.add_ranges(n, r);
          free = clamped;
        }
      }
      if (!free.empty()) out.pool(pool) = std::move(free);
    }
    // Ranges alone (ports with no cpus or mem) are not offered.
    bool any_scalar = false;
    for (const auto& [pool, q] : out.pools()) any_scalar |= q.has_scalars();
    if (!any_scalar) return Resources{};
    return out;
  }

  bool eligible(int f, const std::string& role, int a, TimePoint now) const {
    const FwRec& fw = fws[f];
    if (!fw.active || fw.suppressed.count(role)) return false;
    const TimePoint* until = fw.filters.find(a);
    return until == nullptr || *until <= now;
  }

  // Walks `n`'s subtree in share order; returns the first (framework, role node) that may
  // receive something from agent `a`.
  std::pair<int, RoleNode*> pick(RoleNode* n, int a, TimePoint now, Resources* offer) {
    for (const auto& entry : n->order) {
      if (entry.node == nullptr) {
        // The role's own frameworks: the first eligible one gets what the role may be offered
        // (computed only once one is found: with declining frameworks most roles have none).
        for (const auto& [share, f] : n->fw_order) {
          (void)share;
          if (!eligible(f, n->name, a, now)) continue;
          Resources r = offerable(agents[a], n);
          if (r.empty()) break;  // the same for every framework of the role
          *offer = std::move(r);
          return {f, n};
        }
        continue;
      }
      RoleNode* c = entry.node;
      if (c->fw_count == 0) continue;
      auto found = pick(c, a, now, offer);
      if (found.first >= 0) return found;
    }
    return {-1, nullptr};
  }

  void give(int a, int f, RoleNode* role, Resources&& r, std::vector<Allocation>* out) {
    AgentRec& agent = agents[a];
    agent.allocated.add(r);
    agent.allocs[{f, role->name}].add(r);
    fws[f].agents.emplace(a, 1);
    account(f, role, r, true);
    out->push_back(Allocation{agent.id, fws[f].id, role->name, std::move(r)});
    stats.allocations++;
  }

  void expire_filters(TimePoint now) {
    while (!expiries.empty() && expiries.top().until <= now) {
      FilterExpiry e = expiries.top();
      expiries.pop();
      if (!fws[e.fw].present) continue;
      const TimePoint* until = fws[e.fw].filters.find(e.agent);
      if (until == nullptr || *until != e.until) continue;
      fws[e.fw].filters.erase(e.agent);
      agents[e.agent].filter_count--;
      mark_dirty(e.agent);
    }
  }

  bool move_between_pools(const std::string& agent_id, const std::string& from_pool,
                          const std::string& to_pool, const Quantities& amount,
                          const std::string& framework_id);

  std::vector<Allocation> allocate(TimePoint now) {
    std::vector<Allocation> out;
    stats.cycles++;
    expire_filters(now);
    if (shares_stale) rebuild_shares();
    if (!any_dirty) return out;
    std::vector<int> examine;
    examine.swap(dirty);
    any_dirty = false;
    out.reserve(examine.size());
    for (int a : examine) agents[a].dirty = false;

    // Roles with an unsatisfied guarantee go first (quota pass), then everyone (fair pass).
    std::vector<RoleNode*> quota_roles;
    for (auto& [name, n] : roles) {
      (void)name;
      if (!n->config.guarantee.empty() && n->fw_count > 0 &&
          !n->alloc.contains(n->config.guarantee)) {
        quota_roles.push_back(n);
      }
    }
    for (int a : examine) {
      AgentRec& agent = agents[a];
      if (!agent.present || !agent.active) continue;
      stats.agents_examined++;
      if (active_fw_count > 0 && agent.filter_count >= active_fw_count) continue;
      if (!quota_roles.empty()) {
        std::sort(quota_roles.begin(), quota_roles.end(),
                  [](const RoleNode* x, const RoleNode* y) { return x->sort_key < y->sort_key; });
        for (RoleNode* q : quota_roles) {
          if (q->alloc.contains(q->config.guarantee)) continue;
          Resources offer;
          auto [f, role] = pick(q, a, now, &offer);
          if (f >= 0) {
            give(a, f, role, std::move(offer), &out);
            break;
          }
        }
      }
      // Whatever is left on the agent goes to the lowest share (another framework, or the
      // same one in another role, may still take the reserved part).
      for (int round = 0; round < 4; ++round) {
        Resources offer;
        auto [f, role] = pick(&root, a, now, &offer);
        if (f < 0) break;
        give(a, f, role, std::move(offer), &out);
        if (!has_free(agent)) break;
      }
    }
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// Allocator

Allocator::Allocator() : impl_(std::make_unique<Impl>()) {}
Allocator::~Allocator() = default;

void Allocator::add_agent(const std::string& agent_id, const Resources& total) {
  auto& m = *impl_;
  if (m.agent_index.count(agent_id)) {
    update_agent_total(agent_id, total);
    return;
  }
  int a = static_cast<int>(m.agents.size());
  m.agents.emplace_back();
  AgentRec& rec = m.agents.back();
  rec.id = agent_id;
  rec.present = true;
  rec.total = total;
  m.agent_index[agent_id] = a;
  m.cluster.add(total.total().scalars());
  m.cluster_changed();
  m.mark_dirty(a);
}

void Allocator::remove_agent(const std::string& agent_id) {
  auto& m = *impl_;
  auto it = m.agent_index.find(agent_id);
  if (it == m.agent_index.end()) return;
  int a = it->second;
  AgentRec& rec = m.agents[a];
  for (const auto& [key, r] : rec.allocs) {
    m.account(key.first, key.second, r.total(), false);
    m.fws[key.first].agents.erase(a);
  }
  for (auto& fw : m.fws) {
    if (fw.filters.erase(a)) rec.filter_count--;
  }
  m.cluster.subtract(rec.total.total().scalars());
  rec = AgentRec{};
  m.agent_index.erase(it);
  m.cluster_changed();
}

void Allocator::update_agent_total(const std::string& agent_id, const Resources& total) {
  auto& m = *impl_;
  auto it = m.agent_index.find(agent_id);
  if (it == m.agent_index.end()) return add_agent(agent_id, total);
  AgentRec& rec = m.agents[it->second];
  m.cluster.subtract(rec.total.total().scalars());
  rec.total = total;
  // Never below what is allocated: keep the allocation accounted until recovered.
  for (const auto& [pool, q] : rec.allocated.pools()) {
    Quantities& t = rec.total.pool(pool);
    for (const auto& [n, v] : q.items()) t.set(n, std::max(t.get(n), v));
    for (const auto& [n, r] : q.range_items()) t.add_ranges(n, r);
  }
  m.cluster.add(rec.total.total().scalars());
  m.cluster_changed();
  m.mark_dirty(it->second);
}

void Allocator::set_agent_active(const std::string& agent_id, bool active) {
  auto& m = *impl_;
  auto it = m.agent_index.find(agent_id);
  if (it == m.agent_index.end()) return;
  m.agents[it->second].active = active;
  if (active) m.mark_dirty(it->second);
}

bool Allocator::has_agent(const std::string& agent_id) const {
  return impl_->agent_index.count(agent_id) > 0;
}

void Allocator::add_framework(const std::string& framework_id,
                              const std::vector<std::string>& roles, bool active) {
  auto& m = *impl_;
  if (m.fw_index.count(framework_id)) {
    update_framework_roles(framework_id, roles);
    set_framework_active(framework_id, active);
    return;
  }
  int f = static_cast<int>(m.fws.size());
  m.fws.emplace_back();
  FwRec& fw = m.fws.back();
  fw.id = framework_id;
  fw.present = true;
  fw.active = active;
  fw.roles = roles;
  m.fw_index[framework_id] = f;
  for (const auto& r : roles) m.join_role(f, r);
  if (active) m.active_fw_count++;
  m.mark_all_dirty();
}

void Allocator::remove_framework(const std::string& framework_id) {
  auto& m = *impl_;
  auto it = m.fw_index.find(framework_id);
  if (it == m.fw_index.end()) return;
  int f = it->second;
  FwRec& fw = m.fws[f];
  m.clear_filters(f);
  for (int a : fw.agents.keys()) {
    AgentRec& agent = m.agents[a];
    for (auto ai = agent.allocs.begin(); ai != agent.allocs.end();) {
      if (ai->first.first != f) {
        ++ai;
        continue;
      }
      agent.allocated.subtract(ai->second);
      m.account(f, ai->first.second, ai->second.total(), false);
      ai = agent.allocs.erase(ai);
    }
    m.mark_dirty(a);
  }
  for (const auto& r : fw.roles) m.leave_role(f, r);
  if (fw.active) m.active_fw_count--;
  fw = FwRec{};
  m.fw_index.erase(it);
}

void Allocator::update_framework_roles(const std::string& framework_id,
                                       const std::vector<std::string>& roles) {
  auto& m = *impl_;
  auto it = m.fw_index.find(framework_id);
  if (it == m.fw_index.end()) return;
  int f = it->second;
  for (const auto& r : m.fws[f].roles) {
    if (std::find(roles.begin(), roles.end(), r) == roles.end()) m.leave_role(f, r);
  }
  for (const auto& r : roles) m.join_role(f, r);
  m.fws[f].roles = roles;
  m.mark_all_dirty();
}

void Allocator::set_framework_active(const std::string& framework_id, bool active) {
  auto& m = *impl_;
  auto it = m.fw_index.find(framework_id);
  if (it == m.fw_index.end()) return;
  FwRec& fw = m.fws[it->second];
  if (fw.active == active) return;
  fw.active = active;
  if (active) {
    m.active_fw_count++;
    m.mark_all_dirty();
  } else {
    m.active_fw_count--;
    m.clear_filters(it->second);
  }
}

bool Allocator::has_framework(const std::string& framework_id) const {
  return impl_->fw_index.count(framework_id) > 0;
}

void Allocator::suppress(const std::string& framework_id, const std::vector<std::string>& roles) {
  auto& m = *impl_;
  auto it = m.fw_index.find(framework_id);
  if (it == m.fw_index.end()) return;
  FwRec& fw = m.fws[it->second];
  for (const auto& r : roles.empty() ? fw.roles : roles) fw.suppressed.insert(r);
}

void Allocator::revive(const std::string& framework_id, const std::vector<std::string>& roles) {
  auto& m = *impl_;
  auto it = m.fw_index.find(framework_id);
  if (it == m.fw_index.end()) return;
  FwRec& fw = m.fws[it->second];
  for (const auto& r : roles.empty() ? fw.roles : roles) fw.suppressed.erase(r);
  m.clear_filters(it->second);
  m.mark_all_dirty();
}

void Allocator::track_used(const std::string& agent_id, const std::string& framework_id,
                           const std::string& role, const Resources& resources) {
  auto& m = *impl_;
  auto ai = m.agent_index.find(agent_id);
  auto fi = m.fw_index.find(framework_id);
  if (ai == m.agent_index.end() || fi == m.fw_index.end()) return;
  AgentRec& agent = m.agents[ai->second];
  agent.allocated.add(resources);
  // Keep the total at least what is used (a task found on an agent is real).
  for (const auto& [pool, q] : agent.allocated.pools()) {
    Quantities& t = agent.total.pool(pool);
    for (const auto& [n, v] : q.items()) {
      if (t.get(n) < v) {
        m.cluster.add(Quantities{{n, v - t.get(n)}});
        t.set(n, v);
        m.cluster_changed();
      }
    }
    for (const auto& [n, r] : q.range_items()) {
      RangeSet missing = r;
      if (const RangeSet* have = t.ranges(n)) missing.subtract(*have);
      if (!missing.empty()) t.add_ranges(n, missing);
    }
  }
  agent.allocs[{fi->second, role}].add(resources);
  m.fws[fi->second].agents.emplace(ai->second, 1);
  m.account(fi->second, role, resources.total(), true);
}

void Allocator::recover(const std::string& agent_id, const std::string& framework_id,
                        const std::string& role, const Resources& resources, TimePoint now,
                        std::chrono::duration<double> refuse) {
  auto& m = *impl_;
  auto ai = m.agent_index.find(agent_id);
  auto fi = m.fw_index.find(framework_id);
  if (ai == m.agent_index.end() || fi == m.fw_index.end()) return;
  int a = ai->second;
  int f = fi->second;
  AgentRec& agent = m.agents[a];
  auto key = std::make_pair(f, role);
  auto alloc = agent.allocs.find(key);
  if (alloc == agent.allocs.end()) return;
  // Never recover more than was allocated to this framework here.
  Resources taken;
  for (const auto& [pool, q] : resources.pools()) {
    auto have = alloc->second.pools().find(pool);
    if (have == alloc->second.pools().end()) continue;
    taken.pool(pool) = q.min(have->second);
  }
  alloc->second.subtract(taken);
  if (alloc->second.empty()) agent.allocs.erase(alloc);
  bool still_here = false;
  for (const auto& [k, r] : agent.allocs) still_here |= k.first == f;
  if (!still_here) m.fws[f].agents.erase(a);
  agent.allocated.subtract(taken);
  m.account(f, role, taken.total(), false);
  if (refuse.count() > 0 && m.fws[f].active) {
    auto until = now + std::chrono::duration_cast<AllocatorClock::duration>(refuse);
    auto [it, inserted] = m.fws[f].filters.emplace(a, until);
    if (inserted) {
      agent.filter_count++;
    } else {
      *it = std::max(*it, until);
    }
    m.expiries.push({*it, f, a});
  }
  m.mark_dirty(a);
}

// RESERVE moves resources from the unreserved pool to the role's, UNRESERVE back: both on the
// agent's total and, with a framework, on what is allocated to it (ACCEPT with the operation)
// or, without, out of the free part (the operator's calls).
bool Allocator::Impl::move_between_pools(const std::string& agent_id, const std::string& from_pool,
                                         const std::string& to_pool, const Quantities& amount,
                                         const std::string& framework_id) {
  auto ai = agent_index.find(agent_id);
  if (ai == agent_index.end()) return false;
  AgentRec& agent = agents[ai->second];
  Resources from;
  from.pool(from_pool) = amount;
  if (framework_id.empty()) {
    Resources free = agent.total;
    free.subtract(agent.allocated);
    if (!free.contains(from)) return false;
  } else {
    auto fi = fw_index.find(framework_id);
    if (fi == fw_index.end()) return false;
    bool moved = false;
    for (auto& [key, r] : agent.allocs) {
      if (key.first != fi->second || !r.contains(from)) continue;
      r.subtract(from);
      r.pool(to_pool).add(amount);
      agent.allocated.subtract(from);
      agent.allocated.pool(to_pool).add(amount);
      moved = true;
      break;
    }
    if (!moved) return false;
  }
  agent.total.subtract(from);
  agent.total.pool(to_pool).add(amount);
  mark_dirty(ai->second);
  return true;
}

bool Allocator::reserve(const std::string& agent_id, const std::string& role,
                        const Quantities& amount, const std::string& framework_id) {
  return !role.empty() && impl_->move_between_pools(agent_id, "", role, amount, framework_id);
}

bool Allocator::unreserve(const std::string& agent_id, const std::string& role,
                          const Quantities& amount, const std::string& framework_id) {
  return !role.empty() && impl_->move_between_pools(agent_id, role, "", amount, framework_id);
}

void Allocator::set_role_config(const std::string& role, const RoleConfig& config) {
  auto& m = *impl_;
  m.configs[role] = config;
  m.role_node(role)->config = config;
  m.shares_stale = true;
  m.mark_all_dirty();
}

RoleConfig Allocator::role_config(const std::string& role) const {
  auto it = impl_->configs.find(role);
  return it == impl_->configs.end() ? RoleConfig{} : it->second;
}

std::vector<Allocation> Allocator::allocate(TimePoint now) { return impl_->allocate(now); }

void Allocator::mark_all_dirty() { impl_->mark_all_dirty(); }

bool Allocator::has_pending_work() const { return impl_->any_dirty; }

Resources Allocator::agent_total(const std::string& agent_id) const {
  auto it = impl_->agent_index.find(agent_id);
  return it == impl_->agent_index.end() ? Resources{} : impl_->agents[it->second].total;
}

Resources Allocator::agent_allocated(const std::string& agent_id) const {
  auto it = impl_->agent_index.find(agent_id);
  return it == impl_->agent_index.end() ? Resources{} : impl_->agents[it->second].allocated;
}

Resources Allocator::framework_allocated(const std::string& framework_id) const {
  Resources out;
  auto it = impl_->fw_index.find(framework_id);
  if (it == impl_->fw_index.end()) return out;
  for (int a : impl_->fws[it->second].agents.keys()) {
    for (const auto& [key, r] : impl_->agents[a].allocs) {
      if (key.first != it->second) continue;
      for (const auto& [pool, q] : r.pools()) out.pool(pool).add(q.scalars());  // see account()
    }
  }
  return out;
}

Quantities Allocator::role_allocated(const std::string& role) const {
  auto it = impl_->roles.find(role);
  return it == impl_->roles.end() ? Quantities{} : it->second->alloc;
}

Quantities Allocator::cluster_total() const { return impl_->cluster; }

double Allocator::role_share(const std::string& role) const {
  auto it = impl_->roles.find(role);
  return it == impl_->roles.end() ? 0.0 : impl_->node_key(it->second);
}

std::vector<std::string> Allocator::known_roles() const {
  std::vector<std::string> out;
  for (const auto& [name, n] : impl_->roles) {
    (void)n;
    out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

AllocatorStats Allocator::stats() const {
  AllocatorStats s = impl_->stats;
  s.filters_active = 0;
  for (const auto& fw : impl_->fws) s.filters_active += fw.filters.size();
  return s;
}

std::string Allocator::check_invariants() const {
  const auto& m = *impl_;
  std::map<int, std::map<std::string, Quantities>> fw_sums;
  for (const auto& agent : m.agents) {
    if (!agent.present) continue;
    if (!agent.total.contains(agent.allocated)) {
      return "agent " + agent.id + ": allocated " + agent.allocated.to_string() +
             " exceeds total " + agent.total.to_string();
    }
    Resources sum;
    for (const auto& [key, r] : agent.allocs) {
      sum.add(r);
      fw_sums[key.first][key.second].add(r.total().scalars());
      if (!m.fws[key.first].present)
        return "agent " + agent.id + ": allocation to a removed framework";
    }
    if (!(sum == agent.allocated)) {
      return "agent " + agent.id + ": allocated " + agent.allocated.to_string() +
             " but frameworks hold " + sum.to_string();
    }
  }
  std::map<std::string, Quantities> role_sums;
  for (size_t f = 0; f < m.fws.size(); ++f) {
    const FwRec& fw = m.fws[f];
    if (!fw.present) continue;
    for (const auto& [role, q] : fw.by_role) {
      if (!(q == fw_sums[static_cast<int>(f)][role])) {
        return "framework " + fw.id + " role " + role + ": accounted " + q.to_string() +
               " but agents hold " + fw_sums[static_cast<int>(f)][role].to_string();
      }
      for (const RoleNode* n = m.roles.at(role); n != nullptr && n != &m.root; n = n->parent) {
        role_sums[n->name].add(q);
      }
    }
  }
  for (const auto& [name, n] : m.roles) {
    if (!(n->alloc == role_sums[name])) {
      return "role " + name + ": accounted " + n->alloc.to_string() + " but frameworks hold " +
             role_sums[name].to_string();
    }
  }
  return "";
}

}  // namespace corral::master
