// Backend-independent parts of the cgroup layer: the startup check, the limits -> files mapping,
// task cgroup names, parsers of the kernel's formats, and EventWatch.
#include "corral/isolator/cgroup.hpp"

#include <poll.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

namespace corral::isolator {
namespace fs = std::filesystem;

std::string_view to_string(CgroupBackend backend) {
  return backend == CgroupBackend::kSystemd ? "systemd" : "cgroupfs";
}

namespace {

std::string join(const auto& items, std::string_view sep = " ") {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += sep;
    out += i;
  }
  return out;
}

std::set<std::string> split_words(std::string_view text) {
  std::set<std::string> out;
  std::istringstream in{std::string(text)};
  std::string w;
  while (in >> w) out.insert(w);
  return out;
}

Result<uint64_t> parse_u64(std::string_view s) {
  if (s == "max") return UINT64_MAX;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    return Error(EINVAL, "not an unsigned integer: \"" + std::string(s) + "\"");
  }
  return v;
}

uint64_t get(const std::map<std::string, uint64_t>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? 0 : it->second;
}

}  // namespace

// ---- startup check ----

const std::set<std::string>& required_cgroup_controllers() {
  static const std::set<std::string> kRequired{"cpu", "cpuset", "io", "memory", "pids"};
  return kRequired;
}

Result<fs::path> parse_proc_self_cgroup(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return fs::path(line.substr(3));
  }
  return Error(ENOENT, "/proc/self/cgroup has no cgroup v2 entry (\"0::<path>\")");
}

Result<CgroupHostInfo> probe_cgroup_host(const fs::path& root) {
  CgroupHostInfo info;
  info.root = root;
  // The v2-mode check is a statfs() of the mount point: libcgroup's public API does not say
  // whether a host is unified, hybrid or legacy.
  struct statfs sfs {};
  if (statfs(root.c_str(), &sfs) != 0) return Error::from_errno("statfs " + root.string());
  if (static_cast<unsigned long>(sfs.f_type) == CGROUP2_SUPER_MAGIC) {
    info.root_fs_type = "cgroup2fs";
    info.unified = true;
    info.v2_mount = root;
  } else if (static_cast<unsigned long>(sfs.f_type) == TMPFS_MAGIC) {
    info.root_fs_type = "tmpfs";
  } else {
    std::ostringstream t;
    t << "0x" << std::hex << sfs.f_type;
    info.root_fs_type = t.str();
  }
  // Mounts: v1 hierarchies and (on hybrid hosts) where cgroup2 is.
  std::ifstream mounts("/proc/self/mounts");
  std::string dev, dir, type, opts;
  std::string rest;
  while (mounts >> dev >> dir >> type >> opts) {
    std::getline(mounts, rest);
    if (type == "cgroup") {
      std::string name;
      for (const auto& o : split_words([&] {
             std::string s = opts;
             for (char& c : s) c = c == ',' ? ' ' : c;
             return s;
           }())) {
        if (o == "rw" || o == "ro" || o == "relatime" || o == "nosuid" || o == "nodev" ||
            o == "noexec" || o == "clone_children" || o.rfind("release_agent", 0) == 0) {
          continue;
        }
        name += name.empty() ? o : "," + o;
      }
      info.v1_hierarchies.push_back(name.empty() ? dir : name);
    } else if (type == "cgroup2" && !info.v2_mount) {
      info.v2_mount = fs::path(dir);
    }
  }
  if (info.v2_mount) {
    if (auto c = read_file(*info.v2_mount / "cgroup.controllers"); c.ok()) {
      info.v2_root_controllers = split_words(*c);
    }
    if (auto c = read_file("/proc/self/cgroup"); c.ok()) {
      if (auto p = parse_proc_self_cgroup(*c); p.ok()) {
        info.own_cgroup = *p;
        fs::path own_dir = *info.v2_mount / info.own_cgroup.relative_path();
        if (auto oc = read_file(own_dir / "cgroup.controllers"); oc.ok()) {
          info.own_controllers = split_words(*oc);
        }
      }
    }
  }
  // cgroup.kill came with Linux 5.14 (it is absent from the root cgroup, so ask the kernel).
  struct utsname u {};
  int major = 0, minor = 0;
  info.has_cgroup_kill = uname(&u) == 0 && std::sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
                         (major > 5 || (major == 5 && minor >= 14));
  if (auto comm = read_file("/proc/1/comm"); comm.ok()) {
    info.systemd_pid1 = *comm == "systemd\n" || *comm == "systemd";
  }
  return info;
}

