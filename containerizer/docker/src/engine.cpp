#include "corral/docker/engine.hpp"

#include <openssl/evp.h>

#include <charconv>
#include <fstream>
#include <sstream>

#include "corral/common/http_client.hpp"

namespace corral::docker {

namespace {

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

Result<std::string> unbase64(std::string_view in) {
  std::string s(in);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.size() % 4 != 0) return Error(EINVAL, "not base64 (length is not a multiple of 4)");
  std::string out(3 * s.size() / 4 + 1, '\0');
  int n =
      EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return Error(EINVAL, "not base64");
  std::size_t pad = 0;
  if (!s.empty() && s.back() == '=') ++pad;
  if (s.size() > 1 && s[s.size() - 2] == '=') ++pad;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

bool is_transport_gone(int code) {
  return code == ENOENT || code == ECONNREFUSED || code == ECONNRESET || code == EPIPE ||
         code == ENOTCONN;
}

}  // namespace

std::string url_encode(std::string_view text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// ---------------------------------------------------------------- image references

std::string ImageRef::full() const {
  return digest.empty() ? name + ":" + tag : name + "@" + digest;
}

Result<ImageRef> parse_image_ref(std::string_view reference) {
  const std::string ref(reference);
  auto bad = [&](const std::string& why) {
    return Error(EINVAL, "image reference \"" + ref + "\" is not valid: " + why +
                             " (expected [REGISTRY[:PORT]/]REPOSITORY[:TAG|@DIGEST])");
  };
  if (ref.empty()) return bad("it is empty");
  if (ref.size() > 512) return bad("it is longer than 512 characters");
  for (unsigned char c : ref) {
    if (!(std::isalnum(c) || c == '/' || c == ':' || c == '@' || c == '.' || c == '_' ||
          c == '-')) {
      return bad(std::string("character '") + static_cast<char>(c) + "' is not allowed");
    }
  }
  ImageRef out;
  std::string rest = ref;
  if (auto at = rest.find('@'); at != std::string::npos) {
    out.digest = rest.substr(at + 1);
    rest = rest.substr(0, at);
    if (out.digest.rfind("sha256:", 0) != 0 || out.digest.size() != 7 + 64) {
      return bad("the digest must be sha256: and 64 hex digits");
    }
  }
  const std::size_t slash = rest.rfind('/');
  const std::size_t colon = rest.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    // name:tag@digest: the digest wins when pulling, as in docker.
    out.tag = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    if (out.tag.empty()) return bad("the tag after ':' is empty");
  }
  if (rest.empty() || rest.front() == '/' || rest.back() == '/' ||
      rest.find("//") != std::string::npos) {
    return bad("the repository name is empty or has an empty path component");
  }
  out.name = rest;
  if (out.tag.empty() && out.digest.empty()) out.tag = "latest";
  // The first component is a registry when it has a '.' or ':' or is "localhost".
  const std::size_t first_slash = rest.find('/');
  if (first_slash != std::string::npos) {
    std::string first = rest.substr(0, first_slash);
    if (first.find('.') != std::string::npos || first.find(':') != std::string::npos ||
        first == "localhost") {
      out.registry = first;
    }
  }
  if (out.registry.empty()) out.registry = "docker.io";
  return out;
}

// ---------------------------------------------------------------- registry auth

std::string encode_registry_auth(const RegistryAuth& auth) {
  nlohmann::json j = {
      {"username", auth.username}, {"password", auth.password}, {"serveraddress", auth.server}};
  std::string b = base64(j.dump());
  // base64url, as the Engine API documents for X-Registry-Auth.
  for (char& c : b) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return b;
}

Result<std::optional<RegistryAuth>> registry_auth_from_config(const std::filesystem::path& file,
                                                              const std::string& registry) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  if (ec) {
    return Error(ec.value(), "docker config " + file.string() + ": " + ec.message() +
                                 "; fix [docker] config in the policy or create the file");
  }
  if (size > 1024 * 1024) {
    return Error(EFBIG, "docker config " + file.string() + " is larger than 1 MiB");
  }
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(EINVAL, "docker config " + file.string() + " is not a JSON object");
  }
  if (!j.contains("auths")) return std::optional<RegistryAuth>{};
  if (!j["auths"].is_object()) {
    return Error(EINVAL, "docker config " + file.string() + ": \"auths\" must be an object");
  }
  const nlohmann::json& auths = j["auths"];
  std::vector<std::string> keys = {registry, "https://" + registry, "http://" + registry,
                                   "https://" + registry + "/v1/", "https://" + registry + "/v2/"};
  if (registry == "docker.io") keys.push_back("https://index.docker.io/v1/");
  for (const auto& key : keys) {
    auto it = auths.find(key);
    if (it == auths.end()) continue;
    const nlohmann::json& entry = *it;
    RegistryAuth auth;
    auth.server = registry;
    if (entry.is_object() && entry.contains("auth") && entry["auth"].is_string()) {
      auto decoded = unbase64(entry["auth"].get<std::string>());
      if (!decoded.ok() || decoded->find(':') == std::string::npos) {
        return Error(EINVAL, "docker config " + file.string() + ": auths[\"" + key +
                                 "\"].auth is not base64 of \"user:password\"");
      }
      auth.username = decoded->substr(0, decoded->find(':'));
      auth.password = decoded->substr(decoded->find(':') + 1);
      return std::optional<RegistryAuth>(auth);
    }
    if (entry.is_object() && entry.value("username", nlohmann::json()).is_string() &&
        entry.value("password", nlohmann::json()).is_string()) {
      auth.username = entry["username"].get<std::string>();
      auth.password = entry["password"].get<std::string>();
      return std::optional<RegistryAuth>(auth);
    }
    return Error(EINVAL, "docker config " + file.string() + ": auths[\"" + key +
                             "\"] has neither \"auth\" nor \"username\"/\"password\"");
  }
  return std::optional<RegistryAuth>{};
}

