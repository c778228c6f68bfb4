#include "corral/common/config.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "corral/common/fd.hpp"

namespace corral {
namespace {

struct AgentLikeConfig {
  std::string work_dir = "/var/lib/corral/agent";
  int port = 5051;
  bool docker = false;
  double cpus = 0;
  std::chrono::milliseconds timeout{1000};
  uint64_t mem = 0;
  std::vector<std::string> roles;
  std::map<std::string, std::string> attributes;
};

Result<AgentLikeConfig> read(ConfigFile file) {
  AgentLikeConfig cfg;
  ConfigTable root = file.root();
  root.get("work_dir", &cfg.work_dir);
  root.get_int("port", &cfg.port, 1, 65535);
  root.get("docker", &cfg.docker);
  root.get_duration("timeout", &cfg.timeout);
  ConfigTable res = root.table("resources");
  res.get("cpus", &cfg.cpus);
  res.get_bytes("mem", &cfg.mem);
  res.get("roles", &cfg.roles);
  root.get_string_map("attributes", &cfg.attributes);
  CORRAL_TRY(file.finish());
  return cfg;
}

Result<AgentLikeConfig> read_text(std::string_view text) {
  CORRAL_ASSIGN_OR_RETURN(ConfigFile file, ConfigFile::parse(text, "/etc/corral/agent.toml"));
  return read(std::move(file));
}

TEST(Config, ReadsTypedValuesAndKeepsDefaults) {
  auto cfg = read_text(
      "port = 6000\n"
      "timeout = \"1.5s\"\n"
      "[resources]\n"
      "cpus = 2\n"
      "mem = \"512MiB\"\n"
      "roles = [\"web\", \"batch\"]\n"
      "[attributes]\n"
      "rack = \"r1\"\n");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->port, 6000);
  EXPECT_EQ(cfg->work_dir, "/var/lib/corral/agent");  // default kept
  EXPECT_EQ(cfg->timeout, std::chrono::milliseconds(1500));
  EXPECT_DOUBLE_EQ(cfg->cpus, 2.0);
  EXPECT_EQ(cfg->mem, 512u * 1024 * 1024);
  EXPECT_EQ(cfg->roles, (std::vector<std::string>{"web", "batch"}));
  EXPECT_EQ(cfg->attributes.at("rack"), "r1");
}

TEST(Config, UnknownKeyNamesFileLineAndSuggestsTheRightKey) {
  auto cfg = read_text("work_dir = \"/srv\"\n\nprot = 5051\n");
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.error().message(),
            "/etc/corral/agent.toml:3: unknown key 'prot' (did you mean 'port'?)");
}

TEST(Config, UnknownKeyInNestedTableNamesFullPath) {
  auto cfg = read_text("[resources]\ncpus = 1\ngpus_typo_xyz = 3\n");
  ASSERT_FALSE(cfg.ok());
  EXPECT_NE(cfg.error().message().find("agent.toml:3: unknown key 'resources.gpus_typo_xyz'"),
            std::string::npos)
      << cfg.error().message();
}

TEST(Config, WrongTypeNamesFileLineKeyAndBothTypes) {
  auto cfg = read_text("[resources]\n\ncpus = \"two\"\n");
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.error().message(),
            "/etc/corral/agent.toml:3: key 'resources.cpus': expected a number, got a string");
}

TEST(Config, BadValueNamesFileLineAndKey) {
  auto cfg = read_text("port = 70000\n");
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(
      cfg.error().message(),
      "/etc/corral/agent.toml:1: key 'port': value 70000 is out of range; allowed: 1 to 65535");
  auto dur = read_text("\ntimeout = \"soon\"\n");
  ASSERT_FALSE(dur.ok());
  EXPECT_NE(dur.error().message().find("agent.toml:2: key 'timeout': \"soon\" is not a duration"),
            std::string::npos)
      << dur.error().message();
}

TEST(Config, ReportsEveryProblemInLineOrder) {
  auto cfg = read_text("port = \"x\"\nbogus = 1\n[resources]\ncpus = true\n");
  ASSERT_FALSE(cfg.ok());
  const std::string& m = cfg.error().message();
  size_t a = m.find("agent.toml:1: key 'port'");
  size_t b = m.find("agent.toml:2: unknown key 'bogus'");
  size_t c = m.find("agent.toml:4: key 'resources.cpus'");
  ASSERT_NE(a, std::string::npos) << m;
  ASSERT_NE(b, std::string::npos) << m;
  ASSERT_NE(c, std::string::npos) << m;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
}

TEST(Config, SyntaxErrorNamesFileLineAndColumn) {
  auto file = ConfigFile::parse("port = 1\nwork_dir = \"unterminated\n", "/etc/corral/agent.toml");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().message().rfind("/etc/corral/agent.toml:2:", 0), 0u)
      << file.error().message();
  EXPECT_NE(file.error().message().find("TOML syntax error"), std::string::npos);
}

TEST(Config, MissingFileNamesThePath) {
  auto file = ConfigFile::load("/nonexistent/corral/agent.toml");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().code(), ENOENT);
  EXPECT_NE(file.error().message().find("/nonexistent/corral/agent.toml"), std::string::npos);
  EXPECT_NE(file.error().message().find("No such file or directory"), std::string::npos);
}

TEST(Config, LoadsFromDisk) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto path = dir->path() / "agent.toml";
  std::ofstream(path) << "port = 7000\ndocker = true\n";
  auto file = ConfigFile::load(path);
  ASSERT_TRUE(file.ok()) << file.error().message();
  auto cfg = read(std::move(*file));
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->port, 7000);
  EXPECT_TRUE(cfg->docker);
}

TEST(Config, UnitsParse) {
  EXPECT_EQ(*parse_duration("250ms"), std::chrono::milliseconds(250));
  EXPECT_EQ(*parse_duration("2m"), std::chrono::milliseconds(120000));
  EXPECT_FALSE(parse_duration("10").ok());
  EXPECT_FALSE(parse_duration("ms").ok());
  EXPECT_EQ(*parse_bytes("4096"), 4096u);
  EXPECT_EQ(*parse_bytes("1.5G"), 1500000000u);
  EXPECT_EQ(*parse_bytes("2GiB"), 2ull << 30);
  EXPECT_FALSE(parse_bytes("12 parsecs").ok());
}

}  // namespace
}  // namespace corral
