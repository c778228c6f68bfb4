#pragma once
// Resource limits of one task, as the cgroup v2 backends apply them. Every field is optional:
// absent means "no limit set by Corral" (the cgroup default). Policy files fill in defaults and
// check maxima before a task's limits reach a CgroupManager.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "corral/common/result.hpp"

namespace corral::isolator {

struct IoDeviceLimit {
  std::string device;  // "major:minor", e.g. "8:0"
  std::optional<uint64_t> rbps, wbps, riops, wiops;
};

struct HugetlbLimit {
  std::string page_size;  // "2MB", "1GB" as in hugetlb.<size>.max
  uint64_t max_bytes = 0;
};

struct ResourceLimits {
  // cpu.max: a hard cap in CPUs (0.5 = half a CPU per period), written as "<quota> <period>".
  std::optional<double> cpus;
  std::optional<uint64_t> cpu_period_us;  // default 100000
  // cpu.weight: 1..10000 (cgroup default 100).
  std::optional<uint32_t> cpu_weight;
  std::optional<std::string> cpuset_cpus;  // "0-1,3"
  std::optional<std::string> cpuset_mems;
  std::optional<uint64_t> memory_max;       // bytes
  std::optional<uint64_t> memory_high;      // bytes
  std::optional<uint64_t> memory_swap_max;  // bytes
  bool memory_oom_group = true;             // kill the whole task on OOM, not one process
  std::optional<uint64_t> pids_max;
  std::optional<uint32_t> io_weight;  // 1..10000
  std::vector<IoDeviceLimit> io_max;
  std::vector<HugetlbLimit> hugetlb;
};

nlohmann::json to_json(const ResourceLimits& limits);
// Validates ranges; errors name the field and the allowed range.
Result<ResourceLimits> limits_from_json(const nlohmann::json& j);

}  // namespace corral::isolator
