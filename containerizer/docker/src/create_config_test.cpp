// Unit tests of what the Docker containerizer asks dockerd for: the create body from a task and
// the policy's decision, and how stats and exit states are read back.
#include <gtest/gtest.h>

#include "corral/docker/docker_containerizer.hpp"

namespace corral::docker {
namespace {

namespace v1 = corral::v1;
using containerizer::LaunchRequest;
using containerizer::Termination;

LaunchRequest docker_request() {
  LaunchRequest r;
  r.container_id = "c1";
  r.framework.mutable_id()->set_value("fw1");
  r.task.mutable_task_id()->set_value("t1");
  r.task.mutable_container()->set_type(v1::ContainerInfo::DOCKER);
  r.task.mutable_container()->mutable_docker()->set_image("corral-test/busybox");
  r.task.mutable_container()->mutable_docker()->set_network(v1::ContainerInfo::DockerInfo::NONE);
  r.task.mutable_command()->set_value("echo hi");
  r.sandbox_dir = "/var/lib/corral/sandboxes/c1";
  r.decision.user = "nobody";
  r.decision.seccomp = "default";
  r.decision.capabilities = {"CAP_CHOWN", "CAP_KILL"};
  r.env = {"CORRAL_TASK_ID=t1", "MESOS_SANDBOX=/var/lib/corral/sandboxes/c1"};
  return r;
}

std::string error_of(const Result<nlohmann::json>& r) {
  return r.ok() ? "(accepted)" : r.error().message();
}

TEST(CreateConfig, LimitsCapabilitiesUserAndSandboxComeFromTheDecision) {
  LaunchRequest r = docker_request();
  r.decision.limits.cpus = 0.5;
  r.decision.limits.memory_max = 64ull << 20;
  r.decision.limits.pids_max = 32;
  r.decision.limits.cpu_weight = 200;
  r.decision.volumes.push_back({"/srv/data", "/data", false});
  auto c = build_create_config(r, DockerOptions{});
  ASSERT_TRUE(c.ok()) << c.error().message();
  const auto& h = (*c)["HostConfig"];
  EXPECT_EQ((*c)["Image"], "corral-test/busybox:latest");
  EXPECT_EQ(h["NanoCpus"], 500000000);
  EXPECT_EQ(h["Memory"], 64 << 20);
  EXPECT_EQ(h["MemorySwap"], 64 << 20);  // no swap unless the policy grants some
  EXPECT_EQ(h["PidsLimit"], 32);
  EXPECT_EQ(h["CpuShares"], 2048);
  EXPECT_EQ(h["CapDrop"], nlohmann::json({"ALL"}));
  EXPECT_EQ(h["CapAdd"], nlohmann::json({"CAP_CHOWN", "CAP_KILL"}));
  EXPECT_EQ(h["NetworkMode"], "none");
  EXPECT_EQ(h["Binds"], nlohmann::json({"/var/lib/corral/sandboxes/c1:/mnt/mesos/sandbox:rw",
                                        "/srv/data:/data:ro"}));
  EXPECT_EQ((*c)["User"], "65534:65534");
  EXPECT_EQ((*c)["Entrypoint"], nlohmann::json({"/bin/sh", "-c"}));
  EXPECT_EQ((*c)["Cmd"], nlohmann::json({"echo hi"}));
  EXPECT_EQ((*c)["Labels"]["org.corral.container-id"], "c1");
  EXPECT_EQ((*c)["Labels"]["org.corral.task-id"], "t1");
  EXPECT_EQ((*c)["Labels"]["org.corral.agent"], "corral");
  // The sandbox path inside the container wins over the agent's host path.
  const auto env = (*c)["Env"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(env.begin(), env.end(), "MESOS_SANDBOX=/mnt/mesos/sandbox"), env.end());
  EXPECT_EQ(std::count_if(env.begin(), env.end(),
                          [](const std::string& e) { return e.rfind("MESOS_SANDBOX=", 0) == 0; }),
            1);
  EXPECT_NE(std::find(env.begin(), env.end(), "CORRAL_TASK_ID=t1"), env.end());
  const auto sec = h["SecurityOpt"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(sec.begin(), sec.end(), "no-new-privileges"), sec.end());
}

TEST(CreateConfig, ShellFalseOverridesEntrypointAndPassesArguments) {
  LaunchRequest r = docker_request();
  r.task.mutable_command()->set_shell(false);
  r.task.mutable_command()->set_value("/bin/echo");
  r.task.mutable_command()->add_arguments("a b");
  r.task.mutable_command()->add_arguments("c");
  auto c = build_create_config(r, DockerOptions{});
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ((*c)["Entrypoint"], nlohmann::json({"/bin/echo"}));
  EXPECT_EQ((*c)["Cmd"], nlohmann::json({"a b", "c"}));
}

TEST(CreateConfig, PolicyRefusalsNameTheRule) {
  DockerOptions o;
  o.policy.networks = {{"none"}, "/etc/corral/policy.d/10-docker.toml:3"};
  LaunchRequest host = docker_request();
  host.task.mutable_container()->mutable_docker()->set_network(v1::ContainerInfo::DockerInfo::HOST);
  auto c = build_create_config(host, o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), EPERM);
  EXPECT_EQ(c.error().message(),
            "network mode host is not allowed by the policy: docker.networks = [none] "
            "(/etc/corral/policy.d/10-docker.toml:3); ask for one of those or add it there");

