// corral-launcher: per-task helper exec'd by the agent; builds the sandbox and stays as the task's PID 1.
// Not implemented yet: sandbox construction with namespaces, pivot_root, seccomp and capabilities (the isolation-core issue). Until then this binary answers --help and --version
// and refuses to run, saying so.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "corral/common/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{"corral-launcher: per-task helper exec'd by the agent; builds the sandbox and stays as the task's PID 1.\n\nNOT IMPLEMENTED YET: sandbox construction with namespaces, pivot_root, seccomp and capabilities (the isolation-core issue)."};
  app.set_version_flag("--version", std::string("corral-launcher ") + corral::kVersion);
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr,
               "corral-launcher: not implemented yet: sandbox construction with namespaces, pivot_root, seccomp and capabilities (the isolation-core issue).\n"
               "Corral %s ships its foundation only; see README.md for what runs today.\n",
               corral::kVersion);
  return 69;  // EX_UNAVAILABLE
}
