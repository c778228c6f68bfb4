#include "corral/network/cni.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "corral/common/fd.hpp"
#include "corral/network/network.hpp"

namespace corral::network::cni {
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxConfBytes = 1 << 20;    // one conflist file
constexpr size_t kMaxOutputBytes = 4 << 20;  // a plugin's stdout / stderr

bool charset(std::string_view s, std::string_view extra, bool upper) {
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    (upper && c >= 'A' && c <= 'Z') || extra.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

struct Output {
  int status = -1;  // exit status, or -1 when killed
  bool timed_out = false;
  std::string out, err;
};

// Executes `path` (no shell) with `env` only, `input` on stdin; collects stdout and stderr.
Result<Output> run_plugin(const fs::path& path, const std::vector<std::string>& env,
                          const std::string& input, std::chrono::milliseconds timeout) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return Error::from_errno("pipe");
  UniqueFd in_r(in[0]), in_w(in[1]);
  if (::pipe2(out, O_CLOEXEC) != 0) return Error::from_errno("pipe");
  UniqueFd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return Error::from_errno("pipe");
  UniqueFd err_r(err[0]), err_w(err[1]);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_r.get(), 0);
  posix_spawn_file_actions_adddup2(&fa, out_w.get(), 1);
  posix_spawn_file_actions_adddup2(&fa, err_w.get(), 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr,
                           static_cast<short>(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const std::string p = path.string();
  char* argv[] = {const_cast<char*>(p.c_str()), nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, p.c_str(), &fa, &attr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Error(rc, "execute " + p + ": " + std::strerror(rc));
  in_r.reset();
  out_w.reset();
  err_w.reset();
  ::fcntl(in_w.get(), F_SETFL, O_NONBLOCK);

  Output o;
  size_t written = 0;
  if (input.empty()) in_w.reset();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out_r || err_r) {
    pollfd fds[3];
    int n = 0;
    int i_in = -1, i_out = -1, i_err = -1;
    if (in_w) fds[i_in = n++] = {in_w.get(), POLLOUT, 0};
    if (out_r) fds[i_out = n++] = {out_r.get(), POLLIN, 0};
    if (err_r) fds[i_err = n++] = {err_r.get(), POLLIN, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      o.timed_out = true;
      break;
    }
    int r = ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      o.timed_out = true;  // cannot watch it any more: stop it like a hung plugin
      break;
    }
    if (i_in >= 0 && fds[i_in].revents) {
      ssize_t w = ::write(in_w.get(), input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if (w < 0 && errno != EAGAIN) in_w.reset();
      if (written == input.size()) in_w.reset();
    }
    auto drain = [&](int idx, UniqueFd& fd, std::string& into) {
      if (idx < 0 || !fds[idx].revents) return;
      char buf[16384];
      ssize_t got = ::read(fd.get(), buf, sizeof buf);
      if (got > 0 && into.size() < kMaxOutputBytes) {
        into.append(buf, static_cast<size_t>(got));
      } else if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) {
        fd.reset();
      }
    };
    drain(i_out, out_r, o.out);
    drain(i_err, err_r, o.err);
  }
  if (o.timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  o.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

std::string trimmed(std::string s, size_t max = 2000) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

std::string plugin_dirs_text(const Options& options) {
  std::string out;
  for (const auto& d : options.plugin_dirs) out += (out.empty() ? "" : ":") + d.string();
  return out;
}

// One plugin invocation; `plugin` is an element of the list's "plugins" array.
Result<nlohmann::json> invoke(const NetworkList& net, const nlohmann::json& plugin,
                              const char* command, const Invocation& inv,
                              const nlohmann::json& prev_result, const Options& options) {
  const std::string type = plugin.at("type").get<std::string>();
  CORRAL_ASSIGN_OR_RETURN(fs::path path, find_plugin(type, options));
  nlohmann::json conf = plugin;
  conf["name"] = net.name;
  conf["cniVersion"] = net.cni_version;
  if (!prev_result.is_null()) conf["prevResult"] = prev_result;
  std::vector<std::string> env = {
      std::string("CNI_COMMAND=") + command,
      "CNI_CONTAINERID=" + inv.container_id,
      "CNI_NETNS=" + inv.netns,
      "CNI_IFNAME=" + inv.ifname,
      "CNI_PATH=" + plugin_dirs_text(options),
      // Plugins such as bridge (ipMasq) and portmap run iptables from PATH.
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  };
  const std::string what = std::string("CNI plugin ") + type + " " + command + " (network " +
                           net.name + ", container " + inv.container_id + ")";
  auto o = run_plugin(path, env, conf.dump(), options.timeout);
  if (!o) return o.error().context(what);
  if (o->timed_out)
    return Error(ETIMEDOUT, what + " did not finish within " +
                                std::to_string(options.timeout.count()) + " ms; it was killed");
  if (o->status != 0) {
    // Spec: an error is {"code": N, "msg": "...", "details": "..."} on stdout.
    auto j = nlohmann::json::parse(o->out, nullptr, false);
    std::string msg;
    if (j.is_object() && j.contains("msg") && j["msg"].is_string()) {
      msg = j["msg"].get<std::string>();
      if (j.contains("details") && j["details"].is_string() &&
          !j["details"].get<std::string>().empty())
        msg += " (" + j["details"].get<std::string>() + ")";
    } else {
      msg = trimmed(o->out + o->err);
    }
    return Error(EIO, what + " failed" +
                          (o->status >= 0 ? " with status " + std::to_string(o->status) : "") +
                          ": " + (msg.empty() ? std::string("no message") : msg));
  }
  if (std::strcmp(command, "ADD") != 0) return nlohmann::json();
  auto j = nlohmann::json::parse(o->out, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Error(EPROTO, what + " printed no JSON result: " + trimmed(o->out));
  return j;
}

}  // namespace

bool valid_network_name(std::string_view name) {
  return !name.empty() && name.size() <= 64 && name.front() != '.' && charset(name, "._-", false);
}

bool valid_plugin_type(std::string_view type) {
  return !type.empty() && type.size() <= 64 && type != "." && type != ".." &&
         charset(type, "._-", true);
}

Result<fs::path> find_plugin(const std::string& type, const Options& options) {
  if (!valid_plugin_type(type))
    return Error(EINVAL, "CNI plugin type \"" + type +
                             "\" is not a plugin name (1-64 of A-Z a-z 0-9 . _ -)");
  for (const auto& dir : options.plugin_dirs) {
    fs::path p = dir / type;
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0) return p;
  }
  return Error(ENOENT, "CNI plugin \"" + type + "\" is not in " + plugin_dirs_text(options) +
                           " (install containernetworking-plugins, or fix the plugin's \"type\")");
}

Result<NetworkList> parse_conflist(std::string_view text, const std::string& origin,
                                   const Options& options) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Error(EINVAL, origin + " is not a JSON object (a CNI network configuration list)");
  NetworkList n;
  n.origin = origin;
  if (!j.contains("name") || !j["name"].is_string() ||
      !valid_network_name(j["name"].get<std::string>()))
    return Error(EINVAL, origin + ": \"name\" must be a network name of 1-64 [a-z0-9._-]");
  n.name = j["name"].get<std::string>();
  if (!j.contains("cniVersion") || !j["cniVersion"].is_string())
    return Error(EINVAL, origin + ": \"cniVersion\" is missing (e.g. \"1.0.0\")");
  n.cni_version = j["cniVersion"].get<std::string>();
  if (!j.contains("plugins") || !j["plugins"].is_array() || j["plugins"].empty())
    return Error(EINVAL, origin +
                             ": \"plugins\" must be a non-empty array (a .conflist; a "
                             "single-plugin .conf goes inside \"plugins\": [...])");
  for (const auto& p : j["plugins"]) {
    if (!p.is_object() || !p.contains("type") || !p["type"].is_string())
      return Error(EINVAL, origin + ": every plugin needs a \"type\" string");
    if (auto f = find_plugin(p["type"].get<std::string>(), options); !f)
      return f.error().context(origin + " (network " + n.name + ")");
  }
  n.conflist = std::move(j);
  return n;
}

Result<NetworkList> find_network(const std::string& name, const Options& options) {
  if (!valid_network_name(name))
    return Error(EINVAL, "\"" + name + "\" is not a CNI network name (1-64 of [a-z0-9._-])");
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options.config_dir, ec)) {
    if (e.path().extension() == ".conflist") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::string known, problems;
  for (const auto& f : files) {
    auto text = read_file(f, kMaxConfBytes);
    if (!text) {
      problems += "; " + text.error().message();
      continue;
    }
    // Cheap pre-check of the name so that one broken file does not hide another's network.
    auto j = nlohmann::json::parse(*text, nullptr, false);
    std::string n = j.is_object() && j.contains("name") && j["name"].is_string()
                        ? j["name"].get<std::string>()
                        : "";
    if (n != name) {
      if (!n.empty()) known += (known.empty() ? "" : ", ") + n;
      continue;
    }
    return parse_conflist(*text, f.string(), options);
  }
  return Error(ENOENT,
               "unknown CNI network \"" + name + "\": " + options.config_dir.string() +
                   (known.empty() ? " has no *.conflist network" : " has the networks " + known) +
                   problems + " (add " + name +
                   ".conflist there, or use host, none or "
                   "bridge)");
}

