// corral-test-escape: a static probe run inside sandboxes by the launcher's root tests. Each mode
// prints "key value" lines on stdout that the tests compare with what the host sees.
//   info              namespaces (inodes), pid/ppid, hostname, ids, capabilities, PID 1's name
//   escape            escape attempts, one line each: "<attempt> <errno name or ok>"
//   masked            masked /proc and /sys paths: bytes readable / entries listed
//   orphan            leaves an orphan that exits, reports whether PID 1 reaped it
//   signals FIFO      reports SIGHUP/SIGINT on FIFO; exits 43 on SIGTERM
//   ignore-term FIFO  ignores SIGTERM, says "ready" on FIFO, waits forever
//   spew BYTES        writes BYTES bytes of numbered lines to stdout
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace {

const char* err_name(int e) {
  switch (e) {
    case 0:
      return "ok";
    case EPERM:
      return "EPERM";
    case EACCES:
      return "EACCES";
    case EROFS:
      return "EROFS";
    case ENOENT:
      return "ENOENT";
    case ENOSYS:
      return "ENOSYS";
    case EINVAL:
      return "EINVAL";
    case EBADF:
      return "EBADF";
    case ESRCH:
      return "ESRCH";
    case EFAULT:
      return "EFAULT";
    default:
      return "other";
  }
}

void report(const char* what, long rc) { printf("%s %s\n", what, err_name(rc < 0 ? errno : 0)); }

void print_status_field(const char* field) {
  FILE* f = fopen("/proc/self/status", "r");
  if (!f) return;
  char line[256];
  size_t n = strlen(field);
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, field, n) && line[n] == ':') {
      char* v = line + n + 1;
      while (*v == ' ' || *v == '\t') ++v;
      printf("%s %s", field, v);
    }
  }
  fclose(f);
}

int info() {
  const char* names[] = {"pid", "mnt", "uts", "ipc", "net", "cgroup", "user"};
  for (const char* n : names) {
    char path[64], link[128];
    snprintf(path, sizeof path, "/proc/self/ns/%s", n);
    ssize_t len = readlink(path, link, sizeof link - 1);
    link[len > 0 ? len : 0] = '\0';
    printf("ns_%s %s\n", n, link);
  }
  printf("pid %d\nppid %d\n", getpid(), getppid());
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  printf("hostname %s\nuid %d\ngid %d\n", host, getuid(), getgid());
  gid_t groups[64];
  int ng = getgroups(64, groups);
  printf("groups");
  for (int i = 0; i < ng; ++i) printf(" %d", groups[i]);
  printf("\n");
  print_status_field("CapEff");
  print_status_field("CapPrm");
  print_status_field("CapBnd");
  print_status_field("NoNewPrivs");
  print_status_field("Seccomp");
  FILE* f = fopen("/proc/1/comm", "r");
  char comm[64] = {};
  if (f) {
    if (!fgets(comm, sizeof comm, f)) comm[0] = '\0';
    fclose(f);
  }
  printf("init_comm %s", comm[0] ? comm : "?\n");
  char cwd[512] = {};
  if (getcwd(cwd, sizeof cwd - 1)) printf("cwd %s\n", cwd);
  int created = open("/mnt/sandbox/created-by-task", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (created >= 0) close(created);
  printf("root_writable %s\n", access("/", W_OK) == 0 && mkdir("/probe", 0755) == 0 ? "yes" : "no");
  printf("host_usr %s\n", access("/usr/bin", F_OK) == 0 ? "yes" : "no");
  char buf[64] = {};
  f = fopen("/proc/self/cgroup", "r");
  if (f) {
    char line[512];
    while (fgets(line, sizeof line, f)) {
      if (!strncmp(line, "0::", 3)) printf("cgroup %s", line + 3);
    }
    fclose(f);
  }
  (void)buf;
  return 0;
}

int escape() {
  report("mount", mount("tmpfs", "/tmp", "tmpfs", 0, nullptr));
  report("umount", umount2("/proc", MNT_DETACH));
  report("unshare_user", unshare(CLONE_NEWUSER));
  report("unshare_mount", unshare(CLONE_NEWNS));
  report("clone_newuser", [] {
    pid_t p = static_cast<pid_t>(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    if (p == 0) _exit(0);
    if (p > 0) waitpid(p, nullptr, 0);
    return static_cast<long>(p);
  }());
  report("setns", syscall(SYS_setns, 0, CLONE_NEWNS));
  report("keyctl", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "corral-escape"));
  report("add_key", syscall(SYS_add_key, "user", "corral", "x", 1, KEY_SPEC_SESSION_KEYRING));
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_type = BPF_MAP_TYPE_ARRAY;
  attr.key_size = 4;
  attr.value_size = 4;
  attr.max_entries = 1;
  report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
  report("ptrace_init", ptrace(PTRACE_ATTACH, 1, nullptr, nullptr));
  report("ptrace_traceme", ptrace(PTRACE_TRACEME, 0, nullptr, nullptr));
  char handle[128] = {};
  reinterpret_cast<unsigned int*>(handle)[0] = 8;
  report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, handle, O_RDONLY));
  int fd = open("/proc/self/exe", O_RDONLY);
  report("finit_module", syscall(SYS_finit_module, fd, "", 0));
  report("init_module", syscall(SYS_init_module, nullptr, 0, ""));
  report("delete_module", syscall(SYS_delete_module, "ext4", O_NONBLOCK));
  report("kexec_load", syscall(SYS_kexec_load, 0, 0, nullptr, 0));
  report("reboot", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
                           LINUX_REBOOT_CMD_CAD_OFF, nullptr));
  report("swapoff", swapoff("/nonexistent"));
  report("perf_event_open", syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0));
  report("userfaultfd", syscall(SYS_userfaultfd, 0));
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  report("clock_settime", clock_settime(CLOCK_REALTIME, &ts));
  report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
  // CAP_MKNOD is in Docker's default set, but /tmp is nodev: the node must not open.
  if (mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)) == 0) {
    int dev = open("/tmp/sda", O_RDONLY);
    report("open_mknod_device", dev);
    if (dev >= 0) close(dev);
  } else {
    report("open_mknod_device", -1);
  }
  int sysrq = open("/proc/sysrq-trigger", O_WRONLY);
  report("sysrq_open", sysrq);
  if (sysrq >= 0) close(sysrq);
  int core = open("/proc/sys/kernel/core_pattern", O_WRONLY);
  report("core_pattern_open", core);
  if (core >= 0) close(core);
  return 0;
}

