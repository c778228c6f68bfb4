#include "corral/network/network.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"
#include "corral/network/cni.hpp"

namespace corral::network {
namespace fs = std::filesystem;

// ---- pure parts ------------------------------------------------------------------------------

Result<Mode> parse_mode(std::string_view text) {
  if (text == "host") return Mode::host;
  if (text == "none") return Mode::none;
  if (text == "bridge") return Mode::bridge;
  return Error(EINVAL,
               "network mode \"" + std::string(text) + "\" is not one of host, none, bridge");
}

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::host:
      return "host";
    case Mode::none:
      return "none";
    case Mode::bridge:
      return "bridge";
  }
  return "?";
}

bool Ipv4Net::overlaps(const Ipv4Net& other) const {
  const uint32_t m = prefix < other.prefix ? mask() : other.mask();
  return (address & m) == (other.address & m);
}

Result<uint32_t> parse_ipv4(std::string_view text) {
  in_addr a{};
  const std::string s(text);
  if (s.size() > 15 || ::inet_pton(AF_INET, s.c_str(), &a) != 1)
    return Error(EINVAL, "\"" + s + "\" is not an IPv4 address (like 10.88.0.1)");
  return ntohl(a.s_addr);
}

std::string format_ipv4(uint32_t ip) {
  in_addr a{htonl(ip)};
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

Result<Ipv4Net> parse_subnet(std::string_view text) {
  auto slash = text.find('/');
  const std::string what = "subnet \"" + std::string(text) + "\"";
  if (slash == std::string_view::npos)
    return Error(EINVAL, what + " needs a prefix length, like 10.88.0.0/16");
  auto ip = parse_ipv4(text.substr(0, slash));
  if (!ip) return Error(EINVAL, what + ": " + ip.error().message());
  const std::string p(text.substr(slash + 1));
  if (p.empty() || p.size() > 2 || p.find_first_not_of("0123456789") != std::string::npos)
    return Error(EINVAL, what + ": prefix length must be a number from 8 to 30");
  int prefix = std::stoi(p);
  if (prefix < 8 || prefix > 30)
    return Error(EINVAL, what + ": prefix length must be from 8 to 30");
  Ipv4Net n{*ip, static_cast<uint8_t>(prefix)};
  if ((n.address & ~n.mask()) != 0)
    return Error(EINVAL,
                 what + " has host bits set; use " + format_ipv4(n.address & n.mask()) + "/" + p);
  return n;
}

Ipam::Ipam(Ipv4Net subnet) : subnet_(subnet), last_(subnet.address + 1) {}

Result<uint32_t> Ipam::allocate(const std::string& owner) {
  const uint32_t first = subnet_.address + 2;              // .0 network, .1 gateway
  const uint32_t end = subnet_.address + ~subnet_.mask();  // broadcast, excluded
  const uint32_t count = end - first;
  uint32_t ip = last_;
  for (uint32_t i = 0; i < count; ++i) {
    ++ip;
    if (ip < first || ip >= end) ip = first;
    if (!leases_.count(ip)) {
      leases_[ip] = owner;
      last_ = ip;
      return ip;
    }
  }
  return Error(ENOSPC, "every address of subnet " + format_ipv4(subnet_.address) + "/" +
                           std::to_string(subnet_.prefix) +
                           " is leased; choose a larger [network] subnet");
}

Result<void> Ipam::claim(uint32_t ip, const std::string& owner) {
  if (!subnet_.contains(ip) || ip == gateway() || ip == subnet_.address ||
      ip == subnet_.address + ~subnet_.mask())
    return Error(EINVAL, "address " + format_ipv4(ip) + " is not a task address of the subnet");
  auto it = leases_.find(ip);
  if (it != leases_.end() && it->second != owner)
    return Error(EEXIST, "address " + format_ipv4(ip) + " is leased to " + it->second);
  leases_[ip] = owner;
  return {};
}

void Ipam::release(uint32_t ip) { leases_.erase(ip); }

namespace {

bool valid_container_id(const std::string& id) {
  return !id.empty() && id.size() <= 200 && id != "." && id != ".." &&
         id.find_first_not_of(
             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
             std::string::npos;
}

bool valid_hostname(const std::string& h) {
  return !h.empty() && h.size() <= 63 &&
         h.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") ==
             std::string::npos;
}

const char* protocol_name(Protocol p) { return p == Protocol::udp ? "udp" : "tcp"; }

}  // namespace

Result<void> validate_request(const NetworkRequest& r) {
  if (!valid_container_id(r.container_id))
    return Error(EINVAL,
                 "container id \"" + r.container_id + "\" is invalid: use 1-200 of [A-Za-z0-9._-]");
  if (!valid_hostname(r.hostname))
    return Error(EINVAL, "hostname \"" + r.hostname +
                             "\" is invalid: use 1-63 letters, digits, '-' and '.'");
  std::set<std::pair<Protocol, uint16_t>> seen;
  for (const auto& p : r.ports) {
    const std::string what = "port mapping " + std::string(protocol_name(p.protocol)) + " " +
                             std::to_string(p.host_port) + " -> " +
                             std::to_string(p.container_port);
    if (p.host_port == 0 || p.container_port == 0)
      return Error(EINVAL, what + ": ports must be 1-65535");
    bool offered = false;
    for (const auto& [lo, hi] : r.allowed_host_ports)
      offered |= p.host_port >= lo && p.host_port <= hi;
    if (!offered) {
      std::string ranges;
      for (const auto& [lo, hi] : r.allowed_host_ports)
        ranges += (ranges.empty() ? "" : ", ") + std::to_string(lo) + "-" + std::to_string(hi);
      return Error(EPERM, what + ": host port " + std::to_string(p.host_port) +
                              " is not among the task's ports resources (" +
                              (ranges.empty() ? std::string("none") : ranges) +
                              "); launch the task with that port from the offer");
    }
    if (!seen.insert({p.protocol, p.host_port}).second)
      return Error(EINVAL, what + ": host port " + std::to_string(p.host_port) + "/" +
                               protocol_name(p.protocol) + " is mapped twice");
  }
  return {};
}

nlohmann::json to_json(const Attachment& a) {
  nlohmann::json ports = nlohmann::json::array();
  for (const auto& p : a.ports)
    ports.push_back({{"host_port", p.host_port},
                     {"container_port", p.container_port},
                     {"protocol", protocol_name(p.protocol)}});
  nlohmann::json j = {{"container_id", a.container_id},
                      {"netns_path", a.netns_path},
                      {"address", format_ipv4(a.address)},
                      {"gateway", format_ipv4(a.gateway)},
                      {"prefix", a.prefix},
                      {"host_veth", a.host_veth},
                      {"ports", ports},
                      {"egress", a.egress},
                      {"hostname", a.hostname},
                      {"etc_dir", a.etc_dir.string()}};
  if (!a.cni_network.empty()) {
    j["cni_network"] = a.cni_network;
    j["cni_conflist"] = a.cni_conflist;
    j["cni_result"] = a.cni_result;
  }
  return j;
}

Result<Attachment> attachment_from_json(const nlohmann::json& j) {
  Attachment a;
  try {
    a.container_id = j.at("container_id").get<std::string>();
    a.netns_path = j.at("netns_path").get<std::string>();
    CORRAL_ASSIGN_OR_RETURN(a.address, parse_ipv4(j.at("address").get<std::string>()));
    CORRAL_ASSIGN_OR_RETURN(a.gateway, parse_ipv4(j.at("gateway").get<std::string>()));
    a.prefix = j.at("prefix").get<uint8_t>();
    a.host_veth = j.at("host_veth").get<std::string>();
    for (const auto& p : j.at("ports")) {
      PortMapping m;
      m.host_port = p.at("host_port").get<uint16_t>();
      m.container_port = p.at("container_port").get<uint16_t>();
      m.protocol = p.at("protocol").get<std::string>() == "udp" ? Protocol::udp : Protocol::tcp;
      a.ports.push_back(m);
    }
    a.egress = j.value("egress", true);
    a.hostname = j.value("hostname", "");
    a.etc_dir = j.value("etc_dir", "");
    a.cni_network = j.value("cni_network", "");
    if (j.contains("cni_conflist")) a.cni_conflist = j["cni_conflist"];
    if (j.contains("cni_result")) a.cni_result = j["cni_result"];
  } catch (const std::exception& e) {
    return Error(EINVAL, std::string("network lease: ") + e.what());
  }
  if (!a.cni_network.empty()) {
    // A CNI attachment: no veth of ours; the conflist must be one (its plugins are resolved
    // again, inside the plugin dirs, when DEL runs).
    if (!valid_container_id(a.container_id) || !a.host_veth.empty() ||
        !cni::valid_network_name(a.cni_network) || !a.cni_conflist.is_object())
      return Error(EINVAL, "network lease of \"" + a.container_id + "\" is malformed");
    return a;
  }
  if (!valid_container_id(a.container_id) || a.host_veth.size() > 15 || a.host_veth.size() < 3 ||
      a.host_veth.rfind("cv", 0) != 0)
    return Error(EINVAL, "network lease of \"" + a.container_id + "\" is malformed");
  return a;
}

// ---- netlink ---------------------------------------------------------------------------------

namespace {

struct NlDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
  void operator()(nl_addr* a) const { nl_addr_put(a); }
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
template <typename T>
using NlPtr = std::unique_ptr<T, NlDeleter>;

int errno_of(int nlerr) {
  switch (-nlerr < 0 ? nlerr : -nlerr) {
    case NLE_EXIST:
      return EEXIST;
    case NLE_OBJ_NOTFOUND:
    case NLE_NODEV:
      return ENODEV;
    case NLE_PERM:
      return EPERM;
    case NLE_BUSY:
      return EBUSY;
    case NLE_NOMEM:
      return ENOMEM;
    default:
      return EIO;
  }
}

Error nl_error(int nlerr, const std::string& what) {
  return Error(errno_of(nlerr), what + ": " + nl_geterror(nlerr));
}

Result<NlPtr<nl_sock>> route_socket() {
  NlPtr<nl_sock> sk(nl_socket_alloc());
  if (!sk) return Error(ENOMEM, "nl_socket_alloc");
  if (int e = nl_connect(sk.get(), NETLINK_ROUTE); e < 0) return nl_error(e, "netlink connect");
  return sk;
}

NlPtr<nl_addr> make_addr(uint32_t ip, int prefix) {
  uint32_t be = htonl(ip);
  NlPtr<nl_addr> a(nl_addr_build(AF_INET, &be, 4));
  if (a) nl_addr_set_prefixlen(a.get(), prefix);
  return a;
}

Result<int> link_index(nl_sock* sk, const std::string& name) {
  rtnl_link* raw = nullptr;
  if (int e = rtnl_link_get_kernel(sk, 0, name.c_str(), &raw); e < 0)
    return nl_error(e, "interface " + name);
  NlPtr<rtnl_link> link(raw);
  return rtnl_link_get_ifindex(link.get());
}

Result<void> set_up(nl_sock* sk, int ifindex, const std::string& name) {
  NlPtr<rtnl_link> orig(rtnl_link_alloc()), change(rtnl_link_alloc());
  rtnl_link_set_ifindex(orig.get(), ifindex);
  rtnl_link_set_flags(change.get(), IFF_UP);
  if (int e = rtnl_link_change(sk, orig.get(), change.get(), 0); e < 0)
    return nl_error(e, "bring up " + name);
  return {};
}

Result<void> add_address(nl_sock* sk, int ifindex, uint32_t ip, int prefix,
                         const std::string& name) {
  NlPtr<rtnl_addr> addr(rtnl_addr_alloc());
  auto local = make_addr(ip, prefix);
  rtnl_addr_set_ifindex(addr.get(), ifindex);
  rtnl_addr_set_family(addr.get(), AF_INET);
  rtnl_addr_set_local(addr.get(), local.get());
  rtnl_addr_set_prefixlen(addr.get(), prefix);
  if (int e = rtnl_addr_add(sk, addr.get(), 0); e < 0 && errno_of(e) != EEXIST)
    return nl_error(e, "add address " + format_ipv4(ip) + " to " + name);
  return {};
}

Result<void> delete_link(nl_sock* sk, const std::string& name) {
  NlPtr<rtnl_link> link(rtnl_link_alloc());
  rtnl_link_set_name(link.get(), name.c_str());
  if (int e = rtnl_link_delete(sk, link.get()); e < 0 && errno_of(e) != ENODEV)
    return nl_error(e, "delete interface " + name);
  return {};
}

// Runs fn on a thread that joined the network namespace at `path` (the caller's own thread
// stays where it is; namespaces are per thread).
Result<void> in_netns(const std::string& path, const std::function<Result<void>()>& fn) {
  Result<void> result;
  std::thread t([&] {
    UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns || ::setns(ns.get(), CLONE_NEWNET) != 0) {
      result = Error::from_errno("join network namespace " + path);
      return;
    }
    result = fn();
  });
  t.join();
  return result;
}

// A new network namespace kept alive by a bind mount of its nsfs file on `path`.
Result<void> create_netns(const std::string& path) {
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
  if (!f) return Error::from_errno("create " + path);
  f.reset();
  Result<void> result;
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      result = Error::from_errno("unshare a network namespace");
      return;
    }
    if (::mount("/proc/thread-self/ns/net", path.c_str(), nullptr, MS_BIND, nullptr) != 0)
      result = Error::from_errno("bind the network namespace on " + path);
  });
  t.join();
  if (!result) ::unlink(path.c_str());
  return result;
}

