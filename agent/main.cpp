// corral-agent: the node agent. Isolates and runs tasks (native containerizer: cgroup v2,
// namespaces, seccomp, capabilities through corral-launcher), checkpoints them so they survive
// its restart, reports them to the master, and serves the agent API. docs/agent.md.
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdio>
#include <filesystem>

#include "corral/agent/agent.hpp"
#include "corral/common/log.hpp"
#include "corral/common/sd_notify.hpp"
#include "corral/common/version.hpp"

int main(int argc, char** argv) {
  using namespace corral;
  CLI::App app{
      "corral-agent: runs and isolates tasks on this machine and reports them to the master.\n"
      "Configuration: /etc/corral/agent.toml (every key has a default; docs/agent.md).\n"
      "Signals: SIGTERM/SIGINT stop the agent and leave tasks running for the next start; "
      "SIGHUP reloads the policy files."};
  app.set_version_flag("--version", std::string("corral-agent ") + kVersion);
  std::string config_path;
  std::string master, listen, socket, work_dir, policy_dir, log_level, launcher;
  bool kill_on_exit = false;
  app.add_option("-c,--config", config_path,
                 "configuration file (default /etc/corral/agent.toml when it exists)");
  app.add_option("--master", master, "master address http://host:port (empty: standalone)");
  app.add_option("--listen", listen, "TCP address of the read-only API (\"\" to disable)");
  app.add_option("--socket", socket, "unix socket of the full API");
  app.add_option("--work-dir", work_dir, "state, sandboxes and checkpoints");
  app.add_option("--policy-dir", policy_dir, "isolation policy directory");
  app.add_option("--launcher", launcher, "path of corral-launcher");
  app.add_option("--log-level", log_level, "debug, info, notice, warning or error");
  app.add_flag("--kill-tasks-on-exit", kill_on_exit,
               "kill every task when stopping (default: leave them to the next agent)");
  CLI11_PARSE(app, argc, argv);

  log::set_identifier("corral-agent");
  agent::AgentConfig config;
  std::string path = config_path;
  if (path.empty() && std::filesystem::exists(agent::kDefaultAgentConfigPath))
    path = agent::kDefaultAgentConfigPath;
  if (!path.empty()) {
    auto loaded = agent::load_agent_config(path);
    if (!loaded) {
      std::fprintf(stderr, "corral-agent: %s\n", loaded.error().message().c_str());
      return 78;  // EX_CONFIG
    }
    config = *loaded;
  }
  if (app.count("--master")) config.master = master;
  if (app.count("--listen")) config.listen = listen;
  if (app.count("--socket")) config.socket = socket;
  if (!work_dir.empty()) config.work_dir = work_dir;
  if (!policy_dir.empty()) config.policy_dir = policy_dir;
  if (!launcher.empty()) config.launcher_path = launcher;
  if (!log_level.empty()) config.log_level = log_level;
  log::Level level;
  if (!log::parse_level(config.log_level, &level)) {
    std::fprintf(stderr, "corral-agent: unknown log level \"%s\"\n", config.log_level.c_str());
    return 78;
  }
  log::set_level(level);

  boost::asio::io_context io;
  // systemd (docs/dbus.md): STATUS= while recovering, READY=1 only once the checkpointed tasks
  // are adopted, their unacknowledged updates queued for resending and (with a master) the agent
  // re-registered or 10 s spent trying; WATCHDOG=1 from this loop.
  notify::status("starting: opening the checkpoint, recovering tasks");
  auto agent = agent::Agent::start(io, config);
  if (!agent) {
    std::fprintf(stderr, "corral-agent: %s\n", agent.error().message().c_str());
    notify::status("failed: " + agent.error().message());
    return 1;
  }
  if (config.dbus) {
    if (auto d = (*agent)->start_dbus(); !d.ok())
      log::notice("D-Bus API off: " + d.error().message());
  } else {
    log::info("D-Bus API off (dbus = false)");
  }
  notify::Heartbeat heartbeat(io, [&] { return (*agent)->status_line(); });
  boost::asio::steady_timer ready_timer(io);
  auto ready_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::function<void()> say_ready = [&] {
    // Posted after Agent::start's own posts: the recovery's resend pass has run.
    if ((*agent)->state() == "connecting" && std::chrono::steady_clock::now() < ready_deadline) {
      ready_timer.expires_after(std::chrono::milliseconds(100));
      ready_timer.async_wait([&](boost::system::error_code ec) {
        if (!ec) say_ready();
      });
      return;
    }
    notify::ready((*agent)->status_line());
  };
  boost::asio::post(io, [&] { say_ready(); });
  boost::asio::signal_set stop_signals(io, SIGINT, SIGTERM);
  stop_signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec) return;
    ready_timer.cancel();
    notify::stopping(kill_on_exit ? "stopping: killing tasks"
                                  : "stopping: tasks keep running for the next agent");
    (*agent)->stop(kill_on_exit, [&] { io.stop(); });
  });
  boost::asio::signal_set hup(io, SIGHUP);
  std::function<void()> wait_hup = [&] {
    hup.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      notify::reloading("reloading the policy");
      auto r = (*agent)->reload_policy();
      notify::ready(r.ok()
                        ? (*agent)->status_line()
                        : "policy NOT reloaded (the last good one stays): " + r.error().message());
      wait_hup();
    });
  };
  wait_hup();
  ::signal(SIGPIPE, SIG_IGN);
  io.run();
  return 0;
}
