#include "corral/common/sqlite.hpp"

#include <algorithm>

namespace corral {

// ---------------------------------------------------------------- statement

SqliteStatement& SqliteStatement::bind(int index, int64_t value) {
  sqlite3_bind_int64(stmt_.get(), index, value);
  return *this;
}
SqliteStatement& SqliteStatement::bind(int index, std::string_view text) {
  sqlite3_bind_text(stmt_.get(), index, text.data(), static_cast<int>(text.size()),
                    SQLITE_TRANSIENT);
  return *this;
}
SqliteStatement& SqliteStatement::bind_blob(int index, std::string_view bytes) {
  sqlite3_bind_blob(stmt_.get(), index, bytes.data(), static_cast<int>(bytes.size()),
                    SQLITE_TRANSIENT);
  return *this;
}
SqliteStatement& SqliteStatement::bind_null(int index) {
  sqlite3_bind_null(stmt_.get(), index);
  return *this;
}

Result<bool> SqliteStatement::step() {
  int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error(EIO, std::string("sqlite: ") + sqlite3_errmsg(db_) +
                        " (in: " + sqlite3_sql(stmt_.get()) + ")");
}

Result<void> SqliteStatement::run() {
  for (;;) {
    CORRAL_ASSIGN_OR_RETURN(bool row, step());
    if (!row) return {};
  }
}

Result<void> SqliteStatement::reset() {
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
  return {};
}

int64_t SqliteStatement::column_int(int col) const {
  return sqlite3_column_int64(stmt_.get(), col);
}
std::string SqliteStatement::column_text(int col) const {
  const auto* p = sqlite3_column_text(stmt_.get(), col);
  int n = sqlite3_column_bytes(stmt_.get(), col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}
std::string SqliteStatement::column_blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_.get(), col);
  int n = sqlite3_column_bytes(stmt_.get(), col);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}
bool SqliteStatement::column_is_null(int col) const {
  return sqlite3_column_type(stmt_.get(), col) == SQLITE_NULL;
}

// ---------------------------------------------------------------- database

Error SqliteDb::error(std::string_view what) const {
  return Error(EIO, std::string(what) + ": " + sqlite3_errmsg(db_.get()) + " (database " +
                        path_.string() + ")");
}

Result<SqliteDb> SqliteDb::open(const std::filesystem::path& path,
                                const std::vector<Migration>& migrations, Options options) {
  sqlite3* raw = nullptr;
  int flags =
      SQLITE_OPEN_FULLMUTEX |
      (options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  std::unique_ptr<sqlite3, Closer> db(raw);
  if (rc != SQLITE_OK) {
    return Error(EIO, "cannot open state database " + path.string() + ": " +
                          (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)) +
                          " (check that the directory exists and is writable)");
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  SqliteDb self(std::move(db), path);
  if (!options.read_only) {
    CORRAL_TRY(self.exec("PRAGMA journal_mode=WAL"));
    CORRAL_TRY(self.exec("PRAGMA synchronous=FULL"));
  }
  CORRAL_TRY(self.exec("PRAGMA foreign_keys=ON"));
  // Detect a file that is not a database before migrating (the first real read fails).
  auto v = self.prepare("PRAGMA user_version");
  if (!v) return std::move(v).error();
  auto row = v->step();
  if (!row) {
    return Error(EIO, path.string() + " is not a usable SQLite database: " + row.error().message() +
                          " (move the file away to start with empty state, or restore a backup)");
  }
  CORRAL_TRY(self.migrate(migrations));
  return self;
}

Result<void> SqliteDb::exec(std::string_view sql) {
  char* msg = nullptr;
  std::string text(sql);
  int rc = sqlite3_exec(db_.get(), text.c_str(), nullptr, nullptr, &msg);
  if (rc != SQLITE_OK) {
    std::string m = msg ? msg : sqlite3_errstr(rc);
    sqlite3_free(msg);
    return Error(EIO, "sqlite: " + m + " (database " + path_.string() + ")");
  }
  return {};
}

Result<SqliteStatement> SqliteDb::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_.get(), sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return error("preparing \"" + std::string(sql) + "\"");
  return SqliteStatement(db_.get(), stmt);
}

