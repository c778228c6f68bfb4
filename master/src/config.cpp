#include "corral/master/config.hpp"

#include "corral/common/config.hpp"
#include "corral/common/http.hpp"
#include "corral/common/log.hpp"

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
  ConfigTable http = root.table("http");
  http.get_bytes("max_request_body", &cfg.max_request_body);
  http.get_duration("idle_timeout", &cfg.idle_timeout);
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
