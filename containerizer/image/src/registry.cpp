#include "corral/image/registry.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/image/digest.hpp"

namespace corral::image {
namespace fs = std::filesystem;
namespace {

std::string base64_encode(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(std::max(n, 0)));
  return out;
}

Result<std::string> base64_decode(std::string_view in) {
  std::string s(in);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::string out(3 * (s.size() / 4) + 3, '\0');
  int n =
      EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return Error(EINVAL, "invalid base64");
  size_t pad = 0;
  if (!s.empty() && s.back() == '=') ++pad;
  if (s.size() > 1 && s[s.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

std::string url_escape(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// "http://host:port/path?q" -> {scheme, "host:port", "/path?q"}.
struct Url {
  std::string scheme, authority, target;
};
Result<Url> parse_url(std::string_view text) {
  Url u;
  auto sep = text.find("://");
  if (sep == std::string_view::npos) return Error(EINVAL, "not a URL: " + std::string(text));
  u.scheme = std::string(text.substr(0, sep));
  auto rest = text.substr(sep + 3);
  auto slash = rest.find('/');
  u.authority = std::string(rest.substr(0, slash));
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  return u;
}

std::string strip_to_host(std::string key) {
  if (auto p = key.find("://"); p != std::string::npos) key = key.substr(p + 3);
  if (auto p = key.find('/'); p != std::string::npos) key.resize(p);
  return key;
}

}  // namespace

Result<AuthChallenge> parse_www_authenticate(std::string_view header) {
  AuthChallenge c;
  size_t i = 0;
  while (i < header.size() && header[i] == ' ') ++i;
  size_t start = i;
  while (i < header.size() && header[i] != ' ') ++i;
  c.scheme = std::string(header.substr(start, i - start));
  if (c.scheme.empty()) return Error(EPROTO, "empty WWW-Authenticate header");
  while (i < header.size()) {
    while (i < header.size() && (header[i] == ' ' || header[i] == ',')) ++i;
    size_t k = i;
    while (i < header.size() && header[i] != '=') ++i;
    if (i >= header.size()) break;
    std::string key(header.substr(k, i - k));
    ++i;
    std::string value;
    if (i < header.size() && header[i] == '"') {
      ++i;
      while (i < header.size() && header[i] != '"') {
        if (header[i] == '\\' && i + 1 < header.size()) ++i;
        value += header[i++];
      }
      ++i;
    } else {
      while (i < header.size() && header[i] != ',') value += header[i++];
    }
    std::transform(key.begin(), key.end(), key.begin(), ::tolower);
    c.params[key] = value;
  }
  return c;
}

// How a user gives the CA that signs a registry's certificate (named in "not trusted" errors).
constexpr const char* kCaFileHint =
    "--ca-file FILE (corral image pull), or ca_file / [images.ca_files] \"HOST:PORT\" in "
    "agent.toml";

struct RegistryClient::State {
  Reference ref;
  RegistryOptions options;
  std::string address;  // "http://host:port" or "https://host:port"
  bool insecure = false;
  http::TlsOptions tls;  // for HTTPS: the registry's CA file (or the system store)
  std::string user, password;
  bool have_credentials = false;
  std::mutex mu;
  std::string authorization;  // current Authorization header value

  http::ClientOptions client_options() const {
    http::ClientOptions o;
    o.request_timeout = options.timeout;
    o.connect_timeout = std::chrono::seconds(10);
    o.body_limit = options.max_document_bytes;
    o.user_agent = "corral-image";
    o.tls = tls;
    o.tls.enabled = !insecure;
    return o;
  }

  // A client for a URL the registry named (token realm, blob redirect). HTTPS is verified like
  // the registry; plain HTTP is allowed only when the registry itself is insecure (a TLS
  // registry is never downgraded through its token service or its storage).
  Result<http::HttpClient> client_for(const Url& url, const std::string& what,
                                      http::ClientOptions o) const {
    if (url.scheme == "https") {
      return http::HttpClient::create("https://" + url.authority, o);
    }
    if (url.scheme != "http") {
      return Error(EPROTONOSUPPORT, what + " of registry " + ref.registry +
                                        " has an unsupported URL scheme '" + url.scheme + "'");
    }
    if (!insecure) {
      return Error(EACCES, what + " of registry " + ref.registry +
                               " is plain HTTP while the registry uses HTTPS; refused (it "
                               "would downgrade the connection)");
    }
    o.tls.enabled = false;
    std::string authority = url.authority;
    if (authority.find(':') == std::string::npos) authority += ":80";
    return http::HttpClient::create(authority, o);
  }

  Error http_error(const std::string& what, const Error& e) const {
    Error out = e.context(what + " from registry " + ref.registry);
    if (!insecure && e.code() == EPROTO && e.message().find("TLS handshake") != std::string::npos) {
      return Error(EPROTO, out.message() + "; if " + ref.registry +
                               " speaks plain HTTP, list it as an insecure registry "
                               "(--insecure-registry " +
                               ref.registry + ")");
    }
    return out;
  }

  // Obtains an Authorization value for the challenge in a 401 response.
  Result<void> authenticate(const http::Response& unauthorized) {
    auto it = unauthorized.find(http::Field::www_authenticate);
    if (it == unauthorized.end()) {
      return Error(EACCES, "registry " + ref.registry +
                               " answered 401 without a WWW-Authenticate challenge");
    }
    CORRAL_ASSIGN_OR_RETURN(AuthChallenge ch, parse_www_authenticate(std::string(it->value())));
    std::string scheme = ch.scheme;
    std::transform(scheme.begin(), scheme.end(), scheme.begin(), ::tolower);
    if (scheme == "basic") {
      if (!have_credentials) {
        return Error(EACCES, "registry " + ref.registry +
                                 " requires a user name and password; give a credentials file "
                                 "(--credentials, docker config.json format) with an entry for " +
                                 ref.registry);
      }
      std::lock_guard lock(mu);
      authorization = "Basic " + base64_encode(user + ":" + password);
      return {};
    }
    if (scheme != "bearer") {
      return Error(EACCES, "registry " + ref.registry + " asks for unsupported auth scheme '" +
                               ch.scheme + "'");
    }
    auto realm = ch.params["realm"];
    CORRAL_ASSIGN_OR_RETURN(Url url, parse_url(realm));
    std::string target = url.target;
    target += target.find('?') == std::string::npos ? "?" : "&";
    if (ch.params.count("service")) target += "service=" + url_escape(ch.params["service"]) + "&";
    std::string scope =
        ch.params.count("scope") ? ch.params["scope"] : "repository:" + ref.repository + ":pull";
    target += "scope=" + url_escape(scope);
    CORRAL_ASSIGN_OR_RETURN(auto client,
                            client_for(url, "the token service " + realm, client_options()));
    auto req = http::make_request(http::Verb::get, target);
    if (have_credentials) {
      req.set(http::Field::authorization, "Basic " + base64_encode(user + ":" + password));
    }
    auto resp = client.request(std::move(req));
    if (!resp) return http_error("token from " + realm, resp.error());
    if (resp->result() != http::Status::ok) {
      return Error(EACCES, "the token service " + realm + " refused access to " + ref.repository +
                               " (HTTP " + std::to_string(resp->result_int()) +
                               "): " + resp->body().substr(0, 300) +
                               (have_credentials ? "" : "; give a credentials file"));
    }
    auto j = nlohmann::json::parse(resp->body(), nullptr, false);
    std::string token;
    if (j.is_object()) token = j.value("token", j.value("access_token", ""));
    if (token.empty()) return Error(EPROTO, "the token service " + realm + " returned no token");
    std::lock_guard lock(mu);
    authorization = "Bearer " + token;
    return {};
  }

  http::Request make(std::string_view target) {
    auto req = http::make_request(http::Verb::get, target);
    std::lock_guard lock(mu);
    if (!authorization.empty()) req.set(http::Field::authorization, authorization);
    return req;
  }

  // GET with one authentication round.
  Result<http::Response> get(const std::string& target, const std::string& accept) {
    CORRAL_ASSIGN_OR_RETURN(auto client, http::HttpClient::create(address, client_options()));
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto req = make(target);
      if (!accept.empty()) req.set(http::Field::accept, accept);
      auto resp = client.request(std::move(req));
      if (!resp) return http_error("GET " + target, resp.error());
      if (resp->result() == http::Status::unauthorized && attempt == 0) {
        CORRAL_TRY(authenticate(*resp));
        continue;
      }
      return resp;
    }
    return Error(EACCES,
                 "registry " + ref.registry + " refused the credentials for " + ref.repository);
  }
};

RegistryClient::RegistryClient(std::shared_ptr<State> state) : state_(std::move(state)) {}
RegistryClient::~RegistryClient() = default;
RegistryClient::RegistryClient(RegistryClient&&) noexcept = default;
RegistryClient& RegistryClient::operator=(RegistryClient&&) noexcept = default;
const std::string& RegistryClient::registry() const { return state_->ref.registry; }

Result<RegistryClient> RegistryClient::create(const Reference& ref,
                                              const RegistryOptions& options) {
  auto s = std::make_shared<State>();
  s->ref = ref;
  s->options = options;
  s->insecure = std::find(options.insecure_registries.begin(), options.insecure_registries.end(),
                          ref.registry) != options.insecure_registries.end();
  s->address = (s->insecure ? "http://" : "https://") + ref.registry;
  s->tls.ca_file_hint = kCaFileHint;
  if (auto it = options.registry_ca_files.find(ref.registry);
      it != options.registry_ca_files.end()) {
    s->tls.ca_file = it->second.string();
  } else {
    s->tls.ca_file = options.ca_bundle.string();
  }
  if (!options.credentials_file.empty()) {
    auto text = read_file(options.credentials_file, 1 << 20);
    if (!text) return text.error().context("credentials file");
    auto j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return Error(EINVAL, "credentials file " + options.credentials_file.string() +
                               " is not JSON (expected {\"auths\": {\"HOST:PORT\": "
                               "{\"auth\": \"base64(user:password)\"}}})");
    }
    if (j.contains("auths") && j["auths"].is_object()) {
      for (const auto& [key, entry] : j["auths"].items()) {
        if (strip_to_host(key) != ref.registry || !entry.is_object()) continue;
        if (entry.contains("auth") && entry["auth"].is_string()) {
          auto decoded = base64_decode(entry["auth"].get<std::string>());
          auto colon = decoded ? decoded->find(':') : std::string::npos;
          if (!decoded || colon == std::string::npos) {
            return Error(EINVAL, "credentials file " + options.credentials_file.string() +
                                     ": auths." + key + ".auth is not base64 of user:password");
          }
          s->user = decoded->substr(0, colon);
          s->password = decoded->substr(colon + 1);
        } else {
          s->user = entry.value("username", "");
          s->password = entry.value("password", "");
        }
        s->have_credentials = !s->user.empty();
      }
    }
  }
  return RegistryClient(std::move(s));
}

Result<FetchedManifest> RegistryClient::manifest(const std::string& tag_or_digest) {
  auto& s = *state_;
  const std::string target = "/v2/" + s.ref.repository + "/manifests/" + tag_or_digest;
  CORRAL_ASSIGN_OR_RETURN(http::Response resp, s.get(target, media::manifest_accept()));
  const std::string what = s.ref.registry + "/" + s.ref.repository + " " + tag_or_digest;
  if (resp.result() == http::Status::not_found) {
    return Error(ENOENT, "registry " + s.ref.registry + " has no manifest for " + s.ref.repository +
                             ":" + tag_or_digest + " (check the name and tag)");
  }
  if (resp.result() == http::Status::unauthorized || resp.result() == http::Status::forbidden) {
    return Error(EACCES, "registry " + s.ref.registry + " refused access to " + what + " (HTTP " +
                             std::to_string(resp.result_int()) + ")");
  }
  if (resp.result() != http::Status::ok) {
    return Error(EPROTO, "registry " + s.ref.registry + " answered HTTP " +
                             std::to_string(resp.result_int()) + " for the manifest of " + what +
                             ": " + resp.body().substr(0, 300));
  }
  FetchedManifest m;
  m.body = std::move(resp.body());
  m.digest = sha256_digest(m.body);
  if (tag_or_digest.rfind("sha256:", 0) == 0 && m.digest != tag_or_digest) {
    return Error(EBADMSG, "the manifest registry " + s.ref.registry + " sent for " + what +
                              " has digest " + m.digest +
                              ", not the one asked for (corrupt or tampered)");
  }
  auto doc = nlohmann::json::parse(m.body, nullptr, false);
  if (doc.is_discarded()) return Error(EBADMSG, "the manifest of " + what + " is not JSON");
  auto type = document_media_type(doc);
  if (!type) return type.error().context("manifest of " + what);
  m.media_type = *type;
  return m;
}

Result<std::string> RegistryClient::fetch_small_blob(const Descriptor& desc) {
  auto& s = *state_;
  if (static_cast<uint64_t>(desc.size) > s.options.max_document_bytes) {
    return Error(EFBIG, "blob " + desc.digest + " (" + std::to_string(desc.size) +
                            " bytes) is larger than a config may be");
  }
  const std::string target = "/v2/" + s.ref.repository + "/blobs/" + desc.digest;
  CORRAL_ASSIGN_OR_RETURN(http::Response resp, s.get(target, ""));
  if (resp.result() != http::Status::ok) {
    return Error(resp.result() == http::Status::not_found ? ENOENT : EPROTO,
                 "registry " + s.ref.registry + " answered HTTP " +
                     std::to_string(resp.result_int()) + " for blob " + desc.digest);
  }
  if (resp.body().size() != static_cast<size_t>(desc.size)) {
    return Error(EBADMSG, "blob " + desc.digest + " has " + std::to_string(resp.body().size()) +
                              " bytes, its descriptor says " + std::to_string(desc.size));
  }
  if (sha256_digest(resp.body()) != desc.digest) {
    return Error(EBADMSG, "blob " + desc.digest + " from registry " + s.ref.registry +
                              " does not match its digest (corrupt or tampered)");
  }
  return std::move(resp.body());
}

Result<void> RegistryClient::fetch_blob(const Descriptor& desc, const fs::path& dest,
                                        const std::function<void(uint64_t)>& on_bytes) {
  auto& s = *state_;
  const uint64_t want = static_cast<uint64_t>(desc.size);
  UniqueFd fd(::open(dest.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Error::from_errno("open " + dest.string());
  std::optional<Url> redirected;  // blob storage the registry redirected to
  std::string target = "/v2/" + s.ref.repository + "/blobs/" + desc.digest;
  bool send_auth = true;
  for (int attempt = 0; attempt < 4; ++attempt) {
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return Error::from_errno("stat " + dest.string());
    uint64_t have = static_cast<uint64_t>(st.st_size);
    if (have > want) {
      if (::ftruncate(fd.get(), 0) != 0) return Error::from_errno("truncate " + dest.string());
      have = 0;
    }
    // Hash the prefix already on disk (a resumed download).
    Sha256 hash;
    if (have > 0) {
      std::string buf(1 << 20, '\0');
      uint64_t off = 0;
      while (off < have) {
        ssize_t n = ::pread(fd.get(), buf.data(), std::min<uint64_t>(buf.size(), have - off),
                            static_cast<off_t>(off));
        if (n <= 0) return Error::from_errno("read " + dest.string());
        hash.update(buf.data(), static_cast<size_t>(n));
        off += static_cast<uint64_t>(n);
      }
    }
    uint64_t offset = have;
    if (have < want) {
      auto client_options = s.client_options();
      client_options.stream_idle_timeout = std::chrono::seconds(60);
      // The client applies its body limit to streamed responses' parser too.
      client_options.body_limit = want + (1 << 20);
      auto created = redirected ? s.client_for(*redirected, "blob storage " + redirected->authority,
                                               client_options)
                                : http::HttpClient::create(s.address, client_options);
      if (!created) return created.error();
      auto client = std::move(created).value();
      auto req = send_auth ? s.make(target) : http::make_request(http::Verb::get, target);
      if (have > 0) req.set(http::Field::range, "bytes=" + std::to_string(have) + "-");
      unsigned status = 0;
      std::string location, www_auth;
      std::optional<Error> write_error;
      http::Response head_copy;
      http::StreamCallbacks cb;
      cb.on_head = [&](const http::Response& head) {
        status = head.result_int();
        if (status == 206) return true;
        if (status == 200) {
          if (offset > 0) {  // the server ignored the Range: start over
            offset = 0;
            hash = Sha256();
            if (::ftruncate(fd.get(), 0) != 0) {
              write_error = Error::from_errno("truncate " + dest.string());
              return false;
            }
          }
          return true;
        }
        if (auto it = head.find(http::Field::location); it != head.end()) {
          location = std::string(it->value());
        }
        head_copy = head;
        return false;
      };
      cb.on_data = [&](std::string_view data) {
        if (offset + data.size() > want) {
          write_error = Error(EBADMSG, "blob " + desc.digest + " from registry " + s.ref.registry +
                                           " is longer than its descriptor's " +
                                           std::to_string(want) + " bytes");
          return false;
        }
        const char* p = data.data();
        size_t left = data.size();
        while (left > 0) {
          ssize_t n = ::pwrite(fd.get(), p, left, static_cast<off_t>(offset));
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            write_error = Error::from_errno("write " + dest.string());
            return false;
          }
          p += n;
          left -= static_cast<size_t>(n);
          offset += static_cast<uint64_t>(n);
        }
        hash.update(data);
        if (on_bytes) on_bytes(data.size());
        return true;
      };
      auto ended = client.stream(std::move(req), cb);
      if (write_error) {
        if (write_error->code() == EBADMSG) ::unlink(dest.c_str());
        return *write_error;
      }
      if (status == 401 && send_auth && attempt == 0) {
        CORRAL_TRY(s.authenticate(head_copy));
        continue;
      }
      if ((status == 307 || status == 302 || status == 301 || status == 303 || status == 308) &&
          !location.empty()) {
        CORRAL_ASSIGN_OR_RETURN(Url url, parse_url(location));
        target = url.target;
        redirected = std::move(url);
        send_auth = false;  // credentials stay with the registry
        continue;
      }
      if (status == 416) {  // the partial file is stale: restart from zero
        if (::ftruncate(fd.get(), 0) != 0) return Error::from_errno("truncate " + dest.string());
        continue;
      }
      if (status != 200 && status != 206) {
        if (status == 0 && !ended) {
          return s.http_error("blob " + desc.digest + " (" + std::to_string(offset) + " of " +
                                  std::to_string(want) + " bytes kept for resuming)",
                              ended.error());
        }
        return Error(status == 404 ? ENOENT : EPROTO,
                     "registry " + s.ref.registry + " answered HTTP " + std::to_string(status) +
                         " for blob " + desc.digest);
      }
      if (!ended) {
        return s.http_error("blob " + desc.digest + " (" + std::to_string(offset) + " of " +
                                std::to_string(want) + " bytes kept for resuming)",
                            ended.error());
      }
    }
    if (offset != want) {
      return Error(EBADMSG, "blob " + desc.digest + " from registry " + s.ref.registry +
                                " ended after " + std::to_string(offset) + " of " +
                                std::to_string(want) + " bytes (truncated)");
    }
    std::string got = hash.finish();
    if (got != desc.digest) {
      ::unlink(dest.c_str());
      return Error(EBADMSG, "blob " + desc.digest + " from registry " + s.ref.registry +
                                " has digest " + got + " (corrupt or tampered); discarded");
    }
    // No fsync: the blob is only a step towards the extracted layer (which is synced before it
    // is published), and a partial file damaged by a power loss fails its digest and is fetched
    // again.
    return {};
  }
  return Error(EPROTO, "registry " + s.ref.registry + ": too many redirects or retries for blob " +
                           desc.digest);
}

}  // namespace corral::image
