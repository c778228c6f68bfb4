#pragma once
// A small Docker Engine API client (API v1.41, the version Debian 12's docker.io 20.10 speaks)
// over Corral's HTTP client, plus the pure helpers the Docker containerizer needs: image
// references, registry auth headers, and the stdout/stderr frame format of logs streams.
//
// Engine is blocking: each call opens a fresh connection (a unix socket connect costs
// microseconds), so one Engine may be used from several threads at once. Long-lived streams
// (wait, logs) are not here: the containerizer runs them on its own event loop.
//
// Errors name dockerd's endpoint and what dockerd said:
//   ENOENT/ECONNREFUSED  dockerd is not running or the socket path is wrong
//   ENOENT               (from inspect_*) no such container or image
//   EEXIST               a container with that name already exists
//   EPROTO               dockerd's answer was not what the Engine API documents
//   EACCES               the registry refused the credentials
//   EIO                  any other error dockerd reported

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "corral/common/http.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/result.hpp"

namespace corral::docker {

// The API version Corral speaks; dockerd must offer at least this one.
inline constexpr const char* kApiVersion = "1.41";
inline constexpr const char* kDefaultSocket = "unix:/run/docker.sock";

// "registry.example:5000/team/app:1.2" split the way POST /images/create wants it. A reference
// without tag or digest means ":latest" (never "all tags", which is what the API would pull).
struct ImageRef {
  std::string registry;      // "docker.io" when the reference names none
  std::string name;          // everything before ":tag" / "@digest", as written
  std::string tag;           // "latest" when neither tag nor digest is given
  std::string digest;        // "sha256:..." or empty
  std::string full() const;  // name:tag or name@digest
};
Result<ImageRef> parse_image_ref(std::string_view reference);

struct RegistryAuth {
  std::string username;
  std::string password;
  std::string server;  // "127.0.0.1:5000"
};
// The X-Registry-Auth header value: base64url of {"username","password","serveraddress"}.
std::string encode_registry_auth(const RegistryAuth& auth);
// Looks `registry` up in a Docker config.json ({"auths": {"<registry>": {"auth": base64(u:p)}}},
// also "https://<registry>" keys). No entry: nullopt. An unreadable or malformed file: Error.
Result<std::optional<RegistryAuth>> registry_auth_from_config(const std::filesystem::path& file,
                                                              const std::string& registry);

// Splits the multiplexed stream of GET /containers/{id}/logs (containers without a TTY): frames
// of an 8-byte header [stream, 0, 0, 0, size(4, big endian)] and `size` payload bytes. Frames
// may arrive split across reads; feed() keeps the remainder.
class LogDemuxer {
 public:
  // stream: 1 stdout, 2 stderr (0, stdin, is passed as stdout).
  using Sink = std::function<void(int stream, std::string_view data)>;
  explicit LogDemuxer(Sink sink) : sink_(std::move(sink)) {}
  // EPROTO when a header names no known stream (the answer is not a frame stream).
  Result<void> feed(std::string_view data);
  std::size_t buffered() const { return buffer_.size(); }

 private:
  Sink sink_;
  std::string buffer_;
};

struct EngineVersion {
  std::string engine;       // "20.10.24+dfsg1"
  std::string api_version;  // highest the daemon speaks, "1.41"
};
// "1.41" >= "1.9" compares numerically; false for anything that is not N.N.
bool api_version_at_least(std::string_view have, std::string_view want);

struct EngineOptions {
  std::string endpoint = kDefaultSocket;  // "unix:/path" or "host:port"
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds request_timeout{60'000};
  std::chrono::milliseconds pull_timeout{std::chrono::minutes(30)};
};

// One line of a pull's progress stream, e.g. {"status":"Downloading","id":"a1b2",
// "progressDetail":{"current":1,"total":2}}.
using PullProgress = std::function<void(const nlohmann::json& line)>;

class Engine {
 public:
  explicit Engine(EngineOptions options);
  const std::string& endpoint() const { return options_.endpoint; }

  // GET /version: the engine's versions; an Error when it speaks less than kApiVersion.
  Result<EngineVersion> negotiate();
  // GET /_ping: OK when dockerd answers.
  Result<void> ping();

  // Raw call: `target` is relative to /v1.41 ("/containers/json"). Any HTTP status is a value.
  Result<http::Response> call(http::Verb verb, const std::string& target, std::string body = {},
                              std::optional<std::chrono::milliseconds> timeout = {},
                              const std::vector<std::pair<std::string, std::string>>& headers = {});

  Result<nlohmann::json> inspect_container(const std::string& id_or_name);
  Result<nlohmann::json> inspect_image(const std::string& reference);
  // POST /images/create, following the progress stream until it ends; an {"error": ...} line
  // in it (dockerd reports pull failures with status 200) is an Error.
  Result<void> pull(const ImageRef& image, const std::optional<RegistryAuth>& auth,
                    const PullProgress& progress = {});
  // POST /containers/create?name=...: the new container's id.
  Result<std::string> create_container(const std::string& name, const nlohmann::json& config);
  Result<void> start_container(const std::string& id);
  // POST /containers/{id}/stop?t=...; stopping a stopped or missing container is OK.
  Result<void> stop_container(const std::string& id, std::chrono::seconds grace);
  // DELETE /containers/{id}?force=1&v=1; a missing container is OK.
  Result<void> remove_container(const std::string& id);
  // GET /containers/json?all=1 with a label filter ("key=value" or "key").
  Result<nlohmann::json> list_containers(const std::string& label_filter);
  // GET /containers/{id}/stats?stream=false&one-shot=true
  Result<nlohmann::json> container_stats(const std::string& id);

  // The error for a non-2xx answer: dockerd's {"message"} with what was attempted.
  Error api_error(const http::Response& response, const std::string& what) const;
  // The error for a transport failure, with a hint when dockerd is not there at all.
  Error transport_error(const Error& error, const std::string& what) const;
  // Parses a JSON body or says that dockerd's answer to `what` was malformed (EPROTO).
  Result<nlohmann::json> parse_body(const http::Response& response, const std::string& what) const;

 private:
  // A one-shot client for dockerd's endpoint with the given request timeout (EINVAL for an
  // endpoint that does not parse).
  Result<http::HttpClient> client(std::chrono::milliseconds request_timeout) const;

  EngineOptions options_;
};

// URL-encodes a query parameter value.
std::string url_encode(std::string_view text);

}  // namespace corral::docker
