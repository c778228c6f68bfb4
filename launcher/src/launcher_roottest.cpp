// Host tests of corral-launcher (label root): they run the real binary as root and look at the
// task from inside (corral-test-escape, a static probe copied into the sandbox) and from the host.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "corral/common/fd.hpp"
#include "corral/launcher/exit_status.hpp"

namespace corral::launcher {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr auto kTimeout = std::chrono::seconds(60);

std::map<std::string, std::string> parse_lines(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto space = line.find(' ');
    if (space == std::string::npos) continue;
    out[line.substr(0, space)] = line.substr(space + 1);
  }
  return out;
}

std::string slurp(const fs::path& path) {
  auto text = read_file(path);
  return text ? *text : std::string();
}

std::string host_ns(const char* name) {
  return fs::read_symlink(std::string("/proc/self/ns/") + name).string();
}

struct Launch {
  pid_t pid = -1;
  UniqueFd pidfd;
};

class LauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "the launcher root tests need root (namespaces, mounts, "
                                  "seccomp): run them with sudo or `ctest -L root` as root";
    auto dir = TempDir::create("corral-launcher-test-");
    ASSERT_TRUE(dir.ok()) << dir.error().to_string();
    dir_ = std::make_unique<TempDir>(std::move(dir).value());
    // Readable by the subuid range of the user-namespace test.
    fs::permissions(dir_->path(), fs::perms(0755));
    sandbox_ = dir_->path() / "sandbox";
    fs::create_directory(sandbox_);
    fs::copy_file(CORRAL_TEST_ESCAPE_PATH, sandbox_ / "probe");
    exit_file_ = dir_->path() / "exit.json";
  }

  json spec(std::vector<std::string> argv) const {
    return {{"argv", argv},
            {"env", {"PATH=/usr/bin:/bin", "HOME=/root"}},
            {"hostname", "task-1"},
            {"sandbox_dir", sandbox_.string()},
            {"exit_status_path", exit_file_.string()},
            {"kill_grace_ms", 5000}};
  }

  json probe(std::vector<std::string> args) const {
    args.insert(args.begin(), "/mnt/sandbox/probe");
    return spec(args);
  }

  Launch start(const json& s, bool capture_stderr = false) {
    const fs::path spec_file = dir_->path() / "spec.json";
    std::ofstream(spec_file) << s.dump();
    const fs::path err = dir_->path() / "launcher.stderr";
    pid_t pid = ::fork();
    if (pid == 0) {
      if (capture_stderr) {
        int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 2);
      }
      ::execl(CORRAL_LAUNCHER_PATH, "corral-launcher", "--spec", spec_file.c_str(), nullptr);
      ::_exit(99);
    }
    Launch l;
    l.pid = pid;
    l.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    return l;
  }

  // Waits for the launcher to exit (pidfd) and returns its exit code (128+sig if killed).
  int wait(Launch& l) {
    pollfd p{l.pidfd.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kTimeout).count()));
    if (n != 1) {
      ::kill(l.pid, SIGKILL);
      ADD_FAILURE() << "corral-launcher did not exit within " << kTimeout.count() << " s";
    }
    int status = 0;
    ::waitpid(l.pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  int run(const json& s, bool capture_stderr = false) {
    Launch l = start(s, capture_stderr);
    return wait(l);
  }

  ExitStatus exit_status() {
    auto s = read_exit_status(exit_file_);
    EXIT_FAILURE_IF(s);
    return s.ok() ? *s : ExitStatus{};
  }
  void EXIT_FAILURE_IF(const Result<ExitStatus>& s) {
    if (!s) ADD_FAILURE() << "exit status file: " << s.error().to_string();
  }

  std::string out() const { return slurp(sandbox_ / "stdout"); }
  std::string err() const { return slurp(sandbox_ / "stderr"); }

  // A FIFO in the sandbox through which a probe says "ready" and reports signals.
  UniqueFd make_fifo() {
    const fs::path fifo = sandbox_ / "fifo";
    EXPECT_EQ(::mkfifo(fifo.c_str(), 0666), 0);
    return UniqueFd(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  }

  // Reads one line from the FIFO, waiting up to the test timeout.
  std::string read_line(int fd) {
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      char c;
      ssize_t n = ::read(fd, &c, 1);
      if (n == 1) {
        if (c == '\n') return line;
        line += c;
      } else if (n == 0) {
        pollfd wait_writer{fd, POLLIN, 0};
        ::poll(&wait_writer, 1, 10);  // no writer yet: POLLHUP until the probe opens it
      }
    }
    ADD_FAILURE() << "no line from the probe within the timeout";
    return line;
  }

  std::unique_ptr<TempDir> dir_;
  fs::path sandbox_;
  fs::path exit_file_;
};