Result<nlohmann::json> add(const NetworkList& net, const Invocation& inv, const Options& options) {
  nlohmann::json result;
  const auto& plugins = net.conflist.at("plugins");
  for (const auto& p : plugins) {
    auto r = invoke(net, p, "ADD", inv, result, options);
    if (!r) {
      // Undo what the earlier plugins (and this one, partly) did.
      (void)del(net, inv, result, options);
      return r.error();
    }
    result = std::move(*r);
  }
  return result;
}

Result<void> del(const NetworkList& net, const Invocation& inv, const nlohmann::json& result,
                 const Options& options) {
  Result<void> first;
  const auto& plugins = net.conflist.at("plugins");
  for (auto it = plugins.rbegin(); it != plugins.rend(); ++it) {
    auto r = invoke(net, *it, "DEL", inv, result, options);
    if (!r && first) first = r.error();
  }
  return first;
}

Result<void> check(const NetworkList& net, const Invocation& inv, const nlohmann::json& result,
                   const Options& options) {
  for (const auto& p : net.conflist.at("plugins")) {
    auto r = invoke(net, p, "CHECK", inv, result, options);
    if (!r) return r.error();
  }
  return {};
}

Result<ResultAddress> address_of(const nlohmann::json& result) {
  ResultAddress out;
  if (!result.is_object() || !result.contains("ips") || !result["ips"].is_array())
    return Error(EPROTO, "the CNI result has no \"ips\" (does the network have an ipam plugin?)");
  for (const auto& ip : result["ips"]) {
    if (!ip.is_object() || !ip.contains("address") || !ip["address"].is_string()) continue;
    const std::string a = ip["address"].get<std::string>();
    auto slash = a.find('/');
    if (slash == std::string::npos) continue;
    auto addr = parse_ipv4(a.substr(0, slash));
    if (!addr) continue;  // IPv6
    int prefix = -1;
    try {
      prefix = std::stoi(a.substr(slash + 1));
    } catch (const std::exception&) {
    }
    if (prefix < 0 || prefix > 32) continue;
    out.address = *addr;
    out.prefix = static_cast<uint8_t>(prefix);
    if (ip.contains("gateway") && ip["gateway"].is_string()) {
      if (auto gw = parse_ipv4(ip["gateway"].get<std::string>()); gw) out.gateway = *gw;
    }
    break;
  }
  if (out.address == 0) return Error(EPROTO, "the CNI result has no IPv4 address");
  if (result.contains("dns") && result["dns"].is_object() &&
      result["dns"].contains("nameservers") && result["dns"]["nameservers"].is_array()) {
    for (const auto& n : result["dns"]["nameservers"])
      if (n.is_string()) out.nameservers.push_back(n.get<std::string>());
  }
  return out;
}

}  // namespace corral::network::cni
