#pragma once
// Safe extraction of one image layer (a tar stream, optionally gzip/zstd/xz/bzip2 compressed)
// into an empty directory, in overlayfs "lower dir" form:
//   - a whiteout ".wh.NAME" becomes an overlay whiteout (character device 0:0 named NAME);
//   - an opaque whiteout ".wh..wh..opq" sets trusted.overlay.opaque="y" on its directory;
// so the layer directories of an image stack as overlayfs lower dirs (flatten_layers() applies
// them to a plain directory for the copy fallback).
//
// Refused, with an error naming the entry: absolute paths, ".." components, entries that would
// be created through a symlink (every path is resolved by the kernel with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)), hardlinks whose target is not a file created
// earlier in the same layer, device nodes (unless allowed), trusted.* / security.* xattrs other
// than security.capability (overlay metadata must never come from an image), and layers beyond
// the byte or entry limit (a decompression bomb stops at the limit). setuid/setgid bits are
// cleared unless allowed. The caller extracts into a temporary directory and only publishes it
// when extract_layer() succeeds, so nothing half-extracted is ever used.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "corral/common/result.hpp"

namespace corral::image {

struct ExtractOptions {
  uint64_t max_bytes = 16ull << 30;  // uncompressed tar bytes per layer
  uint64_t max_entries = 1'000'000;  // entries (inodes) per layer
  bool allow_devices = false;        // character/block device entries (not whiteouts)
  bool allow_setuid = false;         // keep setuid/setgid bits
  bool allow_xattrs = false;         // user.* and security.capability xattrs from the image
  // chown entries to the image's uid/gid (needs root); false keeps the extractor's own ids.
  bool preserve_owner = true;
  // Make the layer durable before returning, so a layer published afterwards cannot lose data
  // to a power failure: fdatasync of each of its regular files and fsync of each of its
  // directories (up to 2048 of them together), else one syncfs() of the file system. false:
  // faster (nothing waits for the disk); a crash of the process is still safe, a power loss may
  // leave a published layer with missing data.
  bool sync = true;
  // When set, the sha256 of the uncompressed tar stream must equal this digest (a diff_id).
  std::optional<std::string> expected_diff_id;
};

struct LayerStats {
  std::string diff_id;      // sha256 of the uncompressed tar stream
  uint64_t tar_bytes = 0;   // uncompressed size
  uint64_t file_bytes = 0;  // bytes of regular file content written
  uint64_t entries = 0;
  uint64_t whiteouts = 0;
  uint64_t setuid_cleared = 0;
  uint64_t xattrs_dropped = 0;
};

// Extracts the layer archive at `archive` into `dest`, which must exist and be empty.
// Errors: EINVAL bad entry ("layer entry 'a/../../etc/passwd': ..."), EFBIG/E2BIG limits,
// EBADMSG digest mismatch or corrupt archive, errno of the failing system call otherwise.
Result<LayerStats> extract_layer(const std::filesystem::path& archive,
                                 const std::filesystem::path& dest,
                                 const ExtractOptions& options = {});

// Copy fallback: applies layer directories (bottom first, overlay form as written by
// extract_layer) onto the empty directory `dest`, honouring whiteouts and opaque directories.
Result<void> flatten_layers(const std::vector<std::filesystem::path>& layers_bottom_first,
                            const std::filesystem::path& dest);

// Splits a tar entry name into validated components ("./a//b/" -> {"a","b"}); EINVAL for
// absolute paths, ".." components, NUL or an empty name. Exposed for tests.
Result<std::vector<std::string>> split_entry_path(const std::string& name);

}  // namespace corral::image