void remove_netns(const std::string& path) {
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    log::warning("network: umount " + path + ": " + std::strerror(errno));
  ::unlink(path.c_str());
}

// ---- nftables --------------------------------------------------------------------------------

class Nft {
 public:
  Nft() : ctx_(nft_ctx_new(NFT_CTX_DEFAULT)) {
    if (ctx_) {
      nft_ctx_buffer_output(ctx_);
      nft_ctx_buffer_error(ctx_);
    }
  }
  ~Nft() {
    if (ctx_) nft_ctx_free(ctx_);
  }
  Nft(const Nft&) = delete;
  Nft& operator=(const Nft&) = delete;

  // `commands` is built by this file from validated integers, formatted addresses and the
  // validated bridge name only: never a user's string.
  Result<void> run(const std::string& commands) {
    if (!ctx_) return Error(ENOMEM, "nft_ctx_new failed");
    if (nft_run_cmd_from_buffer(ctx_, commands.c_str()) != 0) {
      std::string err = nft_ctx_get_error_buffer(ctx_);
      while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
      return Error(EIO, "nftables: " + err);
    }
    return {};
  }

 private:
  nft_ctx* ctx_;
};

std::string port_elements(const Attachment& a) {
  std::string out;
  for (const auto& p : a.ports) {
    out += (out.empty() ? "" : ", ") + std::string(protocol_name(p.protocol)) + " . " +
           std::to_string(p.host_port) + " : " + format_ipv4(a.address) + " . " +
           std::to_string(p.container_port);
  }
  return out;
}