  LaunchRequest priv = docker_request();
  priv.task.mutable_container()->mutable_docker()->set_privileged(true);
  auto p = build_create_config(priv, o);
  EXPECT_NE(error_of(p).find("privileged Docker containers are not allowed"), std::string::npos);

  LaunchRequest dev = docker_request();
  auto* param = dev.task.mutable_container()->mutable_docker()->add_parameters();
  param->set_key("device");
  param->set_value("/dev/sda");
  EXPECT_NE(error_of(build_create_config(dev, o)).find("device /dev/sda is not allowed"),
            std::string::npos);
  o.policy.devices = {{"/dev/sda"}, "test"};
  auto allowed = build_create_config(dev, o);
  ASSERT_TRUE(allowed.ok()) << allowed.error().message();
  EXPECT_EQ(allowed->at("HostConfig")["Devices"][0]["PathOnHost"], "/dev/sda");
}

TEST(CreateConfig, BadTaskInputIsRefusedClearly) {
  LaunchRequest unknown = docker_request();
  auto* p = unknown.task.mutable_container()->mutable_docker()->add_parameters();
  p->set_key("cap-add");
  p->set_value("SYS_ADMIN");
  EXPECT_NE(error_of(build_create_config(unknown, DockerOptions{}))
                .find("docker parameter \"cap-add\" is not supported"),
            std::string::npos);

  LaunchRequest ports = docker_request();  // network NONE
  auto* pm = ports.task.mutable_container()->mutable_docker()->add_port_mappings();
  pm->set_host_port(8080);
  pm->set_container_port(80);
  EXPECT_NE(error_of(build_create_config(ports, DockerOptions{})).find("port mappings need"),
            std::string::npos);

  LaunchRequest label = docker_request();
  auto* l = label.task.mutable_container()->mutable_docker()->add_parameters();
  l->set_key("label");
  l->set_value("org.corral.agent=someone-else");
  EXPECT_NE(error_of(build_create_config(label, DockerOptions{})).find("org.corral."),
            std::string::npos);

  LaunchRequest noimage = docker_request();
  noimage.task.mutable_container()->mutable_docker()->clear_image();
  EXPECT_NE(error_of(build_create_config(noimage, DockerOptions{})).find("names no Docker image"),
            std::string::npos);

  LaunchRequest badimage = docker_request();
  badimage.task.mutable_container()->mutable_docker()->set_image("busy box");
  EXPECT_NE(error_of(build_create_config(badimage, DockerOptions{})).find("is not valid"),
            std::string::npos);
}

TEST(CreateConfig, BridgePortMappingsBecomePortBindings) {
  LaunchRequest r = docker_request();
  r.task.mutable_container()->mutable_docker()->set_network(v1::ContainerInfo::DockerInfo::BRIDGE);
  auto* pm = r.task.mutable_container()->mutable_docker()->add_port_mappings();
  pm->set_host_port(31000);
  pm->set_container_port(80);
  auto c = build_create_config(r, DockerOptions{});
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ((*c)["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"], "31000");
  EXPECT_TRUE((*c)["ExposedPorts"].contains("80/tcp"));
}

TEST(Delegation, TypeDockerOrAPolicyPatternSendsATaskToDocker) {
  isolator::Policy policy = isolator::builtin_policy();
  v1::TaskInfo task;
  EXPECT_FALSE(should_delegate_to_docker(policy, task));
  task.mutable_container()->set_type(v1::ContainerInfo::MESOS);
  auto* image = task.mutable_container()->mutable_mesos()->mutable_image();
  image->set_type(v1::Image::DOCKER);
  image->mutable_docker()->set_name("registry.example:5000/web/app:3");
  EXPECT_FALSE(should_delegate_to_docker(policy, task));
  policy.docker.delegate_images = {{"registry.example:5000/*"}, "test"};
  EXPECT_TRUE(should_delegate_to_docker(policy, task));
  EXPECT_EQ(task_image(task), "registry.example:5000/web/app:3");
  v1::TaskInfo docker;
  docker.mutable_container()->set_type(v1::ContainerInfo::DOCKER);
  EXPECT_TRUE(should_delegate_to_docker(isolator::builtin_policy(), docker));

  // The same MESOS task definition, delegated: image from mesos.image, no network by default.
  LaunchRequest r = docker_request();
  r.task = task;
  r.task.mutable_command()->set_value("true");
  DockerOptions o = docker_options_from_policy(policy);
  o.policy.networks = {{"none"}, "test"};
  auto c = build_create_config(r, o);
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ((*c)["Image"], "registry.example:5000/web/app:3");
  EXPECT_EQ((*c)["HostConfig"]["NetworkMode"], "none");
  EXPECT_EQ(docker_options_from_policy(policy).endpoint, "unix:/run/docker.sock");
}

TEST(Stats, CgroupV1StatsMapToResourceStatistics) {
  auto j = nlohmann::json::parse(R"({
    "cpu_stats": {"cpu_usage": {"total_usage": 3000000000, "usage_in_usermode": 2000000000,
                                "usage_in_kernelmode": 1000000000},
                  "throttling_data": {"periods": 10, "throttled_periods": 4,
                                      "throttled_time": 500000000}},
    "memory_stats": {"usage": 10485760, "limit": 67108864,
                     "stats": {"rss": 4194304, "cache": 1048576, "mapped_file": 4096}},
    "pids_stats": {"current": 3},
    "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 50}}
  })");
  auto s = stats_to_resource_statistics(j);
  EXPECT_DOUBLE_EQ(s.cpus_user_time_secs(), 2.0);
  EXPECT_DOUBLE_EQ(s.cpus_system_time_secs(), 1.0);
  EXPECT_EQ(s.cpus_nr_throttled(), 4u);
  EXPECT_DOUBLE_EQ(s.cpus_throttled_time_secs(), 0.5);
  EXPECT_EQ(s.mem_total_bytes(), 10485760u);
  EXPECT_EQ(s.mem_rss_bytes(), 4194304u);
  EXPECT_EQ(s.mem_cache_bytes(), 1048576u);
  EXPECT_EQ(s.processes(), 3u);
  EXPECT_EQ(s.net_rx_bytes(), 100u);
  EXPECT_GT(s.timestamp(), 0);
  // Missing and mistyped fields are left out, not invented.
  auto empty = stats_to_resource_statistics(nlohmann::json::parse(R"({"cpu_stats": "x"})"));
  EXPECT_FALSE(empty.has_cpus_user_time_secs());
  EXPECT_FALSE(empty.has_processes());
}

