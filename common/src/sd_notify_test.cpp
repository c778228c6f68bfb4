// sd_notify helpers against a real notify socket (an AF_UNIX datagram socket, as systemd's).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "corral/common/fd.hpp"
#include "corral/common/sd_notify.hpp"

namespace corral::notify {
namespace {

class NotifySocket {
 public:
  NotifySocket() {
    dir_ = std::filesystem::temp_directory_path() /
           ("corral-notify-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "notify").string();
    std::filesystem::remove(path_);
    fd_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifySocket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("WATCHDOG_PID");
    std::filesystem::remove_all(dir_);
  }
  std::vector<std::string> drain() {
    std::vector<std::string> out;
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n <= 0) break;
      out.emplace_back(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  std::filesystem::path dir_;
  std::string path_;
  UniqueFd fd_;
};

TEST(SdNotify, NothingIsSentWithoutNotifySocket) {
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_FALSE(enabled());
  ready("serving");  // must not crash or block
  boost::asio::io_context io;
  Heartbeat hb(io, [] { return std::string("x"); });
  EXPECT_EQ(hb.period().count(), 0);
}

TEST(SdNotify, ReadyStatusStoppingAndExtendReachTheSocket) {
  NotifySocket sock;
  ASSERT_TRUE(enabled());
  status("recovering 37 tasks");
  extend_timeout(std::chrono::seconds(30));
  ready("registered with master m1, 12 tasks\nsecond line is dropped");
  stopping("stopping");
  auto got = sock.drain();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0], "STATUS=recovering 37 tasks");
  EXPECT_EQ(got[1], "EXTEND_TIMEOUT_USEC=30000000");
  EXPECT_EQ(got[2], "READY=1\nSTATUS=registered with master m1, 12 tasks");
  EXPECT_EQ(got[3], "STOPPING=1\nSTATUS=stopping");
}

TEST(SdNotify, WatchdogPingsFromTheLoopAtHalfTheInterval) {
  NotifySocket sock;
  ::setenv("WATCHDOG_USEC", "200000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  EXPECT_EQ(watchdog_interval(), std::chrono::microseconds(200000));
  boost::asio::io_context io;
  int calls = 0;
  Heartbeat hb(io, [&] { return "tasks: " + std::to_string(++calls > 1 ? 2 : 1); });
  EXPECT_EQ(hb.period(), std::chrono::microseconds(100000));
  io.run_for(std::chrono::milliseconds(550));
  auto got = sock.drain();
  int pings = 0;
  std::vector<std::string> statuses;
  for (const auto& m : got) {
    if (m == "WATCHDOG=1") ++pings;
    if (m.rfind("STATUS=", 0) == 0) statuses.push_back(m);
  }
  EXPECT_GE(pings, 3);  // 5 on an idle machine; timers lag under load
  EXPECT_LE(pings, 6);
  // The status is sent when it changes, not on every tick.
  EXPECT_EQ(statuses, (std::vector<std::string>{"STATUS=tasks: 1", "STATUS=tasks: 2"}));

  // A loop that does not run does not ping: systemd sees the hang.
  io.restart();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(sock.drain().empty());
}

TEST(SdNotify, WatchdogForAnotherPidIsNotOurs) {
  NotifySocket sock;
  ::setenv("WATCHDOG_USEC", "200000", 1);
  ::setenv("WATCHDOG_PID", "1", 1);
  EXPECT_EQ(watchdog_interval().count(), 0);
}

}  // namespace
}  // namespace corral::notify
