#include "corral/common/sqlite.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "corral/common/fd.hpp"

namespace corral {
namespace {

const std::vector<Migration> kV1 = {{1, "CREATE TABLE tasks (id TEXT PRIMARY KEY, state TEXT)"}};
const std::vector<Migration> kV2 = {
    {1, "CREATE TABLE tasks (id TEXT PRIMARY KEY, state TEXT)"},
    {2, "ALTER TABLE tasks ADD COLUMN agent TEXT DEFAULT 'unknown'"}};

TEST(Sqlite, OpensInWalModeAndAppliesMigrationsInOrder) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto path = dir->path() / "state.db";
  {
    auto db = SqliteDb::open(path, kV1);
    ASSERT_TRUE(db.ok()) << db.error().message();
    EXPECT_EQ(db->schema_version(), 1);
    auto mode = db->prepare("PRAGMA journal_mode");
    ASSERT_TRUE(mode.ok());
    ASSERT_TRUE(*mode->step());
    EXPECT_EQ(mode->column_text(0), "wal");
    ASSERT_TRUE(db->exec("INSERT INTO tasks (id, state) VALUES ('t1', 'RUNNING')").ok());
  }
  auto db = SqliteDb::open(path, kV2);
  ASSERT_TRUE(db.ok()) << db.error().message();
  EXPECT_EQ(db->schema_version(), 2);
  auto st = db->prepare("SELECT id, agent FROM tasks");
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(*st->step());
  EXPECT_EQ(st->column_text(0), "t1");  // data kept across the migration
  EXPECT_EQ(st->column_text(1), "unknown");
}

TEST(Sqlite, RefusesDatabaseFromNewerVersion) {
  auto dir = TempDir::create();
  auto path = dir->path() / "state.db";
  ASSERT_TRUE(SqliteDb::open(path, kV2).ok());
  auto old = SqliteDb::open(path, kV1);
  ASSERT_FALSE(old.ok());
  EXPECT_NE(old.error().message().find("schema version 2, newer than this Corral understands (1)"),
            std::string::npos)
      << old.error().message();
}

TEST(Sqlite, FailedMigrationLeavesVersionUnchanged) {
  auto dir = TempDir::create();
  auto path = dir->path() / "state.db";
  ASSERT_TRUE(SqliteDb::open(path, kV1).ok());
  std::vector<Migration> broken = {kV1[0], {2, "ALTER TABLE no_such_table ADD COLUMN x"}};
  auto r = SqliteDb::open(path, broken);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("migrating to schema version 2"), std::string::npos);
  auto db = SqliteDb::open(path, kV1);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ(db->schema_version(), 1);
}

TEST(Sqlite, GarbageFileIsReportedNotCrashed) {
  auto dir = TempDir::create();
  auto path = dir->path() / "state.db";
  std::ofstream(path) << std::string(8192, 'x');
  auto db = SqliteDb::open(path, kV1);
  ASSERT_FALSE(db.ok());
  EXPECT_NE(db.error().message().find(path.string()), std::string::npos) << db.error().message();
}

TEST(Sqlite, TransactionRollsBackWhenBodyFails) {
  auto dir = TempDir::create();
  auto store = SqliteStateStore::open(dir->path() / "kv.db");
  ASSERT_TRUE(store.ok()) << store.error().message();
  StateStore& s = **store;
  ASSERT_TRUE(s.put("agents", "a1", "one").ok());
  auto r = s.atomically([](StateStore& tx) -> Result<void> {
    CORRAL_TRY(tx.put("agents", "a2", "two"));
    CORRAL_TRY(tx.erase("agents", "a1"));
    return Error(EINVAL, "validation failed");
  });
  ASSERT_FALSE(r.ok());
  auto all = s.list("agents");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].first, "a1");
  EXPECT_EQ((*all)[0].second, "one");
  auto missing = s.get("agents", "a2");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST(Sqlite, BinaryValuesRoundTrip) {
  auto dir = TempDir::create();
  auto store = SqliteStateStore::open(dir->path() / "kv.db");
  ASSERT_TRUE(store.ok());
  std::string blob("a\0b\xff", 4);
  ASSERT_TRUE((*store)->put("ns", "k", blob).ok());
  auto v = (*store)->get("ns", "k");
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(v->has_value());
  EXPECT_EQ(**v, blob);
}

// A writer process commits transactions one by one, reporting each commit through a pipe, then
// starts a transaction it never finishes. It is killed with SIGKILL in the middle of that
// transaction. Everything it reported as committed must be there after reopening; nothing of the
// interrupted transaction may be.
TEST(Sqlite, WriterKilledMidTransactionLosesNothingCommitted) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  const auto path = dir->path() / "state.db";
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    auto store = SqliteStateStore::open(path);
    if (!store.ok()) _exit(2);
    auto& db = (*store)->db();
    for (int i = 0; i < 200; ++i) {
      auto r = (*store)->atomically([&](StateStore& tx) -> Result<void> {
        CORRAL_TRY(tx.put("tasks", "committed-" + std::to_string(1000 + i), std::string(512, 'c')));
        return tx.put("meta", "last", std::to_string(i));
      });
      if (!r.ok()) _exit(3);
      char b = 'c';
      if (write(fds[1], &b, 1) != 1) _exit(4);
    }
    if (!db.exec("BEGIN IMMEDIATE").ok()) _exit(5);
    for (int i = 0; i < 5000; ++i) {
      if (!(*store)->put("tasks", "uncommitted-" + std::to_string(i), std::string(512, 'u')).ok())
        _exit(6);
      if (i == 2500) {
        char b = 'm';  // mid-transaction: tell the parent to kill us now
        if (write(fds[1], &b, 1) != 1) _exit(4);
        pause();
      }
    }
    _exit(7);
  }
  close(fds[1]);
  int committed = 0;
  char b;
  bool mid = false;
  while (read(fds[0], &b, 1) == 1) {
    if (b == 'c') ++committed;
    if (b == 'm') {
      mid = true;
      break;
    }
  }
  close(fds[0]);
  ASSERT_TRUE(mid) << "writer did not reach the middle of its transaction";
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  auto store = SqliteStateStore::open(path);
  ASSERT_TRUE(store.ok()) << store.error().message();
  auto check = (*store)->db().prepare("PRAGMA integrity_check");
  ASSERT_TRUE(check.ok());
  ASSERT_TRUE(*check->step());
  EXPECT_EQ(check->column_text(0), "ok");
  auto tasks = (*store)->list("tasks");
  ASSERT_TRUE(tasks.ok());
  EXPECT_EQ(static_cast<int>(tasks->size()), committed);
  EXPECT_EQ(committed, 200);
  for (const auto& [k, v] : *tasks) EXPECT_EQ(k.rfind("committed-", 0), 0u) << k;
  auto last = (*store)->get("meta", "last");
  ASSERT_TRUE(last.ok() && last->has_value());
  EXPECT_EQ(**last, std::to_string(committed - 1));
  // and the store is writable again
  EXPECT_TRUE((*store)->put("tasks", "after-restart", "x").ok());
}

}  // namespace
}  // namespace corral
