// Foundation micro-benchmarks: RecordIO framing (the scheduler event stream), SQLite commits
// (every durable state change), metrics rendering (/metrics) and config parsing.
// Run: build/release/bench/corral_common_bench ; figures go to docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include "corral/common/config.hpp"
#include "corral/common/fd.hpp"
#include "corral/common/metrics.hpp"
#include "corral/common/recordio.hpp"
#include "corral/common/sqlite.hpp"

namespace {

void BM_RecordIoDecode(benchmark::State& state) {
  const std::string event(static_cast<size_t>(state.range(0)), 'e');
  std::string stream;
  for (int i = 0; i < 100; ++i) stream += corral::recordio_encode(event);
  for (auto _ : state) {
    corral::RecordIoDecoder decoder;
    // feed in 4 KiB pieces, as a socket would deliver them
    size_t records = 0;
    for (size_t off = 0; off < stream.size(); off += 4096) {
      auto out = decoder.feed(std::string_view(stream).substr(off, 4096));
      records += out->size();
    }
    benchmark::DoNotOptimize(records);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * stream.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 100));
}
BENCHMARK(BM_RecordIoDecode)->Arg(256)->Arg(4096)->Arg(65536);

void BM_SqliteCommit(benchmark::State& state) {
  auto dir = corral::TempDir::create("corral-bench-", "/var/tmp");
  auto store = corral::SqliteStateStore::open(dir->path() / "bench.db");
  const std::string value(static_cast<size_t>(state.range(0)), 'v');
  int64_t i = 0;
  for (auto _ : state) {
    auto r = (*store)->put("tasks", "task-" + std::to_string(i++ % 1000), value);
    benchmark::DoNotOptimize(r.ok());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SqliteCommit)->Arg(512)->UseRealTime();

void BM_MetricsRender(benchmark::State& state) {
  corral::MetricsRegistry reg;
  for (int i = 0; i < state.range(0); ++i) {
    reg.counter("corral_tasks_total", "tasks", {{"agent", "agent-" + std::to_string(i)}}).inc(i);
  }
  for (auto _ : state) benchmark::DoNotOptimize(reg.render());
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_MetricsRender)->Arg(1000);

void BM_ConfigParse(benchmark::State& state) {
  std::string text = "listen = \"127.0.0.1:5050\"\nwork_dir = \"/var/lib/corral\"\n[http]\n";
  for (int i = 0; i < 50; ++i)
    text += "k" + std::to_string(i) + " = \"" + std::to_string(i) + "s\"\n";
  for (auto _ : state) {
    auto file = corral::ConfigFile::parse(text, "bench.toml");
    auto root = file->root();
    std::string listen;
    root.get("listen", &listen);
    auto http = root.table("http");
    for (int i = 0; i < 50; ++i) {
      std::chrono::milliseconds d{};
      http.get_duration("k" + std::to_string(i), &d);
    }
    benchmark::DoNotOptimize(file->finish().ok());
  }
}
BENCHMARK(BM_ConfigParse);

}  // namespace

BENCHMARK_MAIN();
