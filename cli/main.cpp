// corral: the command-line client. Today: `corral status` (is the master up, what is it) and
// `corral version`. It speaks to the master over HTTP like any other client.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "corral/cli/agent_cmd.hpp"
#include "corral/cli/cluster.hpp"
#include "corral/cli/image.hpp"
#include "corral/cli/run.hpp"
#include "corral/common/config.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/log.hpp"
#include "corral/common/version.hpp"
#include "corral/isolator/policy.hpp"

namespace {

int status(const std::string& master, bool as_json) {
  auto client = corral::http::HttpClient::create(master);
  if (!client) {
    std::fprintf(stderr, "corral: bad master address '%s': %s\n", master.c_str(),
                 client.error().message().c_str());
    return 64;
  }
  auto version = client->get("/version");
  if (!version) {
    std::fprintf(stderr,
                 "corral: cannot reach the master at %s: %s\n"
                 "Is corral-master running? Point at another with --master or CORRAL_MASTER.\n",
                 master.c_str(), version.error().message().c_str());
    return 69;
  }
  if (version->result() != corral::http::Status::ok) {
    std::fprintf(stderr, "corral: %s answered GET /version with %u: %s\n", master.c_str(),
                 version->result_int(), version->body().c_str());
    return 69;
  }
  auto health = client->get("/health");
  bool healthy = health && health->result() == corral::http::Status::ok;
  nlohmann::json v = nlohmann::json::parse(version->body(), nullptr, false);
  if (v.is_discarded() || !v.is_object()) {
    std::fprintf(stderr, "corral: %s answered GET /version with something that is not JSON\n",
                 master.c_str());
    return 69;
  }
  if (as_json) {
    v["healthy"] = healthy;
    v["address"] = master;
    std::printf("%s\n", v.dump(2).c_str());
    return healthy ? 0 : 1;
  }
  std::printf("master     %s\n", master.c_str());
  std::printf("cluster    %s\n", v.value("cluster", "?").c_str());
  std::printf("master id  %s\n", v.value("master_id", "?").c_str());
  std::printf("version    %s\n", v.value("version", "?").c_str());
  std::printf("starts     %lld\n", static_cast<long long>(v.value("start_count", 0LL)));
  std::printf("health     %s\n", healthy ? "healthy" : "UNHEALTHY");
  return healthy ? 0 : 1;
}

// `corral policy check [DIR]`: validate the policy files and print the effective policy.
int policy_check(const std::string& dir, bool as_json) {
  auto policy = corral::isolator::load_policy_dir(dir);
  if (!policy) {
    std::fprintf(stderr, "corral: the policy in %s is invalid:\n%s\n", dir.c_str(),
                 policy.error().message().c_str());
    return 78;  // EX_CONFIG
  }
  if (as_json) {
    std::printf("%s\n", corral::isolator::policy_to_json(*policy).dump(2).c_str());
  } else {
    std::printf("%s", corral::isolator::policy_to_text(*policy).c_str());
    std::fprintf(stderr, "corral: policy OK (%zu file%s)\n", policy->files.size(),
                 policy->files.size() == 1 ? "" : "s");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // The libraries' informational log lines are noise for a CLI; warnings and errors still show.
  corral::log::set_identifier("corral");
  corral::log::set_level(corral::log::Level::warning);
  CLI::App app{
      "corral: the Corral command-line client.\n"
      "Today it reports a master's status; tasks, images, services and jobs come later."};
  app.set_version_flag("--version", std::string("corral ") + corral::kVersion);
  app.require_subcommand(1);
  const char* env = std::getenv("CORRAL_MASTER");
  std::string master = env != nullptr && *env != '\0' ? env : "http://127.0.0.1:5050";
  app.add_option("-m,--master", master,
                 "master address, http://host:port or unix:/path "
                 "(default: $CORRAL_MASTER or http://127.0.0.1:5050)");
  bool as_json = false;
  auto* st = app.add_subcommand("status", "show whether the master is up, and its identity");
  st->add_flag("--json", as_json, "print JSON instead of a table");
  auto* ver = app.add_subcommand("version", "print the CLI's version");
  auto* policy = app.add_subcommand("policy", "work with isolation policy files");
  policy->require_subcommand(1);
  std::string policy_dir = corral::isolator::kDefaultPolicyDir;
  bool policy_json = false;
  auto* check = policy->add_subcommand(
      "check",
      "validate the policy files in DIR and print the effective policy with the origin "
      "of every value");
  check->add_option("dir", policy_dir, "policy directory (default /etc/corral/policy.d)");
  check->add_flag("--json", policy_json, "print JSON");
  corral::cli::RunOptions run_opts;
  auto* run = app.add_subcommand(
      "run",
      "run one task locally through the isolation libraries (no master, no agent): "
      "policy check, cgroup, sandbox; streams its output and returns its exit code");
  std::optional<double> cpus;
  std::string memory, memory_swap, grace = "10s";
  std::optional<uint64_t> pids, cpu_weight;
  std::vector<std::string> caps, volumes;
  std::optional<std::string> user, seccomp;
  run->add_option("--cpus", cpus, "CPU cap (cpu.max), e.g. 0.5");
  run->add_option("--memory", memory, "memory limit (memory.max), e.g. 256MiB or 1G");
  run->add_option("--memory-swap", memory_swap, "swap limit (memory.swap.max)");
  run->add_option("--pids", pids, "process limit (pids.max)");
  run->add_option("--cpu-weight", cpu_weight, "CPU share (cpu.weight, 1-10000)");
  run->add_option("--user", user, "user to run as (name or uid; must be allowed by the policy)");
  run->add_option("--cap", caps, "capability to keep (repeatable; replaces the default set)");
  run->add_option("--seccomp", seccomp, "\"default\", \"unconfined\" or the policy's profile path");
  run->add_option("-v,--volume", volumes, "HOST:CONTAINER[:rw] bind (read-only unless :rw)");
  run->add_option("--role", run_opts.request.role, "role whose policy applies (default *)");
  run->add_option("-e,--env", run_opts.env, "KEY=value environment variable (repeatable)");
  run->add_option("--policy-dir", run_opts.policy_dir,
                  "policy directory (default /etc/corral/policy.d)");
  run->add_option("--rootfs", run_opts.rootfs,
                  "root filesystem directory (default: the host's, read-only)");
  run->add_option("--hostname", run_opts.hostname, "the task's hostname");
  run->add_option("--network", run_opts.network, "none (loopback only, default) or host")
      ->check(CLI::IsMember({"none", "host"}));
  run->add_option("-w,--workdir", run_opts.workdir, "working directory inside the sandbox");
  run->add_option("--grace", grace, "SIGTERM-to-SIGKILL grace period on Ctrl-C, e.g. 10s");
  run->add_option("--state-dir", run_opts.state_dir,
                  "where sandboxes are made (default /var/lib/corral/run)");
  run->add_flag("--keep", run_opts.keep, "keep the sandbox directory afterwards");
  run->add_option("--launcher", run_opts.launcher, "path of corral-launcher");
  run->add_flag("-q,--quiet", run_opts.quiet, "no status lines, only the task's output");
  run->add_option("command", run_opts.argv, "the command and its arguments (after --)")->required();
  auto cluster = corral::cli::add_cluster_commands(app, &master);
  auto image_cmd = corral::cli::add_image_command(app);
  auto agent_cmd = corral::cli::add_agent_commands(app);
  CLI11_PARSE(app, argc, argv);
  if (auto rc = agent_cmd()) return *rc;
  if (image_cmd->parsed()) return image_cmd->run();
  if (auto rc = cluster()) return *rc;
  if (run->parsed()) {
    auto& r = run_opts.request;
    r.cpus = cpus;
    r.pids = pids;
    r.cpu_weight = cpu_weight;
    r.user = user;
    r.capabilities = caps;
    r.seccomp = seccomp;
    for (auto [text, slot] :
         {std::pair{&memory, &r.memory}, std::pair{&memory_swap, &r.memory_swap}}) {
      if (text->empty()) continue;
      auto b = corral::parse_bytes(*text);
      if (!b) {
        std::fprintf(stderr, "corral: %s\n", b.error().message().c_str());
        return 64;
      }
      *slot = *b;
    }
    auto g = corral::parse_duration(grace);
    if (!g) {
      std::fprintf(stderr, "corral: --grace: %s\n", g.error().message().c_str());
      return 64;
    }
    run_opts.grace_ms = static_cast<uint32_t>(g->count());
    for (const auto& v : volumes) {
      auto first = v.find(':');
      auto second = first == std::string::npos ? std::string::npos : v.find(':', first + 1);
      if (first == std::string::npos) {
        std::fprintf(stderr, "corral: --volume %s: expected HOST:CONTAINER[:rw]\n", v.c_str());
        return 64;
      }
      corral::isolator::Volume vol{v.substr(0, first), v.substr(first + 1, second - first - 1),
                                   false};
      if (second != std::string::npos) {
        std::string mode = v.substr(second + 1);
        if (mode != "rw" && mode != "ro") {
          std::fprintf(stderr, "corral: --volume %s: the mode must be rw or ro\n", v.c_str());
          return 64;
        }
        vol.writable = mode == "rw";
      }
      r.volumes.push_back(vol);
    }
    return corral::cli::run_task(run_opts);
  }
  if (check->parsed()) return policy_check(policy_dir, policy_json);
  if (ver->parsed()) {
    std::printf("corral %s\n", corral::kVersion);
    return 0;
  }
  return status(master, as_json);
}