std::string port_keys(const Attachment& a) {
  std::string out;
  for (const auto& p : a.ports)
    out += (out.empty() ? "" : ", ") + std::string(protocol_name(p.protocol)) + " . " +
           std::to_string(p.host_port);
  return out;
}

std::string add_rules(const Attachment& a) {
  std::string cmd;
  if (!a.ports.empty()) cmd += "add element ip corral portmap { " + port_elements(a) + " }\n";
  if (!a.egress) cmd += "add element ip corral noegress { " + format_ipv4(a.address) + " }\n";
  return cmd;
}

std::string delete_rules(const Attachment& a) {
  std::string cmd;
  if (!a.ports.empty()) cmd += "delete element ip corral portmap { " + port_keys(a) + " }\n";
  if (!a.egress) cmd += "delete element ip corral noegress { " + format_ipv4(a.address) + " }\n";
  return cmd;
}

// ---- the manager -----------------------------------------------------------------------------

class NetworkManagerImpl final : public NetworkManager {
 public:
  NetworkManagerImpl(NetworkConfig config, Ipv4Net subnet)
      : config_(std::move(config)), ipam_(subnet) {}

  Result<void> init() {
    CORRAL_ASSIGN_OR_RETURN(sk_, route_socket());
    std::error_code ec;
    fs::create_directories(config_.state_dir, ec);
    if (ec) return Error(ec.value(), "create " + config_.state_dir.string() + ": " + ec.message());
    fs::create_directories(config_.netns_dir, ec);
    if (ec) return Error(ec.value(), "create " + config_.netns_dir.string() + ": " + ec.message());
    CORRAL_TRY(load());
    CORRAL_TRY(save());
    auto bridge = link_index(sk_.get(), config_.bridge);
    CORRAL_TRY(check_overlap(bridge ? *bridge : -1));
    CORRAL_TRY(ensure_bridge());
    if (config_.ip_forward) {
      if (auto w = write_file_atomic_nosync("/proc/sys/net/ipv4/ip_forward", "1\n", false); !w)
        return w.error().context("enable IPv4 forwarding");
    }
    return rebuild_table();
  }