// ---------------------------------------------------------------- log frames

Result<void> LogDemuxer::feed(std::string_view data) {
  buffer_.append(data);
  std::size_t pos = 0;
  while (buffer_.size() - pos >= 8) {
    const auto* h = reinterpret_cast<const unsigned char*>(buffer_.data() + pos);
    if (h[0] > 2 || h[1] != 0 || h[2] != 0 || h[3] != 0) {
      buffer_.clear();
      return Error(EPROTO,
                   "dockerd's log stream is not in the multiplexed frame format (a frame header "
                   "names stream " +
                       std::to_string(h[0]) + "); was the container created with a TTY?");
    }
    const std::size_t size = (std::size_t{h[4]} << 24) | (std::size_t{h[5]} << 16) |
                             (std::size_t{h[6]} << 8) | std::size_t{h[7]};
    if (buffer_.size() - pos - 8 < size) break;
    sink_(h[0] == 2 ? 2 : 1, std::string_view(buffer_).substr(pos + 8, size));
    pos += 8 + size;
  }
  buffer_.erase(0, pos);
  return {};
}

bool api_version_at_least(std::string_view have, std::string_view want) {
  auto parse = [](std::string_view v, int* major, int* minor) {
    auto dot = v.find('.');
    if (dot == std::string_view::npos) return false;
    auto a = std::from_chars(v.data(), v.data() + dot, *major);
    auto b = std::from_chars(v.data() + dot + 1, v.data() + v.size(), *minor);
    return a.ec == std::errc() && a.ptr == v.data() + dot && b.ec == std::errc() &&
           b.ptr == v.data() + v.size();
  };
  int hm = 0, hn = 0, wm = 0, wn = 0;
  if (!parse(have, &hm, &hn) || !parse(want, &wm, &wn)) return false;
  return hm > wm || (hm == wm && hn >= wn);
}

// ---------------------------------------------------------------- Engine

Engine::Engine(EngineOptions options) : options_(std::move(options)) {}

Error Engine::transport_error(const Error& error, const std::string& what) const {
  std::string msg =
      what + ": cannot talk to dockerd at " + options_.endpoint + ": " + error.message();
  if (is_transport_gone(error.code())) {
    msg +=
        "; is dockerd running? (check its service, or set [docker] socket in the policy to "
        "the socket it listens on)";
  }
  return Error(error.code(), msg);
}