Result<void> SqliteDb::transaction(const std::function<Result<void>()>& body) {
  CORRAL_TRY(exec("BEGIN IMMEDIATE"));
  Result<void> r = body();
  if (r.ok()) {
    r = exec("COMMIT");
    if (r.ok()) return {};
  }
  (void)exec("ROLLBACK");
  return r;
}

int SqliteDb::schema_version() {
  auto st = prepare("PRAGMA user_version");
  if (!st || !st->step().value_or(false)) return -1;
  return static_cast<int>(st->column_int(0));
}

Result<void> SqliteDb::migrate(const std::vector<Migration>& migrations) {
  int current = schema_version();
  int latest = 0;
  for (size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version != static_cast<int>(i) + 1) {
      return Error(EINVAL, "internal: migrations must be numbered 1, 2, 3... without gaps");
    }
    latest = migrations[i].version;
  }
  if (current > latest) {
    return Error(EPROTO, "state database " + path_.string() + " has schema version " +
                             std::to_string(current) + ", newer than this Corral understands (" +
                             std::to_string(latest) +
                             "); upgrade Corral or restore the database from before the upgrade");
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    CORRAL_TRY(transaction([&]() -> Result<void> {
      auto r = exec(m.sql);
      if (!r.ok())
        return r.error().context("migrating to schema version " + std::to_string(m.version));
      return exec("PRAGMA user_version=" + std::to_string(m.version));
    }));
  }
  return {};
}

// ---------------------------------------------------------------- key/value state store

Result<std::unique_ptr<SqliteStateStore>> SqliteStateStore::open(
    const std::filesystem::path& path) {
  static const std::vector<Migration> kMigrations = {
      {1,
       "CREATE TABLE kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
       " PRIMARY KEY (ns, key)) WITHOUT ROWID"},
  };
  CORRAL_ASSIGN_OR_RETURN(SqliteDb db, SqliteDb::open(path, kMigrations));
  return std::unique_ptr<SqliteStateStore>(new SqliteStateStore(std::move(db)));
}

Result<void> SqliteStateStore::put(std::string_view ns, std::string_view key,
                                   std::string_view value) {
  CORRAL_ASSIGN_OR_RETURN(auto st, db_.prepare("INSERT INTO kv (ns, key, value) VALUES (?1, ?2, ?3)"
                                               " ON CONFLICT (ns, key) DO UPDATE SET value = ?3"));
  return st.bind(1, ns).bind(2, key).bind_blob(3, value).run();
}

Result<std::optional<std::string>> SqliteStateStore::get(std::string_view ns,
                                                         std::string_view key) {
  CORRAL_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT value FROM kv WHERE ns = ?1 AND key = ?2"));
  st.bind(1, ns).bind(2, key);
  CORRAL_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(st.column_blob(0));
}

Result<void> SqliteStateStore::erase(std::string_view ns, std::string_view key) {
  CORRAL_ASSIGN_OR_RETURN(auto st, db_.prepare("DELETE FROM kv WHERE ns = ?1 AND key = ?2"));
  return st.bind(1, ns).bind(2, key).run();
}

Result<std::vector<std::pair<std::string, std::string>>> SqliteStateStore::list(
    std::string_view ns) {
  CORRAL_ASSIGN_OR_RETURN(auto st,
                          db_.prepare("SELECT key, value FROM kv WHERE ns = ?1 ORDER BY key"));
  st.bind(1, ns);
  std::vector<std::pair<std::string, std::string>> out;
  for (;;) {
    CORRAL_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    out.emplace_back(st.column_text(0), st.column_blob(1));
  }
  return out;
}

Result<void> SqliteStateStore::atomically(const std::function<Result<void>(StateStore&)>& body) {
  return db_.transaction([&] { return body(*this); });
}

}  // namespace corral
