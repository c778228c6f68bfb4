#pragma once
// `corral agent tasks|launch|kill|logs|drain`: the local agent, over its unix socket API
// (docs/agent.md). Root and members of group corral may use the socket.

#include <CLI/CLI.hpp>
#include <functional>
#include <optional>

namespace corral::cli {

// Adds `corral agent ...` to `app`. After parsing, the returned function runs the chosen
// subcommand and returns its exit status, or nullopt if none of them was chosen.
std::function<std::optional<int>()> add_agent_commands(CLI::App& app);

}  // namespace corral::cli
