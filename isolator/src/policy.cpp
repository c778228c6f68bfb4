#include "corral/isolator/policy.hpp"

#include <fnmatch.h>
#include <pwd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <regex>
#include <set>

#include "corral/common/config.hpp"
#include "corral/isolator/capabilities.hpp"
#include "corral/isolator/sandbox_spec.hpp"

namespace corral::isolator {
namespace {

constexpr const char* kBuiltin = "built-in default";

// ---------------------------------------------------------------- reading files

template <typename T>
void set_rule(std::optional<Rule<T>>* slot, T value, std::string origin) {
  *slot = Rule<T>{std::move(value), std::move(origin)};
}

void read_limits(ConfigTable t, LimitRules* out) {
  double cpus = 0;
  if (t.get("cpus", &cpus)) {
    if (cpus < 0.001 || cpus > 4096)
      t.fail("cpus", "must be between 0.001 and 4096 CPUs");
    else
      set_rule(&out->cpus, cpus, t.location("cpus"));
  }
  auto bytes = [&](const char* key, std::optional<Rule<uint64_t>>* slot, uint64_t min) {
    uint64_t v = 0;
    if (!t.get_bytes(key, &v)) return;
    if (v < min)
      t.fail(key, "must be at least " + format_bytes(min));
    else
      set_rule(slot, v, t.location(key));
  };
  bytes("memory", &out->memory, 4096);
  bytes("memory_swap", &out->memory_swap, 0);
  auto integer = [&](const char* key, std::optional<Rule<uint64_t>>* slot, int64_t min,
                     int64_t max) {
    int64_t v = 0;
    if (t.get_int(key, &v, min, max)) set_rule(slot, static_cast<uint64_t>(v), t.location(key));
  };
  integer("pids", &out->pids, 1, 4194304);
  integer("cpu_weight", &out->cpu_weight, 1, 10000);
  integer("io_weight", &out->io_weight, 1, 10000);
}

// Parses "1000" or "1000-1999" into [lo, hi]; false for anything else (no exceptions).
bool parse_uid_range(const std::string& text, uint64_t* lo, uint64_t* hi) {
  const char* end = text.data() + text.size();
  auto first = std::from_chars(text.data(), end, *lo);
  if (first.ec != std::errc() || *lo > UINT32_MAX) return false;
  if (first.ptr == end) {
    *hi = *lo;
    return true;
  }
  if (*first.ptr != '-') return false;
  auto second = std::from_chars(first.ptr + 1, end, *hi);
  return second.ec == std::errc() && second.ptr == end && *hi <= UINT32_MAX && *lo <= *hi;
}

bool valid_user_entry(const std::string& u) {
  static const std::regex kName("^[a-z_][a-z0-9_-]*[$]?$");
  static const std::regex kRange("^[0-9]+(-[0-9]+)?$");
  return std::regex_match(u, kName) || std::regex_match(u, kRange);
}

void read_capabilities(ConfigTable& t, const char* key,
                       std::optional<Rule<std::vector<std::string>>>* slot) {
  std::vector<std::string> caps;
  if (!t.get(key, &caps)) return;
  for (auto& c : caps) {
    auto index = capability_from_name(c);
    if (!index) {
      t.fail(key, "unknown capability \"" + c + "\" (see capabilities(7) for the names)");
      return;
    }
    c = capability_name(*index);
  }
  set_rule(slot, caps, t.location(key));
}

void read_section(ConfigTable t, PolicySection* s) {
  ConfigTable limits = t.table("limits");
  read_limits(limits.table("default"), &s->defaults);
  read_limits(limits.table("max"), &s->max);

  ConfigTable sec = t.table("security");
  read_capabilities(sec, "capabilities", &s->capabilities);
  read_capabilities(sec, "default_capabilities", &s->default_capabilities);
  std::string seccomp;
  if (sec.get("seccomp", &seccomp)) {
    if (seccomp != "default" && seccomp != "unconfined" && (seccomp.empty() || seccomp[0] != '/')) {
      sec.fail("seccomp",
               "must be \"default\", \"unconfined\" or an absolute path to an "
               "OCI/Docker seccomp JSON profile");
    } else {
      set_rule(&s->seccomp, seccomp, sec.location("seccomp"));
    }
  }
  bool b = false;
  if (sec.get("allow_unconfined", &b))
    set_rule(&s->allow_unconfined, b, sec.location("allow_unconfined"));
  std::vector<std::string> users;
  if (sec.get("users", &users)) {
    bool ok = true;
    for (const auto& u : users) {
      uint64_t lo = 0, hi = 0;
      if (!valid_user_entry(u) ||
          (std::isdigit(static_cast<unsigned char>(u[0])) && !parse_uid_range(u, &lo, &hi))) {
        sec.fail("users",
                 "\"" + u + "\" is neither a user name nor a uid or uid range like \"1000-1999\"");
        ok = false;
      }
    }
    if (ok) set_rule(&s->users, users, sec.location("users"));
  }
  std::string user;
  if (sec.get("default_user", &user)) {
    if (!valid_user_entry(user) || user.find('-') != std::string::npos) {
      sec.fail("default_user", "must be a user name or a numeric uid");
    } else {
      set_rule(&s->default_user, user, sec.location("default_user"));
    }
  }

  ConfigTable vol = t.table("volumes");
  std::vector<std::string> paths;
  if (vol.get("allowed_host_paths", &paths)) {
    bool ok = true;
    for (auto& p : paths) {
      if (p.empty() || p[0] != '/' || p.find("/../") != std::string::npos ||
          (p.size() >= 3 && p.compare(p.size() - 3, 3, "/..") == 0)) {
        vol.fail("allowed_host_paths", "\"" + p + "\" must be an absolute path without \"..\"");
        ok = false;
      }
      while (p.size() > 1 && p.back() == '/') p.pop_back();
    }
    if (ok) set_rule(&s->volume_paths, paths, vol.location("allowed_host_paths"));
  }
  if (vol.get("allow_writable", &b))
    set_rule(&s->allow_writable_volumes, b, vol.location("allow_writable"));

  ConfigTable net = t.table("network");
  std::vector<std::string> modes;
  if (net.get("modes", &modes)) {
    bool ok = true;
    for (const auto& m : modes) {
      if (m != "host" && m != "none" && m != "bridge" && m != "cni") {
        net.fail("modes", "\"" + m + "\" is not a network mode (host, none, bridge, cni)");
        ok = false;
      }
    }
    if (ok) set_rule(&s->network_modes, modes, net.location("modes"));
  }
  if (net.get("egress", &b)) set_rule(&s->network_egress, b, net.location("egress"));
}

void read_docker(ConfigTable t, DockerPolicy* d) {
  std::string text;
  if (t.get("socket", &text)) {
    const bool tcp = !text.empty() && text[0] != '/' && text.find(':') != std::string::npos;
    if ((text.empty() || text[0] != '/' || text.find("/../") != std::string::npos) && !tcp) {
      t.fail("socket", "must be an absolute path to dockerd's unix socket or \"host:port\"");
    } else {
      d->socket = {text, t.location("socket")};
    }
  }
  std::vector<std::string> list;
  if (t.get("delegate_images", &list)) {
    bool ok = true;
    for (const auto& pattern : list) {
      if (pattern.empty() || pattern.size() > 512) {
        t.fail("delegate_images", "patterns must be 1 to 512 characters");
        ok = false;
      }
    }
    if (ok) d->delegate_images = {list, t.location("delegate_images")};
  }
  if (t.get("networks", &list)) {
    bool ok = true;
    for (const auto& n : list) {
      if (n != "none" && n != "host" && n != "bridge" && n != "user") {
        t.fail("networks", "\"" + n + "\" is not a network mode (none, host, bridge, user)");
        ok = false;
      }
    }
    if (ok) d->networks = {list, t.location("networks")};
  }
  bool b = false;
  if (t.get("allow_privileged", &b)) d->allow_privileged = {b, t.location("allow_privileged")};
  if (t.get("devices", &list)) {
    bool ok = true;
    for (const auto& dev : list) {
      if (dev.rfind("/dev/", 0) != 0 || dev.find("..") != std::string::npos) {
        t.fail("devices", "\"" + dev + "\" must be a path under /dev/ without \"..\"");
        ok = false;
      }
    }
    if (ok) d->devices = {list, t.location("devices")};
  }
  if (t.get("config", &text)) {
    if (!text.empty() && (text[0] != '/' || text.find("..") != std::string::npos)) {
      t.fail("config", "must be an absolute path to a Docker config.json (or \"\")");
    } else {
      d->config = {text, t.location("config")};
    }
  }
}

void read_images(ConfigTable t, ImagesPolicy* im) {
  std::vector<std::string> list;
  for (auto [key, rule] :
       {std::pair{"registries", &im->registries}, std::pair{"patterns", &im->patterns}}) {
    if (!t.get(key, &list)) continue;
    bool ok = true;
    for (const auto& item : list) {
      if (item.empty() || item.size() > 512 || item.find(' ') != std::string::npos) {
        t.fail(key, "entries must be 1 to 512 characters without spaces");
        ok = false;
      }
    }
    if (ok) *rule = {list, t.location(key)};
  }
  bool b = false;
  if (t.get("require_digest", &b)) im->require_digest = {b, t.location("require_digest")};
  uint64_t bytes = 0;
  if (t.get_bytes("max_size", &bytes)) im->max_size = {bytes, t.location("max_size")};
}

Result<void> read_file_into(Policy* policy, ConfigFile file) {
  ConfigTable root = file.root();
  read_section(root, &policy->base);
  ConfigTable cg = root.table("cgroups");
  bool b = false;
  if (cg.get("require_v2", &b)) policy->require_cgroup_v2 = {b, cg.location("require_v2")};
  ConfigTable userns = root.table("user_namespace");
  if (userns.get("enabled", &b)) policy->userns_enabled = {b, userns.location("enabled")};
  int64_t n = 0;
  if (userns.get_int("subuid_start", &n, 1, 4294967295LL - 65536)) {
    policy->userns_start = {static_cast<uint64_t>(n), userns.location("subuid_start")};
  }
  if (userns.get_int("subuid_count", &n, 1, 4294967295LL)) {
    policy->userns_count = {static_cast<uint64_t>(n), userns.location("subuid_count")};
  }
  read_docker(root.table("docker"), &policy->docker);
  read_images(root.table("images"), &policy->images);
  ConfigTable roles = root.table("role");
  static const std::regex kRole("^[a-zA-Z0-9_.-]+(/[a-zA-Z0-9_.-]+)*$");
  for (const std::string& name : roles.keys()) {
    if (!std::regex_match(name, kRole)) {
      roles.fail(name,
                 "is not a valid role name (letters, digits, '_', '.', '-', '/' between parts)");
      continue;
    }
    read_section(roles.table(name), &policy->roles[name]);
  }
  return file.finish();
}

// ---------------------------------------------------------------- merging

template <typename T>
void overlay(std::optional<T>* base, const std::optional<T>& over) {
  if (over) *base = over;
}

void overlay(LimitRules* b, const LimitRules& o) {
  overlay(&b->cpus, o.cpus);
  overlay(&b->cpu_weight, o.cpu_weight);
  overlay(&b->memory, o.memory);
  overlay(&b->memory_swap, o.memory_swap);
  overlay(&b->pids, o.pids);
  overlay(&b->io_weight, o.io_weight);
}

void overlay(PolicySection* b, const PolicySection& o) {
  overlay(&b->defaults, o.defaults);
  overlay(&b->max, o.max);
  overlay(&b->capabilities, o.capabilities);
  overlay(&b->default_capabilities, o.default_capabilities);
  overlay(&b->seccomp, o.seccomp);
  overlay(&b->allow_unconfined, o.allow_unconfined);
  overlay(&b->users, o.users);
  overlay(&b->default_user, o.default_user);
  overlay(&b->volume_paths, o.volume_paths);
  overlay(&b->allow_writable_volumes, o.allow_writable_volumes);
  overlay(&b->network_modes, o.network_modes);
  overlay(&b->network_egress, o.network_egress);
}

void overlay(Policy* b, const Policy& o) {
  overlay(&b->base, o.base);
  for (const auto& [name, sec] : o.roles) overlay(&b->roles[name], sec);
  b->require_cgroup_v2 =
      o.require_cgroup_v2.origin == kBuiltin ? b->require_cgroup_v2 : o.require_cgroup_v2;
  b->userns_enabled = o.userns_enabled.origin == kBuiltin ? b->userns_enabled : o.userns_enabled;
  b->userns_start = o.userns_start.origin == kBuiltin ? b->userns_start : o.userns_start;
  b->userns_count = o.userns_count.origin == kBuiltin ? b->userns_count : o.userns_count;
  auto keep = [](auto* base, const auto& over) {
    if (over.origin != kBuiltin) *base = over;
  };
  keep(&b->docker.socket, o.docker.socket);
  keep(&b->docker.delegate_images, o.docker.delegate_images);
  keep(&b->docker.networks, o.docker.networks);
  keep(&b->docker.allow_privileged, o.docker.allow_privileged);
  keep(&b->docker.devices, o.docker.devices);
  keep(&b->docker.config, o.docker.config);
  keep(&b->images.registries, o.images.registries);
  keep(&b->images.patterns, o.images.patterns);
  keep(&b->images.require_digest, o.images.require_digest);
  keep(&b->images.max_size, o.images.max_size);
}

// A fresh policy with nothing set, to read one file into before overlaying it.
Policy empty_policy() {
  Policy p;
  p.base = PolicySection{};
  return p;
}

// ---------------------------------------------------------------- deciding

std::string where(const std::string& origin, const std::string& role) {
  std::string w = origin;
  if (!role.empty() && role != "*") w += ", role " + role;
  return w;
}

std::string format_cpus(double c) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", c);
  return buf;
}

Result<uid_t> user_uid(const std::string& user) {
  if (!user.empty() && std::all_of(user.begin(), user.end(), ::isdigit)) {
    uint64_t lo = 0, hi = 0;
    if (!parse_uid_range(user, &lo, &hi)) {
      return Error(EINVAL, "uid " + user + " is out of range (0 to 4294967295)");
    }
    return static_cast<uid_t>(lo);
  }
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[4096];
  if (getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found) != 0 || found == nullptr) {
    return Error(ENOENT, "user \"" + user + "\" does not exist on this machine");
  }
  return found->pw_uid;
}