TEST_F(LauncherTest, EveryNamespaceIsNewAndTheTaskRunsUnderOurInit) {
  ASSERT_EQ(run(probe({"info"})), 0) << err();
  auto info = parse_lines(out());
  for (const char* ns : {"pid", "mnt", "uts", "ipc", "net", "cgroup"}) {
    ASSERT_TRUE(info.count(std::string("ns_") + ns)) << out();
    EXPECT_NE(info["ns_" + std::string(ns)], host_ns(ns)) << ns << " namespace is the host's";
  }
  EXPECT_EQ(info["ns_user"], host_ns("user"));  // no user namespace asked for
  EXPECT_EQ(info["pid"], "2");
  EXPECT_EQ(info["ppid"], "1");
  EXPECT_EQ(info["init_comm"], "corral-init");
  EXPECT_EQ(info["hostname"], "task-1");
  EXPECT_EQ(info["cwd"], "/mnt/sandbox");
  EXPECT_EQ(info["root_writable"], "no");
  EXPECT_EQ(info["NoNewPrivs"], "1");
  EXPECT_EQ(info["Seccomp"], "2");
  EXPECT_EQ(info["cgroup"], "/");
  // Docker's default set: chown dac_override fowner fsetid kill setgid setuid setpcap
  // net_bind_service net_raw sys_chroot mknod audit_write setfcap.
  EXPECT_EQ(info["CapEff"], "00000000a80425fb");
  EXPECT_EQ(info["CapBnd"], "00000000a80425fb");
  ExitStatus s = exit_status();
  EXPECT_EQ(s.state, ExitStatus::State::exited);
  EXPECT_EQ(s.code, 0);
}