Error Engine::api_error(const http::Response& response, const std::string& what) const {
  std::string detail;
  auto j = nlohmann::json::parse(response.body(), nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("message") && j["message"].is_string()) {
    detail = j["message"].get<std::string>();
  } else {
    detail = response.body().substr(0, 200);
    if (detail.empty()) detail = "(no message)";
  }
  const int status = static_cast<int>(response.result_int());
  int code = EIO;
  if (status == 404) code = ENOENT;
  if (status == 409) code = EEXIST;
  if (status == 401 || status == 403) code = EACCES;
  if (status == 400) code = EINVAL;
  return Error(code, what + ": dockerd answered " + std::to_string(status) + ": " + detail);
}

Result<nlohmann::json> Engine::parse_body(const http::Response& response,
                                          const std::string& what) const {
  auto j = nlohmann::json::parse(response.body(), nullptr, false);
  if (j.is_discarded()) {
    return Error(EPROTO, what + ": dockerd at " + options_.endpoint +
                             " sent an answer that is not JSON (status " +
                             std::to_string(response.result_int()) + ", body starts \"" +
                             response.body().substr(0, 80) + "\"); is that socket really dockerd?");
  }
  return j;
}

Result<http::Response> Engine::call(
    http::Verb verb, const std::string& target, std::string body,
    std::optional<std::chrono::milliseconds> timeout,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  CORRAL_ASSIGN_OR_RETURN(http::HttpClient c, client(timeout.value_or(options_.request_timeout)));
  http::Request req =
      http::make_request(verb, "/v" + std::string(kApiVersion) + target, std::move(body));
  for (const auto& [k, v] : headers) req.set(k, v);
  return c.request(std::move(req));
}

Result<http::HttpClient> Engine::client(std::chrono::milliseconds request_timeout) const {
  http::ClientOptions opts;
  opts.connect_timeout = options_.connect_timeout;
  opts.request_timeout = request_timeout;
  opts.max_idle_connections = 0;
  auto parsed = http::parse_endpoint(options_.endpoint);
  if (!parsed.ok()) {
    return Error(EINVAL, "docker endpoint \"" + options_.endpoint +
                             "\" is not valid: " + parsed.error().message());
  }
  return http::HttpClient(*parsed, opts);
}

Result<EngineVersion> Engine::negotiate() {
  CORRAL_ASSIGN_OR_RETURN(http::HttpClient c, client(options_.request_timeout));
  // Unversioned: the answer says which versions the daemon speaks.
  auto r = c.get("/version");
  if (!r.ok()) return transport_error(r.error(), "asking dockerd for its version");
  if (r->result_int() != 200) return api_error(*r, "asking dockerd for its version");
  CORRAL_ASSIGN_OR_RETURN(nlohmann::json j, parse_body(*r, "GET /version"));
  if (!j.is_object() || !j.contains("ApiVersion") || !j["ApiVersion"].is_string()) {
    return Error(EPROTO, "GET /version: dockerd at " + options_.endpoint +
                             " answered without an \"ApiVersion\" string");
  }
  EngineVersion v;
  v.api_version = j["ApiVersion"].get<std::string>();
  v.engine = j.value("Version", std::string("unknown"));
  if (!api_version_at_least(v.api_version, kApiVersion)) {
    return Error(ENOTSUP, "dockerd at " + options_.endpoint + " (Docker " + v.engine +
                              ") speaks Engine API " + v.api_version + "; Corral needs " +
                              kApiVersion + " or newer (Docker 20.10 or later)");
  }
  return v;
}

Result<void> Engine::ping() {
  auto r = call(http::Verb::get, "/_ping");
  if (!r.ok()) return transport_error(r.error(), "ping");
  if (r->result_int() != 200) return api_error(*r, "ping");
  return {};
}