bool user_allowed(const std::string& user, const std::vector<std::string>& allowed) {
  auto uid = user_uid(user);
  for (const auto& a : allowed) {
    if (a == user) return true;
    if (!uid.ok() || a.empty()) continue;
    if (!std::isdigit(static_cast<unsigned char>(a[0]))) {  // a user name: compare uids
      auto auid = user_uid(a);
      if (auid.ok() && *auid == *uid) return true;
      continue;
    }
    uint64_t lo = 0, hi = 0;
    if (parse_uid_range(a, &lo, &hi) && *uid >= lo && *uid <= hi) return true;
  }
  return false;
}

bool path_under(const std::string& path, const std::string& prefix) {
  if (prefix == "/") return true;
  return path == prefix ||
         (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
          path[prefix.size()] == '/');
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "(none)" : out;
}

}  // namespace

// ---------------------------------------------------------------- public

std::string format_bytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double v = static_cast<double>(bytes);
  while (u < 4 && v >= 1024 && std::fmod(v, 1024) == 0) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%s", v, kUnits[u]);
  return buf;
}

bool docker_delegates_image(const DockerPolicy& policy, const std::string& image) {
  if (image.empty()) return false;
  for (const auto& pattern : policy.delegate_images.value) {
    if (::fnmatch(pattern.c_str(), image.c_str(), 0) == 0) return true;
  }
  return false;
}

