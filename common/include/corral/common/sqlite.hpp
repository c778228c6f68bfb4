#pragma once
// SQLite state store: the embedded default for Corral's durable state.
//
// Opened in WAL mode with synchronous=FULL, so a committed transaction survives a crash of the
// process (and of the machine). The schema is versioned with PRAGMA user_version; migrations
// are applied in order, each in its own transaction, when the database is opened. A database
// written by a newer Corral (a higher version than the migrations know) is refused rather than
// guessed at.
//
// Not thread-safe: one SqliteDb per thread, or external locking. Daemons keep it on their
// blocking-work pool, never on the event loop.

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "corral/common/result.hpp"

namespace corral {

struct Migration {
  int version;      // 1, 2, 3 ... in order, no gaps
  std::string sql;  // one or more statements
};

class SqliteStatement {
 public:
  SqliteStatement(SqliteStatement&&) noexcept = default;
  SqliteStatement& operator=(SqliteStatement&&) noexcept = default;

  SqliteStatement& bind(int index, int64_t value);
  SqliteStatement& bind(int index, std::string_view text);
  SqliteStatement& bind_blob(int index, std::string_view bytes);
  SqliteStatement& bind_null(int index);

  // Advances: true with a row available, false when done.
  Result<bool> step();
  // Runs to completion (for statements without result rows).
  Result<void> run();
  Result<void> reset();

  int64_t column_int(int col) const;
  std::string column_text(int col) const;
  std::string column_blob(int col) const;
  bool column_is_null(int col) const;

 private:
  friend class SqliteDb;
  struct Finalizer {
    void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
  };
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  sqlite3* db_;
  std::unique_ptr<sqlite3_stmt, Finalizer> stmt_;
};

class SqliteDb {
 public:
  struct Options {
    int busy_timeout_ms = 5000;
    bool read_only = false;
  };

  // Opens (creating if needed) and migrates to the highest version in `migrations`.
  static Result<SqliteDb> open(const std::filesystem::path& path,
                               const std::vector<Migration>& migrations, Options options);
  static Result<SqliteDb> open(const std::filesystem::path& path,
                               const std::vector<Migration>& migrations) {
    return open(path, migrations, Options{});
  }

  Result<void> exec(std::string_view sql);
  Result<SqliteStatement> prepare(std::string_view sql);

  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT; rolls back if body fails or commit fails.
  Result<void> transaction(const std::function<Result<void>()>& body);

  int schema_version();
  const std::filesystem::path& path() const { return path_; }
  sqlite3* handle() { return db_.get(); }

 private:
  struct Closer {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  SqliteDb(std::unique_ptr<sqlite3, Closer> db, std::filesystem::path path)
      : db_(std::move(db)), path_(std::move(path)) {}
  Error error(std::string_view what) const;
  Result<void> migrate(const std::vector<Migration>& migrations);

  std::unique_ptr<sqlite3, Closer> db_;
  std::filesystem::path path_;
};

// A small key/value state store over SqliteDb (namespaced keys, binary values). The master's
// registry and the frameworks' state use it; logic is tested against the same interface.
class StateStore {
 public:
  virtual ~StateStore() = default;
  virtual Result<void> put(std::string_view ns, std::string_view key, std::string_view value) = 0;
  virtual Result<std::optional<std::string>> get(std::string_view ns, std::string_view key) = 0;
  virtual Result<void> erase(std::string_view ns, std::string_view key) = 0;
  // All (key, value) pairs of a namespace, ordered by key.
  virtual Result<std::vector<std::pair<std::string, std::string>>> list(std::string_view ns) = 0;
  // Applies several writes atomically: all or none.
  virtual Result<void> atomically(const std::function<Result<void>(StateStore&)>& body) = 0;
};

class SqliteStateStore final : public StateStore {
 public:
  static Result<std::unique_ptr<SqliteStateStore>> open(const std::filesystem::path& path);
  Result<void> put(std::string_view ns, std::string_view key, std::string_view value) override;
  Result<std::optional<std::string>> get(std::string_view ns, std::string_view key) override;
  Result<void> erase(std::string_view ns, std::string_view key) override;
  Result<std::vector<std::pair<std::string, std::string>>> list(std::string_view ns) override;
  Result<void> atomically(const std::function<Result<void>(StateStore&)>& body) override;

  SqliteDb& db() { return db_; }

 private:
  explicit SqliteStateStore(SqliteDb db) : db_(std::move(db)) {}
  SqliteDb db_;
};

}  // namespace corral
