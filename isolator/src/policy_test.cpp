#include "corral/isolator/policy.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "corral/common/fd.hpp"
#include "corral/isolator/sandbox_spec.hpp"

namespace corral::isolator {
namespace {

class PolicyDir : public testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("corral-policy-");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(*d));
  }
  std::string write(const std::string& name, const std::string& text) {
    auto p = dir_->path() / name;
    std::ofstream(p) << text;
    return p.string();
  }
  Result<Policy> load() { return load_policy_dir(dir_->path()); }
  std::unique_ptr<TempDir> dir_;
};

std::string message(const Result<Decision>& r) {
  return r.ok() ? "(allowed)" : r.error().message();
}

TEST_F(PolicyDir, BuiltinPolicyIsLeastPrivilege) {
  auto p = load();
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_TRUE(p->require_cgroup_v2.value);
  auto d = decide(*p, TaskRequest{});
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(d->user, "nobody");
  EXPECT_EQ(d->seccomp, "default");
  EXPECT_EQ(d->capabilities, default_capabilities());
  EXPECT_EQ(d->limits.pids_max, 4096u);
  EXPECT_FALSE(d->limits.memory_max.has_value());
}

TEST_F(PolicyDir, LaterFilesOverrideEarlierOnesKeyByKey) {
  write("10-base.toml", "[limits.max]\nmemory = \"1GiB\"\ncpus = 2\n");
  write("20-site.toml", "[limits.max]\nmemory = \"512MiB\"\n");
  auto p = load();
  ASSERT_TRUE(p.ok()) << p.error().message();
  ASSERT_EQ(p->files.size(), 2u);
  EXPECT_EQ(p->base.max.memory->value, 512u << 20);
  EXPECT_NE(p->base.max.memory->origin.find("20-site.toml:2"), std::string::npos);
  EXPECT_DOUBLE_EQ(p->base.max.cpus->value, 2.0);  // untouched by the later file
  EXPECT_NE(p->base.max.cpus->origin.find("10-base.toml:3"), std::string::npos);
}

TEST_F(PolicyDir, OverMaximumIsRefusedNamingRuleFileAndLine) {
  std::string f = write("20-web.toml",
                        "# web tier\n[limits.max]\ncpus = 1.5\nmemory = \"512MiB\"\npids = 100\n");
  auto p = load();
  ASSERT_TRUE(p.ok()) << p.error().message();
  TaskRequest r;
  r.memory = 1ull << 30;
  auto d = decide(*p, r);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code(), EPERM);
  EXPECT_EQ(message(d), "memory 1GiB is more than the policy allows: limits.max.memory = 512MiB (" +
                            f + ":4); ask for less or raise that limit");
  r = TaskRequest{};
  r.cpus = 2;
  EXPECT_EQ(message(decide(*p, r)),
            "cpus 2 is more than the policy allows: limits.max.cpus = 1.5 (" + f +
                ":3); ask for less or raise that limit");
  r = TaskRequest{};
  r.pids = 101;
  EXPECT_NE(
      message(decide(*p, r)).find("pids 101 is more than the policy allows: limits.max.pids = 100"),
      std::string::npos);
  // Asking for nothing gets the maximum, never "unlimited".
  auto none = decide(*p, TaskRequest{});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->limits.memory_max, 512u << 20);
  EXPECT_DOUBLE_EQ(*none->limits.cpus, 1.5);
}

TEST_F(PolicyDir, DefaultsApplyWhenTheTaskAsksForNothing) {
  write("10.toml", "[limits.default]\nmemory = \"128MiB\"\ncpus = 0.25\n");
  auto p = load();
  ASSERT_TRUE(p.ok());
  auto d = decide(*p, TaskRequest{});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->limits.memory_max, 128u << 20);
  EXPECT_DOUBLE_EQ(*d->limits.cpus, 0.25);
}

TEST_F(PolicyDir, RoleOverridesApplyToThatRoleAndItsChildren) {
  std::string f = write("10.toml",
                        "[limits.max]\nmemory = \"256MiB\"\n"
                        "[role.eng.limits.max]\nmemory = \"2GiB\"\n"
                        "[role.\"eng/web\".security]\ncapabilities = [\"CAP_NET_BIND_SERVICE\"]\n");
  auto p = load();
  ASSERT_TRUE(p.ok()) << p.error().message();
  TaskRequest r;
  r.memory = 1ull << 30;
  EXPECT_FALSE(decide(*p, r).ok());
  r.role = "eng";
  EXPECT_TRUE(decide(*p, r).ok()) << message(decide(*p, r));
  r.role = "eng/web";
  auto d = decide(*p, r);
  ASSERT_TRUE(d.ok()) << message(d);
  EXPECT_EQ(d->capabilities, std::vector<std::string>{"CAP_NET_BIND_SERVICE"});
  r.capabilities = {"CAP_CHOWN"};
  EXPECT_EQ(message(decide(*p, r)),
            "capability CAP_CHOWN is not allowed by the policy: security.capabilities = "
            "[CAP_NET_BIND_SERVICE] (" +
                f + ":6, role eng/web); drop it from the task or add it to that list");
}

