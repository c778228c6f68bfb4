// corral-launcher: per-task helper exec'd by the agent (and by `corral run`). Reads a sandbox spec
// (docs/launcher.md), builds the sandbox, starts the task and supervises it until it exits; exits
// with the task's exit code (128 + signal when it was killed by one).
#include <CLI/CLI.hpp>

#include <fcntl.h>

#include <cstdio>
#include <optional>

#include "corral/common/fd.hpp"
#include "corral/common/version.hpp"
#include "corral/launcher/launcher.hpp"

namespace {

corral::Result<std::string> read_spec_fd(int fd) {
  corral::UniqueFd owned(fd);
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(owned.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return corral::Error::from_errno("read spec from fd " + std::to_string(fd));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (16u << 20)) return corral::Error(EFBIG, "spec larger than 16 MiB");
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "corral-launcher: builds one task's sandbox (namespaces, pivot_root, seccomp, "
      "capabilities, rlimits, user switch), starts the task and stays as its supervisor and "
      "PID 1.\nExit code: the task's, 128+signal if it was killed, 125 if the sandbox could not "
      "be built, 126/127 if the program could not be executed/found, 2 for a bad spec.\n"
      "Spec and exit-file formats: docs/launcher.md."};
  app.set_version_flag("--version", std::string("corral-launcher ") + corral::kVersion);
  std::string spec_path;
  std::optional<int> spec_fd;
  std::string init_path;
  bool check = false;
  std::optional<int> ready_fd;
  auto* file_opt = app.add_option("--spec", spec_path, "sandbox spec file (JSON)");
  auto* fd_opt = app.add_option("--spec-fd", spec_fd, "read the spec from this file descriptor");
  file_opt->excludes(fd_opt);
  app.add_option("--init", init_path,
                 "the corral-launcher-init helper (default: beside this binary)");
  app.add_option("--ready-fd", ready_fd,
                 "an inherited pipe end that is closed once the task has exec'd (the caller reads "
                 "EOF; if the launcher failed instead, the exit status file says why)");
  app.add_flag("--check", check, "validate the spec, print it with defaults filled in, and exit");
  CLI11_PARSE(app, argc, argv);
  // The ready fd must not outlive the exec of the supervisor (nor reach the task): close-on-exec
  // turns "every copy closed" into "the task and its supervisor have exec'd".
  if (ready_fd && ::fcntl(*ready_fd, F_SETFD, FD_CLOEXEC) != 0) {
    std::fprintf(stderr, "corral-launcher: --ready-fd %d is not an open file descriptor\n",
                 *ready_fd);
    return corral::launcher::kExitUsage;
  }

  corral::Result<std::string> text = std::string();
  if (spec_fd) {
    text = read_spec_fd(*spec_fd);
  } else if (!spec_path.empty()) {
    text = corral::read_file(spec_path, 16u << 20);
  } else {
    std::fprintf(stderr,
                 "corral-launcher: give the sandbox spec with --spec FILE or --spec-fd N "
                 "(see docs/launcher.md)\n");
    return corral::launcher::kExitUsage;
  }
  if (!text) {
    std::fprintf(stderr, "corral-launcher: %s\n", text.error().to_string().c_str());
    return corral::launcher::kExitUsage;
  }
  auto spec = corral::isolator::parse_sandbox_spec(*text);
  if (!spec) {
    std::fprintf(stderr, "corral-launcher: %s\n", spec.error().to_string().c_str());
    return corral::launcher::kExitUsage;
  }
  if (check) {
    std::printf("%s\n", corral::isolator::to_json(*spec).dump(2).c_str());
    return 0;
  }
  int exit_code = 0;
  corral::launcher::LaunchOptions options;
  options.init_path = init_path;
  auto r = corral::launcher::launch(*spec, options, &exit_code);
  std::fprintf(stderr, "corral-launcher: %s\n",
               r.ok() ? "unexpected return" : r.error().to_string().c_str());
  return exit_code;
}
