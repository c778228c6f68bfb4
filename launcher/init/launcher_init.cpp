// corral-launcher-init: the small, statically linked part of corral-launcher that stays while a
// task runs. corral-launcher (the big binary: JSON, libseccomp, mounts) builds the sandbox and then
// execs this program twice, so that the long-lived processes hold a few hundred KiB instead of the
// big binary's libraries:
//
//   corral-launcher-init init TASK_PID STATUS_FD
//     PID 1 of the task's pid namespace. Reaps every process reparented to it, forwards SIGTERM,
//     SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to the task, writes "R\n" on STATUS_FD
//     once its handlers are installed and "E <wait status>\n" when the task exits, then exits
//     (which kills whatever is left in the namespace).
//
//   corral-launcher-init supervise key=value...
//     Outside the sandbox, in the launcher's own process (so the agent's pid for the launcher stays
//     the same). Copies the task's stdout/stderr pipes into files with size-based rotation,
//     forwards SIGTERM/SIGINT/SIGHUP to init, on SIGTERM starts the kill grace period and sends
//     SIGKILL to init (tearing down the whole pid namespace) when it runs out, and writes the exit
//     status file atomically. Exits with the task's exit code, or 128 + signal.
//
// Deliberately plain libc (no libstdc++ containers, no exceptions, no allocation after start):
// the whole point is a small resident set. That is also why the atomic exit-file write is done
// here by hand instead of through corral::write_file_atomic (linking libcorral-common would bring
// std::filesystem and the rest). The exit file format is documented in docs/launcher.md and
// parsed by corral::launcher::parse_exit_status.

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

void die(const char* what) {
  dprintf(2, "corral-launcher-init: %s: %s\n", what, strerror(errno));
  _exit(125);
}

