#pragma once
// Per-task networks (docs/network.md).
//
// Modes: `host` (the agent's network), `none` (a new network namespace with loopback only, made
// by corral-launcher) and `bridge`, which the NetworkManager here builds before launch:
//   - a named network namespace, a bind-mounted nsfs file <netns_dir>/<container-id>;
//   - a veth pair made through libnl-route: `eth0` inside, `cv<ip-hex>` outside attached to the
//     agent's Linux bridge (default `corral0`, created and addressed by the manager);
//   - an address from the configured subnet (IPAM: leases persisted in <state_dir>/network.json,
//     never two live tasks on one address), loopback up, default route through the bridge, MTU;
//   - /etc/hosts, /etc/resolv.conf and /etc/hostname files written for the task to bind;
//   - port mappings (host port -> task port) as elements of a map in Corral's own nftables
//     table (`table ip corral`, made through libnftables from validated integers only), plus
//     masquerading of the subnet and, per task, optional egress denial.
// Or, for a task naming a CNI network, the plugins of that network (cni.hpp) run in the
// namespace. detach() removes all of it; reconcile() (agent start-up) removes whatever belongs to
// no running task. Everything the manager touches lives in the network namespace it was opened in.
//
// Thread-safe: every method takes the manager's lock.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "corral/common/result.hpp"

namespace corral::network {

enum class Mode { host, none, bridge };
Result<Mode> parse_mode(std::string_view text);  // "host" | "none" | "bridge"
const char* mode_name(Mode mode);

// An IPv4 network, addresses in host byte order.
struct Ipv4Net {
  uint32_t address = 0;  // the network address (host bits zero)
  uint8_t prefix = 0;
  uint32_t mask() const { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }
  bool contains(uint32_t ip) const { return (ip & mask()) == address; }
  bool overlaps(const Ipv4Net& other) const;
};
// "10.88.0.0/16" (host bits must be zero; prefix 8..30).
Result<Ipv4Net> parse_subnet(std::string_view text);
Result<uint32_t> parse_ipv4(std::string_view text);
std::string format_ipv4(uint32_t ip);

enum class Protocol { tcp, udp };
struct PortMapping {
  uint16_t host_port = 0;
  uint16_t container_port = 0;
  Protocol protocol = Protocol::tcp;
  bool operator==(const PortMapping&) const = default;
};

// The IP allocator (pure; the manager persists what it holds). Hands out addresses of the
// subnet except the network, the gateway (first host) and the broadcast address, starting after
// the last one handed out so that a freed address is not reused at once.
class Ipam {
 public:
  explicit Ipam(Ipv4Net subnet);
  uint32_t gateway() const { return subnet_.address + 1; }
  const Ipv4Net& subnet() const { return subnet_; }
  // ENOSPC when every address is leased.
  Result<uint32_t> allocate(const std::string& owner);
  // Records an existing lease (recovery); EEXIST when the address is someone else's.
  Result<void> claim(uint32_t ip, const std::string& owner);
  void release(uint32_t ip);
  size_t leased() const { return leases_.size(); }
  uint32_t last() const { return last_; }
  void set_last(uint32_t ip) { last_ = ip; }

 private:
  Ipv4Net subnet_;
  std::map<uint32_t, std::string> leases_;
  uint32_t last_ = 0;
};

struct NetworkConfig {
  std::string bridge = "corral0";  // 1-15 of [a-z0-9_-]
  std::string subnet = "10.88.0.0/16";
  uint32_t mtu = 1500;              // 576..65535
  std::filesystem::path state_dir;  // network.json (leases); required
  std::filesystem::path netns_dir = "/run/corral/netns";
  std::vector<std::string> nameservers;  // empty: the host's non-loopback ones
  std::vector<std::string> search;       // resolv.conf search domains
  bool ip_forward = true;                // set net.ipv4.ip_forward=1 (in the manager's namespace)
  bool masquerade = true;  // SNAT the subnet's traffic leaving through other interfaces
  // CNI (docs/network.md): network configs <cni_config_dir>/*.conflist, plugins found only in
  // cni_plugin_dirs, each run with at most cni_timeout.
  std::filesystem::path cni_config_dir = "/etc/corral/cni";
  std::vector<std::filesystem::path> cni_plugin_dirs = {"/usr/lib/cni"};
  int cni_timeout_ms = 60'000;
};

struct NetworkRequest {
  std::string container_id;  // [A-Za-z0-9._-], 1-200
  std::string hostname = "corral";
  std::vector<PortMapping> ports;
  // Host ports the task holds (its `ports` resources, inclusive ranges): every mapping's
  // host_port must lie in one of them.
  std::vector<std::pair<uint64_t, uint64_t>> allowed_host_ports;
  bool egress = true;  // false: packets from the task to anything beyond the bridge are dropped
  // Non-empty: join this CNI network (<cni_config_dir>/*.conflist) instead of the bridge. No
  // port mappings (the network's own portmap plugin does that) and egress must stay allowed.
  std::string cni_network;
};

// One task's bridge network: what the sandbox needs and what recovery reads back.
struct Attachment {
  std::string container_id;
  std::string netns_path;
  uint32_t address = 0;
  uint32_t gateway = 0;
  uint8_t prefix = 0;
  std::string host_veth;
  std::vector<PortMapping> ports;
  bool egress = true;
  std::string hostname;
  std::filesystem::path etc_dir;  // hosts, resolv.conf, hostname (bind them into /etc)
  // CNI attachments (host_veth empty): the network, its conflist as used at ADD (DEL gets the
  // same), and the plugins' result (null until ADD finished).
  std::string cni_network;
  nlohmann::json cni_conflist;
  nlohmann::json cni_result;
};
nlohmann::json to_json(const Attachment& a);
Result<Attachment> attachment_from_json(const nlohmann::json& j);

// Checks a request against the config and the offer (pure, for tests): container id, hostname,
// ports in range, inside the offer, no host port twice.
Result<void> validate_request(const NetworkRequest& request);

struct ReconcileReport {
  std::vector<std::string> removed_leases;  // container ids
  size_t removed_links = 0;
  size_t removed_netns = 0;
};

class NetworkManager {
 public:
  // Validates the config, refuses a subnet that overlaps a route of another interface (naming
  // it), creates the bridge (or takes over an existing one with that name), (re)creates Corral's
  // nftables table with the mappings of the persisted leases, loads the leases.
  static Result<std::unique_ptr<NetworkManager>> open(NetworkConfig config);
  virtual ~NetworkManager() = default;

  // Builds the task's network. On error nothing of it is left (veth, lease, rules, netns file).
  // etc_dir: an existing directory of the agent where hosts/resolv.conf/hostname are written.
  virtual Result<Attachment> attach(const NetworkRequest& request,
                                    const std::filesystem::path& etc_dir) = 0;
  // Removes everything of the task's network; a container without one is OK.
  virtual Result<void> detach(const std::string& container_id) = 0;
  // Keeps the networks of `live` container ids, removes every other lease, `cv*` veth on the
  // bridge, netns file and port mapping.
  virtual Result<ReconcileReport> reconcile(const std::set<std::string>& live) = 0;
  // Checks that the task's network is still there: CNI CHECK through the network's plugins, or
  // the bridge task's veth.
  virtual Result<void> check(const std::string& container_id) = 0;
  virtual std::optional<Attachment> find(const std::string& container_id) const = 0;
  virtual std::vector<Attachment> attachments() const = 0;
  virtual const NetworkConfig& config() const = 0;
};

}  // namespace corral::network
