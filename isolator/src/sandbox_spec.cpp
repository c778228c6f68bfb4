#include "corral/isolator/sandbox_spec.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include "corral/isolator/capabilities.hpp"
#include "corral/isolator/process.hpp"
#include "corral/isolator/seccomp.hpp"

namespace corral::isolator {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxOutputBytes = uint64_t{1} << 40;  // 1 TiB
constexpr uint64_t kMinOutputBytes = 4096;
constexpr uint32_t kMaxKeep = 100;
constexpr uint64_t kMaxTmpfsBytes = uint64_t{1} << 40;
constexpr uint32_t kMaxGraceMs = 3600 * 1000;
constexpr size_t kMaxArgs = 65536;
constexpr size_t kMaxGroups = 64;

Error field_error(const std::string& field, const std::string& message) {
  return Error(EINVAL, "spec." + field + ": " + message);
}

// Walks one JSON object, remembering which keys were consumed so unknown ones are reported.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string field) : j_(j), field_(std::move(field)) {}

  Result<void> check_object() const {
    if (!j_.is_object()) return Error(EINVAL, name() + ": must be a JSON object");
    return {};
  }

  const json* get(const std::string& key) {
    seen_.insert(key);
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::string sub(const std::string& key) const {
    return field_.empty() ? key : field_ + "." + key;
  }

  Result<void> read(const std::string& key, std::string* out) {
    const json* v = get(key);
    if (!v) return {};
    if (!v->is_string()) return field_error(sub(key), "must be a string");
    *out = v->get<std::string>();
    return {};
  }

  Result<void> read(const std::string& key, bool* out) {
    const json* v = get(key);
    if (!v) return {};
    if (!v->is_boolean()) return field_error(sub(key), "must be true or false");
    *out = v->get<bool>();
    return {};
  }

  template <typename T>
  Result<void> read_unsigned(const std::string& key, T* out, uint64_t max) {
    const json* v = get(key);
    if (!v) return {};
    if (!(v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0))) {
      return field_error(sub(key), "must be a non-negative integer");
    }
    uint64_t value = v->get<uint64_t>();
    if (value > max) {
      return field_error(sub(key), "must be at most " + std::to_string(max) + " (got " +
                                       std::to_string(value) + ")");
    }
    *out = static_cast<T>(value);
    return {};
  }

  Result<void> read(const std::string& key, std::vector<std::string>* out) {
    const json* v = get(key);
    if (!v) return {};
    if (!v->is_array()) return field_error(sub(key), "must be an array of strings");
    out->clear();
    for (size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string()) {
        return field_error(sub(key) + "[" + std::to_string(i) + "]", "must be a string");
      }
      out->push_back((*v)[i].get<std::string>());
    }
    return {};
  }

  Result<void> finish() const {
    for (const auto& [key, value] : j_.items()) {
      if (!seen_.count(key)) {
        return field_error(sub(key),
                           "unknown field (check the spelling against "
                           "docs/launcher.md)");
      }
    }
    return {};
  }

 private:
  std::string name() const { return field_.empty() ? "spec" : "spec." + field_; }
  const json& j_;
  std::string field_;
  std::set<std::string> seen_;
};

// Absolute, normalised ("/a/b", no "..", ".", "//" or trailing '/'), no NUL.
Result<void> check_path(const std::string& field, const std::string& path) {
  if (path.empty()) return field_error(field, "must not be empty");
  if (path[0] != '/') return field_error(field, "must be an absolute path (got '" + path + "')");
  if (path.find('\0') != std::string::npos) return field_error(field, "contains a NUL byte");
  if (path.size() > 4095) return field_error(field, "is longer than PATH_MAX");
  if (path == "/") return {};
  if (path.back() == '/') return field_error(field, "must not end with '/' (got '" + path + "')");
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return field_error(
          field, "must be a normalised path without '..', '.' or '//' (got '" + path + "')");
    }
    start = end + 1;
  }
  return {};
}

bool is_under(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         path[dir.size()] == '/');
}