Result<nlohmann::json> Engine::inspect_container(const std::string& id) {
  const std::string what = "inspecting container " + id;
  auto r = call(http::Verb::get, "/containers/" + url_encode(id) + "/json");
  if (!r.ok()) return transport_error(r.error(), what);
  if (r->result_int() != 200) return api_error(*r, what);
  CORRAL_ASSIGN_OR_RETURN(nlohmann::json j, parse_body(*r, what));
  if (!j.is_object() || !j.contains("State") || !j["State"].is_object() || !j.contains("Id") ||
      !j["Id"].is_string()) {
    return Error(EPROTO, what + ": dockerd's answer has no \"Id\" and \"State\"");
  }
  return j;
}

Result<nlohmann::json> Engine::inspect_image(const std::string& reference) {
  const std::string what = "inspecting image " + reference;
  auto r = call(http::Verb::get, "/images/" + reference + "/json");
  if (!r.ok()) return transport_error(r.error(), what);
  if (r->result_int() != 200) return api_error(*r, what);
  return parse_body(*r, what);
}

Result<void> Engine::pull(const ImageRef& image, const std::optional<RegistryAuth>& auth,
                          const PullProgress& progress) {
  const std::string what = "pulling image " + image.full();
  // A stream: dockerd sends one JSON progress line per event while it pulls, and each goes to
  // `progress` as it arrives (layers, bytes). Failures come as an error status or as an
  // {"error"} line in a 200 answer.
  std::vector<std::pair<std::string, std::string>> headers;
  if (auth) headers.emplace_back("X-Registry-Auth", encode_registry_auth(*auth));
  auto classify = [&](int code, const std::string& msg) {
    if (code == ENOENT || msg.find("not found") != std::string::npos ||
        msg.find("does not exist") != std::string::npos ||
        msg.find("manifest unknown") != std::string::npos) {
      return Error(ENOENT, msg +
                               "; check the image name and tag (a registry may also hide a "
                               "private repository from clients without credentials)");
    }
    if (msg.find("unauthorized") != std::string::npos ||
        msg.find("authentication required") != std::string::npos ||
        msg.find("denied") != std::string::npos) {
      return Error(EACCES, msg + "; check the credentials for " + image.registry +
                               " in the docker config named by [docker] config");
    }
    return Error(code, msg);
  };
  CORRAL_ASSIGN_OR_RETURN(http::HttpClient c, client(options_.pull_timeout));
  http::Request req = http::make_request(
      http::Verb::post,
      "/v" + std::string(kApiVersion) + "/images/create?fromImage=" + url_encode(image.name) +
          "&tag=" + url_encode(image.digest.empty() ? image.tag : image.digest),
      {});
  for (const auto& [k, v] : headers) req.set(k, v);
  http::Response head;
  std::string pending;  // a partial line
  std::string error_body;
  std::optional<Error> failure;
  http::StreamCallbacks cb;
  cb.on_head = [&](const http::Response& h) {
    head = h;
    return true;
  };
  cb.on_data = [&](std::string_view data) {
    if (head.result_int() != 200) {
      if (error_body.size() < 65536) error_body.append(data);
      return true;
    }
    pending.append(data);
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (line.empty() || line == "\r") continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        failure = Error(EPROTO, what +
                                    ": dockerd's progress stream has a line that is not a JSON "
                                    "object: \"" +
                                    line.substr(0, 80) + "\"");
        return false;
      }
      if (j.contains("error")) {
        std::string msg = j["error"].is_string() ? j["error"].get<std::string>() : j.dump();
        failure = classify(EIO, what + ": " + msg);
        return false;
      }
      if (progress) progress(j);
    }
    if (pending.size() > (1u << 20)) {
      failure = Error(EPROTO, what + ": a progress line of dockerd is longer than 1 MiB");
      return false;
    }
    return true;
  };
  auto end = c.stream(std::move(req), cb);
  if (failure) return *failure;
  if (head.result_int() != 0 && head.result_int() != 200) {
    head.body() = error_body;
    Error e = api_error(head, what);
    return classify(e.code(), e.message());
  }
  if (!end.ok()) return transport_error(end.error(), what);
  return {};
}