TEST_F(PolicyDir, EveryRuleRefusesWithItsOwnMessage) {
  std::string f = write("10.toml",
                        "[security]\nusers = [\"nobody\", \"1000-1999\"]\n"
                        "[volumes]\nallowed_host_paths = [\"/srv/data\"]\n");
  auto p = load();
  ASSERT_TRUE(p.ok()) << p.error().message();
  TaskRequest r;
  r.capabilities = {"SYS_ADMIN"};
  EXPECT_NE(message(decide(*p, r))
                .find("capability CAP_SYS_ADMIN is not allowed by the policy: "
                      "security.capabilities = [CAP_CHOWN"),
            std::string::npos)
      << message(decide(*p, r));
  r = TaskRequest{};
  r.capabilities = {"CAP_FLY"};
  EXPECT_EQ(message(decide(*p, r)),
            "unknown capability \"CAP_FLY\" (see capabilities(7) for the names)");
  r = TaskRequest{};
  r.user = "root";
  EXPECT_EQ(message(decide(*p, r)),
            "user \"root\" is not allowed by the policy: security.users = "
            "[nobody, 1000-1999] (" +
                f + ":2); run as one of those or add the user there");
  r.user = "1500";
  EXPECT_TRUE(decide(*p, r).ok()) << message(decide(*p, r));
  r = TaskRequest{};
  r.seccomp = "unconfined";
  EXPECT_EQ(
      message(decide(*p, r)),
      "seccomp \"unconfined\" is not allowed by the policy: security.allow_unconfined = false "
      "(built-in default); use the default profile or set allow_unconfined = true there");
  r = TaskRequest{};
  r.volumes = {{"/etc", "/host-etc", false}};
  EXPECT_EQ(message(decide(*p, r)),
            "volume host path /etc is not allowed by the policy: "
            "volumes.allowed_host_paths = [/srv/data] (" +
                f + ":4); use a path under one of those or add it there");
  r.volumes = {{"/srv/data/../../etc", "/x", false}};
  EXPECT_NE(message(decide(*p, r)).find("must be absolute and free of \"..\""), std::string::npos);
  r.volumes = {{"/srv/data-other", "/x", false}};  // a sibling with the same prefix is not "under"
  EXPECT_FALSE(decide(*p, r).ok());
  r.volumes = {{"/srv/data/set1", "/data", true}};
  EXPECT_EQ(message(decide(*p, r)),
            "writable volume /srv/data/set1 is not allowed by the policy: "
            "volumes.allow_writable = false (built-in default); mount it "
            "read-only or set allow_writable = true there");
  r.volumes = {{"/srv/data/set1", "/data", false}};
  EXPECT_TRUE(decide(*p, r).ok()) << message(decide(*p, r));
}

TEST_F(PolicyDir, VolumeThroughSymlinkIsJudgedByWhereItLeads) {
  auto allowed = dir_->path() / "allowed";
  std::filesystem::create_directories(allowed);
  std::filesystem::create_symlink("/etc", allowed / "sneaky");
  auto p = load_policy_text(builtin_policy(),
                            "[volumes]\nallowed_host_paths = [\"" + allowed.string() + "\"]\n",
                            "t.toml");
  ASSERT_TRUE(p.ok()) << p.error().message();
  TaskRequest r;
  r.volumes = {{(allowed / "sneaky").string(), "/x", false}};
  auto d = decide(*p, r);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("(resolves to /etc)"), std::string::npos)
      << d.error().message();
}

