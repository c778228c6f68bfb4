#include "corral/isolator/seccomp.hpp"

#include <seccomp.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <memory>

#include "corral/isolator/capabilities.hpp"

namespace corral::isolator {
namespace {

bool has_cap(uint64_t mask, std::string_view name) {
  auto cap = capability_from_name(name);
  return cap.ok() && (mask & (uint64_t{1} << *cap)) != 0;
}

SeccompRule deny(std::vector<std::string> names) {
  SeccompRule rule;
  rule.names = std::move(names);
  rule.action = SeccompAction::errno_ret;
  rule.errno_ret = EPERM;
  return rule;
}

Result<SeccompAction> action_from_name(const std::string& name) {
  if (name == "SCMP_ACT_ALLOW") return SeccompAction::allow;
  if (name == "SCMP_ACT_ERRNO") return SeccompAction::errno_ret;
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SeccompAction::kill_thread;
  if (name == "SCMP_ACT_KILL_PROCESS") return SeccompAction::kill_process;
  if (name == "SCMP_ACT_TRAP") return SeccompAction::trap;
  if (name == "SCMP_ACT_LOG") return SeccompAction::log;
  return Error(EINVAL, "unknown action '" + name +
                           "': use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, "
                           "SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP or "
                           "SCMP_ACT_LOG (SCMP_ACT_TRACE and SCMP_ACT_NOTIFY need a tracer or "
                           "listener, which Corral does not provide)");
}

const char* const kOps[] = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",       "SCMP_CMP_EQ",
                            "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"};

Result<scmp_compare> op_from_name(const std::string& name) {
  static const scmp_compare values[] = {SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE,       SCMP_CMP_EQ,
                                        SCMP_CMP_GE, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ};
  for (size_t i = 0; i < std::size(kOps); ++i) {
    if (name == kOps[i]) return values[i];
  }
  return Error(EINVAL, "unknown op '" + name +
                           "': use one of SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_EQ, "
                           "SCMP_CMP_GE, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ");
}

// "SCMP_ARCH_X86_64" -> "x86_64" (libseccomp's resolver spelling).
Result<std::string> arch_from_name(const std::string& name) {
  std::string n = name;
  if (n.rfind("SCMP_ARCH_", 0) == 0) n = n.substr(10);
  for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "x86") n = "x86";
  if (::seccomp_arch_resolve_name(n.c_str()) == 0) {
    return Error(EINVAL, "unknown architecture '" + name + "': use e.g. SCMP_ARCH_X86_64");
  }
  return n;
}

std::string native_arch_name() {
  uint32_t native = ::seccomp_arch_native();
  static const char* const candidates[] = {"x86_64", "x86",   "x32",     "arm",   "aarch64", "mips",
                                           "mips64", "ppc64", "ppc64le", "s390x", "riscv64"};
  for (const char* c : candidates) {
    if (::seccomp_arch_resolve_name(c) == native) return c;
  }
  return "";
}

// "6.1.0-13-amd64" >= "4.8"?
bool kernel_at_least(const std::string& min) {
  utsname u{};
  if (::uname(&u) != 0) return false;
  int have_major = 0, have_minor = 0, want_major = 0, want_minor = 0;
  if (std::sscanf(u.release, "%d.%d", &have_major, &have_minor) < 2) return false;
  if (std::sscanf(min.c_str(), "%d.%d", &want_major, &want_minor) < 1) return false;
  return have_major > want_major || (have_major == want_major && have_minor >= want_minor);
}

Result<std::vector<std::string>> string_list(const nlohmann::json& j, const std::string& field) {
  if (!j.is_array()) return Error(EINVAL, field + ": must be an array of strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_string()) {
      return Error(EINVAL, field + "[" + std::to_string(i) + "]: must be a string");
    }
    out.push_back(j[i].get<std::string>());
  }
  return out;
}

