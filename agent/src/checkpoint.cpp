#include "checkpoint.hpp"

namespace corral::agent {

namespace {
const std::vector<Migration>& migrations() {
  static const std::vector<Migration> m = {
      {1,
       "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
       "CREATE TABLE tasks (container_id TEXT PRIMARY KEY, record TEXT NOT NULL);"
       "CREATE TABLE gc (path TEXT PRIMARY KEY, finished REAL NOT NULL);"},
  };
  return m;
}
}  // namespace

Result<CheckpointStore> CheckpointStore::open(const std::string& path) {
  CORRAL_ASSIGN_OR_RETURN(SqliteDb db, SqliteDb::open(path, migrations()));
  return CheckpointStore(std::move(db));
}

Result<CheckpointContents> CheckpointStore::load() {
  CheckpointContents out;
  {
    CORRAL_ASSIGN_OR_RETURN(SqliteStatement s, db_.prepare("SELECT key, value FROM meta"));
    for (;;) {
      CORRAL_ASSIGN_OR_RETURN(bool row, s.step());
      if (!row) break;
      out.meta[s.column_text(0)] = s.column_text(1);
    }
  }
  {
    CORRAL_ASSIGN_OR_RETURN(SqliteStatement s,
                            db_.prepare("SELECT container_id, record FROM tasks"));
    for (;;) {
      CORRAL_ASSIGN_OR_RETURN(bool row, s.step());
      if (!row) break;
      out.tasks.emplace_back(s.column_text(0), s.column_blob(1));
    }
  }
  {
    CORRAL_ASSIGN_OR_RETURN(SqliteStatement s, db_.prepare("SELECT path, finished FROM gc"));
    for (;;) {
      CORRAL_ASSIGN_OR_RETURN(bool row, s.step());
      if (!row) break;
      out.gc.emplace_back(s.column_text(0), std::stod(s.column_text(1)));
    }
  }
  return out;
}

Result<void> CheckpointStore::commit(const CheckpointBatch& batch) {
  if (batch.empty()) return {};
  return db_.transaction([&]() -> Result<void> {
    if (!batch.tasks.empty()) {
      CORRAL_ASSIGN_OR_RETURN(
          SqliteStatement put,
          db_.prepare("INSERT OR REPLACE INTO tasks (container_id, record) VALUES (?, ?)"));
      CORRAL_ASSIGN_OR_RETURN(SqliteStatement del,
                              db_.prepare("DELETE FROM tasks WHERE container_id = ?"));
      for (const auto& [id, record] : batch.tasks) {
        if (record) {
          CORRAL_TRY(put.reset());
          put.bind(1, id).bind_blob(2, *record);
          CORRAL_TRY(put.run());
        } else {
          CORRAL_TRY(del.reset());
          del.bind(1, id);
          CORRAL_TRY(del.run());
        }
      }
    }
    if (!batch.meta.empty()) {
      CORRAL_ASSIGN_OR_RETURN(
          SqliteStatement put,
          db_.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"));
      for (const auto& [k, v] : batch.meta) {
        CORRAL_TRY(put.reset());
        put.bind(1, k).bind(2, v);
        CORRAL_TRY(put.run());
      }
    }
    if (!batch.gc.empty()) {
      CORRAL_ASSIGN_OR_RETURN(
          SqliteStatement put,
          db_.prepare("INSERT OR REPLACE INTO gc (path, finished) VALUES (?, ?)"));
      CORRAL_ASSIGN_OR_RETURN(SqliteStatement del, db_.prepare("DELETE FROM gc WHERE path = ?"));
      for (const auto& [path, finished] : batch.gc) {
        if (finished) {
          CORRAL_TRY(put.reset());
          put.bind(1, path).bind(2, std::to_string(*finished));
          CORRAL_TRY(put.run());
        } else {
          CORRAL_TRY(del.reset());
          del.bind(1, path);
          CORRAL_TRY(del.run());
        }
      }
    }
    return {};
  });
}

}  // namespace corral::agent