TEST_F(LauncherTest, UserNamespaceMapsRootToTheSubuidRange) {
  fs::permissions(sandbox_, fs::perms(0777));
  json s = probe({"info"});
  s["namespaces"] = {{"user", {{"host_uid", 200000}, {"host_gid", 200000}, {"count", 65536}}}};
  ASSERT_EQ(run(s), 0) << err() << slurp(exit_file_);
  auto info = parse_lines(out());
  EXPECT_NE(info["ns_user"], host_ns("user"));
  EXPECT_EQ(info["uid"], "0");
  struct stat st {};
  ASSERT_EQ(::stat((sandbox_ / "created-by-task").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 200000u) << "root in the task must be the subuid on the host";
  EXPECT_EQ(st.st_gid, 200000u);
}

TEST_F(LauncherTest, CapabilitiesAreWhatTheSpecKeeps) {
  json s = probe({"info"});
  s["capabilities"] = {"CAP_NET_BIND_SERVICE", "CAP_KILL"};
  ASSERT_EQ(run(s), 0) << err();
  auto info = parse_lines(out());
  EXPECT_EQ(info["CapEff"], "0000000000000420");
  EXPECT_EQ(info["CapBnd"], "0000000000000420");
}

TEST_F(LauncherTest, NonRootUserGetsNoCapabilitiesAndItsGroups) {
  fs::permissions(sandbox_, fs::perms(0777));
  json s = probe({"info"});
  s["uid"] = 1000;
  s["gid"] = 1000;
  s["supplementary_gids"] = {27, 1000};
  ASSERT_EQ(run(s), 0) << err();
  auto info = parse_lines(out());
  EXPECT_EQ(info["uid"], "1000");
  EXPECT_EQ(info["gid"], "1000");
  EXPECT_EQ(info["groups"], "27 1000");
  EXPECT_EQ(info["CapEff"], "0000000000000000");
  EXPECT_EQ(info["CapPrm"], "0000000000000000");
}

TEST_F(LauncherTest, EscapeAttemptsFailWithEpermAndTheHostIsUnaffected) {
  ASSERT_EQ(run(probe({"escape"})), 0) << err();
  auto r = parse_lines(out());
  for (const char* attempt :
       {"mount",         "umount",      "unshare_user",    "unshare_mount",
        "clone_newuser", "setns",       "keyctl",          "add_key",
        "bpf",           "ptrace_init", "ptrace_traceme",  "open_by_handle_at",
        "finit_module",  "init_module", "delete_module",   "kexec_load",
        "reboot",        "swapoff",     "perf_event_open", "userfaultfd",
        "clock_settime", "pivot_root"}) {
    EXPECT_EQ(r[attempt], "EPERM") << attempt << " was not refused with EPERM\n" << out();
  }
  EXPECT_EQ(r["open_mknod_device"], "EACCES") << "a device node made in /tmp must not open";
  EXPECT_EQ(r["core_pattern_open"], "EROFS") << "/proc/sys must be read-only";
  if (fs::exists("/proc/sysrq-trigger")) {
    EXPECT_EQ(r["sysrq_open"], "EROFS");
  } else {
    EXPECT_EQ(r["sysrq_open"], "ENOENT");  // this kernel has no magic sysrq
  }
  // Nothing the sandbox mounted is visible on the host.
  EXPECT_THAT(slurp("/proc/self/mountinfo"), Not(HasSubstr(dir_->path().string())));
}

TEST_F(LauncherTest, CustomOciSeccompProfileIsEnforced) {
  json s = spec({"sh", "-c", "mkdir /tmp/x && echo made"});
  s["seccomp"] = {
      {"mode", "profile"},
      {"profile",
       {{"defaultAction", "SCMP_ACT_ALLOW"},
        {"architectures", {"SCMP_ARCH_X86_64"}},
        {"syscalls",
         {{{"names", {"mkdir", "mkdirat"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 13}}}}}}};
  EXPECT_NE(run(s), 0);
  EXPECT_THAT(out(), Not(HasSubstr("made")));
  EXPECT_THAT(err(), HasSubstr("Permission denied"));  // errnoRet 13 = EACCES
}

TEST_F(LauncherTest, MaskedPathsShowNothing) {
  ASSERT_EQ(run(probe({"masked"})), 0) << err();
  auto r = parse_lines(out());
  for (const char* file : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                           "/proc/latency_stats", "/proc/interrupts"}) {
    if (fs::exists(file)) {
      EXPECT_EQ(r[file], "bytes=0") << file << " is readable in the sandbox";
    }
  }
  for (const char* dir : {"/proc/acpi", "/proc/scsi", "/sys/firmware"}) {
    if (fs::exists(dir)) {
      EXPECT_EQ(r[dir], "entries=0") << dir << " is listable in the sandbox";
    }
  }
  EXPECT_TRUE(fs::exists("/proc/interrupts")) << "the host should have a maskable path";
}

TEST_F(LauncherTest, OrphansAreReapedByInit) {
  ASSERT_EQ(run(probe({"orphan"})), 0) << err();
  auto r = parse_lines(out());
  EXPECT_EQ(r["reparented_to_init"], "yes") << out();
  EXPECT_EQ(r["orphan_reaped"], "yes") << out();
}

TEST_F(LauncherTest, ExitCodeIsPropagated) {
  EXPECT_EQ(run(spec({"sh", "-c", "exit 7"})), 7);
  ExitStatus s = exit_status();
  EXPECT_EQ(s.state, ExitStatus::State::exited);
  EXPECT_EQ(s.code, 7);
}

TEST_F(LauncherTest, DeathBySignalIsPropagated) {
  EXPECT_EQ(run(spec({"sh", "-c", "kill -USR1 $$"})), 128 + SIGUSR1);
  ExitStatus s = exit_status();
  EXPECT_EQ(s.state, ExitStatus::State::signaled);
  EXPECT_EQ(s.signal, SIGUSR1);
  EXPECT_EQ(s.signal_name, "SIGUSR1");
  EXPECT_FALSE(s.killed_after_grace);
}

TEST_F(LauncherTest, SignalsAreForwardedToTheTask) {
  UniqueFd fifo = make_fifo();
  Launch l = start(probe({"signals", "/mnt/sandbox/fifo"}));
  EXPECT_EQ(read_line(fifo.get()), "ready");
  ::kill(l.pid, SIGHUP);
  EXPECT_EQ(read_line(fifo.get()), "HUP");
  ::kill(l.pid, SIGINT);
  EXPECT_EQ(read_line(fifo.get()), "INT");
  ::kill(l.pid, SIGTERM);
  EXPECT_EQ(read_line(fifo.get()), "TERM");
  EXPECT_EQ(wait(l), 43);
  ExitStatus s = exit_status();
  EXPECT_EQ(s.state, ExitStatus::State::exited);
  EXPECT_EQ(s.code, 43);
  EXPECT_FALSE(s.killed_after_grace);
}

TEST_F(LauncherTest, TaskIgnoringSigtermIsKilledAfterTheGracePeriod) {
  UniqueFd fifo = make_fifo();
  json s = probe({"ignore-term", "/mnt/sandbox/fifo"});
  s["kill_grace_ms"] = 300;
  Launch l = start(s);
  EXPECT_EQ(read_line(fifo.get()), "ready");
  auto t0 = std::chrono::steady_clock::now();
  ::kill(l.pid, SIGTERM);
  EXPECT_EQ(wait(l), 128 + SIGKILL);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(300));
  ExitStatus st = exit_status();
  EXPECT_EQ(st.state, ExitStatus::State::signaled);
  EXPECT_EQ(st.signal, SIGKILL);
  EXPECT_TRUE(st.killed_after_grace);
}