Result<void> check_cgroup_host(const CgroupHostInfo& info, CgroupBackend backend) {
  const auto& required = required_cgroup_controllers();
  if (!info.unified) {
    std::string found = info.root.string() + " is " + info.root_fs_type + ", not cgroup2fs";
    if (!info.v1_hierarchies.empty()) {
      found += "; cgroup v1 hierarchies are mounted (" + join(info.v1_hierarchies, ", ") + ")";
    }
    if (info.v2_mount) {
      found += "; the cgroup v2 hierarchy at " + info.v2_mount->string() +
               (info.v2_root_controllers.empty() ? " has no controllers"
                                                 : " has only " + join(info.v2_root_controllers));
    } else {
      found += "; no cgroup v2 hierarchy is mounted";
    }
    return Error(ENOTSUP,
                 "cgroup v2 resource isolation is unavailable: " + found +
                     ". Corral needs the unified cgroup v2 hierarchy with the controllers " +
                     join(required) +
                     ": boot with systemd.unified_cgroup_hierarchy=1 on the kernel command line "
                     "(the default of Debian 12: drop systemd.unified_cgroup_hierarchy=0 and "
                     "systemd.legacy_systemd_cgroup_controller if present), reboot, and check that "
                     "`stat -fc %T /sys/fs/cgroup` prints cgroup2fs");
  }
  // systemd delegates from the root's controllers; cgroupfs can only use what its own cgroup got.
  const bool systemd = backend == CgroupBackend::kSystemd;
  const auto& have = systemd ? info.v2_root_controllers : info.own_controllers;
  std::vector<std::string> missing;
  for (const auto& c : required) {
    if (!have.count(c)) missing.push_back(c);
  }
  if (missing.empty()) return ok();
  std::string where =
      systemd ? info.root.string() + "/cgroup.controllers"
              : (info.root / info.own_cgroup.relative_path() / "cgroup.controllers").string();
  std::string msg = "cgroup v2 controllers " + join(missing) + " are not available to Corral (" +
                    where + " lists: " + (have.empty() ? "nothing" : join(have)) + "). ";
  if (systemd) {
    msg +=
        "Some controllers are disabled on this kernel: check cgroup_disable= on the kernel "
        "command line and that the kernel has them built in";
  } else {
    msg += "The cgroupfs backend manages the cgroup the agent runs in (" +
           info.own_cgroup.string() +
           "): run corral-agent under a systemd unit with Delegate=yes (the packaged "
           "corral-agent.service has it), or use the systemd backend";
  }
  return Error(ENOTSUP, msg);
}

// ---- limits ----

std::vector<CgroupFileValue> cgroup_files_for(const ResourceLimits& l) {
  std::vector<CgroupFileValue> out;
  auto add = [&](std::string controller, std::string file, std::string value) {
    out.push_back({std::move(controller), std::move(file), std::move(value)});
  };
  if (l.cpus || l.cpu_period_us) {
    uint64_t period = l.cpu_period_us.value_or(100000);
    std::string quota = "max";
    if (l.cpus) {
      // The kernel refuses quotas under 1 ms.
      auto q = static_cast<uint64_t>(std::llround(*l.cpus * static_cast<double>(period)));
      quota = std::to_string(std::max<uint64_t>(q, 1000));
    }
    add("cpu", "cpu.max", quota + " " + std::to_string(period));
  }
  if (l.cpu_weight) add("cpu", "cpu.weight", std::to_string(*l.cpu_weight));
  if (l.cpuset_cpus) add("cpuset", "cpuset.cpus", *l.cpuset_cpus);
  if (l.cpuset_mems) add("cpuset", "cpuset.mems", *l.cpuset_mems);
  // memory.high before memory.max: lowering max under current usage triggers reclaim/OOM at once.
  if (l.memory_high) add("memory", "memory.high", std::to_string(*l.memory_high));
  if (l.memory_max) add("memory", "memory.max", std::to_string(*l.memory_max));
  if (l.memory_swap_max) add("memory", "memory.swap.max", std::to_string(*l.memory_swap_max));
  add("memory", "memory.oom.group", l.memory_oom_group ? "1" : "0");
  if (l.pids_max) add("pids", "pids.max", std::to_string(*l.pids_max));
  if (l.io_weight) add("io", "io.weight", "default " + std::to_string(*l.io_weight));
  for (const auto& d : l.io_max) {
    auto v = [](const std::optional<uint64_t>& x) { return x ? std::to_string(*x) : "max"; };
    add("io", "io.max",
        d.device + " rbps=" + v(d.rbps) + " wbps=" + v(d.wbps) + " riops=" + v(d.riops) +
            " wiops=" + v(d.wiops));
  }
  for (const auto& h : l.hugetlb) {
    add("hugetlb", "hugetlb." + h.page_size + ".max", std::to_string(h.max_bytes));
  }
  return out;
}

// ---- names ----

