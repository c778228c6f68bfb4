#pragma once
// The agent's checkpoint: <work_dir>/agent.db (SQLite, WAL, synchronous=FULL). One row per task
// (a binary record, TaskRecord::to_record; older agents wrote JSON text), agent metadata, and the
// sandboxes waiting for garbage collection. Used from one thread at a time (the agent's checkpoint
// strand). A row that does not parse is reported by the agent and skipped, never fatal.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "corral/common/result.hpp"
#include "corral/common/sqlite.hpp"

namespace corral::agent {

struct CheckpointBatch {
  std::map<std::string, std::optional<std::string>>
      tasks;  // container id -> record (nullopt: erase)
  std::map<std::string, std::string> meta;
  std::map<std::string, std::optional<double>> gc;  // sandbox path -> finished at (nullopt: erase)
  bool empty() const { return tasks.empty() && meta.empty() && gc.empty(); }
  void merge(CheckpointBatch&& other) {
    for (auto& [k, v] : other.tasks) tasks[k] = std::move(v);
    for (auto& [k, v] : other.meta) meta[k] = std::move(v);
    for (auto& [k, v] : other.gc) gc[k] = v;
  }
};

struct CheckpointContents {
  std::map<std::string, std::string> meta;
  std::vector<std::pair<std::string, std::string>> tasks;
  std::vector<std::pair<std::string, double>> gc;
};

class CheckpointStore {
 public:
  static Result<CheckpointStore> open(const std::string& path);
  Result<CheckpointContents> load();
  // All of `batch` in one transaction (one fsync).
  Result<void> commit(const CheckpointBatch& batch);

 private:
  explicit CheckpointStore(SqliteDb db) : db_(std::move(db)) {}
  SqliteDb db_;
};

}  // namespace corral::agent
