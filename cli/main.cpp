// corral: the command-line client. Today: `corral status` (is the master up, what is it) and
// `corral version`. It speaks to the master over HTTP like any other client.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "corral/common/http_client.hpp"
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
  CLI::App app{"corral: the Corral command-line client.\n"
               "Today it reports a master's status; tasks, images, services and jobs come later."};
  app.set_version_flag("--version", std::string("corral ") + corral::kVersion);
  app.require_subcommand(1);
  const char* env = std::getenv("CORRAL_MASTER");
  std::string master = env != nullptr && *env != '\0' ? env : "http://127.0.0.1:5050";
  app.add_option("-m,--master", master, "master address, http://host:port or unix:/path "
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
      "check", "validate the policy files in DIR and print the effective policy with the origin "
               "of every value");
  check->add_option("dir", policy_dir, "policy directory (default /etc/corral/policy.d)");
  check->add_flag("--json", policy_json, "print JSON");
  CLI11_PARSE(app, argc, argv);
  if (check->parsed()) return policy_check(policy_dir, policy_json);
  if (ver->parsed()) {
    std::printf("corral %s\n", corral::kVersion);
    return 0;
  }
  return status(master, as_json);
}