Policy builtin_policy() {
  Policy p;
  PolicySection& s = p.base;
  s.defaults.pids = Rule<uint64_t>{4096, kBuiltin};
  s.capabilities = Rule<std::vector<std::string>>{default_capabilities(), kBuiltin};
  s.default_capabilities = Rule<std::vector<std::string>>{default_capabilities(), kBuiltin};
  s.seccomp = Rule<std::string>{"default", kBuiltin};
  s.allow_unconfined = Rule<bool>{false, kBuiltin};
  s.users = Rule<std::vector<std::string>>{{"nobody"}, kBuiltin};
  s.default_user = Rule<std::string>{"nobody", kBuiltin};
  s.volume_paths = Rule<std::vector<std::string>>{{}, kBuiltin};
  s.allow_writable_volumes = Rule<bool>{false, kBuiltin};
  return p;
}

PolicySection Policy::effective(const std::string& role) const {
  PolicySection s = base;
  if (!role.empty() && role != "*") {
    // Hierarchical roles: "eng/web" gets "eng" overrides, then "eng/web" ones.
    size_t pos = 0;
    while (true) {
      size_t slash = role.find('/', pos);
      std::string prefix = role.substr(0, slash);
      if (auto it = roles.find(prefix); it != roles.end()) overlay(&s, it->second);
      if (slash == std::string::npos) break;
      pos = slash + 1;
    }
  }
  return s;
}

