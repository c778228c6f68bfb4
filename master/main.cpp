// corral-master: the thin master (registry, DRF allocator, agent link, Mesos v1 scheduler and
// operator APIs); see docs/master.md.
#include <systemd/sd-daemon.h>
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <cstdio>
#include <filesystem>

#include "corral/common/log.hpp"
#include "corral/common/sd_notify.hpp"
#include "corral/common/version.hpp"
#include "corral/master/master.hpp"

int main(int argc, char** argv) {
  using namespace corral;
  CLI::App app{
      "corral-master: registry, DRF allocator and Mesos v1 compatible APIs of a Corral cluster.\n"
      "Serves the agent link (POST /api/v1/agent), the Mesos v1 scheduler API (POST\n"
      "/api/v1/scheduler), the operator API (POST /api/v1), /state, /metrics/snapshot, /metrics."};
  app.set_version_flag("--version", std::string("corral-master ") + kVersion);
  std::string config_path;
  std::string listen, work_dir, log_level;
  app.add_option("-c,--config", config_path,
                 std::string("configuration file (default ") + master::kDefaultMasterConfigPath +
                     " if it exists, else embedded defaults)");
  app.add_option("--listen", listen,
                 "address to serve the API on, host:port or unix:/path (overrides the file)");
  app.add_option("--work-dir", work_dir, "directory for durable state (overrides the file)");
  app.add_option("--log-level", log_level, "debug, info, notice, warning or error");
  CLI11_PARSE(app, argc, argv);
  log::set_identifier("corral-master");

  master::MasterConfig config;
  std::filesystem::path path = config_path.empty() ? master::kDefaultMasterConfigPath : config_path;
  if (!config_path.empty() || std::filesystem::exists(path)) {
    auto loaded = master::load_master_config(path);
    if (!loaded) {
      std::fprintf(stderr, "corral-master: %s\n", loaded.error().message().c_str());
      return 78;  // EX_CONFIG
    }
    config = *loaded;
  } else {
    log::info("no configuration file; using embedded defaults", {{"CORRAL_CONFIG", path.string()}});
  }
  if (!listen.empty()) config.listen = listen;
  if (!work_dir.empty()) config.work_dir = work_dir;
  if (!log_level.empty()) config.log_level = log_level;
  log::Level level;
  if (!log::parse_level(config.log_level, &level)) {
    std::fprintf(
        stderr,
        "corral-master: --log-level '%s' is not one of debug, info, notice, warning, error\n",
        config.log_level.c_str());
    return 64;
  }
  log::set_level(level);

  boost::asio::io_context io;
  auto master = master::Master::start(io, config);
  if (!master) {
    std::fprintf(stderr, "corral-master: %s\n", master.error().message().c_str());
    return 1;
  }
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    log::notice(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ", stopping");
    notify::stopping("stopping");
    (*master)->stop([&io] { io.stop(); });
  });
  log::set_process_field("CORRAL_MASTER_ID", (*master)->master_id());
  if (config.dbus) {
    if (auto d = (*master)->start_dbus(); !d.ok())
      log::notice("D-Bus API off: " + d.error().message());
  } else {
    log::info("D-Bus API off (dbus = false)");
  }
  notify::Heartbeat heartbeat(io, [&] { return "serving on " + (*master)->address(); });
  std::printf("corral-master %s listening on %s (state in %s)\n", kVersion,
              (*master)->address().c_str(), config.work_dir.c_str());
  std::fflush(stdout);
  notify::ready("serving on " + (*master)->address());
  io.run();
  return 0;
}
