#pragma once
// A client of one repository on a registry speaking the Registry HTTP API v2 (Docker
// Distribution / OCI Distribution): manifests by tag or digest, blobs with resume, and the
// authentication flows: anonymous, HTTP basic (credentials file), and bearer tokens from the
// realm a 401's WWW-Authenticate names. Thread-safe: each call uses its own connection; the
// bearer token is shared.
//
// Transport: plain HTTP for registries listed as insecure. HTTPS is not implemented yet in
// Corral's HTTP client, so a registry not listed as insecure is refused with a message saying
// so (rather than silently downgraded).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "corral/common/result.hpp"
#include "corral/image/manifest.hpp"
#include "corral/image/reference.hpp"

namespace corral::image {

struct RegistryOptions {
  std::filesystem::path credentials_file;  // docker config.json style; empty: anonymous
  std::filesystem::path ca_bundle;
  std::vector<std::string> insecure_registries;  // "host:port" reached over plain HTTP
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  uint64_t max_document_bytes = 4 << 20;
};

struct FetchedManifest {
  std::string media_type;
  std::string digest;  // sha256 of the body (verified against a requested digest)
  std::string body;
};

class RegistryClient {
 public:
  static Result<RegistryClient> create(const Reference& ref, const RegistryOptions& options);
  ~RegistryClient();
  RegistryClient(RegistryClient&&) noexcept;
  RegistryClient& operator=(RegistryClient&&) noexcept;

  // GET /v2/<repo>/manifests/<tag or digest> accepting all four manifest types. When `ref` is
  // a digest, the body's sha256 must equal it (EBADMSG otherwise).
  Result<FetchedManifest> manifest(const std::string& tag_or_digest);
  // Downloads a blob into `dest` (appending to what is there, with a Range request, when the
  // file already holds a prefix), then verifies size and sha256 against `desc`; a mismatching
  // file is deleted. `on_bytes` gets the bytes received as they arrive.
  Result<void> fetch_blob(const Descriptor& desc, const std::filesystem::path& dest,
                          const std::function<void(uint64_t)>& on_bytes = {});
  // A small blob (a config) into memory, verified.
  Result<std::string> fetch_small_blob(const Descriptor& desc);

  const std::string& registry() const;

  struct State;

 private:
  explicit RegistryClient(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

// Parses a WWW-Authenticate header: scheme ("Bearer"/"Basic") and its key="value" parameters.
struct AuthChallenge {
  std::string scheme;
  std::map<std::string, std::string> params;
};
Result<AuthChallenge> parse_www_authenticate(std::string_view header);

}  // namespace corral::image
