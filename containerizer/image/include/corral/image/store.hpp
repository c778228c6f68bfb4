#pragma once
// ImageStore: Corral's content-addressed store of Docker/OCI images, and the per-task root
// filesystem provisioning the native containerizer uses. docs/images.md is the operator
// reference (layout on disk, limits, policy, CLI).
//
// Contract:
//   - Every call blocks until done and is thread-safe; several processes (the agent and the
//     `corral image` CLI) may use one root at once (metadata changes take an flock on
//     <root>/lock; downloads and extraction happen outside it).
//   - An image's id is its manifest digest ("sha256:..."). For a docker-archive import (which
//     carries no manifest) it is the digest of the OCI manifest the store writes for it.
//   - Nothing is used before it is verified: every blob's sha256 and size are checked against
//     its descriptor, every layer's uncompressed digest against the config's diff_id, and a
//     layer is published (renamed into layers/) only once completely extracted. A crash at any
//     point leaves the store consistent; the next pull resumes (partial blob downloads are kept
//     and continued with HTTP Range requests; extracted layers are reused).
//   - Layers are shared by diff_id between images. Two pulls of the same reference at once, in
//     one process, download once: the second waits for the first and gets its result.
//   - provision(image, container_id) takes a lease that keeps the image (and its layers) from
//     remove() and garbage collection until release(container_id). Leases are files, so they
//     survive an agent restart; release() is idempotent.
//
// Layout under the root (default /var/lib/corral/images):
//   blobs/sha256/<hex>      manifests, indexes and configs (small; layer blobs are not kept)
//   layers/<hex of diff_id>/  one extracted layer, overlayfs lower-dir form (extract.hpp)
//   images/<hex of id>.json  image record: manifest, config, layers, sizes, references
//   refs.json               "registry/repo:tag" -> image id
//   leases/<container_id>   image id held by a container
//   tmp/                    downloads in progress (tmp/blobs/<hex>.partial) and extractions

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "corral/common/result.hpp"
#include "corral/image/extract.hpp"
#include "corral/image/manifest.hpp"
#include "corral/image/reference.hpp"
#include "corral/isolator/policy.hpp"

namespace corral::image {

inline constexpr const char* kDefaultStoreRoot = "/var/lib/corral/images";

// What images tasks on this agent may use. Empty lists allow everything.
struct ImagePolicy {
  // Registries ("host:port", "docker.io") images may come from; imports have no registry and
  // are checked against `patterns` only.
  std::vector<std::string> registries;
  // Image names "registry/repository:tag" that are allowed (match_pattern() globs: '*' within
  // a path component, "**" across them), e.g. "127.0.0.1:5000/team/**".
  std::vector<std::string> patterns;
  // Pulls must name a digest (…@sha256:…): tags alone are refused.
  bool require_digest = false;
  // Largest image (sum of its layer blobs) accepted; 0 = no limit.
  uint64_t max_image_bytes = 0;
  // Where these rules came from, for messages ("/etc/corral/policy.d/10-images.toml:3").
  std::string origin = "store options";
};
// The store's view of the isolation policy's [images] section.
ImagePolicy image_policy_from(const isolator::ImagesPolicy& images);
// EPERM naming the rule when `ref` is not allowed (registry, pattern, digest).
Result<void> check_reference_allowed(const ImagePolicy& policy, const Reference& ref);

struct StoreOptions {
  std::filesystem::path root = kDefaultStoreRoot;
  // Per-layer extraction limits and what layers may contain (devices, setuid, xattrs).
  ExtractOptions extract;
  // Largest manifest/index/config document accepted.
  uint64_t max_document_bytes = 4 << 20;
  // Layers downloaded and extracted at once per pull.
  unsigned parallel_layers = 4;
  // Garbage collection by disk use: when the store's layers exceed `high_watermark_bytes`
  // after a pull (0 = never), unused images are removed, least recently used first, until the
  // store is below `low_watermark_bytes` (default: 80% of the high watermark).
  uint64_t high_watermark_bytes = 0;
  uint64_t low_watermark_bytes = 0;
  // The [images] section of the isolation policy (image_policy_from() converts it): allowed
  // registries and patterns, required digests, maximum image size. Checked by pull() and
  // import() (before anything is downloaded where possible) and by provision().
  ImagePolicy policy;
};

struct Progress {
  enum class Phase { resolving, downloading, extracting, done };
  Phase phase = Phase::resolving;
  std::string layer;         // the layer's blob digest (downloading/extracting)
  uint64_t bytes_done = 0;   // downloaded (or read from the archive) so far, all layers
  uint64_t bytes_total = 0;  // compressed size of all layers
  size_t layers_done = 0;    // extracted (or found already present)
  size_t layers_total = 0;
};
// Called from the pulling threads (serialised by the store: one call at a time), often; keep
// it cheap.
using ProgressCallback = std::function<void(const Progress&)>;

struct PullOptions {
  // Docker-style credentials: {"auths": {"host:port": {"auth": base64("user:password")}}}
  // (or "username"/"password" fields). Empty: anonymous.
  std::filesystem::path credentials_file;
  // PEM bundle of the CAs that sign the registries' certificates (TLS registries).
  std::filesystem::path ca_bundle;
  // Per registry ("host:port") CA files; they override ca_bundle for that registry.
  std::map<std::string, std::filesystem::path> registry_ca_files;
  // Registries ("host:port") reached over plain HTTP instead of HTTPS (tests, local mirrors).
  std::vector<std::string> insecure_registries;
  Platform platform;  // which variant of a multi-platform image
  ProgressCallback progress;
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};  // per HTTP request
};