Result<void> check_container_path(const std::string& field, const std::string& path) {
  CORRAL_TRY(check_path(field, path));
  for (const char* reserved : {"/proc", "/sys", "/dev"}) {
    if (is_under(path, reserved)) {
      return field_error(field, "'" + path + "' is inside " + reserved +
                                    ", which the launcher sets up itself; choose another path");
    }
  }
  if (path == "/") return field_error(field, "must not be '/'");
  return {};
}

Result<void> check_output(const std::string& field, const OutputSpec& out) {
  CORRAL_TRY(check_path(field + ".path", out.path));
  if (out.max_bytes < kMinOutputBytes || out.max_bytes > kMaxOutputBytes) {
    return field_error(field + ".max_bytes", "must be between " + std::to_string(kMinOutputBytes) +
                                                 " and " + std::to_string(kMaxOutputBytes));
  }
  if (out.keep > kMaxKeep) {
    return field_error(field + ".keep", "must be at most " + std::to_string(kMaxKeep));
  }
  return {};
}

Result<void> read_output(ObjectReader& r, const std::string& key, OutputSpec* out) {
  const json* v = r.get(key);
  if (!v) return {};
  ObjectReader o(*v, r.sub(key));
  CORRAL_TRY(o.check_object());
  CORRAL_TRY(o.read("path", &out->path));
  CORRAL_TRY(o.read_unsigned("max_bytes", &out->max_bytes, UINT64_MAX));
  CORRAL_TRY(o.read_unsigned("keep", &out->keep, UINT32_MAX));
  return o.finish();
}

const char* rootfs_mode_name(RootfsMode m) {
  return m == RootfsMode::host ? "host" : m == RootfsMode::dir ? "dir" : "overlay";
}

const char* seccomp_mode_name(SeccompMode m) {
  switch (m) {
    case SeccompMode::default_profile:
      return "default";
    case SeccompMode::profile:
      return "profile";
    case SeccompMode::unconfined:
      return "unconfined";
  }
  return "default";
}

json output_json(const OutputSpec& o) {
  return {{"path", o.path}, {"max_bytes", o.max_bytes}, {"keep", o.keep}};
}

}  // namespace

const std::vector<std::string>& default_capabilities() {
  static const std::vector<std::string> caps = {
      "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
      "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
      "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
      "CAP_KILL",    "CAP_AUDIT_WRITE"};
  return caps;
}

const std::vector<std::string>& default_host_etc() {
  static const std::vector<std::string> etc = {"alternatives",
                                               "ca-certificates",
                                               "ca-certificates.conf",
                                               "debian_version",
                                               "gai.conf",
                                               "group",
                                               "host.conf",
                                               "hosts",
                                               "ld.so.cache",
                                               "ld.so.conf",
                                               "ld.so.conf.d",
                                               "localtime",
                                               "mime.types",
                                               "nsswitch.conf",
                                               "os-release",
                                               "passwd",
                                               "protocols",
                                               "resolv.conf",
                                               "services",
                                               "ssl",
                                               "timezone"};
  return etc;
}