TEST_F(PolicyDir, MalformedFilesNameFileLineAndKeyAndAllAreReported) {
  std::string a = write("10-a.toml", "[limits.max]\nmemory = \"lots\"\n");
  std::string b =
      write("20-b.toml",
            "[security]\ncapabilities = [\"CAP_CHOWN\", \"CAP_TELEPORT\"]\nsecomp = \"default\"\n");
  std::string c = write("30-c.toml", "[limits.max\ncpus = 1\n");
  auto p = load();
  ASSERT_FALSE(p.ok());
  const std::string& m = p.error().message();
  EXPECT_NE(m.find(a + ":2: key 'limits.max.memory': \"lots\" is not a size"), std::string::npos)
      << m;
  EXPECT_NE(m.find(b + ":2: key 'security.capabilities': unknown capability \"CAP_TELEPORT\""),
            std::string::npos)
      << m;
  EXPECT_NE(m.find(b + ":3: unknown key 'security.secomp' (did you mean 'seccomp'?)"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find(c + ":1:"), std::string::npos) << m;
  EXPECT_NE(m.find("TOML syntax error"), std::string::npos) << m;
}

TEST_F(PolicyDir, BadValuesAreRefused) {
  auto p = load_policy_text(
      builtin_policy(),
      "[limits.max]\ncpus = 0\npids = -1\n[security]\nseccomp = \"relative.json\"\n"
      "users = [\"root; rm -rf /\"]\n[volumes]\nallowed_host_paths = [\"srv\"]\n",
      "/etc/corral/policy.d/x.toml");
  ASSERT_FALSE(p.ok());
  const std::string& m = p.error().message();
  EXPECT_NE(m.find("x.toml:2: key 'limits.max.cpus': must be between"), std::string::npos) << m;
  EXPECT_NE(m.find("x.toml:3: key 'limits.max.pids': value -1 is out of range"), std::string::npos)
      << m;
  EXPECT_NE(m.find("x.toml:5: key 'security.seccomp': must be"), std::string::npos) << m;
  EXPECT_NE(m.find("x.toml:6: key 'security.users'"), std::string::npos) << m;
  EXPECT_NE(m.find("x.toml:8: key 'volumes.allowed_host_paths': \"srv\" must be an absolute path"),
            std::string::npos)
      << m;
}

TEST_F(PolicyDir, ReloadKeepsTheLastGoodPolicy) {
  write("10.toml", "[limits.max]\nmemory = \"256MiB\"\n");
  PolicyHolder holder(dir_->path());
  ASSERT_TRUE(holder.reload().ok());
  EXPECT_EQ(holder.current().base.max.memory->value, 256u << 20);
  write("10.toml", "[limits.max]\nmemory = \"oops\n");
  auto r = holder.reload();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("policy not reloaded, the previous policy stays in force"),
            std::string::npos);
  EXPECT_EQ(holder.current().base.max.memory->value, 256u << 20);
  write("10.toml", "[limits.max]\nmemory = \"1GiB\"\n");
  ASSERT_TRUE(holder.reload().ok());
  EXPECT_EQ(holder.current().base.max.memory->value, 1u << 30);
}

TEST(Policy, HugeUidsAreErrorsNotCrashes) {
  auto p = load_policy_text(builtin_policy(), "[security]\nusers = [\"99999999999999999999999\"]\n",
                            "/etc/corral/policy.d/u.toml");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message().find("u.toml:2: key 'security.users'"), std::string::npos)
      << p.error().message();
  auto ok = load_policy_text(builtin_policy(), "[security]\nusers = [\"1000-1999\"]\n", "u.toml");
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  TaskRequest r;
  r.user = "99999999999999999999999";
  auto d = decide(*ok, r);
  ASSERT_FALSE(d.ok());  // refused, and no exception escaped
  r.user = "1500";
  EXPECT_TRUE(decide(*ok, r).ok());
}

TEST(Policy, MissingExplicitDirectoryIsAnError) {
  auto p = load_policy_dir("/nonexistent/policy.d");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().message(), "policy directory /nonexistent/policy.d does not exist");
}

TEST(Policy, TextOutputShowsEveryValueWithItsOrigin) {
  auto p = load_policy_text(builtin_policy(), "[cgroups]\nrequire_v2 = false\n",
                            "/etc/corral/policy.d/00.toml");
  ASSERT_TRUE(p.ok());
  std::string text = policy_to_text(*p);
  EXPECT_NE(text.find("cgroups.require_v2 = false"), std::string::npos) << text;
  EXPECT_NE(text.find("# /etc/corral/policy.d/00.toml:2"), std::string::npos) << text;
  EXPECT_NE(text.find("security.default_user = \"nobody\""), std::string::npos) << text;
  auto j = policy_to_json(*p);
  EXPECT_EQ(j["cgroups"]["require_v2"]["value"], false);
  EXPECT_EQ(j["base"]["security"]["seccomp"]["value"], "default");
}