struct ImportOptions {
  // The reference to tag the imported image with (OCI layouts: also which of several images
  // to import, matched against org.opencontainers.image.ref.name). Empty: the archive's own
  // name(s) (docker-archive RepoTags, OCI ref.name annotations), or untagged.
  std::string reference;
  Platform platform;
  ProgressCallback progress;
};

struct LayerInfo {
  std::string diff_id;      // sha256 of the uncompressed tar
  std::string blob_digest;  // the (compressed) blob in the manifest
  std::string media_type;
  uint64_t blob_size = 0;
  uint64_t unpacked_bytes = 0;  // file content bytes
};

struct ImageInfo {
  std::string id;  // manifest digest
  std::string manifest_media_type;
  std::string config_digest;
  std::vector<std::string> references;  // "registry/repo:tag", sorted
  std::vector<LayerInfo> layers;        // bottom first
  ImageConfig config;
  uint64_t blob_bytes = 0;      // sum of layer blob sizes (what a pull downloads)
  uint64_t unpacked_bytes = 0;  // sum of layer content sizes
  std::string source;           // where it came from: "registry 127.0.0.1:5000", "oci-archive FILE"
  std::chrono::system_clock::time_point added;
  std::chrono::system_clock::time_point last_used;  // last provision()
  std::vector<std::string> leases;                  // containers holding it
};

// What a task's root filesystem is made of.
struct Provisioned {
  std::string image_id;
  // Extracted layer directories, TOP FIRST (overlayfs lowerdir order; reverse for
  // flatten_layers()). They are read-only by contract: mount them as overlay lower dirs only.
  std::vector<std::filesystem::path> lower_dirs;
  ImageConfig config;  // Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts
};

struct PruneOptions {
  bool all = false;  // remove every image no container holds (default: only untagged ones)
  // When set, remove unused images least recently used first only until the store's layers use
  // less than this many bytes (the watermark GC).
  std::optional<uint64_t> target_bytes;
};

struct PruneReport {
  std::vector<std::string> images_removed;  // ids
  size_t layers_removed = 0;
  uint64_t bytes_freed = 0;
};

class ImageStore {
 public:
  // Opens (creating when missing, mode 0700) the store at options.root and removes what a
  // crashed process left in tmp/ (but keeps partial downloads for resuming).
  static Result<std::unique_ptr<ImageStore>> open(StoreOptions options);
  ~ImageStore();

  // Pulls `reference` ([REGISTRY/]REPO[:TAG][@DIGEST]) from its registry (Registry HTTP API v2:
  // anonymous, basic auth, or bearer token flow) and tags it. Errors name the registry, the
  // reference and the layer or entry at fault.
  Result<ImageInfo> pull(std::string_view reference, const PullOptions& options = {});

  // Imports a `docker save` archive (manifest.json layout or OCI layout), an OCI image layout
  // directory or an oci-archive (tar of one), detected by content.
  Result<ImageInfo> import(const std::filesystem::path& path, const ImportOptions& options = {});

  Result<std::vector<ImageInfo>> list();
  // By reference, full id, or unique id prefix (12+ hex digits).
  Result<ImageInfo> inspect(std::string_view reference_or_id);

  // Removes a reference (a tag) or, given an id, the image and all its references. The image's
  // layers go once nothing else uses them. EBUSY naming the containers while leased.
  Result<void> remove(std::string_view reference_or_id);
  Result<PruneReport> prune(const PruneOptions& options = {});

  // Leases the image for `container_id` ([A-Za-z0-9._-]{1,200}) and returns its layers and
  // config. Calling it again for the same container returns the same lease (EEXIST if it names
  // another image). The image must be in the store (pull or import first): ENOENT otherwise.
  Result<Provisioned> provision(std::string_view reference_or_id, std::string_view container_id);
  // Drops the container's lease (no-op when it has none).
  Result<void> release(std::string_view container_id);

  // Bytes used by extracted layers (what the watermark GC compares).
  Result<uint64_t> disk_usage();

  const StoreOptions& options() const;

  class Impl;

 private:
  explicit ImageStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Resolves an image config's User ("", "name", "uid", "uid:gid", "name:group") against the
// image's own /etc/passwd and /etc/group (the topmost layer that has them, read without
// following symlinks out of the layer). "" is root (0:0). A numeric uid without a passwd entry
// gets gid = uid's entry or 0. ENOENT naming the user when a name is unknown.
struct ImageUser {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> supplementary_gids;  // groups of /etc/group listing the user by name
};
Result<ImageUser> resolve_image_user(const std::vector<std::filesystem::path>& lower_dirs_top_first,
                                     std::string_view user);

// Validates a container id for provision()/release().
Result<void> check_container_id(std::string_view id);

}  // namespace corral::image