TEST_F(LauncherTest, OutputIsRotatedBySize) {
  json s = probe({"spew", "100000"});
  s["stdout"] = {{"max_bytes", 16384}, {"keep", 2}};
  ASSERT_EQ(run(s), 0) << err();
  std::string expected;
  for (int i = 0; expected.size() < 100000; ++i) {
    char line[32];
    std::snprintf(line, sizeof line, "line %09d\n", i);
    expected += line;
  }
  expected.resize(100000);
  const std::string cur = slurp(sandbox_ / "stdout");
  const std::string one = slurp(sandbox_ / "stdout.1");
  const std::string two = slurp(sandbox_ / "stdout.2");
  EXPECT_EQ(one.size(), 16384u);
  EXPECT_EQ(two.size(), 16384u);
  EXPECT_EQ(cur.size(), 100000u % 16384u);
  EXPECT_FALSE(fs::exists(sandbox_ / "stdout.3"));
  const std::string kept = two + one + cur;
  EXPECT_EQ(kept, expected.substr(expected.size() - kept.size()));
}

TEST_F(LauncherTest, BusyboxRootfsIsEnteredWithPivotRoot) {
  const fs::path root = dir_->path() / "rootfs";
  fs::create_directories(root / "bin");
  fs::copy_file("/bin/busybox", root / "bin/busybox");
  fs::create_symlink("busybox", root / "bin/sh");
  json s = spec({"/bin/sh", "-c",
                 "echo hello from $(/bin/busybox hostname); "
                 "test -e /usr/bin/dpkg && echo host-usr-visible; "
                 "/bin/busybox ls /dev | /bin/busybox tr '\\n' ' '"});
  s["env"] = {"PATH=/bin"};
  s["rootfs"] = {{"mode", "dir"}, {"path", root.string()}, {"readonly", true}};
  ASSERT_EQ(run(s), 0) << err() << slurp(exit_file_);
  EXPECT_THAT(out(), HasSubstr("hello from task-1"));
  EXPECT_THAT(out(), Not(HasSubstr("host-usr-visible")));
  EXPECT_THAT(out(), HasSubstr("fd full mqueue null ptmx pts random shm stderr stdin stdout tty "
                               "urandom zero"));
}

TEST_F(LauncherTest, MissingProgramIsReportedAsFailedLaunch) {
  EXPECT_EQ(run(spec({"/no/such/program"})), 127);
  ExitStatus s = exit_status();
  EXPECT_EQ(s.state, ExitStatus::State::failed);
  EXPECT_EQ(s.code, 127);
  EXPECT_THAT(s.error, HasSubstr("/no/such/program"));
}