int masked() {
  const char* files[] = {"/proc/kcore",       "/proc/keys",          "/proc/timer_list",
                         "/proc/sched_debug", "/proc/latency_stats", "/proc/interrupts"};
  for (const char* p : files) {
    int fd = open(p, O_RDONLY);
    if (fd < 0) {
      printf("%s %s\n", p, err_name(errno));
      continue;
    }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    printf("%s bytes=%zd\n", p, n);
    close(fd);
  }
  const char* dirs[] = {"/proc/acpi", "/proc/scsi", "/sys/firmware"};
  for (const char* p : dirs) {
    DIR* d = opendir(p);
    if (!d) {
      printf("%s %s\n", p, err_name(errno));
      continue;
    }
    int entries = 0;
    while (dirent* e = readdir(d)) {
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) ++entries;
    }
    closedir(d);
    printf("%s entries=%d\n", p, entries);
  }
  return 0;
}

int orphan() {
  int gate[2];
  if (pipe(gate) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    pid_t grandchild = fork();
    if (grandchild == 0) {
      close(gate[1]);
      char c;
      while (read(gate[0], &c, 1) > 0) {
      }
      _exit(0);
    }
    printf("orphan %d\n", grandchild);
    fflush(stdout);
    _exit(0);
  }
  waitpid(child, nullptr, 0);
  close(gate[0]);
  // Parse the orphan's pid from our own stdout? Simpler: find a process whose ppid is 1 and isn't
  // us. Release it, then watch it disappear (reaped by PID 1) or stay a zombie.
  pid_t target = -1;
  DIR* d = opendir("/proc");
  while (dirent* e = readdir(d)) {
    int pid = atoi(e->d_name);
    if (pid <= 1 || pid == getpid()) continue;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE* f = fopen(path, "r");
    if (!f) continue;
    if (fgets(buf, sizeof buf, f)) {
      char* rp = strrchr(buf, ')');
      int ppid = 0;
      char state;
      if (rp && sscanf(rp + 2, "%c %d", &state, &ppid) == 2 && ppid == 1) target = pid;
    }
    fclose(f);
  }
  closedir(d);
  printf("reparented_to_init %s\n", target > 0 ? "yes" : "no");
  close(gate[1]);  // the orphan exits now
  // Observe the outcome: the zombie must vanish (reaped by PID 1) within 10 s.
  for (int i = 0; i < 1000; ++i) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", target);
    if (access(path, F_OK) != 0) {
      printf("orphan_reaped yes\n");
      return 0;
    }
    usleep(10000);
  }
  printf("orphan_reaped no\n");
  return 0;
}

int fifo_fd = -1;
void on_signal(int sig) {
  const char* msg = sig == SIGHUP ? "HUP\n" : sig == SIGINT ? "INT\n" : "TERM\n";
  (void)!write(fifo_fd, msg, strlen(msg));
  if (sig == SIGTERM) _exit(43);
}

int signals(const char* fifo, bool ignore_term) {
  fifo_fd = open(fifo, O_WRONLY);
  if (fifo_fd < 0) return 3;
  if (ignore_term) {
    signal(SIGTERM, SIG_IGN);
  } else {
    signal(SIGHUP, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
  }
  (void)!write(fifo_fd, "ready\n", 6);
  for (;;) pause();
}

int spew(long bytes) {
  char line[32];
  long written = 0;
  for (long i = 0; written < bytes; ++i) {
    int n = snprintf(line, sizeof line, "line %09ld\n", i);
    if (written + n > bytes) n = static_cast<int>(bytes - written);
    if (fwrite(line, 1, static_cast<size_t>(n), stdout) != static_cast<size_t>(n)) return 1;
    written += n;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc >= 2 && !strcmp(argv[1], "info")) return info();
  if (argc >= 2 && !strcmp(argv[1], "escape")) return escape();
  if (argc >= 2 && !strcmp(argv[1], "masked")) return masked();
  if (argc >= 2 && !strcmp(argv[1], "orphan")) return orphan();
  if (argc >= 3 && !strcmp(argv[1], "signals")) return signals(argv[2], false);
  if (argc >= 3 && !strcmp(argv[1], "ignore-term")) return signals(argv[2], true);
  if (argc >= 3 && !strcmp(argv[1], "spew")) return spew(atol(argv[2]));
  fprintf(stderr,
          "usage: corral-test-escape info|escape|masked|orphan|signals F|ignore-term F|spew N\n");
  return 2;
}