bool parse_int(const char* s, long* out) {
  if (!s || !*s) return false;
  char* end = nullptr;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

const int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

void noop_handler(int) {}

// ---------------------------------------------------------------------------------------------
// init mode

int run_init(int argc, char** argv) {
  long task = 0, status_fd = 0;
  if (argc != 4 || !parse_int(argv[2], &task) || !parse_int(argv[3], &status_fd)) {
    dprintf(2, "usage: corral-launcher-init init TASK_PID STATUS_FD\n");
    return 2;
  }
  // PID 1 of a pid namespace only receives signals it has a handler for, so install one (and
  // block them, taking them synchronously with sigwaitinfo).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = noop_handler;
  for (int sig : kForwarded) {
    sigaddset(&set, sig);
    sigaction(sig, &sa, nullptr);
  }
  sigaction(SIGCHLD, &sa, nullptr);
  sigprocmask(SIG_SETMASK, &set, nullptr);
  prctl(PR_SET_NAME, "corral-init", 0, 0, 0);
  if (write(static_cast<int>(status_fd), "R\n", 2) != 2) die("write ready to status fd");

  for (;;) {
    // Reap first: the task (or orphans) may have exited before the handlers were installed.
    for (;;) {
      int wstatus = 0;
      pid_t pid = waitpid(-1, &wstatus, WNOHANG);
      if (pid <= 0) break;
      if (pid == task) {
        char line[32];
        int n = snprintf(line, sizeof line, "E %d\n", wstatus);
        if (write(static_cast<int>(status_fd), line, static_cast<size_t>(n)) != n) {
          die("write exit status to status fd");
        }
        return 0;  // the kernel kills what is left in the namespace
      }
    }
    siginfo_t info;
    int sig = sigwaitinfo(&set, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      die("sigwaitinfo");
    }
    if (sig != SIGCHLD) kill(static_cast<pid_t>(task), sig);
  }
}

// ---------------------------------------------------------------------------------------------
// supervise mode

struct Output {
  int pipe = -1;               // read end of the task's stdout or stderr
  int dir = -1;                // directory of the output file
  const char* name = nullptr;  // file name inside dir
  unsigned long long max_bytes = 0;
  long keep = 0;
  int file = -1;
  unsigned long long size = 0;
};

void open_output(Output* out) {
  out->file =
      openat(out->dir, out->name, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (out->file < 0) die("open output file");
  struct stat st;
  out->size = fstat(out->file, &st) == 0 ? static_cast<unsigned long long>(st.st_size) : 0;
}

void rotate(Output* out) {
  close(out->file);
  out->file = -1;
  if (out->keep <= 0) {
    int fd = openat(out->dir, out->name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) close(fd);
  } else {
    char from[4096], to[4096];
    for (long i = out->keep - 1; i >= 1; --i) {
      snprintf(from, sizeof from, "%s.%ld", out->name, i);
      snprintf(to, sizeof to, "%s.%ld", out->name, i + 1);
      renameat(out->dir, from, out->dir, to);  // missing older files are fine
    }
    snprintf(to, sizeof to, "%s.1", out->name);
    if (renameat(out->dir, out->name, out->dir, to) != 0 && errno != ENOENT) die("rotate output");
  }
  open_output(out);
}

void write_output(Output* out, const char* data, size_t n) {
  while (n > 0) {
    if (out->size >= out->max_bytes) rotate(out);
    unsigned long long room = out->max_bytes - out->size;
    size_t chunk = n < room ? n : static_cast<size_t>(room);
    ssize_t w = write(out->file, data, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      // Disk full or similar: drop the data rather than block the task forever.
      dprintf(2, "corral-launcher-init: writing %s: %s (output dropped)\n", out->name,
              strerror(errno));
      return;
    }
    out->size += static_cast<unsigned long long>(w);
    data += w;
    n -= static_cast<size_t>(w);
  }
}

// Reads what is available; returns false at EOF.
bool pump(Output* out) {
  static char buf[65536];
  ssize_t n = read(out->pipe, buf, sizeof buf);
  if (n < 0) return errno == EINTR || errno == EAGAIN;
  if (n == 0) return false;
  write_output(out, buf, static_cast<size_t>(n));
  return true;
}

const char* signal_name(int sig) {
  static const struct {
    int sig;
    const char* name;
  } names[] = {{SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"},
               {SIGILL, "SIGILL"},   {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"},
               {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},   {SIGKILL, "SIGKILL"},
               {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
               {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"},
               {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"}, {SIGSYS, "SIGSYS"}};
  for (const auto& n : names) {
    if (n.sig == sig) return n.name;
  }
  return "";
}

// Splits "/a/b/c" into an open directory fd for "/a/b" and "c" (pointing into path).
int open_parent(char* path, const char** name) {
  char* slash = strrchr(path, '/');
  if (!slash || slash[1] == '\0') {
    errno = EINVAL;
    return -1;
  }
  *name = slash + 1;
  if (slash == path) return open("/", O_DIRECTORY | O_CLOEXEC);
  *slash = '\0';
  int fd = open(path, O_DIRECTORY | O_CLOEXEC);
  *slash = '/';
  return fd;
}

// temp file beside the target, fsync, rename over it, fsync the directory.
bool write_atomic(char* path, const char* data, size_t n) {
  const char* name = nullptr;
  int dir = open_parent(path, &name);
  if (dir < 0) return false;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, ".%s.tmp.%d", name, static_cast<int>(getpid()));
  int fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  bool ok = fd >= 0 && write(fd, data, n) == static_cast<ssize_t>(n) && fsync(fd) == 0;
  if (fd >= 0) close(fd);
  ok = ok && renameat(dir, tmp, dir, name) == 0;
  if (!ok) unlinkat(dir, tmp, 0);
  ok = ok && fsync(dir) == 0;
  close(dir);
  return ok;
}

struct Args {
  long pidfd = -1, init_pid = -1, status_fd = -1, stdout_fd = -1, stderr_fd = -1;
  long grace_ms = 10000, stdout_keep = 3, stderr_keep = 3;
  unsigned long long stdout_max = 10ull << 20, stderr_max = 10ull << 20;
  char* stdout_path = nullptr;
  char* stderr_path = nullptr;
  char* exit_path = nullptr;
};

bool parse_ull(const char* s, unsigned long long* out) {
  if (!s || !*s) return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

bool parse_args(int argc, char** argv, Args* a) {
  for (int i = 2; i < argc; ++i) {
    char* eq = strchr(argv[i], '=');
    if (!eq) return false;
    *eq = '\0';
    const char* k = argv[i];
    char* v = eq + 1;
    bool ok = true;
    if (!strcmp(k, "pidfd"))
      ok = parse_int(v, &a->pidfd);
    else if (!strcmp(k, "init-pid"))
      ok = parse_int(v, &a->init_pid);
    else if (!strcmp(k, "status-fd"))
      ok = parse_int(v, &a->status_fd);
    else if (!strcmp(k, "stdout-fd"))
      ok = parse_int(v, &a->stdout_fd);
    else if (!strcmp(k, "stderr-fd"))
      ok = parse_int(v, &a->stderr_fd);
    else if (!strcmp(k, "grace-ms"))
      ok = parse_int(v, &a->grace_ms);
    else if (!strcmp(k, "stdout-keep"))
      ok = parse_int(v, &a->stdout_keep);
    else if (!strcmp(k, "stderr-keep"))
      ok = parse_int(v, &a->stderr_keep);
    else if (!strcmp(k, "stdout-max"))
      ok = parse_ull(v, &a->stdout_max);
    else if (!strcmp(k, "stderr-max"))
      ok = parse_ull(v, &a->stderr_max);
    else if (!strcmp(k, "stdout"))
      a->stdout_path = v;
    else if (!strcmp(k, "stderr"))
      a->stderr_path = v;
    else if (!strcmp(k, "exit-file"))
      a->exit_path = v;
    else
      ok = false;
    if (!ok) return false;
  }
  return a->pidfd >= 0 && a->init_pid > 0 && a->status_fd >= 0 && a->stdout_fd >= 0 &&
         a->stderr_fd >= 0 && a->stdout_path && a->stderr_path && a->exit_path &&
         a->stdout_max > 0 && a->stderr_max > 0;
}

int run_supervise(int argc, char** argv) {
  Args a;
  if (!parse_args(argc, argv, &a)) {
    dprintf(2,
            "corral-launcher-init supervise: bad arguments (this mode is started by "
            "corral-launcher, not by hand)\n");
    return 2;
  }
  prctl(PR_SET_NAME, "corral-launcher", 0, 0, 0);
  // Exempt the supervisor from memory.oom.group kills of the task's cgroup, so the exit status
  // still gets written (needs CAP_SYS_RESOURCE; without it the write fails and nothing changes).
  int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (oom >= 0) {
    if (write(oom, "-1000", 5) < 0) { /* best effort, see above */
    }
    close(oom);
  }

  // corral-launcher blocked these before clone3, so none was lost; take them from a signalfd.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) die("signalfd");
  int timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
  if (timer < 0) die("timerfd_create");

  Output out[2];
  out[0].pipe = static_cast<int>(a.stdout_fd);
  out[0].max_bytes = a.stdout_max;
  out[0].keep = a.stdout_keep;
  out[0].dir = open_parent(a.stdout_path, &out[0].name);
  out[1].pipe = static_cast<int>(a.stderr_fd);
  out[1].max_bytes = a.stderr_max;
  out[1].keep = a.stderr_keep;
  out[1].dir = open_parent(a.stderr_path, &out[1].name);
  if (out[0].dir < 0 || out[1].dir < 0) die("open output directory");
  open_output(&out[0]);
  open_output(&out[1]);

  const int pidfd = static_cast<int>(a.pidfd);
  int status_fd = static_cast<int>(a.status_fd);
  bool init_ready = false, init_exited = false, have_status = false, grace_kill = false;
  bool term_requested = false;
  int task_wstatus = 0, init_wstatus = 0;
  int pending[8];
  int npending = 0;
  char status_buf[64];
  size_t status_len = 0;

  auto send = [&](int sig) {
    if (syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) != 0 && errno != ESRCH) {
      dprintf(2, "corral-launcher-init: pidfd_send_signal: %s\n", strerror(errno));
    }
  };

  while (!init_exited || out[0].pipe >= 0 || out[1].pipe >= 0 || status_fd >= 0) {
    pollfd fds[6];
    int n = 0;
    fds[n++] = {sfd, POLLIN, 0};
    fds[n++] = {timer, POLLIN, 0};
    fds[n++] = {init_exited ? -1 : pidfd, POLLIN, 0};
    fds[n++] = {status_fd, POLLIN, 0};
    fds[n++] = {out[0].pipe, POLLIN, 0};
    fds[n++] = {out[1].pipe, POLLIN, 0};
    // Once init is gone every process of the namespace is gone with it; only fds smuggled out of
    // the sandbox could keep a pipe open, so give the drain a bounded time.
    int timeout = init_exited ? 5000 : -1;
    int r = poll(fds, static_cast<nfds_t>(n), timeout);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (r == 0) break;  // drain timed out
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        int sig = static_cast<int>(si.ssi_signo);
        if (sig != SIGCHLD && !init_exited) {
          if (sig == SIGTERM && !term_requested) {
            term_requested = true;
            itimerspec its = {};
            its.it_value.tv_sec = a.grace_ms / 1000;
            its.it_value.tv_nsec = (a.grace_ms % 1000) * 1000000L;
            if (a.grace_ms == 0) its.it_value.tv_nsec = 1;
            timerfd_settime(timer, 0, &its, nullptr);
          }
          if (init_ready) {
            send(sig);
          } else if (npending < 8) {
            pending[npending++] = sig;
          }
        }
      }
    }
    if (fds[1].revents & POLLIN) {
      unsigned long long expirations;
      if (read(timer, &expirations, sizeof expirations) > 0 && !init_exited) {
        grace_kill = true;
        send(SIGKILL);  // kills init, and with it the whole pid namespace
      }
    }
    if (fds[2].revents & POLLIN) {
      siginfo_t info;
      memset(&info, 0, sizeof info);
      if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) == 0) {
        init_exited = true;
        init_wstatus = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8 : info.si_status;
      }
    }
    if (fds[3].revents & (POLLIN | POLLHUP)) {
      ssize_t got = read(status_fd, status_buf + status_len, sizeof status_buf - 1 - status_len);
      if (got <= 0) {
        close(status_fd);
        status_fd = -1;
      } else {
        status_len += static_cast<size_t>(got);
        status_buf[status_len] = '\0';
        // Lines: "R" (ready), "E <wstatus>" (task exited).
        char* line = status_buf;
        char* nl;
        while ((nl = strchr(line, '\n')) != nullptr) {
          *nl = '\0';
          if (line[0] == 'R') {
            init_ready = true;
            for (int i = 0; i < npending; ++i) send(pending[i]);
            npending = 0;
          } else if (line[0] == 'E') {
            long w = 0;
            if (parse_int(line + 2, &w)) {
              task_wstatus = static_cast<int>(w);
              have_status = true;
            }
          }
          line = nl + 1;
        }
        status_len = strlen(line);
        memmove(status_buf, line, status_len);
      }
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[4 + i].revents & (POLLIN | POLLHUP | POLLERR)) {
        if (!pump(&out[i])) {
          close(out[i].pipe);
          out[i].pipe = -1;
        }
      }
    }
  }

  // The task's status as init saw it; if init itself died first (our grace SIGKILL, an OOM kill
  // of the group, someone's kill -9) the task died with it, by SIGKILL.
  int wstatus = have_status ? task_wstatus : init_wstatus;
  char json[512];
  int len;
  int code;
  if (WIFEXITED(wstatus)) {
    code = WEXITSTATUS(wstatus);
    len = snprintf(json, sizeof json,
                   "{\"state\":\"exited\",\"code\":%d,\"killed_after_grace\":%s}\n", code,
                   grace_kill ? "true" : "false");
  } else {
    int sig = WTERMSIG(wstatus);
    code = 128 + sig;
    len = snprintf(json, sizeof json,
                   "{\"state\":\"signaled\",\"signal\":%d,\"signal_name\":\"%s\","
                   "\"core_dumped\":%s,\"killed_after_grace\":%s}\n",
                   sig, signal_name(sig), WCOREDUMP(wstatus) ? "true" : "false",
                   grace_kill ? "true" : "false");
  }
  if (!write_atomic(a.exit_path, json, static_cast<size_t>(len))) die("write exit status file");
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && !strcmp(argv[1], "init")) return run_init(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "supervise")) return run_supervise(argc, argv);
  dprintf(2,
          "corral-launcher-init: a helper of corral-launcher (modes: init, supervise); "
          "run corral-launcher instead\n");
  return 2;
}
