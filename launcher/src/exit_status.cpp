#include "corral/launcher/exit_status.hpp"

#include <nlohmann/json.hpp>

#include "corral/common/fd.hpp"

namespace corral::launcher {

Result<ExitStatus> parse_exit_status(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("state") || !j["state"].is_string()) {
    return Error(EINVAL, "exit status: not a JSON object with a \"state\" string");
  }
  ExitStatus s;
  const std::string state = j["state"].get<std::string>();
  auto get_int = [&](const char* key) {
    return j.contains(key) && j[key].is_number_integer() ? j[key].get<int>() : 0;
  };
  auto get_bool = [&](const char* key) {
    return j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
  };
  if (state == "exited") {
    s.state = ExitStatus::State::exited;
    s.code = get_int("code");
  } else if (state == "signaled") {
    s.state = ExitStatus::State::signaled;
    s.signal = get_int("signal");
    if (j.contains("signal_name") && j["signal_name"].is_string()) {
      s.signal_name = j["signal_name"].get<std::string>();
    }
    s.core_dumped = get_bool("core_dumped");
  } else if (state == "failed") {
    s.state = ExitStatus::State::failed;
    s.code = get_int("code");
    if (j.contains("error") && j["error"].is_string()) s.error = j["error"].get<std::string>();
  } else {
    return Error(EINVAL, "exit status: unknown state '" + state + "'");
  }
  s.killed_after_grace = get_bool("killed_after_grace");
  return s;
}

Result<ExitStatus> read_exit_status(const std::string& path) {
  CORRAL_ASSIGN_OR_RETURN(std::string text, read_file(path, 1 << 16));
  auto status = parse_exit_status(text);
  if (!status) return status.error().context(path);
  return status;
}

}  // namespace corral::launcher
