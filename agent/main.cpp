// corral-agent: node agent that isolates and runs tasks and reports them to the master.
// Not implemented yet: task isolation, the master link and the agent API (the isolation-core and
// corral-agent issues). Until then this binary answers --help and --version and refuses to run,
// saying so.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "corral/common/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "corral-agent: node agent that isolates and runs tasks and reports them to the "
      "master.\n\nNOT IMPLEMENTED YET: task isolation, the master link and the agent API (the "
      "isolation-core and corral-agent issues)."};
  app.set_version_flag("--version", std::string("corral-agent ") + corral::kVersion);
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr,
               "corral-agent: not implemented yet: task isolation, the master link and the agent "
               "API (the isolation-core and corral-agent issues).\n"
               "Corral %s ships its foundation only; see README.md for what runs today.\n",
               corral::kVersion);
  return 69;  // EX_UNAVAILABLE
}
