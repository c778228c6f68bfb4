// corral_network_bench: what bridge networking adds to a task's launch, and what it costs to
// tear down, next to Debian's CNI bridge plugin doing the same job (veth pair, bridge, address
// from a host-local IPAM, default route). Not a test: prints figures for docs/benchmarks.md.
//
//   sudo build/release/network/corral_network_bench [iterations]   (default 50)
//
// Runs in a network and mount namespace of its own (like the root tests): the host's network is
// never touched. Needs root, corral-launcher beside the build (CORRAL_LAUNCHER_PATH) and
// /usr/lib/cni/{bridge,host-local} (package containernetworking-plugins).
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/native/native.hpp"
#include "corral/network/network.hpp"

extern char** environ;

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using corral::containerizer::Termination;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

struct Stats {
  std::vector<double> v;
  double pct(double p) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
  }
};

void print(const char* what, Stats& s) {
  std::printf("%-48s p50 %7.2f ms  p90 %7.2f ms  (n=%zu)\n", what, s.pct(0.5), s.pct(0.9),
              s.v.size());
}

class Waiter {
 public:
  void operator()(const std::string& id, const Termination&) {
    std::lock_guard lock(mu_);
    done_.insert(id);
    cv_.notify_all();
  }
  void wait(const std::string& id) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return done_.count(id) > 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> done_;
};

// A named network namespace as `ip netns add` makes it (the CNI runtime's job).
bool make_netns(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (fd < 0) return false;
  ::close(fd);
  bool ok = false;
  std::thread t([&] {
    ok = ::unshare(CLONE_NEWNET) == 0 &&
         ::mount("/proc/thread-self/ns/net", path.c_str(), nullptr, MS_BIND, nullptr) == 0;
  });
  t.join();
  return ok;
}

