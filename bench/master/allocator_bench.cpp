// Allocation cycle of the DRF allocator alone (no master, no network): N agents, M frameworks,
// every framework declining every offer. The Mesos figure this compares with is its
// HierarchicalAllocator "DeclineOffers" benchmark (~1.06 s per cycle at 10,000 agents x 1,000
// frameworks). Results and the command line are in docs/benchmarks.md.
//
// Time is the wall time of allocate() alone; alloc_cpu_ms is the thread CPU time inside it,
// which is what to read on a shared, loaded machine.
//
// Each measured cycle: allocate() over every agent with free resources (all of them, since
// everything was declined), then (untimed) every offer is declined with refuse_seconds = 5
// while the simulated clock advances 1 s per cycle, so each agent carries ~5 live filters and
// filters keep expiring, as in a real cluster of declining frameworks.
#include <benchmark/benchmark.h>

#include <time.h>

#include <chrono>
#include <string>

#include "corral/master/allocator.hpp"

namespace {

using corral::master::Allocation;
using corral::master::Allocator;
using corral::master::Quantities;
using corral::master::Resources;
using corral::master::TimePoint;

void setup(Allocator& al, int agents, int frameworks, int roles) {
  for (int i = 0; i < agents; ++i) {
    al.add_agent("agent-" + std::to_string(i),
                 Resources{Quantities{{"cpus", 16}, {"mem", 65536}, {"disk", 1 << 20}}});
  }
  for (int f = 0; f < frameworks; ++f) {
    al.add_framework("framework-" + std::to_string(f), {"role-" + std::to_string(f % roles)});
  }
}

void run_cycles(benchmark::State& state, int roles, double refuse_seconds) {
  const int agents = static_cast<int>(state.range(0));
  const int frameworks = static_cast<int>(state.range(1));
  Allocator al;
  setup(al, agents, frameworks, roles);
  TimePoint now = TimePoint{} + std::chrono::hours(1);
  std::vector<Allocation> offers = al.allocate(now);  // warm-up cycle (builds the sort order)
  size_t offered = 0;
  double cpu_s = 0;  // thread CPU time inside allocate(): steady on a loaded machine
  for (auto _ : state) {
    for (const auto& o : offers) {
      al.recover(o.agent_id, o.framework_id, o.role, o.resources, now,
                 std::chrono::duration<double>(refuse_seconds));
    }
    now += std::chrono::seconds(1);
    timespec cpu0{}, cpu1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    auto start = std::chrono::steady_clock::now();
    offers = al.allocate(now);
    auto end = std::chrono::steady_clock::now();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
    state.SetIterationTime(std::chrono::duration<double>(end - start).count());
    cpu_s += static_cast<double>(cpu1.tv_sec - cpu0.tv_sec) +
             static_cast<double>(cpu1.tv_nsec - cpu0.tv_nsec) / 1e9;
    offered += offers.size();
  }
  state.counters["offers_per_cycle"] =
      benchmark::Counter(static_cast<double>(offered) / static_cast<double>(state.iterations()));
  state.counters["alloc_cpu_ms"] =
      benchmark::Counter(cpu_s * 1000 / static_cast<double>(state.iterations()));
  state.counters["agents"] = agents;
  state.counters["frameworks"] = frameworks;
}

// All frameworks in one role: the Mesos benchmark's shape.
void BM_DeclineCycle_OneRole(benchmark::State& state) { run_cycles(state, 1, 5.0); }
// Each framework in a role of its own (1,000 roles at 1,000 frameworks): DRF across roles.
void BM_DeclineCycle_RolePerFramework(benchmark::State& state) {
  run_cycles(state, static_cast<int>(state.range(1)), 5.0);
}
// Declines without a filter: every agent goes back to the lowest share at once.
void BM_DeclineCycle_NoFilter(benchmark::State& state) { run_cycles(state, 1, 0.0); }

void Sizes(benchmark::internal::Benchmark* b) {
  for (auto [agents, fws] : std::initializer_list<std::pair<int, int>>{
           {1000, 1000}, {5000, 1000}, {10000, 100}, {10000, 1000}, {10000, 5000}, {50000, 1000}}) {
    b->Args({agents, fws});
  }
  b->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
}

BENCHMARK(BM_DeclineCycle_OneRole)->Apply(Sizes);
BENCHMARK(BM_DeclineCycle_RolePerFramework)->Apply(Sizes);
BENCHMARK(BM_DeclineCycle_NoFilter)
    ->Args({10000, 1000})
    ->Args({50000, 1000})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
