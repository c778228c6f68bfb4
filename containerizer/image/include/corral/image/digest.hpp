#pragma once
// Content digests as OCI writes them: "sha256:<64 lower-case hex>". Only sha256 is accepted
// (the only algorithm registries and `docker save` use); anything else is refused by name.

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "corral/common/result.hpp"

namespace corral::image {

// Incremental sha256 (OpenSSL EVP). Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  void update(const void* data, size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  // "sha256:<hex>" of everything fed so far; the object is spent afterwards.
  std::string finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// "sha256:<hex>" of `data`.
std::string sha256_digest(std::string_view data);
// "sha256:<hex>" of a file's content.
Result<std::string> sha256_file(const std::filesystem::path& path);

// EINVAL naming `what` unless `digest` is "sha256:" followed by 64 lower-case hex digits.
Result<void> check_digest(std::string_view digest, std::string_view what = "digest");
// The hex part of a valid digest (for file names).
std::string digest_hex(std::string_view digest);

}  // namespace corral::image
