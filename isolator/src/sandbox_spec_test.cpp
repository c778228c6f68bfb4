#include "corral/isolator/sandbox_spec.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "corral/isolator/capabilities.hpp"
#include "corral/isolator/process.hpp"

namespace corral::isolator {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json minimal() {
  return {{"argv", {"/bin/true"}},
          {"sandbox_dir", "/var/lib/corral/sandboxes/t1"},
          {"exit_status_path", "/var/lib/corral/meta/t1/exit.json"}};
}

std::string error_of(const json& j) {
  auto spec = sandbox_spec_from_json(j);
  return spec.ok() ? std::string("(no error)") : spec.error().message();
}

TEST(SandboxSpec, MinimalSpecGetsSafeDefaults) {
  auto spec = sandbox_spec_from_json(minimal());
  ASSERT_TRUE(spec.ok()) << spec.error().to_string();
  EXPECT_EQ(spec->cwd, "/mnt/sandbox");
  EXPECT_EQ(spec->sandbox_mount, "/mnt/sandbox");
  EXPECT_EQ(spec->stdout_spec.path, "/var/lib/corral/sandboxes/t1/stdout");
  EXPECT_EQ(spec->stderr_spec.path, "/var/lib/corral/sandboxes/t1/stderr");
  EXPECT_EQ(spec->capabilities, default_capabilities());
  EXPECT_EQ(spec->seccomp.mode, SeccompMode::default_profile);
  EXPECT_EQ(spec->rootfs.mode, RootfsMode::host);
  EXPECT_TRUE(spec->namespaces.net);
  EXPECT_TRUE(spec->namespaces.cgroup);
  EXPECT_FALSE(spec->namespaces.user.has_value());
}

TEST(SandboxSpec, RoundTripsThroughJson) {
  json j = minimal();
  j["volumes"] = {{{"host_path", "/srv/data"}, {"container_path", "/data"}, {"readonly", false}}};
  j["namespaces"] = {{"user", {{"host_uid", 100000}, {"host_gid", 100000}, {"count", 65536}}}};
  j["rlimits"] = {{{"name", "RLIMIT_NOFILE"}, {"soft", 1024}, {"hard", "unlimited"}}};
  j["capabilities"] = {"NET_BIND_SERVICE"};
  j["seccomp"] = {{"mode", "profile"}, {"profile", {{"defaultAction", "SCMP_ACT_ALLOW"}}}};
  auto first = sandbox_spec_from_json(j);
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  auto second = sandbox_spec_from_json(to_json(*first));
  ASSERT_TRUE(second.ok()) << second.error().to_string();
  EXPECT_EQ(to_json(*first), to_json(*second));
  EXPECT_EQ(second->rlimits[0].hard, UINT64_MAX);
  EXPECT_FALSE(second->volumes[0].readonly);
  EXPECT_EQ(second->namespaces.user->host_uid, 100000u);
}

TEST(SandboxSpec, ErrorsNameTheField) {
  json j = minimal();
  j.erase("argv");
  EXPECT_THAT(error_of(j), HasSubstr("spec.argv"));

  j = minimal();
  j["sandbox_dir"] = "relative/dir";
  EXPECT_THAT(error_of(j), HasSubstr("spec.sandbox_dir: must be an absolute path"));

  j = minimal();
  j["volumes"] = {{{"host_path", "/srv/../etc"}, {"container_path", "/data"}}};
  EXPECT_THAT(error_of(j), HasSubstr("spec.volumes[0].host_path"));

  j = minimal();
  j["volumes"] = {{{"host_path", "/srv"}, {"container_path", "/proc/x"}}};
  EXPECT_THAT(error_of(j), HasSubstr("spec.volumes[0].container_path"));

  j = minimal();
  j["capabilties"] = json::array();  // typo
  EXPECT_THAT(error_of(j), HasSubstr("spec.capabilties: unknown field"));

  j = minimal();
  j["capabilities"] = {"CAP_FLY"};
  EXPECT_THAT(error_of(j), HasSubstr("spec.capabilities[0]: unknown capability 'CAP_FLY'"));

  j = minimal();
  j["rlimits"] = {{{"name", "RLIMIT_SPEED"}, {"soft", 1}, {"hard", 1}}};
  EXPECT_THAT(error_of(j), HasSubstr("spec.rlimits[0].name"));

  j = minimal();
  j["rlimits"] = {{{"name", "NOFILE"}, {"soft", 10}, {"hard", 5}}};
  EXPECT_THAT(error_of(j), HasSubstr("soft limit is above the hard limit"));

  j = minimal();
  j["exit_status_path"] = "/var/lib/corral/sandboxes/t1/exit.json";
  EXPECT_THAT(error_of(j), HasSubstr("spec.exit_status_path: must be outside sandbox_dir"));

  j = minimal();
  j["stdout"] = {{"max_bytes", 10}};
  EXPECT_THAT(error_of(j), HasSubstr("spec.stdout.max_bytes"));

  j = minimal();
  j["namespaces"] = {{"user", {{"host_uid", 100000}, {"host_gid", 100000}, {"count", 1000}}}};
  j["uid"] = 1000;
  EXPECT_THAT(error_of(j), HasSubstr("outside the user namespace's mapped range"));

  j = minimal();
  j["namespaces"] = {{"pid", false}};
  EXPECT_THAT(error_of(j), HasSubstr("spec.namespaces.pid"));

  j = minimal();
  j["no_new_privs"] = false;
  EXPECT_THAT(error_of(j), HasSubstr("spec.no_new_privs"));

  j = minimal();
  j["seccomp"] = {{"mode", "lenient"}};
  EXPECT_THAT(error_of(j), HasSubstr("spec.seccomp.mode"));

  j = minimal();
  j["seccomp"] = {{"mode", "profile"}, {"profile", {{"defaultAction", "SCMP_ACT_NOPE"}}}};
  EXPECT_THAT(error_of(j), HasSubstr("spec.seccomp.profile: defaultAction: unknown action"));

  j = minimal();
  j["hostname"] = "bad host";
  EXPECT_THAT(error_of(j), HasSubstr("spec.hostname"));

  j = minimal();
  j["cgroup_dir"] = "/tmp/cg";
  EXPECT_THAT(error_of(j), HasSubstr("spec.cgroup_dir: must be under /sys/fs/cgroup"));

  j = minimal();
  j["env"] = {"NOEQUALS"};
  EXPECT_THAT(error_of(j), HasSubstr("spec.env[0]"));

  EXPECT_THAT(parse_sandbox_spec("{not json").error().message(), HasSubstr("not valid JSON"));
}

TEST(Capabilities, NamesRoundTrip) {
  EXPECT_EQ(*capability_from_name("CAP_SYS_ADMIN"), 21);
  EXPECT_EQ(*capability_from_name("net_bind_service"), 10);
  EXPECT_EQ(capability_name(21), "CAP_SYS_ADMIN");
  EXPECT_FALSE(capability_from_name("CAP_NOPE").ok());
  EXPECT_EQ(*capability_mask(default_capabilities()), 0xa80425fbull);
}

TEST(Rlimits, NamesResolve) {
  EXPECT_TRUE(rlimit_from_name("RLIMIT_NOFILE").ok());
  EXPECT_TRUE(rlimit_from_name("core").ok());
  EXPECT_FALSE(rlimit_from_name("RLIMIT_FOO").ok());
}

}  // namespace
}  // namespace corral::isolator