Result<uint64_t> unsigned_field(const nlohmann::json& j, const std::string& field) {
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<int64_t>() >= 0)) {
    return Error(EINVAL, field + ": must be a non-negative integer");
  }
  return j.get<uint64_t>();
}

// Docker's includes/excludes: {"caps": [...], "arches": [...], "minKernel": "4.8"}.
Result<bool> filter_matches(const nlohmann::json& j, const std::string& field, uint64_t caps,
                            bool include) {
  if (!j.is_object()) return Error(EINVAL, field + ": must be an object");
  const std::string native = native_arch_name();
  for (const auto& [key, value] : j.items()) {
    const std::string sub = field + "." + key;
    if (key == "caps") {
      CORRAL_ASSIGN_OR_RETURN(auto names, string_list(value, sub));
      for (const auto& name : names) {
        auto cap = capability_from_name(name);
        if (!cap) return cap.error().context(sub);
        bool held = (caps & (uint64_t{1} << *cap)) != 0;
        if (include && !held) return false;  // includes: every listed cap is needed
        if (!include && held) return false;  // excludes: any listed cap drops the rule
      }
    } else if (key == "arches") {
      CORRAL_ASSIGN_OR_RETURN(auto names, string_list(value, sub));
      bool listed = false;
      for (const auto& name : names) {
        auto arch = arch_from_name(name);
        if (!arch) return arch.error().context(sub);
        if (*arch == native) listed = true;
      }
      if (!names.empty() && listed != include) return false;
    } else if (key == "minKernel") {
      if (!value.is_string()) return Error(EINVAL, sub + ": must be a string like \"4.8\"");
      if (kernel_at_least(value.get<std::string>()) != include) return false;
    } else {
      return Error(EINVAL, sub + ": unknown field (expected caps, arches or minKernel)");
    }
  }
  return true;
}

uint32_t to_scmp_action(SeccompAction action, uint32_t errno_ret) {
  switch (action) {
    case SeccompAction::allow:
      return SCMP_ACT_ALLOW;
    case SeccompAction::errno_ret:
      return SCMP_ACT_ERRNO(errno_ret);
    case SeccompAction::kill_thread:
      return SCMP_ACT_KILL;
    case SeccompAction::kill_process:
      return SCMP_ACT_KILL_PROCESS;
    case SeccompAction::trap:
      return SCMP_ACT_TRAP;
    case SeccompAction::log:
      return SCMP_ACT_LOG;
  }
  return SCMP_ACT_KILL_PROCESS;
}

struct CtxDeleter {
  void operator()(scmp_filter_ctx ctx) const { ::seccomp_release(ctx); }
};

}  // namespace

