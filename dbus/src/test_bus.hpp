#pragma once
// Test support: a private dbus-daemon (package dbus) on a unix socket in a temporary directory,
// configured like a system bus, and running commands (busctl, setpriv) without a shell.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace corral::dbus::testing {

struct CommandResult {
  int status = -1;     // exit status, or 128+signal
  std::string output;  // stdout and stderr together
};

// Runs argv (no shell) and returns its exit status and output.
inline CommandResult run_command(const std::vector<std::string>& argv) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  CommandResult r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// What every system bus allows (the essentials of /usr/share/dbus-1/system.conf).
inline const char* kSystemBusBasePolicy = R"(
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
)";

// Lets anyone own and call anything: tests of the daemons' own caller check.
inline const char* kPermissivePolicy = R"(
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
)";

class PrivateBus {
 public:
  // `policy`: <policy> elements and <include> lines of the bus configuration.
  explicit PrivateBus(const std::string& policy) {
    dir_ = std::filesystem::temp_directory_path() /
           ("corral-dbus-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    ::chmod(dir_.c_str(), 0755);  // callers run as nobody
    socket_ = (dir_ / "system_bus_socket").string();
    std::ofstream(dir_ / "bus.conf")
        << "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
           " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
           "<busconfig>\n  <type>system</type>\n  <listen>unix:path="
        << socket_ << "</listen>\n  <auth>EXTERNAL</auth>\n"
        << policy << "</busconfig>\n";
    pid_ = ::fork();
    if (pid_ == 0) {
      int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 0);
      ::dup2(null, 1);
      std::string conf = "--config-file=" + (dir_ / "bus.conf").string();
      ::execlp("dbus-daemon", "dbus-daemon", conf.c_str(), "--nofork", "--nopidfile", "--nosyslog",
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // The socket file appears at bind(), a moment before listen(): wait until a connect works.
    for (int i = 0; i < 400 && !accepting(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  bool accepting() const {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_.c_str());
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
  }
  ~PrivateBus() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
  }
  bool running() const { return accepting(); }
  std::string address() const { return "unix:path=" + socket_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::filesystem::path dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

// avahi-daemon (package avahi-daemon) on a PrivateBus, in its own network namespace where only
// lo exists (multicast stays inside it) and its own mount namespace (its pid file and socket go
// to a private /run). Runs as root without chroot or privilege drop.
class AvahiDaemon {
 public:
  explicit AvahiDaemon(const PrivateBus& bus) : bus_(bus) {
    conf_ = (bus.dir() / "avahi-daemon.conf").string();
    std::ofstream(conf_) << "[server]\nhost-name=corral-test\ndomain-name=local\n"
                            "use-ipv4=yes\nuse-ipv6=no\nallow-interfaces=lo\nenable-dbus=yes\n"
                            "ratelimit-interval-usec=1000000\nratelimit-burst=1000\n"
                            "[wide-area]\nenable-wide-area=no\n"
                            "[publish]\npublish-hinfo=no\npublish-workstation=no\n";
    log_ = (bus.dir() / "avahi-daemon.log").string();
    pid_ = ::fork();
    if (pid_ == 0) {
      int out = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      ::dup2(out, 1);
      ::dup2(out, 2);
      ::setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address().c_str(), 1);
      std::string script =
          "ip link set lo up && mount -t tmpfs tmpfs /run && exec avahi-daemon -f " + conf_ +
          " --no-drop-root --no-chroot --no-rlimits";
      ::execlp("unshare", "unshare", "-n", "-m", "--", "sh", "-c", script.c_str(),
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~AvahiDaemon() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Waits until avahi-daemon answers on the bus (Server.GetState == 2, running).
  bool wait_running() {
    for (int i = 0; i < 100; ++i) {
      auto r =
          run_command({"busctl", "--address=" + bus_.address(), "call", "org.freedesktop.Avahi",
                       "/", "org.freedesktop.Avahi.Server", "GetState"});
      if (r.status == 0 && r.output == "i 2\n") return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  std::string log() const {
    std::ifstream in(log_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  const PrivateBus& bus_;
  std::string conf_, log_;
  pid_t pid_ = -1;
};

}  // namespace corral::dbus::testing