Result<Policy> load_policy_text(Policy base, std::string_view text, const std::string& name) {
  CORRAL_ASSIGN_OR_RETURN(ConfigFile file, ConfigFile::parse(text, name));
  Policy layer = empty_policy();
  CORRAL_TRY(read_file_into(&layer, std::move(file)));
  overlay(&base, layer);
  base.files.push_back(name);
  return base;
}

Result<Policy> load_policy_dir(const std::filesystem::path& dir) {
  Policy policy = builtin_policy();
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    if (dir == kDefaultPolicyDir) return policy;
    return Error(ENOENT, "policy directory " + dir.string() + " does not exist");
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return Error(ENOTDIR, dir.string() +
                              " is not a directory; policy files go in a directory "
                              "such as " +
                              kDefaultPolicyDir);
  }
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".toml" && e.path().filename().string()[0] != '.')
      files.push_back(e.path());
  }
  if (ec) return Error(ec.value(), "cannot list " + dir.string() + ": " + ec.message());
  std::sort(files.begin(), files.end());
  std::string errors;
  for (const auto& f : files) {
    auto file = ConfigFile::load(f);
    if (!file) {
      errors += (errors.empty() ? "" : "\n") + file.error().message();
      continue;
    }
    Policy layer = empty_policy();
    auto r = read_file_into(&layer, std::move(*file));
    if (!r.ok()) {
      errors += (errors.empty() ? "" : "\n") + r.error().message();
      continue;
    }
    overlay(&policy, layer);
    policy.files.push_back(f.string());
  }
  if (!errors.empty()) return Error(EINVAL, errors);
  return policy;
}

