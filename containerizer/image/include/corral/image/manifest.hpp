#pragma once
// The JSON documents of an image: manifests (Docker schema 2, OCI), indexes (Docker manifest
// list, OCI index) and the image config. Parsing validates what the store relies on (digests,
// sizes, media types, diff_ids) and names the offending field.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "corral/common/result.hpp"

namespace corral::image {

namespace media {
inline constexpr const char* kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr const char* kDockerList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr const char* kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr const char* kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr const char* kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr const char* kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
// The Accept header for a manifest request: all four types.
std::string manifest_accept();
}  // namespace media

struct Platform {
  std::string os = "linux";
  std::string architecture = "amd64";
  std::string variant;  // optional ("v8" for arm64)
  std::string to_string() const;
};
// "linux/amd64", "linux/arm64/v8".
Result<Platform> parse_platform(std::string_view text);

struct Descriptor {
  std::string media_type;
  std::string digest;
  int64_t size = 0;
  Platform platform;  // index entries only
  std::map<std::string, std::string> annotations;
};

struct Manifest {
  std::string media_type;
  Descriptor config;
  std::vector<Descriptor> layers;  // bottom first
};

struct Index {
  std::string media_type;
  std::vector<Descriptor> manifests;
};

// The parts of the image config a task uses (defaults the task may override).
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=value"
  std::string working_dir;
  std::string user;                        // "", "name", "uid", "uid:gid", "name:group"
  std::vector<std::string> exposed_ports;  // "80/tcp"
  std::map<std::string, std::string> labels;
  std::string os;
  std::string architecture;
  std::vector<std::string> diff_ids;  // bottom first
};

bool is_index_type(std::string_view media_type);
bool is_manifest_type(std::string_view media_type);

// The media type of a manifest document: its mediaType field, or (for OCI documents that omit
// it) guessed from the fields present.
Result<std::string> document_media_type(const nlohmann::json& doc);
Result<Manifest> parse_manifest(std::string_view text);
Result<Index> parse_index(std::string_view text);
Result<ImageConfig> parse_image_config(std::string_view text);
// The entry of `index` for `platform`; ENOENT listing the platforms it has otherwise.
Result<Descriptor> select_platform(const Index& index, const Platform& platform);

nlohmann::json to_json(const ImageConfig& config);
Result<ImageConfig> image_config_from_json(const nlohmann::json& j);
// Serialises a Manifest as an OCI image manifest (used for docker-archive imports, which have
// none of their own).
std::string manifest_to_json(const Manifest& manifest);

}  // namespace corral::image
