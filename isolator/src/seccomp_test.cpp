#include "corral/isolator/seccomp.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "corral/isolator/capabilities.hpp"
#include "corral/isolator/sandbox_spec.hpp"

namespace corral::isolator {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

bool denies(const SeccompProfile& p, const std::string& name) {
  return std::any_of(p.rules.begin(), p.rules.end(), [&](const SeccompRule& r) {
    return r.action == SeccompAction::errno_ret && r.args.empty() &&
           std::find(r.names.begin(), r.names.end(), name) != r.names.end();
  });
}

TEST(DefaultSeccompProfile, RefusesTheDockerDefaultDenials) {
  auto p = default_seccomp_profile(*capability_mask(default_capabilities()));
  EXPECT_EQ(p.default_action, SeccompAction::allow);
  for (const char* name : {"keyctl",     "add_key",           "request_key",  "bpf",
                           "mount",      "umount2",           "unshare",      "setns",
                           "ptrace",     "init_module",       "finit_module", "delete_module",
                           "kexec_load", "open_by_handle_at", "reboot",       "swapon",
                           "swapoff",    "perf_event_open",   "userfaultfd",  "pivot_root"}) {
    EXPECT_TRUE(denies(p, name)) << name;
  }
}

TEST(DefaultSeccompProfile, FollowsTheKeptCapabilities) {
  auto with_admin = default_seccomp_profile(*capability_mask({"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}));
  EXPECT_FALSE(denies(with_admin, "mount"));
  EXPECT_FALSE(denies(with_admin, "ptrace"));
  EXPECT_TRUE(denies(with_admin, "keyctl"));  // refused whatever the capabilities
}

TEST(SeccompProfileParser, ReadsDockerStyleProfiles) {
  json j = {{"defaultAction", "SCMP_ACT_ERRNO"},
            {"defaultErrnoRet", 1},
            {"archMap",
             {{{"architecture", "SCMP_ARCH_X86_64"},
               {"subArchitectures", {"SCMP_ARCH_X86", "SCMP_ARCH_X32"}}}}},
            {"syscalls",
             {{{"names", {"read", "write", "no_such_syscall_xyz"}}, {"action", "SCMP_ACT_ALLOW"}},
              {{"names", {"ptrace"}},
               {"action", "SCMP_ACT_ALLOW"},
               {"includes", {{"caps", {"CAP_SYS_PTRACE"}}}}},
              {{"names", {"personality"}},
               {"action", "SCMP_ACT_ALLOW"},
               {"args", {{{"index", 0}, {"value", 8}, {"op", "SCMP_CMP_EQ"}}}}}}}};
  auto p = parse_seccomp_profile(j, *capability_mask(default_capabilities()));
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  EXPECT_EQ(p->default_action, SeccompAction::errno_ret);
  ASSERT_EQ(p->rules.size(), 2u);  // the ptrace rule needs CAP_SYS_PTRACE
  EXPECT_EQ(p->rules[0].names, (std::vector<std::string>{"read", "write"}));
  EXPECT_EQ(p->unknown_syscalls, (std::vector<std::string>{"no_such_syscall_xyz"}));
  EXPECT_EQ(p->rules[1].args.size(), 1u);

  auto with_ptrace = parse_seccomp_profile(j, *capability_mask({"CAP_SYS_PTRACE"}));
  ASSERT_TRUE(with_ptrace.ok());
  EXPECT_EQ(with_ptrace->rules.size(), 3u);
}

TEST(SeccompProfileParser, ErrorsNameTheField) {
  auto err = [](const json& j) {
    auto p = parse_seccomp_profile(j, 0);
    return p.ok() ? std::string("(no error)") : p.error().message();
  };
  EXPECT_THAT(err(json::object()), HasSubstr("defaultAction: missing"));
  EXPECT_THAT(err({{"defaultAction", "SCMP_ACT_MAYBE"}}),
              HasSubstr("defaultAction: unknown action"));
  EXPECT_THAT(err({{"defaultAction", "SCMP_ACT_ALLOW"}, {"architectures", {"SCMP_ARCH_Z80"}}}),
              HasSubstr("architectures[0]: unknown architecture"));
  EXPECT_THAT(err({{"defaultAction", "SCMP_ACT_ALLOW"},
                   {"syscalls", {{{"names", {"read"}}, {"action", "SCMP_ACT_FOO"}}}}}),
              HasSubstr("syscalls[0].action: unknown action"));
  EXPECT_THAT(err({{"defaultAction", "SCMP_ACT_ALLOW"}, {"syscalls", {{{"names", {"read"}}}}}}),
              HasSubstr("syscalls[0].action: missing"));
  EXPECT_THAT(err({{"defaultAction", "SCMP_ACT_ALLOW"},
                   {"syscalls",
                    {{{"names", {"read"}},
                      {"action", "SCMP_ACT_ERRNO"},
                      {"args", {{{"index", 9}, {"value", 1}, {"op", "SCMP_CMP_EQ"}}}}}}}}),
              HasSubstr("syscalls[0].args[0].index: must be 0..5"));
  EXPECT_THAT(err({{"defaultAction", "SCMP_ACT_ALLOW"},
                   {"syscalls",
                    {{{"names", {"read"}},
                      {"action", "SCMP_ACT_ERRNO"},
                      {"args", {{{"index", 0}, {"value", 1}, {"op", "SCMP_CMP_ALMOST"}}}}}}}}),
              HasSubstr("syscalls[0].args[0].op: unknown op"));
  EXPECT_THAT(err({{"defaultAction", "SCMP_ACT_ALLOW"}, {"listenerPath", "/run/x.sock"}}),
              HasSubstr("listenerPath: not supported"));
  EXPECT_THAT(err({{"defaultAction", "SCMP_ACT_ALLOW"}, {"sycalls", json::array()}}),
              HasSubstr("sycalls: unknown field"));
}

}  // namespace
}  // namespace corral::isolator
