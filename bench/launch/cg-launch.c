/* bench/launch/cg-launch.c: the agent's launch path for the bench-launch guest group, without
 * the shell's fork/exec of mkdir and rmdir that would otherwise dominate the figure.
 * Usage: cg-launch CGROUP_DIR LAUNCHER ARGS...
 * Makes CGROUP_DIR, writes memory.max and pids.max (as the cgroupfs backend does), runs LAUNCHER
 * (which clone3()s the task into CGROUP_DIR from its spec), waits for it, removes CGROUP_DIR.
 * SIGTERM is forwarded to the launcher (the agent's kill: the launcher tears the task down), and
 * the rmdir is retried while the cgroup is still busy with dying processes.
 * Exits with the launcher's exit code. Built statically on the host by bench-launch.host.sh. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

static volatile pid_t child = 0;

static void forward(int sig) {
  if (child > 0) kill(child, sig);
}

/* rmdir, retried for up to 10 s while the kernel finishes removing the task's processes */
static int remove_cgroup(const char* cg) {
  for (int i = 0; i < 10000; ++i) {
    if (rmdir(cg) == 0) return 0;
    if (errno != EBUSY) return -1;
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  return -1;
}

static int write_at(const char* dir, const char* file, const char* value) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, value, strlen(value));
  close(fd);
  return n == (ssize_t)strlen(value) ? 0 : -1;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: cg-launch CGROUP_DIR LAUNCHER ARGS...\n");
    return 2;
  }
  const char* cg = argv[1];
  if (mkdir(cg, 0755) != 0 || write_at(cg, "memory.max", "268435456") != 0 ||
      write_at(cg, "pids.max", "1024") != 0) {
    fprintf(stderr, "cg-launch: cgroup %s: %s\n", cg, strerror(errno));
    return 125;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward;
  sigaction(SIGTERM, &sa, NULL);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[2], NULL, NULL, argv + 2, environ);
  int status = 0;
  if (rc == 0) child = pid;
  pid_t w = -1;
  while (rc == 0 && (w = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (rc != 0 || w < 0) {
    fprintf(stderr, "cg-launch: %s: %s\n", argv[2], strerror(rc ? rc : errno));
    rmdir(cg);
    return 125;
  }
  if (remove_cgroup(cg) != 0) {
    fprintf(stderr, "cg-launch: rmdir %s: %s\n", cg, strerror(errno));
    return 125;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