std::string task_cgroup_name(std::string_view task_id) {
  static const char* kHex = "0123456789abcdef";
  std::string out = "task-";
  for (unsigned char c : task_id) {
    if (std::isalnum(c) || c == '.' || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '_';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::optional<std::string> task_id_from_cgroup_name(std::string_view name) {
  if (name.rfind("task-", 0) != 0) return std::nullopt;
  name.remove_prefix(5);
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] != '_') {
      out += name[i];
      continue;
    }
    if (i + 2 >= name.size()) return std::nullopt;
    unsigned v = 0;
    auto [p, ec] = std::from_chars(name.data() + i + 1, name.data() + i + 3, v, 16);
    if (ec != std::errc() || p != name.data() + i + 3) return std::nullopt;
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

// ---- parsers ----

Result<std::map<std::string, uint64_t>> parse_flat_keyed(std::string_view text) {
  std::map<std::string, uint64_t> out;
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto sp = line.find(' ');
    if (sp == std::string::npos) return Error(EINVAL, "malformed line \"" + line + "\"");
    auto v = parse_u64(std::string_view(line).substr(sp + 1));
    if (!v.ok()) return std::move(v).error().context("line \"" + line + "\"");
    out[line.substr(0, sp)] = *v;
  }
  return out;
}

CgroupEvents events_from(const std::map<std::string, uint64_t>& memory_events,
                         const std::map<std::string, uint64_t>& pids_events,
                         const std::map<std::string, uint64_t>& cgroup_events) {
  CgroupEvents e;
  e.memory_low = get(memory_events, "low");
  e.memory_high = get(memory_events, "high");
  e.memory_max = get(memory_events, "max");
  e.oom = get(memory_events, "oom");
  e.oom_kill = get(memory_events, "oom_kill");
  e.oom_group_kill = get(memory_events, "oom_group_kill");
  e.pids_max = get(pids_events, "max");
  e.populated = get(cgroup_events, "populated") != 0;
  e.frozen = get(cgroup_events, "frozen") != 0;
  return e;
}

Result<Pressure> parse_pressure(std::string_view text) {
  // some avg10=0.00 avg60=0.00 avg300=0.00 total=0
  Pressure p;
  std::istringstream in{std::string(text)};
  std::string line;
  bool any = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    std::string kind, kv;
    ls >> kind;
    PressureStat* s = kind == "some" ? &p.some : kind == "full" ? &p.full : nullptr;
    if (!s) return Error(EINVAL, "malformed pressure line \"" + line + "\"");
    while (ls >> kv) {
      auto eq = kv.find('=');
      if (eq == std::string::npos) return Error(EINVAL, "malformed pressure field \"" + kv + "\"");
      std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
      try {
        if (k == "avg10")
          s->avg10 = std::stod(v);
        else if (k == "avg60")
          s->avg60 = std::stod(v);
        else if (k == "avg300")
          s->avg300 = std::stod(v);
        else if (k == "total")
          s->total_usec = std::stoull(v);
      } catch (const std::exception&) {
        return Error(EINVAL, "malformed pressure value \"" + kv + "\"");
      }
    }
    any = true;
  }
  if (!any) return Error(EINVAL, "empty pressure file");
  return p;
}

Result<std::vector<IoDeviceStat>> parse_io_stat(std::string_view text) {
  // 254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0
  std::vector<IoDeviceStat> out;
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    IoDeviceStat d;
    ls >> d.device;
    std::string kv;
    while (ls >> kv) {
      auto eq = kv.find('=');
      if (eq == std::string::npos) return Error(EINVAL, "malformed io.stat field \"" + kv + "\"");
      auto v = parse_u64(std::string_view(kv).substr(eq + 1));
      if (!v.ok()) return std::move(v).error().context("io.stat");
      std::string k = kv.substr(0, eq);
      if (k == "rbytes")
        d.rbytes = *v;
      else if (k == "wbytes")
        d.wbytes = *v;
      else if (k == "rios")
        d.rios = *v;
      else if (k == "wios")
        d.wios = *v;
      else if (k == "dbytes")
        d.dbytes = *v;
      else if (k == "dios")
        d.dios = *v;
    }
    out.push_back(std::move(d));
  }
  return out;
}

// ---- EventWatch ----

bool EventWatch::drain() const {
  char buf[4096];
  bool any = false;
  while (fd_.valid()) {
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n <= 0) break;
    any = true;
  }
  return any;
}

Result<bool> EventWatch::wait(std::chrono::milliseconds timeout) const {
  struct pollfd p {
    fd_.get(), POLLIN, 0
  };
  int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (n < 0) return Error::from_errno("poll on cgroup event watch");
  return n > 0;
}

}  // namespace corral::isolator