Result<void> validate(const SandboxSpec& spec) {
  if (spec.argv.empty()) return field_error("argv", "must name the program to run");
  if (spec.argv.size() > kMaxArgs) return field_error("argv", "has too many arguments");
  if (spec.argv[0].empty()) return field_error("argv[0]", "must not be empty");
  for (size_t i = 0; i < spec.argv.size(); ++i) {
    if (spec.argv[i].find('\0') != std::string::npos) {
      return field_error("argv[" + std::to_string(i) + "]", "contains a NUL byte");
    }
  }
  if (spec.env.size() > kMaxArgs) return field_error("env", "has too many entries");
  for (size_t i = 0; i < spec.env.size(); ++i) {
    const auto& e = spec.env[i];
    if (e.find('=') == std::string::npos || e[0] == '=' || e.find('\0') != std::string::npos) {
      return field_error("env[" + std::to_string(i) + "]",
                         "must look like KEY=value (got '" + e + "')");
    }
  }
  CORRAL_TRY(check_path("cwd", spec.cwd));
  if (spec.hostname.empty() || spec.hostname.size() > 64) {
    return field_error("hostname", "must be 1 to 64 characters");
  }
  for (char c : spec.hostname) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') {
      return field_error("hostname", "may contain only letters, digits, '-' and '.' (got '" +
                                         spec.hostname + "')");
    }
  }
  if (!spec.namespaces.netns_path.empty()) {
    CORRAL_TRY(check_path("namespaces.netns_path", spec.namespaces.netns_path));
    if (!spec.namespaces.net) {
      return field_error("namespaces.netns_path",
                         "needs net = true (a task joins that network namespace)");
    }
  }
  if (const auto& user = spec.namespaces.user) {
    if (user->count == 0) return field_error("namespaces.user.count", "must be at least 1");
    if (uint64_t{user->host_uid} + user->count > UINT32_MAX ||
        uint64_t{user->host_gid} + user->count > UINT32_MAX) {
      return field_error("namespaces.user", "host id range overflows 32 bits");
    }
    if (spec.uid >= user->count || spec.gid >= user->count) {
      return field_error("uid", "uid " + std::to_string(spec.uid) + "/gid " +
                                    std::to_string(spec.gid) +
                                    " is outside the user namespace's mapped range 0.." +
                                    std::to_string(user->count - 1));
    }
    for (uint32_t g : spec.supplementary_gids) {
      if (g >= user->count) {
        return field_error("supplementary_gids",
                           "gid " + std::to_string(g) + " is outside the user namespace's range");
      }
    }
  }
  if (spec.rootfs.mode == RootfsMode::dir) {
    CORRAL_TRY(check_path("rootfs.path", spec.rootfs.path));
    if (spec.rootfs.path == "/") {
      return field_error("rootfs.path", "must not be the host's '/'; use mode \"host\"");
    }
  } else if (!spec.rootfs.path.empty()) {
    return field_error("rootfs.path", "is only used with mode \"dir\"");
  }
  if (spec.rootfs.mode == RootfsMode::overlay) {
    if (spec.rootfs.lower_dirs.empty()) {
      return field_error("rootfs.lower_dirs", "must name at least one layer directory");
    }
    size_t option_bytes = 0;
    for (size_t i = 0; i < spec.rootfs.lower_dirs.size(); ++i) {
      const auto& d = spec.rootfs.lower_dirs[i];
      const std::string f = "rootfs.lower_dirs[" + std::to_string(i) + "]";
      CORRAL_TRY(check_path(f, d));
      // overlayfs separates lower dirs with ':' and escapes with ','; refuse rather than escape.
      if (d == "/" || d.find_first_of(":,\\") != std::string::npos) {
        return field_error(f, "must not be '/' or contain ':', ',' or '\\'");
      }
      option_bytes += d.size() + 10;
    }
    for (auto [field, path] : {std::pair{"rootfs.upper_dir", &spec.rootfs.upper_dir},
                               std::pair{"rootfs.work_dir", &spec.rootfs.work_dir}}) {
      CORRAL_TRY(check_path(field, *path));
      if (*path == "/" || path->find_first_of(":,\\") != std::string::npos) {
        return field_error(field, "must not be '/' or contain ':', ',' or '\\'");
      }
      option_bytes += path->size() + 10;
    }
    if (option_bytes > 4000) {
      return field_error("rootfs.lower_dirs",
                         "the overlay mount options would exceed a page (too many or too long "
                         "layer paths); use shorter store paths or flatten the image");
    }
  } else if (!spec.rootfs.lower_dirs.empty() || !spec.rootfs.upper_dir.empty() ||
             !spec.rootfs.work_dir.empty()) {
    return field_error("rootfs.lower_dirs",
                       "lower_dirs, upper_dir and work_dir are only used "
                       "with mode \"overlay\"");
  }
  for (size_t i = 0; i < spec.rootfs.host_etc.size(); ++i) {
    const auto& e = spec.rootfs.host_etc[i];
    const std::string f = "rootfs.host_etc[" + std::to_string(i) + "]";
    if (e.empty() || e.find('/') != std::string::npos || e == "." || e == "..") {
      return field_error(f, "must be a name directly under /etc (got '" + e + "')");
    }
  }
  for (auto [field, size] : {std::pair{"rootfs.tmp_size_bytes", spec.rootfs.tmp_size_bytes},
                             std::pair{"rootfs.shm_size_bytes", spec.rootfs.shm_size_bytes}}) {
    if (size < 4096 || size > kMaxTmpfsBytes) {
      return field_error(field, "must be between 4096 and " + std::to_string(kMaxTmpfsBytes));
    }
  }
  CORRAL_TRY(check_path("sandbox_dir", spec.sandbox_dir));
  if (spec.sandbox_dir == "/") return field_error("sandbox_dir", "must not be '/'");
  CORRAL_TRY(check_container_path("sandbox_mount", spec.sandbox_mount));
  std::set<std::string> targets = {spec.sandbox_mount};
  for (size_t i = 0; i < spec.volumes.size(); ++i) {
    const std::string f = "volumes[" + std::to_string(i) + "]";
    CORRAL_TRY(check_path(f + ".host_path", spec.volumes[i].host_path));
    CORRAL_TRY(check_container_path(f + ".container_path", spec.volumes[i].container_path));
    if (!targets.insert(spec.volumes[i].container_path).second) {
      return field_error(f + ".container_path",
                         "'" + spec.volumes[i].container_path + "' is mounted twice");
    }
  }
  if (spec.supplementary_gids.size() > kMaxGroups) {
    return field_error("supplementary_gids", "at most " + std::to_string(kMaxGroups));
  }
  if (spec.uid == UINT32_MAX || spec.gid == UINT32_MAX) {
    return field_error("uid", "4294967295 is not a valid id");
  }
  for (size_t i = 0; i < spec.capabilities.size(); ++i) {
    auto cap = capability_from_name(spec.capabilities[i]);
    if (!cap) return cap.error().context("spec.capabilities[" + std::to_string(i) + "]");
  }
  if (spec.seccomp.mode == SeccompMode::profile) {
    auto mask = capability_mask(spec.capabilities);
    if (!mask) return mask.error();
    auto profile = parse_seccomp_profile(spec.seccomp.profile, *mask);
    if (!profile) return profile.error().context("spec.seccomp.profile");
  } else if (!spec.seccomp.profile.is_null()) {
    return field_error("seccomp.profile", "is only used with mode \"profile\"");
  }
  std::set<int> seen_limits;
  for (size_t i = 0; i < spec.rlimits.size(); ++i) {
    const auto& l = spec.rlimits[i];
    const std::string f = "rlimits[" + std::to_string(i) + "]";
    auto resource = rlimit_from_name(l.name);
    if (!resource) return resource.error().context("spec." + f + ".name");
    if (*resource != l.resource) return field_error(f + ".resource", "does not match the name");
    if (l.soft > l.hard) return field_error(f, "soft limit is above the hard limit");
    if (!seen_limits.insert(l.resource).second) return field_error(f, l.name + " is set twice");
  }
  if (spec.kill_grace_ms > kMaxGraceMs) {
    return field_error("kill_grace_ms", "must be at most " + std::to_string(kMaxGraceMs));
  }
  CORRAL_TRY(check_output("stdout", spec.stdout_spec));
  CORRAL_TRY(check_output("stderr", spec.stderr_spec));
  if (spec.stdout_spec.path == spec.stderr_spec.path) {
    return field_error("stderr.path", "must differ from stdout.path");
  }
  CORRAL_TRY(check_path("exit_status_path", spec.exit_status_path));
  if (is_under(spec.exit_status_path, spec.sandbox_dir)) {
    return field_error("exit_status_path",
                       "must be outside sandbox_dir: the task can write there and could forge "
                       "its own exit status");
  }
  if (!spec.cgroup_dir.empty()) {
    CORRAL_TRY(check_path("cgroup_dir", spec.cgroup_dir));
    if (!is_under(spec.cgroup_dir, "/sys/fs/cgroup")) {
      return field_error("cgroup_dir",
                         "must be under /sys/fs/cgroup (got '" + spec.cgroup_dir + "')");
    }
  }
  return {};
}