  Result<Attachment> attach(const NetworkRequest& request, const fs::path& etc_dir) override {
    CORRAL_TRY(validate_request(request));
    std::lock_guard lock(mu_);
    if (attachments_.count(request.container_id))
      return Error(EEXIST, "container " + request.container_id + " has a network already");
    if (!request.cni_network.empty()) return attach_cni(request, etc_dir);
    for (const auto& p : request.ports) {
      for (const auto& [id, other] : attachments_) {
        for (const auto& q : other.ports) {
          if (q.host_port == p.host_port && q.protocol == p.protocol)
            return Error(EADDRINUSE, "host port " + std::to_string(p.host_port) + "/" +
                                         protocol_name(p.protocol) + " is mapped to container " +
                                         id + " already");
        }
      }
    }
    Attachment a;
    a.container_id = request.container_id;
    a.netns_path = (config_.netns_dir / request.container_id).string();
    a.gateway = ipam_.gateway();
    a.prefix = ipam_.subnet().prefix;
    a.ports = request.ports;
    a.egress = request.egress;
    a.hostname = request.hostname;
    a.etc_dir = etc_dir;
    CORRAL_ASSIGN_OR_RETURN(a.address, ipam_.allocate(request.container_id));
    char veth[16];
    std::snprintf(veth, sizeof veth, "cv%08x", a.address);
    a.host_veth = veth;

    bool netns_made = false, veth_made = false, rules_made = false;
    auto undo = [&](Error e) -> Error {
      if (rules_made) (void)nft_.run(delete_rules(a));
      if (veth_made) (void)delete_link(sk_.get(), a.host_veth);
      if (netns_made) remove_netns(a.netns_path);
      ipam_.release(a.address);
      return e.context("network of container " + a.container_id);
    };
    if (auto r = create_netns(a.netns_path); !r) return undo(r.error());
    netns_made = true;
    if (auto r = create_veth(a); !r) return undo(r.error());
    veth_made = true;
    if (auto r = configure_inside(a); !r) return undo(r.error());
    if (std::string cmd = add_rules(a); !cmd.empty()) {
      if (auto r = nft_.run(cmd); !r) return undo(r.error());
      rules_made = true;
    }
    if (auto r = write_etc(a); !r) return undo(r.error());
    attachments_[a.container_id] = a;
    if (auto r = save(); !r) {
      attachments_.erase(a.container_id);
      return undo(r.error());
    }
    return a;
  }

  Result<void> detach(const std::string& container_id) override {
    std::lock_guard lock(mu_);
    return detach_locked(container_id);
  }