TEST(ExitState, OomExitCodeAndGraceAreReadFromTheState) {
  auto oom = termination_from_state({{"ExitCode", 137}, {"OOMKilled", true}}, false, 16u << 20);
  EXPECT_TRUE(oom.oom_killed);
  EXPECT_EQ(oom.reason, v1::TaskStatus::REASON_CONTAINER_LIMITATION_MEMORY);
  EXPECT_NE(oom.message.find("limit 16MiB"), std::string::npos);

  auto exited = termination_from_state({{"ExitCode", 3}, {"OOMKilled", false}}, false, {});
  EXPECT_EQ(exited.kind, Termination::Kind::exited);
  EXPECT_EQ(exited.code, 3);
  EXPECT_EQ(exited.message, "exited with 3");

  // 137 without a stop from Corral is the task's own exit status.
  auto own = termination_from_state({{"ExitCode", 137}}, false, {});
  EXPECT_EQ(own.kind, Termination::Kind::exited);

  auto killed = termination_from_state({{"ExitCode", 137}}, true, {});
  EXPECT_EQ(killed.kind, Termination::Kind::signaled);
  EXPECT_EQ(killed.signal, 9);
  EXPECT_TRUE(killed.killed_after_grace);
  auto termed = termination_from_state({{"ExitCode", 143}}, true, {});
  EXPECT_EQ(termed.signal, 15);
  EXPECT_FALSE(termed.killed_after_grace);

  auto failed = termination_from_state(
      {{"ExitCode", 127}, {"Error", "exec: \"nope\": executable file not found in $PATH"}}, false,
      {});
  EXPECT_EQ(failed.kind, Termination::Kind::failed);
  EXPECT_EQ(failed.reason, v1::TaskStatus::REASON_CONTAINER_LAUNCH_FAILED);
  EXPECT_NE(failed.message.find("executable file not found"), std::string::npos);
}

TEST(ExitState, MistypedFieldsOfAMalformedAnswerDoNotThrow) {
  auto t =
      termination_from_state({{"ExitCode", "zero"}, {"OOMKilled", "yes"}, {"Error", 5}}, false, {});
  EXPECT_EQ(t.kind, Termination::Kind::exited);
  EXPECT_EQ(t.code, -1);
  EXPECT_FALSE(t.oom_killed);
  auto not_object = termination_from_state(nlohmann::json::array(), false, {});
  EXPECT_EQ(not_object.code, -1);
}

}  // namespace
}  // namespace corral::docker