SeccompProfile default_seccomp_profile(uint64_t caps) {
  SeccompProfile p;
  p.default_action = SeccompAction::allow;
  // Always refused (Docker refuses them whatever the capabilities).
  p.rules.push_back(deny({"add_key",
                          "keyctl",
                          "request_key",
                          "userfaultfd",
                          "open_by_handle_at",
                          "name_to_handle_at",
                          "kexec_load",
                          "kexec_file_load",
                          "uselib",
                          "ustat",
                          "sysfs",
                          "_sysctl",
                          "nfsservctl",
                          "get_kernel_syms",
                          "query_module",
                          "create_module",
                          "vm86",
                          "vm86old",
                          "lookup_dcookie",
                          "io_uring_setup",
                          "io_uring_enter",
                          "io_uring_register"}));
  // clone3's flags live in memory seccomp cannot inspect: like Docker, make it ENOSYS so libc
  // falls back to clone, whose namespace flags are checked below.
  SeccompRule clone3 = deny({"clone3"});
  clone3.errno_ret = ENOSYS;
  p.rules.push_back(clone3);
  if (!has_cap(caps, "CAP_SYS_ADMIN")) {
    p.rules.push_back(deny(
        {"mount",       "umount",         "umount2",         "move_mount",      "open_tree",
         "fsopen",      "fsconfig",       "fsmount",         "fspick",          "mount_setattr",
         "pivot_root",  "unshare",        "setns",           "quotactl",        "quotactl_fd",
         "swapon",      "swapoff",        "fanotify_init",   "lookup_dcookie",  "perf_event_open",
         "bpf",         "iopl",           "ioperm",          "syslog",          "setdomainname",
         "sethostname", "pciconfig_read", "pciconfig_write", "pciconfig_iobase"}));
    // clone with any namespace flag: one rule per flag, since a masked "!= 0" cannot be said.
    const uint64_t flags[] = {0x00020000 /*NEWNS*/,   0x02000000 /*NEWCGROUP*/,
                              0x04000000 /*NEWUTS*/,  0x08000000 /*NEWIPC*/,
                              0x10000000 /*NEWUSER*/, 0x20000000 /*NEWPID*/,
                              0x40000000 /*NEWNET*/,  0x00000080 /*NEWTIME*/};
    for (uint64_t flag : flags) {
      SeccompRule rule = deny({"clone"});
      rule.args.push_back({0, flag, flag, "SCMP_CMP_MASKED_EQ"});
      p.rules.push_back(rule);
    }
  }
  if (!has_cap(caps, "CAP_SYS_PTRACE")) {
    p.rules.push_back(
        deny({"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "process_madvise"}));
  }
  if (!has_cap(caps, "CAP_SYS_MODULE")) {
    p.rules.push_back(deny({"init_module", "finit_module", "delete_module"}));
  }
  if (!has_cap(caps, "CAP_SYS_BOOT")) p.rules.push_back(deny({"reboot"}));
  if (!has_cap(caps, "CAP_SYS_PACCT")) p.rules.push_back(deny({"acct"}));
  if (!has_cap(caps, "CAP_SYS_TIME")) {
    p.rules.push_back(deny({"settimeofday", "stime", "clock_settime", "clock_settime64",
                            "clock_adjtime", "clock_adjtime64", "adjtimex"}));
  }
  if (!has_cap(caps, "CAP_SYS_NICE")) {
    p.rules.push_back(deny({"get_mempolicy", "set_mempolicy", "mbind", "move_pages"}));
  }
  if (!has_cap(caps, "CAP_SYS_TTY_CONFIG")) p.rules.push_back(deny({"vhangup"}));
  // AF_VSOCK sockets reach the hypervisor; Docker refuses them.
  SeccompRule vsock = deny({"socket"});
  vsock.args.push_back({0, 40 /*AF_VSOCK*/, 0, "SCMP_CMP_EQ"});
  p.rules.push_back(vsock);
  // Drop names this libseccomp does not know (e.g. stime on x86_64) instead of failing to load.
  for (auto& rule : p.rules) {
    std::erase_if(rule.names, [&](const std::string& n) {
      if (::seccomp_syscall_resolve_name(n.c_str()) == __NR_SCMP_ERROR) {
        p.unknown_syscalls.push_back(n);
        return true;
      }
      return false;
    });
  }
  return p;
}

Result<SeccompProfile> parse_seccomp_profile(const nlohmann::json& j, uint64_t caps) {
  if (!j.is_object()) return Error(EINVAL, "seccomp profile: must be a JSON object");
  SeccompProfile p;
  bool have_default = false;
  for (const auto& [key, value] : j.items()) {
    if (key == "defaultAction") {
      if (!value.is_string()) return Error(EINVAL, "defaultAction: must be a string");
      auto action = action_from_name(value.get<std::string>());
      if (!action) return action.error().context("defaultAction");
      p.default_action = *action;
      have_default = true;
    } else if (key == "defaultErrnoRet") {
      CORRAL_ASSIGN_OR_RETURN(uint64_t e, unsigned_field(value, "defaultErrnoRet"));
      p.default_errno_ret = static_cast<uint32_t>(e);
    } else if (key == "architectures") {
      CORRAL_ASSIGN_OR_RETURN(auto names, string_list(value, "architectures"));
      for (size_t i = 0; i < names.size(); ++i) {
        auto arch = arch_from_name(names[i]);
        if (!arch) return arch.error().context("architectures[" + std::to_string(i) + "]");
        p.architectures.push_back(*arch);
      }
    } else if (key == "archMap") {
      // Docker: [{"architecture": A, "subArchitectures": [...]}]; the native entry applies.
      if (!value.is_array()) return Error(EINVAL, "archMap: must be an array");
      const std::string native = native_arch_name();
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string f = "archMap[" + std::to_string(i) + "]";
        const auto& entry = value[i];
        if (!entry.is_object() || !entry.contains("architecture") ||
            !entry["architecture"].is_string()) {
          return Error(EINVAL,
                       f + ": must be {\"architecture\": ..., \"subArchitectures\": [...]}");
        }
        auto arch = arch_from_name(entry["architecture"].get<std::string>());
        if (!arch) return arch.error().context(f + ".architecture");
        std::vector<std::string> subs;
        if (entry.contains("subArchitectures")) {
          CORRAL_ASSIGN_OR_RETURN(subs,
                                  string_list(entry["subArchitectures"], f + ".subArchitectures"));
        }
        if (*arch != native) continue;
        p.architectures.push_back(*arch);
        for (const auto& sub : subs) {
          auto s = arch_from_name(sub);
          if (!s) return s.error().context(f + ".subArchitectures");
          p.architectures.push_back(*s);
        }
      }
    } else if (key == "syscalls") {
      if (!value.is_array()) return Error(EINVAL, "syscalls: must be an array");
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string f = "syscalls[" + std::to_string(i) + "]";
        const auto& entry = value[i];
        if (!entry.is_object()) return Error(EINVAL, f + ": must be an object");
        SeccompRule rule;
        bool have_action = false, keep = true;
        for (const auto& [k, v] : entry.items()) {
          const std::string sub = f + "." + k;
          if (k == "names") {
            CORRAL_ASSIGN_OR_RETURN(auto names, string_list(v, sub));
            rule.names.insert(rule.names.end(), names.begin(), names.end());
          } else if (k == "name") {
            if (!v.is_string()) return Error(EINVAL, sub + ": must be a string");
            rule.names.push_back(v.get<std::string>());
          } else if (k == "action") {
            if (!v.is_string()) return Error(EINVAL, sub + ": must be a string");
            auto action = action_from_name(v.get<std::string>());
            if (!action) return action.error().context(sub);
            rule.action = *action;
            have_action = true;
          } else if (k == "errnoRet") {
            CORRAL_ASSIGN_OR_RETURN(uint64_t e, unsigned_field(v, sub));
            rule.errno_ret = static_cast<uint32_t>(e);
          } else if (k == "args") {
            if (v.is_null()) continue;
            if (!v.is_array()) return Error(EINVAL, sub + ": must be an array");
            for (size_t a = 0; a < v.size(); ++a) {
              const std::string af = sub + "[" + std::to_string(a) + "]";
              const auto& arg = v[a];
              if (!arg.is_object()) return Error(EINVAL, af + ": must be an object");
              SeccompArg parsed;
              for (const auto& [ak, av] : arg.items()) {
                if (ak == "index") {
                  CORRAL_ASSIGN_OR_RETURN(uint64_t idx, unsigned_field(av, af + ".index"));
                  if (idx > 5) return Error(EINVAL, af + ".index: must be 0..5");
                  parsed.index = static_cast<unsigned>(idx);
                } else if (ak == "value") {
                  CORRAL_ASSIGN_OR_RETURN(parsed.value, unsigned_field(av, af + ".value"));
                } else if (ak == "valueTwo") {
                  CORRAL_ASSIGN_OR_RETURN(parsed.value_two, unsigned_field(av, af + ".valueTwo"));
                } else if (ak == "op") {
                  if (!av.is_string()) return Error(EINVAL, af + ".op: must be a string");
                  auto op = op_from_name(av.get<std::string>());
                  if (!op) return op.error().context(af + ".op");
                  parsed.op = av.get<std::string>();
                } else {
                  return Error(EINVAL, af + "." + ak +
                                           ": unknown field (expected index, value, "
                                           "valueTwo, op)");
                }
              }
              rule.args.push_back(parsed);
            }
          } else if (k == "includes" || k == "excludes") {
            CORRAL_ASSIGN_OR_RETURN(bool match, filter_matches(v, sub, caps, k == "includes"));
            if (!match) keep = false;
          } else if (k == "comment") {
            // Docker profiles carry comments.
          } else {
            return Error(EINVAL, sub +
                                     ": unknown field (expected names, action, args, errnoRet, "
                                     "includes, excludes, comment)");
          }
        }
        if (!have_action) return Error(EINVAL, f + ".action: missing");
        if (rule.names.empty()) return Error(EINVAL, f + ".names: missing or empty");
        if (!keep) continue;
        std::erase_if(rule.names, [&](const std::string& n) {
          if (::seccomp_syscall_resolve_name(n.c_str()) == __NR_SCMP_ERROR) {
            p.unknown_syscalls.push_back(n);
            return true;
          }
          return false;
        });
        if (!rule.names.empty()) p.rules.push_back(std::move(rule));
      }
    } else if (key == "listenerPath" || key == "listenerMetadata" || key == "flags") {
      return Error(EINVAL, key +
                               ": not supported by Corral (seccomp notify and filter flags); "
                               "remove the field");
    } else {
      return Error(EINVAL, key +
                               ": unknown field (expected defaultAction, defaultErrnoRet, "
                               "architectures, archMap, syscalls)");
    }
  }
  if (!have_default) return Error(EINVAL, "defaultAction: missing (e.g. \"SCMP_ACT_ERRNO\")");
  return p;
}

Result<void> load_seccomp(const SeccompProfile& profile) {
  std::unique_ptr<void, CtxDeleter> ctx(
      ::seccomp_init(to_scmp_action(profile.default_action, profile.default_errno_ret)));
  if (!ctx) return Error(EINVAL, "seccomp_init failed");
  const uint32_t native = ::seccomp_arch_native();
  for (const auto& name : profile.architectures) {
    uint32_t arch = ::seccomp_arch_resolve_name(name.c_str());
    if (arch == native) continue;
    int rc = ::seccomp_arch_add(ctx.get(), arch);
    if (rc != 0 && rc != -EEXIST) return Error(-rc, "seccomp_arch_add(" + name + ") failed");
  }
  const uint32_t default_action = to_scmp_action(profile.default_action, profile.default_errno_ret);
  for (const auto& rule : profile.rules) {
    const uint32_t action = to_scmp_action(rule.action, rule.errno_ret);
    if (action == default_action) continue;  // libseccomp refuses rules equal to the default
    std::vector<scmp_arg_cmp> cmps;
    for (const auto& arg : rule.args) {
      auto op = op_from_name(arg.op);
      if (!op) return op.error();
      cmps.push_back(scmp_arg_cmp{arg.index, *op, arg.value, arg.value_two});
    }
    for (const auto& name : rule.names) {
      int nr = ::seccomp_syscall_resolve_name(name.c_str());
      if (nr == __NR_SCMP_ERROR) continue;
      int rc = ::seccomp_rule_add_array(ctx.get(), action, nr, static_cast<unsigned>(cmps.size()),
                                        cmps.data());
      if (rc != 0) {
        return Error(-rc, "seccomp rule for " + name +
                              " could not be added: " + std::string(std::strerror(-rc)));
      }
    }
  }
  int rc = ::seccomp_load(ctx.get());
  if (rc != 0) return Error(-rc, "seccomp_load: " + std::string(std::strerror(-rc)));
  return {};
}

}  // namespace corral::isolator