TEST_F(PolicyDir, DockerSectionIsReadOverlaidAndShown) {
  write("10-docker.toml",
        "[docker]\n"
        "socket = \"/run/corral-test/docker.sock\"\n"
        "delegate_images = [\"registry.example:5000/*\", \"nginx:*\"]\n"
        "networks = [\"none\", \"host\"]\n");
  write("20-docker.toml", "[docker]\nallow_privileged = true\ndevices = [\"/dev/fuse\"]\n");
  auto p = load();
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->docker.socket.value, "/run/corral-test/docker.sock");
  EXPECT_NE(p->docker.socket.origin.find("10-docker.toml:2"), std::string::npos);
  EXPECT_EQ(p->docker.networks.value, (std::vector<std::string>{"none", "host"}));
  EXPECT_TRUE(p->docker.allow_privileged.value);  // the later file adds, keeps the earlier keys
  EXPECT_EQ(p->docker.devices.value, std::vector<std::string>{"/dev/fuse"});
  EXPECT_EQ(p->docker.config.origin, "built-in default");
  EXPECT_TRUE(docker_delegates_image(p->docker, "registry.example:5000/team/app:1"));
  EXPECT_TRUE(docker_delegates_image(p->docker, "nginx:1.25"));
  EXPECT_FALSE(docker_delegates_image(p->docker, "nginx"));
  EXPECT_FALSE(docker_delegates_image(p->docker, "busybox:latest"));
  EXPECT_NE(policy_to_text(*p).find("docker.networks = [\"none\", \"host\"]"), std::string::npos);
  EXPECT_EQ(policy_to_json(*p)["docker"]["allow_privileged"]["value"], true);
}

TEST_F(PolicyDir, DockerDefaultsDelegateNothingAndRefusePrivileged) {
  auto p = load();
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->docker.socket.value, "/run/docker.sock");
  EXPECT_FALSE(p->docker.allow_privileged.value);
  EXPECT_FALSE(docker_delegates_image(p->docker, "busybox:latest"));
}

TEST_F(PolicyDir, DockerSectionMistakesNameFileAndLine) {
  write("10-bad.toml",
        "[docker]\n"
        "socket = \"relative/docker.sock\"\n"
        "networks = [\"overlay\"]\n"
        "devices = [\"/etc/shadow\"]\n"
        "config = \"config.json\"\n");
  auto p = load();
  ASSERT_FALSE(p.ok());
  const std::string& m = p.error().message();
  EXPECT_NE(m.find("10-bad.toml:2"), std::string::npos) << m;
  EXPECT_NE(m.find("\"overlay\" is not a network mode"), std::string::npos) << m;
  EXPECT_NE(m.find("\"/etc/shadow\" must be a path under /dev/"), std::string::npos) << m;
  EXPECT_NE(m.find("10-bad.toml:5"), std::string::npos) << m;
}

TEST_F(PolicyDir, ImagesSectionIsReadOverlaidAndShown) {
  write("10-images.toml",
        "[images]\n"
        "registries = [\"127.0.0.1:5000\"]\n"
        "patterns = [\"127.0.0.1:5000/team/**\"]\n");
  write("20-images.toml", "[images]\nrequire_digest = true\nmax_size = \"2GiB\"\n");
  auto p = load();
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->images.registries.value, std::vector<std::string>{"127.0.0.1:5000"});
  EXPECT_NE(p->images.registries.origin.find("10-images.toml:2"), std::string::npos);
  EXPECT_EQ(p->images.patterns.value, std::vector<std::string>{"127.0.0.1:5000/team/**"});
  EXPECT_TRUE(p->images.require_digest.value);
  EXPECT_EQ(p->images.max_size.value, 2ull << 30);
  EXPECT_NE(p->images.max_size.origin.find("20-images.toml:3"), std::string::npos);
  EXPECT_NE(policy_to_text(*p).find("images.max_size = 2GiB"), std::string::npos)
      << policy_to_text(*p);
  EXPECT_EQ(policy_to_json(*p)["images"]["require_digest"]["value"], true);
}

TEST_F(PolicyDir, ImagesDefaultsAllowEverythingAndMistakesNameFileAndLine) {
  auto p = load();
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_TRUE(p->images.registries.value.empty());
  EXPECT_FALSE(p->images.require_digest.value);
  EXPECT_EQ(p->images.max_size.value, 0u);
  write("10-bad.toml", "[images]\nregistries = [\"\"]\nmax_size = \"lots\"\n");
  auto bad = load();
  ASSERT_FALSE(bad.ok());
  const std::string& m = bad.error().message();
  EXPECT_NE(m.find("10-bad.toml:2"), std::string::npos) << m;
  EXPECT_NE(m.find("10-bad.toml:3"), std::string::npos) << m;
}

}  // namespace
}  // namespace corral::isolator