TEST_F(LauncherTest, InvalidSpecIsRefusedNamingTheField) {
  json s = spec({"true"});
  s["volumes"] = {{{"host_path", "relative/path"}, {"container_path", "/data"}}};
  EXPECT_EQ(run(s, /*capture_stderr=*/true), 2);
  EXPECT_THAT(slurp(dir_->path() / "launcher.stderr"), HasSubstr("spec.volumes[0].host_path"));
}

TEST_F(LauncherTest, VolumesAreReadOnlyByDefault) {
  const fs::path data = dir_->path() / "data";
  fs::create_directory(data);
  std::ofstream(data / "hello") << "from the host\n";
  json s = spec({"sh", "-c", "cat /data/hello; touch /data/new && echo wrote"});
  s["volumes"] = {{{"host_path", data.string()}, {"container_path", "/data"}}};
  EXPECT_NE(run(s), 0);
  EXPECT_THAT(out(), HasSubstr("from the host"));
  EXPECT_THAT(out(), Not(HasSubstr("wrote")));
  EXPECT_THAT(err(), HasSubstr("Read-only file system"));
  EXPECT_FALSE(fs::exists(data / "new"));
}

TEST_F(LauncherTest, TaskStartsInTheGivenCgroup) {
  fs::path base = fs::exists("/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified"
                                                                    : "/sys/fs/cgroup";
  ASSERT_TRUE(fs::exists(base / "cgroup.procs")) << "no cgroup v2 hierarchy on this host";
  const fs::path cg = base / ("corral-launcher-test-" + std::to_string(::getpid()));
  fs::create_directory(cg);
  UniqueFd fifo = make_fifo();
  json s = probe({"ignore-term", "/mnt/sandbox/fifo"});
  s["cgroup_dir"] = cg.string();
  s["kill_grace_ms"] = 0;
  Launch l = start(s);
  EXPECT_EQ(read_line(fifo.get()), "ready");
  std::string procs = slurp(cg / "cgroup.procs");
  EXPECT_EQ(std::count(procs.begin(), procs.end(), '\n'), 2) << "init and the task: " << procs;
  ::kill(l.pid, SIGTERM);
  EXPECT_EQ(wait(l), 128 + SIGKILL);
  EXPECT_EQ(::rmdir(cg.c_str()), 0) << "the cgroup should be empty once the task is gone";
}

long rss_kib(pid_t pid) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

TEST_F(LauncherTest, LauncherStaysSmallWhileTheTaskRuns) {
  UniqueFd fifo = make_fifo();
  json s = probe({"ignore-term", "/mnt/sandbox/fifo"});
  s["kill_grace_ms"] = 0;
  Launch l = start(s);
  EXPECT_EQ(read_line(fifo.get()), "ready");
  // The launcher execs the supervisor right after the task's exec; wait for that exec.
  const std::string exe = "/proc/" + std::to_string(l.pid) + "/exe";
  auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (fs::read_symlink(exe).filename() != "corral-launcher-init" &&
         std::chrono::steady_clock::now() < deadline) {
    pollfd none{-1, 0, 0};
    ::poll(&none, 1, 5);
  }
  std::string children =
      slurp("/proc/" + std::to_string(l.pid) + "/task/" + std::to_string(l.pid) + "/children");
  pid_t init = std::atoi(children.c_str());
  ASSERT_GT(init, 0);
  long supervisor_kib = rss_kib(l.pid), init_kib = rss_kib(init);
  std::printf("launcher RSS while a task runs: supervisor %ld KiB, init (PID 1) %ld KiB\n",
              supervisor_kib, init_kib);
  EXPECT_GT(supervisor_kib, 0);
  EXPECT_GT(init_kib, 0);
  EXPECT_LE(supervisor_kib, 1024);
  EXPECT_LE(init_kib, 1024);
  ::kill(l.pid, SIGTERM);
  EXPECT_EQ(wait(l), 128 + SIGKILL);
}

}  // namespace
}  // namespace corral::launcher