Result<SandboxSpec> sandbox_spec_from_json(const json& j) {
  SandboxSpec spec;
  spec.capabilities = default_capabilities();
  spec.rootfs.host_etc = default_host_etc();
  ObjectReader r(j, "");
  CORRAL_TRY(r.check_object());
  CORRAL_TRY(r.read("argv", &spec.argv));
  CORRAL_TRY(r.read("env", &spec.env));
  CORRAL_TRY(r.read("cwd", &spec.cwd));
  CORRAL_TRY(r.read("hostname", &spec.hostname));
  if (const json* ns = r.get("namespaces")) {
    ObjectReader n(*ns, "namespaces");
    CORRAL_TRY(n.check_object());
    CORRAL_TRY(n.read("net", &spec.namespaces.net));
    CORRAL_TRY(n.read("netns_path", &spec.namespaces.netns_path));
    CORRAL_TRY(n.read("cgroup", &spec.namespaces.cgroup));
    if (const json* user = n.get("user")) {
      ObjectReader u(*user, "namespaces.user");
      CORRAL_TRY(u.check_object());
      UserNamespaceSpec us;
      if (!user->contains("host_uid") || !user->contains("host_gid")) {
        return field_error("namespaces.user",
                           "needs host_uid and host_gid (the start of the "
                           "subuid/subgid range)");
      }
      CORRAL_TRY(u.read_unsigned("host_uid", &us.host_uid, UINT32_MAX - 1));
      CORRAL_TRY(u.read_unsigned("host_gid", &us.host_gid, UINT32_MAX - 1));
      CORRAL_TRY(u.read_unsigned("count", &us.count, UINT32_MAX));
      CORRAL_TRY(u.finish());
      spec.namespaces.user = us;
    }
    for (const char* always : {"pid", "mount", "uts", "ipc"}) {
      if (const json* v = n.get(always)) {
        if (!v->is_boolean() || !v->get<bool>()) {
          return field_error(std::string("namespaces.") + always,
                             "is always a new namespace and cannot be turned off");
        }
      }
    }
    CORRAL_TRY(n.finish());
  }
  if (const json* rootfs = r.get("rootfs")) {
    ObjectReader f(*rootfs, "rootfs");
    CORRAL_TRY(f.check_object());
    std::string mode = "host";
    CORRAL_TRY(f.read("mode", &mode));
    if (mode == "host") {
      spec.rootfs.mode = RootfsMode::host;
    } else if (mode == "dir") {
      spec.rootfs.mode = RootfsMode::dir;
    } else if (mode == "overlay") {
      spec.rootfs.mode = RootfsMode::overlay;
    } else {
      return field_error("rootfs.mode",
                         "must be \"host\", \"dir\" or \"overlay\" (got '" + mode + "')");
    }
    CORRAL_TRY(f.read("lower_dirs", &spec.rootfs.lower_dirs));
    CORRAL_TRY(f.read("upper_dir", &spec.rootfs.upper_dir));
    CORRAL_TRY(f.read("work_dir", &spec.rootfs.work_dir));
    CORRAL_TRY(f.read("path", &spec.rootfs.path));
    CORRAL_TRY(f.read("readonly", &spec.rootfs.readonly));
    CORRAL_TRY(f.read("host_etc", &spec.rootfs.host_etc));
    CORRAL_TRY(f.read_unsigned("tmp_size_bytes", &spec.rootfs.tmp_size_bytes, UINT64_MAX));
    CORRAL_TRY(f.read_unsigned("shm_size_bytes", &spec.rootfs.shm_size_bytes, UINT64_MAX));
    CORRAL_TRY(f.finish());
  }
  CORRAL_TRY(r.read("sandbox_dir", &spec.sandbox_dir));
  CORRAL_TRY(r.read("sandbox_mount", &spec.sandbox_mount));
  if (const json* volumes = r.get("volumes")) {
    if (!volumes->is_array()) return field_error("volumes", "must be an array");
    for (size_t i = 0; i < volumes->size(); ++i) {
      ObjectReader v((*volumes)[i], "volumes[" + std::to_string(i) + "]");
      CORRAL_TRY(v.check_object());
      VolumeSpec vol;
      CORRAL_TRY(v.read("host_path", &vol.host_path));
      CORRAL_TRY(v.read("container_path", &vol.container_path));
      CORRAL_TRY(v.read("readonly", &vol.readonly));
      CORRAL_TRY(v.finish());
      spec.volumes.push_back(vol);
    }
  }
  CORRAL_TRY(r.read_unsigned("uid", &spec.uid, UINT32_MAX));
  CORRAL_TRY(r.read_unsigned("gid", &spec.gid, UINT32_MAX));
  if (const json* groups = r.get("supplementary_gids")) {
    if (!groups->is_array()) return field_error("supplementary_gids", "must be an array");
    for (size_t i = 0; i < groups->size(); ++i) {
      const auto& g = (*groups)[i];
      if (!g.is_number_integer() || g.get<int64_t>() < 0 || g.get<uint64_t>() >= UINT32_MAX) {
        return field_error("supplementary_gids[" + std::to_string(i) + "]",
                           "must be a gid (0..4294967294)");
      }
      spec.supplementary_gids.push_back(g.get<uint32_t>());
    }
  }
  CORRAL_TRY(r.read("capabilities", &spec.capabilities));
  if (const json* seccomp = r.get("seccomp")) {
    ObjectReader s(*seccomp, "seccomp");
    CORRAL_TRY(s.check_object());
    std::string mode = "default";
    CORRAL_TRY(s.read("mode", &mode));
    if (mode == "default") {
      spec.seccomp.mode = SeccompMode::default_profile;
    } else if (mode == "profile") {
      spec.seccomp.mode = SeccompMode::profile;
    } else if (mode == "unconfined") {
      spec.seccomp.mode = SeccompMode::unconfined;
    } else {
      return field_error("seccomp.mode",
                         "must be \"default\", \"profile\" or \"unconfined\" (got '" + mode + "')");
    }
    if (const json* profile = s.get("profile")) spec.seccomp.profile = *profile;
    if (spec.seccomp.mode == SeccompMode::profile && spec.seccomp.profile.is_null()) {
      return field_error("seccomp.profile",
                         "is required with mode \"profile\" (an OCI/Docker "
                         "seccomp JSON object)");
    }
    CORRAL_TRY(s.finish());
  }
  if (const json* no_new_privs = r.get("no_new_privs")) {
    if (!no_new_privs->is_boolean() || !no_new_privs->get<bool>()) {
      return field_error("no_new_privs", "is always true and cannot be turned off");
    }
  }
  if (const json* limits = r.get("rlimits")) {
    if (!limits->is_array()) return field_error("rlimits", "must be an array");
    for (size_t i = 0; i < limits->size(); ++i) {
      const std::string f = "rlimits[" + std::to_string(i) + "]";
      ObjectReader l((*limits)[i], f);
      CORRAL_TRY(l.check_object());
      RlimitSpec limit;
      CORRAL_TRY(l.read("name", &limit.name));
      auto resource = rlimit_from_name(limit.name);
      if (!resource) return resource.error().context("spec." + f + ".name");
      limit.resource = *resource;
      for (auto [key, out] : {std::pair{"soft", &limit.soft}, std::pair{"hard", &limit.hard}}) {
        const json* v = l.get(key);
        if (!v) return field_error(f + "." + key, "missing (a number or \"unlimited\")");
        if (v->is_string() && v->get<std::string>() == "unlimited") {
          *out = UINT64_MAX;
        } else if (v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0)) {
          *out = v->get<uint64_t>();
        } else {
          return field_error(f + "." + key, "must be a non-negative integer or \"unlimited\"");
        }
      }
      CORRAL_TRY(l.finish());
      spec.rlimits.push_back(limit);
    }
  }
  CORRAL_TRY(r.read_unsigned("kill_grace_ms", &spec.kill_grace_ms, UINT32_MAX));
  CORRAL_TRY(read_output(r, "stdout", &spec.stdout_spec));
  CORRAL_TRY(read_output(r, "stderr", &spec.stderr_spec));
  CORRAL_TRY(r.read("exit_status_path", &spec.exit_status_path));
  CORRAL_TRY(r.read("cgroup_dir", &spec.cgroup_dir));
  CORRAL_TRY(r.finish());

  if (spec.sandbox_dir.empty()) return field_error("sandbox_dir", "missing");
  if (spec.exit_status_path.empty()) return field_error("exit_status_path", "missing");
  if (spec.cwd.empty()) spec.cwd = spec.sandbox_mount;
  if (spec.stdout_spec.path.empty()) spec.stdout_spec.path = spec.sandbox_dir + "/stdout";
  if (spec.stderr_spec.path.empty()) spec.stderr_spec.path = spec.sandbox_dir + "/stderr";
  CORRAL_TRY(validate(spec));
  return spec;
}

