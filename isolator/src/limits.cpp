#include "corral/isolator/limits.hpp"

#include <regex>

namespace corral::isolator {
namespace {

template <typename T>
void put(nlohmann::json& j, const char* key, const std::optional<T>& v) {
  if (v) j[key] = *v;
}

Error bad(const std::string& field, const std::string& what) {
  return Error(EINVAL, "limits." + field + ": " + what);
}

// Reads an optional unsigned integer in [min, max].
Result<void> read_uint(const nlohmann::json& j, const char* key, uint64_t min, uint64_t max,
                       std::optional<uint64_t>* out) {
  if (!j.contains(key) || j[key].is_null()) return {};
  const auto& v = j[key];
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
    return bad(key, "expected a non-negative integer, got " + v.dump());
  }
  uint64_t n = v.get<uint64_t>();
  if (n < min || n > max) {
    return bad(key, std::to_string(n) + " is out of range " + std::to_string(min) + ".." +
                        std::to_string(max));
  }
  *out = n;
  return {};
}

}  // namespace

nlohmann::json to_json(const ResourceLimits& l) {
  nlohmann::json j = nlohmann::json::object();
  put(j, "cpus", l.cpus);
  put(j, "cpu_period_us", l.cpu_period_us);
  put(j, "cpu_weight", l.cpu_weight);
  put(j, "cpuset_cpus", l.cpuset_cpus);
  put(j, "cpuset_mems", l.cpuset_mems);
  put(j, "memory_max", l.memory_max);
  put(j, "memory_high", l.memory_high);
  put(j, "memory_swap_max", l.memory_swap_max);
  j["memory_oom_group"] = l.memory_oom_group;
  put(j, "pids_max", l.pids_max);
  put(j, "io_weight", l.io_weight);
  for (const auto& io : l.io_max) {
    nlohmann::json d = {{"device", io.device}};
    put(d, "rbps", io.rbps);
    put(d, "wbps", io.wbps);
    put(d, "riops", io.riops);
    put(d, "wiops", io.wiops);
    j["io_max"].push_back(d);
  }
  for (const auto& h : l.hugetlb) {
    j["hugetlb"].push_back({{"page_size", h.page_size}, {"max_bytes", h.max_bytes}});
  }
  return j;
}

Result<ResourceLimits> limits_from_json(const nlohmann::json& j) {
  if (!j.is_object()) return Error(EINVAL, "limits: expected a JSON object");
  static const char* kKnown[] = {
      "cpus",       "cpu_period_us", "cpu_weight",      "cpuset_cpus",      "cpuset_mems",
      "memory_max", "memory_high",   "memory_swap_max", "memory_oom_group", "pids_max",
      "io_weight",  "io_max",        "hugetlb"};
  for (const auto& [k, v] : j.items()) {
    bool known = false;
    for (const char* n : kKnown) known |= (k == n);
    if (!known) return bad(k, "unknown field");
  }
  ResourceLimits l;
  if (j.contains("cpus") && !j["cpus"].is_null()) {
    if (!j["cpus"].is_number()) return bad("cpus", "expected a number of CPUs, e.g. 0.5");
    double c = j["cpus"].get<double>();
    if (!(c >= 0.001 && c <= 4096)) return bad("cpus", "must be between 0.001 and 4096");
    l.cpus = c;
  }
  std::optional<uint64_t> u;
  CORRAL_TRY(read_uint(j, "cpu_period_us", 1000, 1000000, &u));
  l.cpu_period_us = u;
  u.reset();
  CORRAL_TRY(read_uint(j, "cpu_weight", 1, 10000, &u));
  if (u) l.cpu_weight = static_cast<uint32_t>(*u);
  static const std::regex kCpuList("^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$");
  for (const char* key : {"cpuset_cpus", "cpuset_mems"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_string() || !std::regex_match(j[key].get<std::string>(), kCpuList)) {
      return bad(key, "expected a list such as \"0-3,6\"");
    }
    (std::string(key) == "cpuset_cpus" ? l.cpuset_cpus : l.cpuset_mems) = j[key].get<std::string>();
  }
  constexpr uint64_t kMaxBytes = 1ull << 50;
  CORRAL_TRY(read_uint(j, "memory_max", 4096, kMaxBytes, &l.memory_max));
  CORRAL_TRY(read_uint(j, "memory_high", 4096, kMaxBytes, &l.memory_high));
  CORRAL_TRY(read_uint(j, "memory_swap_max", 0, kMaxBytes, &l.memory_swap_max));
  if (j.contains("memory_oom_group")) {
    if (!j["memory_oom_group"].is_boolean())
      return bad("memory_oom_group", "expected true or false");
    l.memory_oom_group = j["memory_oom_group"].get<bool>();
  }
  CORRAL_TRY(read_uint(j, "pids_max", 1, 4194304, &l.pids_max));
  u.reset();
  CORRAL_TRY(read_uint(j, "io_weight", 1, 10000, &u));
  if (u) l.io_weight = static_cast<uint32_t>(*u);
  static const std::regex kDevice("^[0-9]+:[0-9]+$");
  if (j.contains("io_max")) {
    if (!j["io_max"].is_array()) return bad("io_max", "expected an array");
    for (const auto& d : j["io_max"]) {
      IoDeviceLimit io;
      if (!d.is_object() || !d.contains("device") || !d["device"].is_string() ||
          !std::regex_match(d["device"].get<std::string>(), kDevice)) {
        return bad("io_max", "each entry needs \"device\": \"major:minor\", e.g. \"8:0\"");
      }
      io.device = d["device"];
      CORRAL_TRY(read_uint(d, "rbps", 1, UINT64_MAX, &io.rbps));
      CORRAL_TRY(read_uint(d, "wbps", 1, UINT64_MAX, &io.wbps));
      CORRAL_TRY(read_uint(d, "riops", 1, UINT64_MAX, &io.riops));
      CORRAL_TRY(read_uint(d, "wiops", 1, UINT64_MAX, &io.wiops));
      l.io_max.push_back(io);
    }
  }
  static const std::regex kPage("^[0-9]+(KB|MB|GB)$");
  if (j.contains("hugetlb")) {
    if (!j["hugetlb"].is_array()) return bad("hugetlb", "expected an array");
    for (const auto& h : j["hugetlb"]) {
      if (!h.is_object() || !h.contains("page_size") || !h["page_size"].is_string() ||
          !std::regex_match(h["page_size"].get<std::string>(), kPage) || !h.contains("max_bytes") ||
          !h["max_bytes"].is_number_unsigned()) {
        return bad("hugetlb", "each entry needs \"page_size\" (e.g. \"2MB\") and \"max_bytes\"");
      }
      l.hugetlb.push_back({h["page_size"], h["max_bytes"]});
    }
  }
  return l;
}

}  // namespace corral::isolator