  Result<ReconcileReport> reconcile(const std::set<std::string>& live) override {
    std::lock_guard lock(mu_);
    ReconcileReport report;
    std::vector<std::string> dead;
    for (const auto& [id, a] : attachments_)
      if (!live.count(id)) dead.push_back(id);
    for (const auto& id : dead) {
      if (auto r = detach_locked(id); !r)
        log::warning("network: removing the network of ended container " + id + ": " +
                     r.error().message());
      report.removed_leases.push_back(id);
    }
    // Veths on our bridge that no lease names (an agent that died between creating and saving).
    std::set<std::string> veths;
    for (const auto& [id, a] : attachments_) veths.insert(a.host_veth);
    auto bridge = link_index(sk_.get(), config_.bridge);
    nl_cache* raw = nullptr;
    if (bridge && rtnl_link_alloc_cache(sk_.get(), AF_UNSPEC, &raw) >= 0) {
      NlPtr<nl_cache> cache(raw);
      std::vector<std::string> stale;
      for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
        auto* link = reinterpret_cast<rtnl_link*>(o);
        const char* name = rtnl_link_get_name(link);
        if (!name || std::strncmp(name, "cv", 2) != 0) continue;
        if (rtnl_link_get_master(link) != *bridge || veths.count(name)) continue;
        stale.emplace_back(name);
      }
      for (const auto& name : stale) {
        if (delete_link(sk_.get(), name)) ++report.removed_links;
      }
    }
    // netns files no lease names.
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(config_.netns_dir, ec)) {
      const std::string id = entry.path().filename().string();
      if (attachments_.count(id)) continue;
      remove_netns(entry.path().string());
      ++report.removed_netns;
    }
    CORRAL_TRY(rebuild_table());
    CORRAL_TRY(save());
    return report;
  }

  std::optional<Attachment> find(const std::string& container_id) const override {
    std::lock_guard lock(mu_);
    auto it = attachments_.find(container_id);
    if (it == attachments_.end()) return std::nullopt;
    return it->second;
  }

  std::vector<Attachment> attachments() const override {
    std::lock_guard lock(mu_);
    std::vector<Attachment> out;
    for (const auto& [id, a] : attachments_) out.push_back(a);
    return out;
  }

  const NetworkConfig& config() const override { return config_; }

 private:
  fs::path state_file() const { return config_.state_dir / "network.json"; }

  // The leases die with the machine's network state (a reboot ends every veth and namespace),
  // so an atomic rename without fsync is enough: a crash of the agent loses nothing.
  static Result<void> write_file_atomic_nosync(const fs::path& path, const std::string& data,
                                               bool rename) {
    if (!rename) {
      UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
      if (!fd || ::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()))
        return Error::from_errno("write " + path.string());
      return {};
    }
    const std::string tmp = path.string() + ".tmp";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd || ::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()))
      return Error::from_errno("write " + tmp);
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) != 0) return Error::from_errno("rename " + tmp);
    return {};
  }

  Result<void> save() {
    nlohmann::json leases = nlohmann::json::array();
    for (const auto& [id, a] : attachments_) leases.push_back(to_json(a));
    nlohmann::json j = {
        {"subnet", config_.subnet}, {"last", format_ipv4(ipam_.last())}, {"leases", leases}};
    return write_file_atomic_nosync(state_file(), j.dump() + "\n", true);
  }

  Result<void> load() {
    if (!fs::exists(state_file())) return {};
    CORRAL_ASSIGN_OR_RETURN(std::string text, read_file(state_file(), 64 << 20));
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("leases") || !j["leases"].is_array())
      return Error(EINVAL, state_file().string() +
                               " is not a network lease file; move it away to start afresh");
    if (j.value("subnet", "") != config_.subnet) {
      log::warning("network: the subnet changed from " + j.value("subnet", "?") + " to " +
                   config_.subnet + "; leases of the old subnet are dropped");
    }
    for (const auto& l : j["leases"]) {
      auto a = attachment_from_json(l);
      if (!a) {
        log::warning("network: skipping a lease in " + state_file().string() + ": " +
                     a.error().message());
        continue;
      }
      if (!a->cni_network.empty()) {
        attachments_[a->container_id] = *a;
        continue;
      }
      if (!ipam_.claim(a->address, a->container_id)) {
        // Not of this subnet (or a duplicate): its veth and netns are removed by reconcile().
        continue;
      }
      attachments_[a->container_id] = *a;
    }
    if (auto last = parse_ipv4(j.value("last", "")); last && ipam_.subnet().contains(*last))
      ipam_.set_last(*last);
    return {};
  }

  Result<void> check_overlap(int bridge_index) {
    nl_cache* raw = nullptr;
    if (int e = rtnl_route_alloc_cache(sk_.get(), AF_INET, 0, &raw); e < 0)
      return nl_error(e, "list routes");
    NlPtr<nl_cache> cache(raw);
    for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
      auto* route = reinterpret_cast<rtnl_route*>(o);
      if (rtnl_route_get_table(route) != RT_TABLE_MAIN) continue;
      nl_addr* dst = rtnl_route_get_dst(route);
      if (!dst || nl_addr_get_family(dst) != AF_INET) continue;
      const int prefix = static_cast<int>(nl_addr_get_prefixlen(dst));
      if (prefix == 0) continue;  // the default route overlaps everything by definition
      uint32_t be = 0;
      std::memcpy(&be, nl_addr_get_binary_addr(dst), 4);
      Ipv4Net net{ntohl(be), static_cast<uint8_t>(prefix)};
      net.address &= net.mask();
      int oif = 0;
      if (rtnl_route_get_nnexthops(route) > 0)
        oif = rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(route, 0));
      if (bridge_index > 0 && oif == bridge_index) continue;
      if (!net.overlaps(ipam_.subnet())) continue;
      char name[IF_NAMESIZE + 1] = "?";
      if (oif > 0) ::if_indextoname(static_cast<unsigned>(oif), name);
      return Error(EADDRINUSE, "[network] subnet " + config_.subnet + " overlaps the route " +
                                   format_ipv4(net.address) + "/" + std::to_string(prefix) +
                                   " of interface " + name +
                                   "; choose a subnet no interface of this host uses");
    }
    return {};
  }

  Result<void> ensure_bridge() {
    auto index = link_index(sk_.get(), config_.bridge);
    if (!index) {
      NlPtr<rtnl_link> link(rtnl_link_alloc());
      rtnl_link_set_name(link.get(), config_.bridge.c_str());
      if (int e = rtnl_link_set_type(link.get(), "bridge"); e < 0)
        return nl_error(e, "bridge link type (is the bridge module available?)");
      rtnl_link_set_mtu(link.get(), config_.mtu);
      if (int e = rtnl_link_add(sk_.get(), link.get(), NLM_F_CREATE); e < 0)
        return nl_error(e, "create bridge " + config_.bridge);
      index = link_index(sk_.get(), config_.bridge);
      if (!index) return index.error();
    } else {
      rtnl_link* raw = nullptr;
      rtnl_link_get_kernel(sk_.get(), *index, nullptr, &raw);
      NlPtr<rtnl_link> link(raw);
      const char* type = link ? rtnl_link_get_type(link.get()) : nullptr;
      if (!type || std::strcmp(type, "bridge") != 0)
        return Error(EEXIST, "interface " + config_.bridge +
                                 " exists and is not a bridge; set [network] bridge to another "
                                 "name");
    }
    bridge_index_ = *index;
    CORRAL_TRY(add_address(sk_.get(), bridge_index_, ipam_.gateway(), ipam_.subnet().prefix,
                           config_.bridge));
    return set_up(sk_.get(), bridge_index_, config_.bridge);
  }

  Result<void> rebuild_table() {
    const std::string subnet =
        format_ipv4(ipam_.subnet().address) + "/" + std::to_string(ipam_.subnet().prefix);
    const std::string& br = config_.bridge;  // validated: [a-z0-9_-]{1,15}
    std::string cmd =
        "add table ip corral\n"
        "delete table ip corral\n"
        "table ip corral {\n"
        "  map portmap { type inet_proto . inet_service : ipv4_addr . inet_service ; }\n"
        "  set noegress { type ipv4_addr ; }\n"
        "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;\n"
        "    fib daddr type local dnat ip addr . port to meta l4proto . th dport map @portmap; }\n"
        "  chain output { type nat hook output priority -100; policy accept;\n"
        "    fib daddr type local dnat ip addr . port to meta l4proto . th dport map @portmap; }\n"
        "  chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n";
    if (config_.masquerade)
      cmd += "    ip saddr " + subnet + " oifname != \"" + br + "\" masquerade;\n";
    cmd +=
        "  }\n"
        "  chain forward { type filter hook forward priority filter; policy accept;\n"
        "    iifname \"" +
        br + "\" oifname != \"" + br +
        "\" ip saddr @noegress drop; }\n"
        "}\n";
    for (const auto& [id, a] : attachments_) cmd += add_rules(a);
    if (auto r = nft_.run(cmd); !r)
      return r.error().context("Corral's nftables table (is nf_tables available?)");
    return {};
  }

  Result<void> create_veth(const Attachment& a) {
    NlPtr<rtnl_link> link(rtnl_link_veth_alloc());
    if (!link) return Error(ENOMEM, "rtnl_link_veth_alloc");
    NlPtr<rtnl_link> peer(rtnl_link_veth_get_peer(link.get()));
    UniqueFd ns(::open(a.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) return Error::from_errno("open " + a.netns_path);
    rtnl_link_set_name(link.get(), a.host_veth.c_str());
    rtnl_link_set_mtu(link.get(), config_.mtu);
    rtnl_link_set_master(link.get(), bridge_index_);
    rtnl_link_set_flags(link.get(), IFF_UP);
    rtnl_link_set_name(peer.get(), "eth0");
    rtnl_link_set_mtu(peer.get(), config_.mtu);
    rtnl_link_set_ns_fd(peer.get(), ns.get());
    if (int e = rtnl_link_add(sk_.get(), link.get(), NLM_F_CREATE | NLM_F_EXCL); e < 0)
      return nl_error(e, "create veth " + a.host_veth);
    return {};
  }

  Result<void> configure_inside(const Attachment& a) {
    return in_netns(a.netns_path, [&]() -> Result<void> {
      CORRAL_ASSIGN_OR_RETURN(auto sk, route_socket());
      CORRAL_ASSIGN_OR_RETURN(int lo, link_index(sk.get(), "lo"));
      CORRAL_TRY(set_up(sk.get(), lo, "lo"));
      CORRAL_ASSIGN_OR_RETURN(int eth0, link_index(sk.get(), "eth0"));
      CORRAL_TRY(add_address(sk.get(), eth0, a.address, a.prefix, "eth0"));
      CORRAL_TRY(set_up(sk.get(), eth0, "eth0"));
      NlPtr<rtnl_route> route(rtnl_route_alloc());
      auto dst = make_addr(0, 0);
      rtnl_route_set_family(route.get(), AF_INET);
      rtnl_route_set_dst(route.get(), dst.get());
      rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
      rtnl_nexthop* nh = rtnl_route_nh_alloc();
      auto gw = make_addr(a.gateway, 32);
      rtnl_route_nh_set_ifindex(nh, eth0);
      rtnl_route_nh_set_gateway(nh, gw.get());
      rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh now
      if (int e = rtnl_route_add(sk.get(), route.get(), NLM_F_CREATE); e < 0)
        return nl_error(e, "default route via " + format_ipv4(a.gateway));
      return {};
    });
  }

  std::vector<std::string> nameservers() const {
    std::vector<std::string> out;
    for (const auto& n : config_.nameservers) out.push_back(n);
    if (!out.empty()) return out;
    auto text = read_file("/etc/resolv.conf", 1 << 16);
    if (!text) return out;
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream l(line);
      std::string key, value;
      l >> key >> value;
      if (key != "nameserver") continue;
      in6_addr buf{};
      auto v4 = parse_ipv4(value);
      // Loopback resolvers (systemd-resolved, dnsmasq) are not reachable from the task.
      if (v4 && (*v4 >> 24) != 127) out.push_back(value);
      if (!v4 && ::inet_pton(AF_INET6, value.c_str(), &buf) == 1 && value != "::1")
        out.push_back(value);
    }
    return out;
  }

  Result<void> write_etc(const Attachment& a, const std::vector<std::string>& dns = {}) {
    std::string hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
                        format_ipv4(a.address) + "\t" + a.hostname + "\n";
    std::string resolv = "# written by corral-agent for container " + a.container_id + "\n";
    for (const auto& n : dns.empty() ? nameservers() : dns) resolv += "nameserver " + n + "\n";
    for (const auto& s : config_.search) resolv += "search " + s + "\n";
    CORRAL_TRY(write_file_atomic_nosync(a.etc_dir / "hosts", hosts, true));
    CORRAL_TRY(write_file_atomic_nosync(a.etc_dir / "resolv.conf", resolv, true));
    CORRAL_TRY(write_file_atomic_nosync(a.etc_dir / "hostname", a.hostname + "\n", true));
    return {};
  }

  cni::Options cni_options() const {
    cni::Options o;
    o.config_dir = config_.cni_config_dir;
    o.plugin_dirs = config_.cni_plugin_dirs;
    o.timeout = std::chrono::milliseconds(config_.cni_timeout_ms);
    return o;
  }

  // The task joins a CNI network: its namespace is made here, the network's plugins do the
  // rest. The attachment is recorded before ADD runs, so an agent killed during ADD leaves a
  // record that reconcile() DELs.
  Result<Attachment> attach_cni(const NetworkRequest& request, const fs::path& etc_dir) {
    const std::string what = "CNI network " + request.cni_network;
    if (!request.ports.empty())
      return Error(EINVAL, what +
                               ": port mappings are for network bridge; on a CNI network "
                               "add the portmap plugin to the network's conflist instead");
    if (!request.egress)
      return Error(EPERM, what +
                              ": the policy denies egress (network.egress = false), which "
                              "Corral enforces on its bridge only; use network bridge");
    const cni::Options options = cni_options();
    CORRAL_ASSIGN_OR_RETURN(cni::NetworkList net, cni::find_network(request.cni_network, options));
    Attachment a;
    a.container_id = request.container_id;
    a.netns_path = (config_.netns_dir / request.container_id).string();
    a.hostname = request.hostname;
    a.etc_dir = etc_dir;
    a.cni_network = net.name;
    a.cni_conflist = net.conflist;
    CORRAL_TRY(create_netns(a.netns_path));
    // Loopback up: the plugins only make eth0.
    auto lo = in_netns(a.netns_path, [&]() -> Result<void> {
      CORRAL_ASSIGN_OR_RETURN(auto sk, route_socket());
      CORRAL_ASSIGN_OR_RETURN(int index, link_index(sk.get(), "lo"));
      return set_up(sk.get(), index, "lo");
    });
    if (!lo) {
      remove_netns(a.netns_path);
      return lo.error().context(what);
    }
    attachments_[a.container_id] = a;
    auto undo = [&](Error e, bool del) -> Error {
      if (del) (void)cni_del(attachments_[a.container_id]);
      remove_netns(a.netns_path);
      attachments_.erase(a.container_id);
      (void)save();
      return e.context("network of container " + a.container_id);
    };
    if (auto r = save(); !r) return undo(r.error(), false);
    // add() DELs on its own failure.
    auto result = cni::add(net, {a.container_id, a.netns_path, "eth0"}, options);
    if (!result) return undo(result.error(), false);
    a.cni_result = *result;
    attachments_[a.container_id] = a;
    auto addr = cni::address_of(a.cni_result);
    if (!addr) return undo(addr.error().context(what), true);
    a.address = addr->address;
    a.prefix = addr->prefix;
    a.gateway = addr->gateway;
    attachments_[a.container_id] = a;
    if (auto r = write_etc(a, addr->nameservers); !r) return undo(r.error(), true);
    if (auto r = save(); !r) return undo(r.error(), true);
    return a;
  }

  Result<void> cni_del(const Attachment& a) {
    const cni::Options options = cni_options();
    auto net = cni::parse_conflist(a.cni_conflist.dump(),
                                   "the recorded conflist of " + a.cni_network, options);
    if (!net) return net.error().context("CNI DEL of container " + a.container_id);
    return cni::del(*net, {a.container_id, a.netns_path, "eth0"}, a.cni_result, options);
  }

  Result<void> check(const std::string& container_id) override {
    std::lock_guard lock(mu_);
    auto it = attachments_.find(container_id);
    if (it == attachments_.end())
      return Error(ENOENT, "container " + container_id + " has no network of the agent's");
    const Attachment& a = it->second;
    if (a.cni_network.empty()) {
      if (auto l = link_index(sk_.get(), a.host_veth); !l)
        return l.error().context("network of container " + container_id);
      return {};
    }
    const cni::Options options = cni_options();
    CORRAL_ASSIGN_OR_RETURN(
        cni::NetworkList net,
        cni::parse_conflist(a.cni_conflist.dump(), "the recorded conflist of " + a.cni_network,
                            options));
    return cni::check(net, {a.container_id, a.netns_path, "eth0"}, a.cni_result, options);
  }

  Result<void> detach_locked(const std::string& container_id) {
    auto it = attachments_.find(container_id);
    if (it == attachments_.end()) return {};
    Attachment a = it->second;
    Result<void> first;
    if (!a.cni_network.empty()) {
      first = cni_del(a);
      remove_netns(a.netns_path);
      attachments_.erase(it);
      if (auto r = save(); !r && first) first = r.error();
      return first;
    }
    if (std::string cmd = delete_rules(a); !cmd.empty()) {
      if (auto r = nft_.run(cmd); !r) {
        // Elements already gone (a rebuilt table) are fine; anything else is reported.
        if (r.error().message().find("No such file") == std::string::npos) first = r.error();
      }
    }
    if (auto r = delete_link(sk_.get(), a.host_veth); !r && first) first = r.error();
    remove_netns(a.netns_path);
    ipam_.release(a.address);
    attachments_.erase(it);
    if (auto r = save(); !r && first) first = r.error();
    return first;
  }

  NetworkConfig config_;
  Ipam ipam_;
  mutable std::mutex mu_;
  NlPtr<nl_sock> sk_;
  Nft nft_;
  int bridge_index_ = -1;
  std::map<std::string, Attachment> attachments_;
};

}  // namespace

