#include "corral/common/fd.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

namespace corral {
namespace {

TEST(UniqueFd, ClosesOnDestructionAndMove) {
  int raw;
  {
    UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    raw = fd.get();
    UniqueFd moved(std::move(fd));
    EXPECT_FALSE(fd.valid());
    EXPECT_EQ(moved.get(), raw);
    EXPECT_NE(fcntl(raw, F_GETFD), -1);
  }
  EXPECT_EQ(fcntl(raw, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(TempDir, IsRemovedWithItsContents) {
  std::filesystem::path p;
  {
    auto dir = TempDir::create("corral-test-");
    ASSERT_TRUE(dir.ok()) << dir.error().message();
    p = dir->path();
    std::filesystem::create_directories(p / "a" / "b");
    ASSERT_TRUE(write_file_atomic(p / "a" / "b" / "f", "x").ok());
    EXPECT_TRUE(std::filesystem::exists(p / "a" / "b" / "f"));
  }
  EXPECT_FALSE(std::filesystem::exists(p));
}

TEST(Files, AtomicWriteReplacesContentAndLeavesNoTempFiles) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  auto f = dir->path() / "checkpoint.json";
  ASSERT_TRUE(write_file_atomic(f, "old").ok());
  ASSERT_TRUE(write_file_atomic(f, "new content").ok());
  EXPECT_EQ(*read_file(f), "new content");
  int entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir->path())) ++entries;
  EXPECT_EQ(entries, 1);
}

TEST(Files, ReadRefusesOversizedFile) {
  auto dir = TempDir::create();
  auto f = dir->path() / "big";
  ASSERT_TRUE(write_file_atomic(f, std::string(2000, 'x')).ok());
  auto r = read_file(f, 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), EFBIG);
  EXPECT_NE(r.error().message().find("1000-byte limit"), std::string::npos);
}

TEST(Pidfd, SignalsAndSeesExitOfTheRightProcess) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  auto pidfd = Pidfd::open(child);
  ASSERT_TRUE(pidfd.ok()) << pidfd.error().message();
  auto early = pidfd->wait_exit(std::chrono::milliseconds(0));
  ASSERT_TRUE(early.ok());
  EXPECT_FALSE(*early);
  ASSERT_TRUE(pidfd->send_signal(SIGTERM).ok());
  auto exited = pidfd->wait_exit(std::chrono::milliseconds(10000));
  ASSERT_TRUE(exited.ok());
  EXPECT_TRUE(*exited);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

TEST(Pidfd, OpenOfMissingProcessIsAnError) {
  auto r = Pidfd::open(0x3fffffff);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ESRCH);
}

}  // namespace
}  // namespace corral
