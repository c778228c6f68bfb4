// Launch-to-RUNNING and launch-to-exit through Corral's Docker containerizer vs `docker run`,
// same dockerd, same image, same command, interleaved in one run. Not a test: it prints the
// figures that go to docs/benchmarks.md (see bench/docker/run).
//
//   corral_docker_bench [--socket unix:/run/corral-test/docker.sock] [--runs 30]
//                       [--image corral-test/busybox:latest] [--docker docker]
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"
#include "corral/docker/docker_containerizer.hpp"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using corral::containerizer::LaunchRequest;
using corral::containerizer::Termination;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Runs argv (no shell), output to /dev/null; returns the exit status.
int run(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct Stats {
  std::vector<double> v;
  double pct(double p) const {
    auto s = v;
    std::sort(s.begin(), s.end());
    return s[std::min(s.size() - 1, static_cast<std::size_t>(p * (s.size() - 1) + 0.5))];
  }
  double mean() const { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }
};

class Waiter {
 public:
  void done(const std::string& id) {
    std::lock_guard l(m_);
    ended_.insert(id);
    cv_.notify_all();
  }
  void wait(const std::string& id) {
    std::unique_lock l(m_);
    cv_.wait(l, [&] { return ended_.count(id) > 0; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::set<std::string> ended_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string socket = "unix:/run/corral-test/docker.sock";
  std::string image = "corral-test/busybox:latest";
  std::string docker = "docker";
  int runs = 30;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--socket") socket = argv[i + 1];
    if (k == "--runs") runs = std::atoi(argv[i + 1]);
    if (k == "--image") image = argv[i + 1];
    if (k == "--docker") docker = argv[i + 1];
  }
  corral::log::set_level(corral::log::Level::warning);
  corral::docker::DockerOptions o;
  o.endpoint = socket;
  o.agent_label = "bench";
  o.name_prefix = "corral-bench-";
  o.policy.networks = {{"none", "host"}, "bench"};
  auto opened = corral::docker::open_docker_containerizer(o);
  if (!opened.ok()) {
    std::fprintf(stderr, "corral_docker_bench: %s\n", opened.error().message().c_str());
    return 1;
  }
  auto& c = **opened;
  Waiter waiter;
  c.set_termination_callback([&](const std::string& id, const Termination&) { waiter.done(id); });
  auto dir = corral::TempDir::create("corral-docker-bench-");
  if (!dir.ok()) return 1;
  const std::string host = "unix://" + socket.substr(5);

  auto request = [&](const std::string& id, const std::string& cmd) {
    LaunchRequest r;
    r.container_id = id;
    r.task.mutable_task_id()->set_value(id);
    r.task.mutable_container()->set_type(corral::v1::ContainerInfo::DOCKER);
    r.task.mutable_container()->mutable_docker()->set_image(image);
    r.task.mutable_container()->mutable_docker()->set_network(
        corral::v1::ContainerInfo::DockerInfo::NONE);
    r.task.mutable_command()->set_value(cmd);
    r.sandbox_dir = dir->path() / id;
    std::filesystem::create_directories(r.sandbox_dir);
    r.decision.user = "nobody";
    r.decision.seccomp = "default";
    r.decision.limits.pids_max = 64;
    r.decision.limits.memory_max = 64ull << 20;
    return r;
  };
  // docker run with the same settings Corral asks for.
  auto docker_run = [&](const std::string& name, bool detach, const std::string& cmd) {
    std::vector<std::string> a = {docker, "-H", host, "run"};
    if (detach) a.push_back("-d");
    for (const char* x : {"--network", "none", "--user", "65534:65534", "--pids-limit", "64",
                          "--memory", "64m", "--memory-swap", "64m", "--cap-drop", "ALL",
                          "--security-opt", "no-new-privileges", "-w", "/mnt/mesos/sandbox"}) {
      a.push_back(x);
    }
    std::filesystem::create_directories(dir->path() / name);
    a.push_back("-v");
    a.push_back((dir->path() / name).string() + ":/mnt/mesos/sandbox:rw");
    a.insert(a.end(), {"--name", name, "--entrypoint", "/bin/sh", image, "-c", cmd});
    return run(a);
  };

  Stats corral_running, corral_exit, docker_running, docker_exit;
  // One warm-up of each, not counted.
  for (int i = -1; i < runs; ++i) {
    const std::string n = std::to_string(i + 1);
    // Corral, launch-to-RUNNING
    {
      auto t0 = Clock::now();
      auto l = c.launch(request("run" + n, "sleep 600"));
      double t = ms_since(t0);
      if (!l.ok()) {
        std::fprintf(stderr, "launch: %s\n", l.error().message().c_str());
        return 1;
      }
      if (i >= 0) corral_running.v.push_back(t);
      (void)c.kill("run" + n, std::chrono::milliseconds(0));
      waiter.wait("run" + n);
      (void)c.destroy("run" + n);
    }
    // docker run -d, launch-to-RUNNING
    {
      auto t0 = Clock::now();
      int rc = docker_run("corral-bench-d-run" + n, true, "sleep 600");
      double t = ms_since(t0);
      if (rc != 0) {
        std::fprintf(stderr, "docker run -d failed (%d)\n", rc);
        return 1;
      }
      if (i >= 0) docker_running.v.push_back(t);
      run({docker, "-H", host, "rm", "-f", "corral-bench-d-run" + n});
    }
    // Corral, launch-to-exit (exit reported, output in the sandbox)
    {
      auto t0 = Clock::now();
      auto l = c.launch(request("exit" + n, "echo hi"));
      if (!l.ok()) return 1;
      waiter.wait("exit" + n);
      double t = ms_since(t0);
      if (i >= 0) corral_exit.v.push_back(t);
      (void)c.destroy("exit" + n);
    }
    // docker run (attached: returns at the exit, output printed), launch-to-exit
    {
      auto t0 = Clock::now();
      int rc = docker_run("corral-bench-d-exit" + n, false, "echo hi");
      double t = ms_since(t0);
      if (rc != 0) return 1;
      if (i >= 0) docker_exit.v.push_back(t);
      run({docker, "-H", host, "rm", "-f", "corral-bench-d-exit" + n});
    }
  }
  auto row = [](const char* what, const Stats& corral, const Stats& docker) {
    std::printf("| %s | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx |\n", what, corral.pct(0.5),
                corral.pct(0.9), docker.pct(0.5), docker.pct(0.9),
                corral.pct(0.5) / docker.pct(0.5), corral.mean() / docker.mean());
  };
  std::printf("runs: %d (interleaved, after one warm-up each)\n\n", runs);
  std::printf(
      "| measure | Corral p50 ms | Corral p90 ms | docker run p50 ms | docker run p90 ms | "
      "ratio p50 | ratio mean |\n|---|---|---|---|---|---|---|\n");
  row("launch-to-RUNNING", corral_running, docker_running);
  row("launch-to-exit", corral_exit, docker_exit);
  return 0;
}