Result<std::string> Engine::create_container(const std::string& name,
                                             const nlohmann::json& config) {
  const std::string what = "creating container " + name;
  auto r = call(http::Verb::post, "/containers/create?name=" + url_encode(name), config.dump());
  if (!r.ok()) return transport_error(r.error(), what);
  if (r->result_int() == 409) {
    Error e = api_error(*r, what);
    return Error(EEXIST, e.message() +
                             "; a container of that name already exists in dockerd: remove it "
                             "(DELETE /containers/" +
                             name + ", or `docker rm -f " + name +
                             "`) if it is a leftover, or use another container id");
  }
  if (r->result_int() != 201) return api_error(*r, what);
  CORRAL_ASSIGN_OR_RETURN(nlohmann::json j, parse_body(*r, what));
  if (!j.is_object() || !j.contains("Id") || !j["Id"].is_string() ||
      j["Id"].get<std::string>().empty()) {
    return Error(EPROTO, what + ": dockerd's answer has no \"Id\": " + j.dump().substr(0, 120));
  }
  return j["Id"].get<std::string>();
}

Result<void> Engine::start_container(const std::string& id) {
  const std::string what = "starting container " + id.substr(0, 12);
  auto r = call(http::Verb::post, "/containers/" + url_encode(id) + "/start");
  if (!r.ok()) return transport_error(r.error(), what);
  if (r->result_int() != 204 && r->result_int() != 304) return api_error(*r, what);
  return {};
}

Result<void> Engine::stop_container(const std::string& id, std::chrono::seconds grace) {
  const std::string what = "stopping container " + id.substr(0, 12);
  auto r =
      call(http::Verb::post,
           "/containers/" + url_encode(id) + "/stop?t=" + std::to_string(grace.count()), {},
           std::chrono::duration_cast<std::chrono::milliseconds>(grace) + std::chrono::seconds(60));
  if (!r.ok()) return transport_error(r.error(), what);
  const int s = static_cast<int>(r->result_int());
  if (s != 204 && s != 304 && s != 404) return api_error(*r, what);
  return {};
}

Result<void> Engine::remove_container(const std::string& id) {
  const std::string what = "removing container " + id.substr(0, 12);
  auto r = call(http::Verb::delete_, "/containers/" + url_encode(id) + "?force=1&v=1");
  if (!r.ok()) return transport_error(r.error(), what);
  const int s = static_cast<int>(r->result_int());
  if (s != 204 && s != 404) {
    // "removal of container ... is already in progress" is fine too.
    if (s == 409 && r->body().find("already in progress") != std::string::npos) return {};
    return api_error(*r, what);
  }
  return {};
}

Result<nlohmann::json> Engine::list_containers(const std::string& label_filter) {
  const std::string what = "listing containers labelled " + label_filter;
  nlohmann::json filters = {{"label", {label_filter}}};
  auto r = call(http::Verb::get, "/containers/json?all=1&filters=" + url_encode(filters.dump()));
  if (!r.ok()) return transport_error(r.error(), what);
  if (r->result_int() != 200) return api_error(*r, what);
  CORRAL_ASSIGN_OR_RETURN(nlohmann::json j, parse_body(*r, what));
  if (!j.is_array()) return Error(EPROTO, what + ": dockerd's answer is not a JSON array");
  for (const auto& c : j) {
    if (!c.is_object() || !c.contains("Id") || !c["Id"].is_string()) {
      return Error(EPROTO, what + ": an entry of dockerd's answer has no \"Id\" string");
    }
  }
  return j;
}

Result<nlohmann::json> Engine::container_stats(const std::string& id) {
  const std::string what = "reading the stats of container " + id.substr(0, 12);
  auto r =
      call(http::Verb::get, "/containers/" + url_encode(id) + "/stats?stream=false&one-shot=true");
  if (!r.ok()) return transport_error(r.error(), what);
  if (r->result_int() != 200) return api_error(*r, what);
  CORRAL_ASSIGN_OR_RETURN(nlohmann::json j, parse_body(*r, what));
  if (!j.is_object()) return Error(EPROTO, what + ": dockerd's answer is not a JSON object");
  return j;
}

}  // namespace corral::docker
