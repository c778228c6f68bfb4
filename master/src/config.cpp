#include "corral/master/config.hpp"

#include "corral/common/config.hpp"
#include "corral/common/http.hpp"
#include "corral/common/log.hpp"

#include <tuple>

namespace corral::master {
namespace {

Result<MasterConfig> read(ConfigFile file) {
  MasterConfig cfg;
  ConfigTable root = file.root();
  if (root.get("listen", &cfg.listen)) {
    if (auto ep = http::parse_endpoint(cfg.listen); !ep) root.fail("listen", ep.error().message());
  }
  std::string work_dir;
  if (root.get("work_dir", &work_dir)) {
    if (work_dir.empty() || work_dir.front() != '/') {
      root.fail("work_dir", "must be an absolute path, e.g. \"/var/lib/corral/master\"");
    } else {
      cfg.work_dir = work_dir;
    }
  }
  root.get("cluster", &cfg.cluster);
  root.get_enum("log_level", &cfg.log_level, {"debug", "info", "notice", "warning", "error"});
  root.get("dbus", &cfg.dbus);
  root.get("publish", &cfg.publish);
  ConfigTable http = root.table("http");
  http.get_bytes("max_request_body", &cfg.max_request_body);
  http.get_duration("idle_timeout", &cfg.idle_timeout);
  ConfigTable agents = root.table("agents");
  agents.get_duration("ping_timeout", &cfg.agent_ping_timeout);
  agents.get_int("max_ping_timeouts", &cfg.max_agent_ping_timeouts, 1, 1000);
  agents.get_duration("reregister_timeout", &cfg.agent_reregister_timeout);
  agents.get_duration("removal_timeout", &cfg.agent_removal_timeout);
  ConfigTable frameworks = root.table("frameworks");
  frameworks.get_duration("heartbeat_interval", &cfg.framework_heartbeat_interval);
  frameworks.get_duration("offer_timeout", &cfg.offer_timeout);
  ConfigTable allocator = root.table("allocator");
  allocator.get_duration("interval", &cfg.allocation_interval);
  allocator.get_duration("batch_delay", &cfg.allocation_batch_delay);
  for (auto [table, key, value] :
       {std::tuple{&agents, "ping_timeout", cfg.agent_ping_timeout},
        std::tuple{&frameworks, "heartbeat_interval", cfg.framework_heartbeat_interval},
        std::tuple{&allocator, "interval", cfg.allocation_interval}}) {
    if (value.count() <= 0) table->fail(key, "must be a positive duration, e.g. \"15s\"");
  }
  CORRAL_TRY(file.finish());
  return cfg;
}

}  // namespace

Result<MasterConfig> load_master_config(const std::filesystem::path& path) {
  CORRAL_ASSIGN_OR_RETURN(ConfigFile file, ConfigFile::load(path));
  return read(std::move(file));
}

Result<MasterConfig> parse_master_config(std::string_view text, std::string name) {
  CORRAL_ASSIGN_OR_RETURN(ConfigFile file, ConfigFile::parse(text, std::move(name)));
  return read(std::move(file));
}

}  // namespace corral::master