Result<Decision> decide(const Policy& policy, const TaskRequest& req) {
  const PolicySection s = policy.effective(req.role);
  Decision d;
  auto refuse = [&](const std::string& what, const std::string& rule, const std::string& limit,
                    const std::string& origin, const std::string& fix) {
    return Error(EPERM, what + " is more than the policy allows: " + rule + " = " + limit + " (" +
                            where(origin, req.role) + "); " + fix);
  };
  const std::string fix = "ask for less or raise that limit";

  // cpus
  std::optional<double> cpus = req.cpus;
  if (!cpus && s.defaults.cpus) {
    cpus =
        s.max.cpus ? std::min(s.defaults.cpus->value, s.max.cpus->value) : s.defaults.cpus->value;
  }
  if (cpus && s.max.cpus && *cpus > s.max.cpus->value + 1e-9) {
    return refuse("cpus " + format_cpus(*cpus), "limits.max.cpus", format_cpus(s.max.cpus->value),
                  s.max.cpus->origin, fix);
  }
  d.limits.cpus = cpus;
  // byte and count limits share one shape
  struct Num {
    const char* name;
    std::optional<uint64_t> asked;
    const std::optional<Rule<uint64_t>>& def;
    const std::optional<Rule<uint64_t>>& max;
    bool bytes;
  };
  Num nums[] = {{"memory", req.memory, s.defaults.memory, s.max.memory, true},
                {"memory_swap", req.memory_swap, s.defaults.memory_swap, s.max.memory_swap, true},
                {"pids", req.pids, s.defaults.pids, s.max.pids, false},
                {"cpu_weight", req.cpu_weight, s.defaults.cpu_weight, s.max.cpu_weight, false},
                {"io_weight", req.io_weight, s.defaults.io_weight, s.max.io_weight, false}};
  std::optional<uint64_t> values[5];
  for (int i = 0; i < 5; ++i) {
    const Num& n = nums[i];
    std::optional<uint64_t> v = n.asked;
    // A default above the maximum (e.g. a role lowers the maximum only) is clipped to it: the
    // task did not ask for it, so it is not refused for it.
    if (!v && n.def) v = n.max ? std::min(n.def->value, n.max->value) : n.def->value;
    auto show = [&](uint64_t x) { return n.bytes ? format_bytes(x) : std::to_string(x); };
    if (v && n.max && *v > n.max->value) {
      return refuse(std::string(n.name) + " " + show(*v), std::string("limits.max.") + n.name,
                    show(n.max->value), n.max->origin, fix);
    }
    // A task that asks for nothing where the policy sets a maximum gets the maximum, never
    // "unlimited".
    if (!v && n.max) v = n.max->value;
    values[i] = v;
  }
  d.limits.memory_max = values[0];
  d.limits.memory_swap_max = values[1];
  d.limits.pids_max = values[2];
  if (values[3]) d.limits.cpu_weight = static_cast<uint32_t>(*values[3]);
  if (values[4]) d.limits.io_weight = static_cast<uint32_t>(*values[4]);
  if (!d.limits.cpus && s.max.cpus) d.limits.cpus = s.max.cpus->value;

  // capabilities
  const auto& allowed = s.capabilities ? s.capabilities->value : default_capabilities();
  const std::string cap_origin = s.capabilities ? s.capabilities->origin : kBuiltin;
  if (req.capabilities.empty()) {
    d.capabilities = s.default_capabilities ? s.default_capabilities->value : allowed;
    // defaults are clipped to what is allowed, so an override of one list cannot widen the other
    std::erase_if(d.capabilities, [&](const std::string& c) {
      return std::find(allowed.begin(), allowed.end(), c) == allowed.end();
    });
  } else {
    for (const auto& asked : req.capabilities) {
      auto index = capability_from_name(asked);
      if (!index) {
        return Error(EINVAL,
                     "unknown capability \"" + asked + "\" (see capabilities(7) for the names)");
      }
      const std::string c = capability_name(*index);
      if (std::find(allowed.begin(), allowed.end(), c) == allowed.end()) {
        return Error(EPERM, "capability " + c +
                                " is not allowed by the policy: security.capabilities = [" +
                                join(allowed) + "] (" + where(cap_origin, req.role) +
                                "); drop it from the task or add it to that list");
      }
      d.capabilities.push_back(c);
    }
  }

  // seccomp
  const std::string seccomp_default = s.seccomp ? s.seccomp->value : "default";
  d.seccomp = req.seccomp.value_or(seccomp_default);
  if (d.seccomp != "default" && d.seccomp != "unconfined" &&
      (d.seccomp.empty() || d.seccomp[0] != '/')) {
    return Error(EINVAL,
                 "seccomp \"" + d.seccomp +
                     "\" must be \"default\", \"unconfined\" or an absolute path to a profile");
  }
  if (d.seccomp == "unconfined" && req.seccomp &&
      !(s.allow_unconfined && s.allow_unconfined->value)) {
    std::string origin = s.allow_unconfined ? s.allow_unconfined->origin : kBuiltin;
    return Error(EPERM,
                 "seccomp \"unconfined\" is not allowed by the policy: security.allow_unconfined = "
                 "false (" +
                     where(origin, req.role) +
                     "); use the default profile or set allow_unconfined = true there");
  }
  if (req.seccomp && d.seccomp[0] == '/' && d.seccomp != seccomp_default) {
    return Error(EPERM, "seccomp profile " + d.seccomp +
                            " is not the policy's profile: security.seccomp = \"" +
                            seccomp_default + "\" (" +
                            where(s.seccomp ? s.seccomp->origin : kBuiltin, req.role) +
                            "); only the operator chooses profile files");
  }

  // user
  const std::vector<std::string> users =
      s.users ? s.users->value : std::vector<std::string>{"nobody"};
  d.user = req.user.value_or(s.default_user ? s.default_user->value : "nobody");
  if (!user_allowed(d.user, users)) {
    return Error(EPERM, "user \"" + d.user + "\" is not allowed by the policy: security.users = [" +
                            join(users) + "] (" +
                            where(s.users ? s.users->origin : kBuiltin, req.role) +
                            "); run as one of those or add the user there");
  }
  if (!user_uid(d.user).ok()) {
    return Error(ENOENT, "user \"" + d.user +
                             "\" does not exist on this machine; create it or run "
                             "as an existing user");
  }

  // volumes
  const std::vector<std::string> paths =
      s.volume_paths ? s.volume_paths->value : std::vector<std::string>{};
  const std::string paths_origin = s.volume_paths ? s.volume_paths->origin : kBuiltin;
  for (const Volume& v : req.volumes) {
    if (v.host_path.empty() || v.host_path[0] != '/' ||
        v.host_path.find("/..") != std::string::npos || v.container_path.empty() ||
        v.container_path[0] != '/' || v.container_path.find("/..") != std::string::npos) {
      return Error(EINVAL, "volume " + v.host_path + ":" + v.container_path +
                               ": both paths must be absolute and free of \"..\"");
    }
    std::error_code ec;
    std::filesystem::path real = std::filesystem::weakly_canonical(v.host_path, ec);
    const std::string resolved = ec ? v.host_path : real.string();
    bool ok = false;
    for (const auto& p : paths) ok |= path_under(resolved, p);
    if (!ok) {
      return Error(EPERM, "volume host path " + v.host_path +
                              (resolved != v.host_path ? " (resolves to " + resolved + ")" : "") +
                              " is not allowed by the policy: volumes.allowed_host_paths = [" +
                              join(paths) + "] (" + where(paths_origin, req.role) +
                              "); use a path under one of those or add it there");
    }
    if (v.writable && !(s.allow_writable_volumes && s.allow_writable_volumes->value)) {
      return Error(EPERM,
                   "writable volume " + v.host_path +
                       " is not allowed by the policy: "
                       "volumes.allow_writable = false (" +
                       where(s.allow_writable_volumes ? s.allow_writable_volumes->origin : kBuiltin,
                             req.role) +
                       "); mount it read-only or set allow_writable = true there");
    }
    d.volumes.push_back(v);
  }
  if (s.network_modes) {
    d.network_modes = s.network_modes->value;
    d.network_modes_origin = where(s.network_modes->origin, req.role);
  }
  if (s.network_egress) d.network_egress = s.network_egress->value;
  return d;
}

