#pragma once
// A client of one repository on a registry speaking the Registry HTTP API v2 (Docker
// Distribution / OCI Distribution): manifests by tag or digest, blobs with resume, and the
// authentication flows: anonymous, HTTP basic (credentials file), and bearer tokens from the
// realm a 401's WWW-Authenticate names. Thread-safe: each call uses its own connection; the
// bearer token is shared.
//
// Transport: HTTPS (TLS >= 1.2, the certificate verified against the registry's CA file, else
// ca_bundle, else the system store, and against the registry's host name). Plain HTTP only
// for registries listed as insecure; never a silent downgrade: a TLS registry's token service
// and blob redirects must be HTTPS too.

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
  std::filesystem::path ca_bundle;         // PEM CAs for every TLS registry; empty: system store
  // Per registry "host:port" -> PEM CA file (overrides ca_bundle for that registry).
  std::map<std::string, std::filesystem::path> registry_ca_files;
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