Result<std::unique_ptr<NetworkManager>> NetworkManager::open(NetworkConfig config) {
  if (config.bridge.empty() || config.bridge.size() > 15 ||
      config.bridge.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") !=
          std::string::npos)
    return Error(EINVAL,
                 "[network] bridge \"" + config.bridge + "\" is invalid: use 1-15 of [a-z0-9_-]");
  CORRAL_ASSIGN_OR_RETURN(Ipv4Net subnet, parse_subnet(config.subnet));
  if (config.mtu < 576 || config.mtu > 65535)
    return Error(EINVAL, "[network] mtu " + std::to_string(config.mtu) + " is not in 576-65535");
  if (config.state_dir.empty() || !config.state_dir.is_absolute())
    return Error(EINVAL, "network state_dir must be an absolute path");
  if (!config.netns_dir.is_absolute())
    return Error(EINVAL, "network netns_dir must be an absolute path");
  for (const auto& n : config.nameservers) {
    in6_addr buf{};
    if (!parse_ipv4(n) && ::inet_pton(AF_INET6, n.c_str(), &buf) != 1)
      return Error(EINVAL, "[network] nameserver \"" + n + "\" is not an IP address");
  }
  for (const auto& s : config.search) {
    if (!valid_hostname(s))
      return Error(EINVAL, "[network] search domain \"" + s + "\" is not a domain name");
  }
  auto m = std::make_unique<NetworkManagerImpl>(std::move(config), subnet);
  CORRAL_TRY(m->init());
  return std::unique_ptr<NetworkManager>(std::move(m));
}

}  // namespace corral::network