namespace {

nlohmann::json section_to_json(const PolicySection& s) {
  nlohmann::json j = nlohmann::json::object();
  auto lim = [](const LimitRules& l) {
    nlohmann::json o = nlohmann::json::object();
    auto put = [&](const char* k, const auto& r) {
      if (r) o[k] = {{"value", r->value}, {"origin", r->origin}};
    };
    put("cpus", l.cpus);
    put("cpu_weight", l.cpu_weight);
    put("memory", l.memory);
    put("memory_swap", l.memory_swap);
    put("pids", l.pids);
    put("io_weight", l.io_weight);
    return o;
  };
  j["limits"]["default"] = lim(s.defaults);
  j["limits"]["max"] = lim(s.max);
  auto put = [&](const char* sec, const char* k, const auto& r) {
    if (r) j[sec][k] = {{"value", r->value}, {"origin", r->origin}};
  };
  put("security", "capabilities", s.capabilities);
  put("security", "default_capabilities", s.default_capabilities);
  put("security", "seccomp", s.seccomp);
  put("security", "allow_unconfined", s.allow_unconfined);
  put("security", "users", s.users);
  put("security", "default_user", s.default_user);
  put("volumes", "allowed_host_paths", s.volume_paths);
  put("volumes", "allow_writable", s.allow_writable_volumes);
  put("network", "modes", s.network_modes);
  put("network", "egress", s.network_egress);
  return j;
}

void text_section(std::string* out, const std::string& prefix, const PolicySection& s) {
  auto line = [&](const std::string& key, const std::string& value, const std::string& origin) {
    std::string l = prefix + key + " = " + value;
    if (l.size() < 56) l.resize(56, ' ');
    *out += l + "  # " + origin + "\n";
  };
  auto lim = [&](const char* which, const LimitRules& l) {
    std::string p = std::string("limits.") + which + ".";
    if (l.cpus) line(p + "cpus", format_cpus(l.cpus->value), l.cpus->origin);
    if (l.cpu_weight)
      line(p + "cpu_weight", std::to_string(l.cpu_weight->value), l.cpu_weight->origin);
    if (l.memory) line(p + "memory", "\"" + format_bytes(l.memory->value) + "\"", l.memory->origin);
    if (l.memory_swap)
      line(p + "memory_swap", "\"" + format_bytes(l.memory_swap->value) + "\"",
           l.memory_swap->origin);
    if (l.pids) line(p + "pids", std::to_string(l.pids->value), l.pids->origin);
    if (l.io_weight) line(p + "io_weight", std::to_string(l.io_weight->value), l.io_weight->origin);
  };
  lim("default", s.defaults);
  lim("max", s.max);
  auto list = [](const std::vector<std::string>& v) {
    std::string o = "[";
    for (size_t i = 0; i < v.size(); ++i) o += (i ? ", \"" : "\"") + v[i] + "\"";
    return o + "]";
  };
  if (s.capabilities)
    line("security.capabilities", list(s.capabilities->value), s.capabilities->origin);
  if (s.default_capabilities)
    line("security.default_capabilities", list(s.default_capabilities->value),
         s.default_capabilities->origin);
  if (s.seccomp) line("security.seccomp", "\"" + s.seccomp->value + "\"", s.seccomp->origin);
  if (s.allow_unconfined)
    line("security.allow_unconfined", s.allow_unconfined->value ? "true" : "false",
         s.allow_unconfined->origin);
  if (s.users) line("security.users", list(s.users->value), s.users->origin);
  if (s.default_user)
    line("security.default_user", "\"" + s.default_user->value + "\"", s.default_user->origin);
  if (s.volume_paths)
    line("volumes.allowed_host_paths", list(s.volume_paths->value), s.volume_paths->origin);
  if (s.allow_writable_volumes)
    line("volumes.allow_writable", s.allow_writable_volumes->value ? "true" : "false",
         s.allow_writable_volumes->origin);
  if (s.network_modes) line("network.modes", list(s.network_modes->value), s.network_modes->origin);
  if (s.network_egress)
    line("network.egress", s.network_egress->value ? "true" : "false", s.network_egress->origin);
}

}  // namespace