// Runs a CNI plugin per the CNI spec: parameters in the environment, config on stdin.
bool run_cni(const std::string& command, const std::string& id, const std::string& netns,
             const std::string& config) {
  int in[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return false;
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, devnull, 1);
  std::vector<std::string> env = {"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id,
                                  "CNI_NETNS=" + netns,     "CNI_IFNAME=eth0",
                                  "CNI_PATH=/usr/lib/cni",  "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  char arg0[] = "bridge";
  char* argv[] = {arg0, nullptr};
  pid_t pid = 0;
  int rc = posix_spawn(&pid, "/usr/lib/cni/bridge", &fa, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(devnull);
  if (rc != 0) {
    ::close(in[1]);
    return false;
  }
  (void)!::write(in[1], config.data(), config.size());
  ::close(in[1]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 50;
  if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0 ||
      ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
      std::system("ip link set lo up") != 0) {
    std::perror("corral_network_bench: private namespaces (run as root)");
    return 1;
  }
  auto tmp = corral::TempDir::create("network-bench-");
  if (!tmp) return 1;
  const fs::path dir = tmp->path();
  ::chmod(dir.c_str(), 0755);

  corral::network::NetworkConfig nc;
  nc.subnet = "10.88.0.0/16";
  nc.state_dir = dir / "state";
  nc.netns_dir = dir / "netns";
  nc.nameservers = {"192.0.2.53"};
  // A CNI network for launches through Corral's CNI path (the same plugin as section 2's).
  nc.cni_config_dir = dir / "cni";
  fs::create_directories(nc.cni_config_dir);
  {
    std::FILE* f = std::fopen((nc.cni_config_dir / "launchnet.conflist").c_str(), "w");
    if (!f) return 1;
    const std::string conf =
        R"({"cniVersion":"1.0.0","name":"launchnet","plugins":[{"type":"bridge","bridge":"cni1",)"
        R"("isGateway":true,"ipMasq":false,"mtu":1500,"ipam":{"type":"host-local",)"
        R"("subnet":"10.97.0.0/16","routes":[{"dst":"0.0.0.0/0"}],"dataDir":")" +
        (dir / "cni-ipam-launch").string() + R"("}}]})";
    std::fputs(conf.c_str(), f);
    std::fclose(f);
  }
  auto opened = corral::network::NetworkManager::open(nc);
  if (!opened) {
    std::fprintf(stderr, "%s\n", opened.error().message().c_str());
    return 1;
  }
  std::shared_ptr<corral::network::NetworkManager> net(std::move(*opened));
  corral::native::NativeOptions o;
  o.launcher_path = CORRAL_LAUNCHER_PATH;
  o.network = net;
  auto c = corral::native::open_native_containerizer(o);
  if (!c) {
    std::fprintf(stderr, "%s\n", c.error().message().c_str());
    return 1;
  }
  Waiter waiter;
  (*c)->set_termination_callback(std::ref(waiter));

  // 1. Whole launches of `true` through corral-launcher: none vs bridge, interleaved.
  Stats launch_none, launch_bridge, launch_cni, teardown_none, teardown_bridge, teardown_cni;
  for (int i = 0; i < n; ++i) {
    for (const char* mode : {"none", "bridge", "launchnet"}) {
      corral::containerizer::LaunchRequest r;
      r.container_id = std::string(mode) + std::to_string(i);
      r.task.mutable_task_id()->set_value(r.container_id);
      r.task.set_name(r.container_id);
      r.task.mutable_command()->set_value("true");
      r.task.mutable_container()->set_type(corral::v1::ContainerInfo::MESOS);
      r.task.mutable_container()->add_network_infos()->set_name(mode);
      r.sandbox_dir = dir / r.container_id / "sandbox";
      r.run_dir = dir / r.container_id / "run";
      fs::create_directories(r.sandbox_dir);
      fs::create_directories(r.run_dir);
      r.decision.capabilities = corral::isolator::default_capabilities();
      r.decision.seccomp = "default";
      auto t0 = Clock::now();
      auto l = (*c)->launch(r);
      double ms = ms_since(t0);
      if (!l) {
        std::fprintf(stderr, "launch %s: %s\n", mode, l.error().message().c_str());
        return 1;
      }
      const std::string m = mode;
      (m == "none" ? launch_none : m == "bridge" ? launch_bridge : launch_cni).v.push_back(ms);
      waiter.wait(r.container_id);
      // Launch to exit reported: the containerizer removes the task's network (veth, rules,
      // netns, lease; CNI DEL) when the supervisor exits, before it reports the end.
      (m == "none"     ? teardown_none
       : m == "bridge" ? teardown_bridge
                       : teardown_cni)
          .v.push_back(ms_since(t0));
      (void)(*c)->destroy(r.container_id);
    }
  }

  // 2. The network alone: Corral's attach/detach vs the CNI bridge plugin's ADD/DEL.
  Stats attach, detach, cni_add, cni_del, netns_only;
  fs::create_directories(dir / "etc");
  for (int i = 0; i < n; ++i) {
    corral::network::NetworkRequest r;
    r.container_id = "a" + std::to_string(i);
    auto t0 = Clock::now();
    auto a = net->attach(r, dir / "etc");
    attach.v.push_back(ms_since(t0));
    if (!a) {
      std::fprintf(stderr, "attach: %s\n", a.error().message().c_str());
      return 1;
    }
    t0 = Clock::now();
    if (!net->detach(r.container_id)) return 1;
    detach.v.push_back(ms_since(t0));
  }
  const std::string cni_config =
      R"({"cniVersion":"1.0.0","name":"benchnet","type":"bridge","bridge":"cni0",)"
      R"("isGateway":true,"ipMasq":false,"mtu":1500,"ipam":{"type":"host-local",)"
      R"("subnet":"10.99.0.0/16","routes":[{"dst":"0.0.0.0/0"}],"dataDir":")" +
      (dir / "cni-ipam").string() + R"("}})";
  fs::create_directories(dir / "cni-netns");
  for (int i = 0; i < n; ++i) {
    const std::string id = "cni" + std::to_string(i);
    const std::string ns = (dir / "cni-netns" / id).string();
    auto t0 = Clock::now();
    if (!make_netns(ns)) return 1;
    netns_only.v.push_back(ms_since(t0));
    bool ok = run_cni("ADD", id, ns, cni_config);
    cni_add.v.push_back(ms_since(t0));
    if (!ok) {
      std::fprintf(stderr, "CNI bridge ADD failed (containernetworking-plugins installed?)\n");
      return 1;
    }
    t0 = Clock::now();
    ok = run_cni("DEL", id, ns, cni_config);
    ::umount2(ns.c_str(), MNT_DETACH);
    ::unlink(ns.c_str());
    cni_del.v.push_back(ms_since(t0));
    if (!ok) return 1;
  }

  std::printf("corral_network_bench: %d iterations, private network namespace\n", n);
  print("launch `true`, network none (containerizer)", launch_none);
  print("launch `true`, network bridge (containerizer)", launch_bridge);
  std::printf("%-48s p50 %7.2f ms\n", "extra launch time of bridge over none",
              launch_bridge.pct(0.5) - launch_none.pct(0.5));
  print("launch `true`, CNI network (Corral's CNI path)", launch_cni);
  std::printf("%-48s p50 %7.2f ms\n", "extra launch time of CNI bridge over none",
              launch_cni.pct(0.5) - launch_none.pct(0.5));
  print("launch to end reported, none", teardown_none);
  print("launch to end reported, bridge (incl. teardown)", teardown_bridge);
  print("launch to end reported, CNI (incl. DEL)", teardown_cni);
  std::printf("%-48s p50 %7.2f ms (bridge), %7.2f ms (CNI)\n", "extra launch-to-end over none",
              teardown_bridge.pct(0.5) - teardown_none.pct(0.5),
              teardown_cni.pct(0.5) - teardown_none.pct(0.5));
  print("corral attach (netns+veth+addr+route+files)", attach);
  print("corral detach (rules+veth+netns+lease)", detach);
  print("netns create alone (part of both)", netns_only);
  print("CNI bridge ADD incl. netns create", cni_add);
  print("CNI bridge DEL incl. netns removal", cni_del);
  std::printf("ratio CNI ADD / corral attach (p50): %.1fx; CNI DEL / corral detach: %.1fx\n",
              cni_add.pct(0.5) / attach.pct(0.5), cni_del.pct(0.5) / detach.pct(0.5));
  return 0;
}
