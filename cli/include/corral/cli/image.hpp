#pragma once
// `corral image pull|import|ls|inspect|rm|prune`: the local image store (docs/images.md), the
// same one the agent's native containerizer uses. Works on the store directly (root needed for
// the default /var/lib/corral/images), no agent required.

#include <memory>

namespace CLI {
class App;
}

namespace corral::cli {

class ImageCommand {
 public:
  virtual ~ImageCommand() = default;
  // True when `corral image ...` was on the command line (after parsing).
  virtual bool parsed() const = 0;
  // Runs the parsed subcommand; returns the exit code.
  virtual int run() = 0;
};

// Registers `image` and its subcommands on `app`.
std::unique_ptr<ImageCommand> add_image_command(CLI::App& app);

}  // namespace corral::cli