nlohmann::json policy_to_json(const Policy& p) {
  nlohmann::json j;
  j["files"] = p.files;
  j["cgroups"]["require_v2"] = {{"value", p.require_cgroup_v2.value},
                                {"origin", p.require_cgroup_v2.origin}};
  j["user_namespace"]["enabled"] = {{"value", p.userns_enabled.value},
                                    {"origin", p.userns_enabled.origin}};
  j["user_namespace"]["subuid_start"] = {{"value", p.userns_start.value},
                                         {"origin", p.userns_start.origin}};
  j["user_namespace"]["subuid_count"] = {{"value", p.userns_count.value},
                                         {"origin", p.userns_count.origin}};
  auto docker = [&](const char* key, const auto& rule) {
    j["docker"][key] = {{"value", rule.value}, {"origin", rule.origin}};
  };
  docker("socket", p.docker.socket);
  docker("delegate_images", p.docker.delegate_images);
  docker("networks", p.docker.networks);
  docker("allow_privileged", p.docker.allow_privileged);
  docker("devices", p.docker.devices);
  docker("config", p.docker.config);
  auto images = [&](const char* key, const auto& rule) {
    j["images"][key] = {{"value", rule.value}, {"origin", rule.origin}};
  };
  images("registries", p.images.registries);
  images("patterns", p.images.patterns);
  images("require_digest", p.images.require_digest);
  images("max_size", p.images.max_size);
  j["base"] = section_to_json(p.base);
  for (const auto& [name, sec] : p.roles) j["roles"][name] = section_to_json(p.effective(name));
  return j;
}