namespace corral::isolator {
namespace {

TEST(SandboxSpecOverlay, RoundTripsThroughJson) {
  json j = minimal();
  j["rootfs"] = {{"mode", "overlay"},
                 {"lower_dirs", {"/var/lib/corral/images/layers/b/root", "/l/a/root"}},
                 {"upper_dir", "/var/lib/corral/run/t1/upper"},
                 {"work_dir", "/var/lib/corral/run/t1/work"}};
  auto first = sandbox_spec_from_json(j);
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  EXPECT_EQ(first->rootfs.mode, RootfsMode::overlay);
  ASSERT_EQ(first->rootfs.lower_dirs.size(), 2u);
  EXPECT_EQ(first->rootfs.lower_dirs[0], "/var/lib/corral/images/layers/b/root");
  auto second = sandbox_spec_from_json(to_json(*first));
  ASSERT_TRUE(second.ok()) << second.error().to_string();
  EXPECT_EQ(to_json(*first), to_json(*second));
  EXPECT_EQ(second->rootfs.upper_dir, "/var/lib/corral/run/t1/upper");
}

TEST(SandboxSpecOverlay, ErrorsNameTheField) {
  json j = minimal();
  j["rootfs"] = {{"mode", "overlay"}, {"upper_dir", "/u"}, {"work_dir", "/w"}};
  EXPECT_THAT(error_of(j), HasSubstr("rootfs.lower_dirs"));
  j["rootfs"]["lower_dirs"] = {"relative/layer"};
  EXPECT_THAT(error_of(j), HasSubstr("rootfs.lower_dirs[0]"));
  j["rootfs"]["lower_dirs"] = {"/a:b"};
  EXPECT_THAT(error_of(j), HasSubstr("':'"));
  j["rootfs"]["lower_dirs"] = {"/l"};
  j["rootfs"].erase("work_dir");
  EXPECT_THAT(error_of(j), HasSubstr("rootfs.work_dir"));
  json d = minimal();
  d["rootfs"] = {{"mode", "dir"}, {"path", "/srv/root"}, {"upper_dir", "/u"}};
  EXPECT_THAT(error_of(d), HasSubstr("only used with mode \"overlay\""));
  d["rootfs"] = {{"mode", "overlay2"}};
  EXPECT_THAT(error_of(d), HasSubstr("\"overlay\""));
}

}  // namespace
}  // namespace corral::isolator
