#pragma once
// CNI (Container Network Interface, spec 1.0) for tasks that name a CNI network
// (docs/network.md): network configuration lists from <config_dir>/*.conflist, plugins executed
// directly (no shell) from the configured plugin directories only, with the CNI_* variables and
// the plugin's configuration on stdin.

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "corral/common/result.hpp"

namespace corral::network::cni {

// Network names: 1-64 of [a-z0-9._-], not starting with '.'.
bool valid_network_name(std::string_view name);
// Plugin types: 1-64 of [A-Za-z0-9._-], not "." or ".." (a file name, never a path).
bool valid_plugin_type(std::string_view type);

struct Options {
  std::filesystem::path config_dir = "/etc/corral/cni";
  std::vector<std::filesystem::path> plugin_dirs = {"/usr/lib/cni"};
  std::chrono::milliseconds timeout{60'000};  // per plugin invocation
};

// One network configuration list, checked: name, cniVersion, every plugin's type resolved to an
// executable file inside a plugin dir.
struct NetworkList {
  std::string name;
  std::string cni_version;
  nlohmann::json conflist;  // the file's JSON as read (recorded with the attachment)
  std::string origin;       // the file it came from
};

// Parses and checks a conflist (origin names it in errors).
Result<NetworkList> parse_conflist(std::string_view text, const std::string& origin,
                                   const Options& options);
// The network `name` from options.config_dir/*.conflist. ENOENT names the directory and the
// networks it has.
Result<NetworkList> find_network(const std::string& name, const Options& options);
// <dir>/<type> for the first plugin dir that has it as an executable regular file.
Result<std::filesystem::path> find_plugin(const std::string& type, const Options& options);

struct Invocation {
  std::string container_id;
  std::string netns;  // path of the network namespace file
  std::string ifname = "eth0";
};

// ADD through every plugin of the list in order (each gets the previous one's result); returns
// the last result. On a failure the plugins are DEL'ed in reverse order before returning.
Result<nlohmann::json> add(const NetworkList& net, const Invocation& inv, const Options& options);
// DEL through the plugins in reverse order with the recorded result (null: none). Every plugin
// is called even if one fails; the first error is returned.
Result<void> del(const NetworkList& net, const Invocation& inv, const nlohmann::json& result,
                 const Options& options);
// CHECK through the plugins in order with the recorded result.
Result<void> check(const NetworkList& net, const Invocation& inv, const nlohmann::json& result,
                   const Options& options);

// The first IPv4 address of a CNI result ("ips": [{"address": "10.22.0.5/16", "gateway": ...}])
// and the result's DNS servers.
struct ResultAddress {
  uint32_t address = 0;  // host byte order
  uint8_t prefix = 0;
  uint32_t gateway = 0;
  std::vector<std::string> nameservers;
};
Result<ResultAddress> address_of(const nlohmann::json& result);

}  // namespace corral::network::cni