Result<SandboxSpec> parse_sandbox_spec(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Error(EINVAL, "spec: not valid JSON (see docs/launcher.md for the format)");
  }
  return sandbox_spec_from_json(j);
}

json to_json(const SandboxSpec& spec) {
  json j;
  j["argv"] = spec.argv;
  j["env"] = spec.env;
  j["cwd"] = spec.cwd;
  j["hostname"] = spec.hostname;
  json ns = {{"pid", true},
             {"mount", true},
             {"uts", true},
             {"ipc", true},
             {"net", spec.namespaces.net},
             {"cgroup", spec.namespaces.cgroup}};
  if (spec.namespaces.user) {
    ns["user"] = {{"host_uid", spec.namespaces.user->host_uid},
                  {"host_gid", spec.namespaces.user->host_gid},
                  {"count", spec.namespaces.user->count}};
  }
  if (!spec.namespaces.netns_path.empty()) ns["netns_path"] = spec.namespaces.netns_path;
  j["namespaces"] = ns;
  json rootfs = {{"mode", rootfs_mode_name(spec.rootfs.mode)},
                 {"readonly", spec.rootfs.readonly},
                 {"host_etc", spec.rootfs.host_etc},
                 {"tmp_size_bytes", spec.rootfs.tmp_size_bytes},
                 {"shm_size_bytes", spec.rootfs.shm_size_bytes}};
  if (spec.rootfs.mode == RootfsMode::dir) rootfs["path"] = spec.rootfs.path;
  if (spec.rootfs.mode == RootfsMode::overlay) {
    rootfs["lower_dirs"] = spec.rootfs.lower_dirs;
    rootfs["upper_dir"] = spec.rootfs.upper_dir;
    rootfs["work_dir"] = spec.rootfs.work_dir;
  }
  j["rootfs"] = rootfs;
  j["sandbox_dir"] = spec.sandbox_dir;
  j["sandbox_mount"] = spec.sandbox_mount;
  j["volumes"] = json::array();
  for (const auto& v : spec.volumes) {
    j["volumes"].push_back({{"host_path", v.host_path},
                            {"container_path", v.container_path},
                            {"readonly", v.readonly}});
  }
  j["uid"] = spec.uid;
  j["gid"] = spec.gid;
  j["supplementary_gids"] = spec.supplementary_gids;
  j["capabilities"] = spec.capabilities;
  json seccomp = {{"mode", seccomp_mode_name(spec.seccomp.mode)}};
  if (spec.seccomp.mode == SeccompMode::profile) seccomp["profile"] = spec.seccomp.profile;
  j["seccomp"] = seccomp;
  j["no_new_privs"] = true;
  j["rlimits"] = json::array();
  for (const auto& l : spec.rlimits) {
    auto value = [](uint64_t v) { return v == UINT64_MAX ? json("unlimited") : json(v); };
    j["rlimits"].push_back({{"name", l.name}, {"soft", value(l.soft)}, {"hard", value(l.hard)}});
  }
  j["kill_grace_ms"] = spec.kill_grace_ms;
  j["stdout"] = output_json(spec.stdout_spec);
  j["stderr"] = output_json(spec.stderr_spec);
  j["exit_status_path"] = spec.exit_status_path;
  j["cgroup_dir"] = spec.cgroup_dir;
  return j;
}

}  // namespace corral::isolator