std::string policy_to_text(const Policy& p) {
  std::string out = "# effective isolation policy\n# files read: ";
  out += p.files.empty() ? "(none: built-in defaults)" : "";
  for (size_t i = 0; i < p.files.size(); ++i) out += (i ? ", " : "") + p.files[i];
  out += "\n\n";
  auto line = [&](const std::string& k, const std::string& v, const std::string& origin) {
    std::string l = k + " = " + v;
    if (l.size() < 56) l.resize(56, ' ');
    out += l + "  # " + origin + "\n";
  };
  line("cgroups.require_v2", p.require_cgroup_v2.value ? "true" : "false",
       p.require_cgroup_v2.origin);
  line("user_namespace.enabled", p.userns_enabled.value ? "true" : "false",
       p.userns_enabled.origin);
  line("user_namespace.subuid_start", std::to_string(p.userns_start.value), p.userns_start.origin);
  line("user_namespace.subuid_count", std::to_string(p.userns_count.value), p.userns_count.origin);
  auto strings = [](const std::vector<std::string>& v) {
    std::string o = "[";
    for (size_t i = 0; i < v.size(); ++i) o += (i ? ", \"" : "\"") + v[i] + "\"";
    return o + "]";
  };
  line("docker.socket", "\"" + p.docker.socket.value + "\"", p.docker.socket.origin);
  line("docker.delegate_images", strings(p.docker.delegate_images.value),
       p.docker.delegate_images.origin);
  line("docker.networks", strings(p.docker.networks.value), p.docker.networks.origin);
  line("docker.allow_privileged", p.docker.allow_privileged.value ? "true" : "false",
       p.docker.allow_privileged.origin);
  line("docker.devices", strings(p.docker.devices.value), p.docker.devices.origin);
  line("docker.config", "\"" + p.docker.config.value + "\"", p.docker.config.origin);
  line("images.registries", strings(p.images.registries.value), p.images.registries.origin);
  line("images.patterns", strings(p.images.patterns.value), p.images.patterns.origin);
  line("images.require_digest", p.images.require_digest.value ? "true" : "false",
       p.images.require_digest.origin);
  line("images.max_size",
       p.images.max_size.value ? format_bytes(p.images.max_size.value) : "unlimited",
       p.images.max_size.origin);
  text_section(&out, "", p.base);
  for (const auto& [name, sec] : p.roles) {
    out += "\n# role " + name + " (effective: base policy with the role's overrides)\n";
    text_section(&out, "role." + name + ".", p.effective(name));
  }
  return out;
}

Result<void> PolicyHolder::reload() {
  auto loaded = load_policy_dir(dir_);
  if (!loaded) {
    return loaded.error().context("policy not reloaded, the previous policy stays in force");
  }
  policy_ = std::move(*loaded);
  return {};
}

}  // namespace corral::isolator
