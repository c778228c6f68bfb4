#include "corral/image/extract.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <set>
#include <unordered_set>

#include "corral/common/fd.hpp"
#include "corral/image/digest.hpp"

namespace corral::image {
namespace fs = std::filesystem;
namespace {

constexpr const char* kWhiteoutPrefix = ".wh.";
// Writeback of an extracted file is started every this many bytes (see start_writeback).
constexpr la_int64_t kWritebackChunk = 8 << 20;
// Up to this many files + directories, a synced layer fsyncs exactly its own files and
// directories; above, one syncfs() (one journal commit for all) is cheaper.
constexpr size_t kTargetedSyncMax = 2048;
constexpr const char* kOpaqueWhiteout = ".wh..wh..opq";
constexpr const char* kOverlayOpaqueXattr = "trusted.overlay.opaque";

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveDeleter>;

UniqueFd open_beneath(int root, const std::string& rel, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  const char* p = rel.empty() ? "." : rel.c_str();
  return UniqueFd(static_cast<int>(::syscall(SYS_openat2, root, p, &how, sizeof how)));
}

std::string join(const std::vector<std::string>& comps, size_t count) {
  std::string out;
  for (size_t i = 0; i < count && i < comps.size(); ++i) {
    if (i) out += '/';
    out += comps[i];
  }
  return out;
}

// The decompressed stream: archive `raw` (format raw, any filter) feeds archive `tar` through
// this callback, which hashes and counts every uncompressed byte (diff_id, bomb limit).
struct Stream {
  archive* raw = nullptr;
  Sha256 hash;
  uint64_t bytes = 0;
  uint64_t limit = 0;
  std::string buf = std::string(256 * 1024, '\0');
  std::optional<Error> error;
  bool eof = false;
};

la_ssize_t stream_read(archive*, void* data, const void** buffer) {
  auto* s = static_cast<Stream*>(data);
  if (s->eof) return 0;
  la_ssize_t n = archive_read_data(s->raw, s->buf.data(), s->buf.size());
  if (n < 0) {
    s->error = Error(EBADMSG, std::string("corrupt or truncated layer data: ") +
                                  (archive_error_string(s->raw) ? archive_error_string(s->raw)
                                                                : "decompression failed"));
    return -1;
  }
  if (n == 0) {
    s->eof = true;
    return 0;
  }
  s->bytes += static_cast<uint64_t>(n);
  if (s->bytes > s->limit) {
    s->error = Error(EFBIG, "layer expands beyond the limit of " + std::to_string(s->limit) +
                                " bytes (a decompression bomb, or raise the store's "
                                "max_layer_bytes)");
    return -1;
  }
  s->hash.update(s->buf.data(), static_cast<size_t>(n));
  *buffer = s->buf.data();
  return n;
}

class Extractor {
 public:
  Extractor(int root, const ExtractOptions& o) : root_(root), opts_(o) {}

  Result<void> entry(archive* tar, archive_entry* e, LayerStats& stats);
  Result<void> finish_dirs();
  // Makes the layer durable: fdatasync of its regular files and fsync of its directories when
  // there are few (nothing else is written: not the partial downloads of other layers, not
  // other processes' dirty data, as syncfs() would), else syncfs() of the file system.
  Result<void> sync(const fs::path& dest);

 private:
  // Remembers `rel`'s parent directories (and `rel` itself when it is a directory or a regular
  // file) for sync().
  void note(const std::vector<std::string>& comps, bool dir, bool regular) {
    if (!opts_.sync || too_many_) return;
    for (size_t i = 0; i < comps.size(); ++i) sync_dirs_.insert(join(comps, i));
    if (dir) sync_dirs_.insert(join(comps, comps.size()));
    if (regular) sync_files_.push_back(join(comps, comps.size()));
    if (sync_dirs_.size() + sync_files_.size() > kTargetedSyncMax) {
      too_many_ = true;
      sync_dirs_.clear();
      sync_files_.clear();
    }
  }
  Result<int> parent_dir(const std::vector<std::string>& comps, const std::string& name);
  Result<void> remove_existing(int parent, const std::string& base, bool keep_dir);
  Result<void> apply_meta(int fd, archive_entry* e, mode_t perms, LayerStats& stats);
  Result<void> apply_xattrs(int fd, archive_entry* e, const std::string& name, LayerStats& stats);
  void invalidate() {
    cached_parent_.clear();
    cached_fd_.reset();
  }

  int root_;
  const ExtractOptions& opts_;
  std::string cached_parent_;
  UniqueFd cached_fd_;
  std::unordered_set<std::string> files_;  // non-directories created in this layer
  std::vector<std::pair<std::string, timespec>> dir_times_;
  std::set<std::string> sync_dirs_;
  std::vector<std::string> sync_files_;
  bool too_many_ = false;
};

Error entry_error(const std::string& name, int code, const std::string& what) {
  return Error(code, "layer entry '" + name.substr(0, 256) + "': " + what);
}

Result<int> Extractor::parent_dir(const std::vector<std::string>& comps, const std::string& name) {
  std::string parent = join(comps, comps.size() - 1);
  if (cached_fd_ && parent == cached_parent_) return cached_fd_.get();
  UniqueFd fd = open_beneath(root_, parent, O_PATH | O_DIRECTORY);
  if (!fd && errno == ENOENT) {
    // Tar streams may omit parent directories: create them, one component at a time.
    UniqueFd cur = open_beneath(root_, "", O_PATH | O_DIRECTORY);
    for (size_t i = 0; i + 1 < comps.size() && cur; ++i) {
      if (::mkdirat(cur.get(), comps[i].c_str(), 0755) != 0 && errno != EEXIST) {
        return entry_error(
            name, errno,
            "cannot create parent directory '" + join(comps, i + 1) + "': " + std::strerror(errno));
      }
      cur = open_beneath(root_, join(comps, i + 1), O_PATH | O_DIRECTORY);
    }
    fd = std::move(cur);
  }
  if (!fd) {
    int err = errno;
    if (err == ELOOP || err == EXDEV) {
      return entry_error(name, EINVAL,
                         "refused: it would be written through a symlink in '" + parent +
                             "' (an image may not write through its own symlinks)");
    }
    if (err == ENOTDIR) {
      return entry_error(name, EINVAL, "refused: a parent of it is not a directory");
    }
    return entry_error(name, err, std::string("cannot open its directory: ") + std::strerror(err));
  }
  cached_parent_ = parent;
  cached_fd_ = std::move(fd);
  return cached_fd_.get();
}

Result<void> Extractor::remove_existing(int parent, const std::string& base, bool keep_dir) {
  struct stat st {};
  if (::fstatat(parent, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return {};
  if (S_ISDIR(st.st_mode)) {
    if (keep_dir) return {};
    std::error_code ec;
    fs::remove_all(fs::path("/proc/self/fd/" + std::to_string(parent)) / base, ec);
    if (ec) return Error(ec.value(), "remove " + base + ": " + ec.message());
  } else if (::unlinkat(parent, base.c_str(), 0) != 0) {
    return Error::from_errno("unlink " + base);
  }
  invalidate();
  return {};
}

Result<void> Extractor::apply_xattrs(int fd, archive_entry* e, const std::string& name,
                                     LayerStats& stats) {
  archive_entry_xattr_reset(e);
  const char* xname = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  while (archive_entry_xattr_next(e, &xname, &value, &size) == ARCHIVE_OK) {
    std::string_view n = xname ? xname : "";
    if (n.substr(0, 8) == "trusted.") {
      return entry_error(name, EINVAL,
                         "refused: carries the xattr '" + std::string(n) +
                             "' (trusted.* xattrs, overlay metadata included, never come from "
                             "an image)");
    }
    bool allowed =
        opts_.allow_xattrs && fd >= 0 && (n.substr(0, 5) == "user." || n == "security.capability");
    if (!allowed) {
      ++stats.xattrs_dropped;
      continue;
    }
    if (::fsetxattr(fd, std::string(n).c_str(), value, size, 0) != 0) {
      return entry_error(name, errno, "set xattr " + std::string(n) + ": " + std::strerror(errno));
    }
  }
  return {};
}

Result<void> Extractor::apply_meta(int fd, archive_entry* e, mode_t perms, LayerStats& stats) {
  if (opts_.preserve_owner) {
    if (::fchown(fd, static_cast<uid_t>(archive_entry_uid(e)),
                 static_cast<gid_t>(archive_entry_gid(e))) != 0) {
      return Error::from_errno("chown");
    }
  }
  if (!opts_.allow_setuid && (perms & 06000) != 0) {
    perms &= ~static_cast<mode_t>(06000);
    ++stats.setuid_cleared;
  }
  if (::fchmod(fd, perms) != 0) return Error::from_errno("chmod");
  return {};
}

Result<void> Extractor::entry(archive* tar, archive_entry* e, LayerStats& stats) {
  const char* raw_name = archive_entry_pathname(e);
  if (raw_name == nullptr) return Error(EINVAL, "layer entry without a name");
  const std::string name = raw_name;
  auto split = split_entry_path(name);
  if (!split) return entry_error(name, EINVAL, "refused: " + split.error().message());
  auto comps = std::move(split).value();
  if (++stats.entries > opts_.max_entries) {
    return entry_error(name, E2BIG,
                       "the layer has more than " + std::to_string(opts_.max_entries) +
                           " entries (raise the store's max_layer_entries if this is genuine)");
  }
  if (comps.empty()) return {};  // "./": the layer root itself
  const std::string rel = join(comps, comps.size());
  const std::string& base = comps.back();
  const mode_t type = archive_entry_filetype(e);
  note(comps, type == AE_IFDIR, type == AE_IFREG && !archive_entry_hardlink(e));
  mode_t perms = archive_entry_perm(e) & 07777;

  // Whiteouts.
  if (base.rfind(kWhiteoutPrefix, 0) == 0) {
    CORRAL_ASSIGN_OR_RETURN(int parent, parent_dir(comps, name));
    if (base == kOpaqueWhiteout) {
      UniqueFd dir = open_beneath(root_, join(comps, comps.size() - 1), O_RDONLY | O_DIRECTORY);
      if (!dir || ::fsetxattr(dir.get(), kOverlayOpaqueXattr, "y", 1, 0) != 0) {
        return entry_error(name, errno,
                           std::string("cannot mark the directory opaque: ") +
                               std::strerror(errno) + " (needs root: trusted.* xattrs)");
      }
      ++stats.whiteouts;
      return {};
    }
    std::string target = base.substr(std::strlen(kWhiteoutPrefix));
    if (target.empty() || target == "." || target == "..") {
      return entry_error(name, EINVAL, "refused: a whiteout without a valid name");
    }
    struct stat st {};
    if (::fstatat(parent, target.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return {};
    if (::mknodat(parent, target.c_str(), S_IFCHR | 0, ::makedev(0, 0)) != 0) {
      return entry_error(
          name, errno, std::string("cannot create the overlay whiteout: ") + std::strerror(errno));
    }
    ++stats.whiteouts;
    return {};
  }

  CORRAL_ASSIGN_OR_RETURN(int parent, parent_dir(comps, name));
  auto fail = [&](const Error& err) { return entry_error(name, err.code(), err.message()); };
  if (auto r = remove_existing(parent, base, type == AE_IFDIR); !r) return fail(r.error());
  if (cached_parent_.empty()) {  // remove_existing invalidated the cache
    CORRAL_ASSIGN_OR_RETURN(int p, parent_dir(comps, name));
    parent = p;
  }

  if (const char* link = archive_entry_hardlink(e); link != nullptr) {
    auto target = split_entry_path(link);
    if (!target || target->empty()) {
      return entry_error(name, EINVAL,
                         std::string("refused: hardlink target '") + link + "' is invalid" +
                             (target ? "" : ": " + target.error().message()));
    }
    const std::string trel = join(*target, target->size());
    if (!files_.count(trel)) {
      return entry_error(name, EINVAL,
                         "refused: hardlink to '" + std::string(link) +
                             "', which is not a file created earlier in this layer (hardlinks "
                             "may only point inside their layer)");
    }
    UniqueFd tparent = open_beneath(root_, join(*target, target->size() - 1), O_PATH | O_DIRECTORY);
    if (!tparent || ::linkat(tparent.get(), target->back().c_str(), parent, base.c_str(), 0) != 0) {
      return entry_error(name, errno, "hardlink to '" + trel + "' failed: " + std::strerror(errno));
    }
    files_.insert(rel);
    return {};
  }

  timespec times[2] = {{archive_entry_mtime(e), archive_entry_mtime_nsec(e)},
                       {archive_entry_mtime(e), archive_entry_mtime_nsec(e)}};
  switch (type) {
    case AE_IFREG: {
      UniqueFd fd(::openat(parent, base.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd) return entry_error(name, errno, std::string("create: ") + std::strerror(errno));
      const void* buf = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      // With sync on, the layer's syncfs() waits for every byte to reach the disk. Starting the
      // writeback of each file as it is written (SYNC_FILE_RANGE_WRITE: submit, do not wait)
      // lets the disk work while the rest of the layer is decompressed, so that syncfs() finds
      // little left to write. Durability is unchanged: syncfs() still runs before publishing.
      la_int64_t flushed = 0;
      auto start_writeback = [&](bool all) {
        if (!opts_.sync || offset - flushed < (all ? 1 : kWritebackChunk)) return;
        ::sync_file_range(fd.get(), flushed, offset - flushed, SYNC_FILE_RANGE_WRITE);
        flushed = offset;
      };
      for (;;) {
        int r = archive_read_data_block(tar, &buf, &size, &offset);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) return Error(EBADMSG, "data");  // caller names the stream error
        const char* p = static_cast<const char*>(buf);
        while (size > 0) {
          ssize_t n = ::pwrite(fd.get(), p, size, offset);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0)
            return entry_error(name, errno, std::string("write: ") + std::strerror(errno));
          p += n;
          size -= static_cast<size_t>(n);
          offset += n;
          stats.file_bytes += static_cast<uint64_t>(n);
        }
        start_writeback(false);
      }
      start_writeback(true);
      la_int64_t total = archive_entry_size(e);
      if (total > 0 && ::ftruncate(fd.get(), total) != 0) {
        return entry_error(name, errno, std::string("truncate: ") + std::strerror(errno));
      }
      if (auto r = apply_meta(fd.get(), e, perms, stats); !r) return fail(r.error());
      CORRAL_TRY(apply_xattrs(fd.get(), e, name, stats));
      ::futimens(fd.get(), times);
      files_.insert(rel);
      return {};
    }
    case AE_IFDIR: {
      if (::mkdirat(parent, base.c_str(), 0700) != 0 && errno != EEXIST) {
        return entry_error(name, errno, std::string("mkdir: ") + std::strerror(errno));
      }
      UniqueFd fd = open_beneath(root_, rel, O_RDONLY | O_DIRECTORY);
      if (!fd) return entry_error(name, errno, std::string("open: ") + std::strerror(errno));
      if (auto r = apply_meta(fd.get(), e, perms, stats); !r) return fail(r.error());
      CORRAL_TRY(apply_xattrs(fd.get(), e, name, stats));
      dir_times_.emplace_back(rel, times[1]);
      return {};
    }
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      if (target == nullptr || *target == '\0') {
        return entry_error(name, EINVAL, "refused: a symlink without a target");
      }
      if (::symlinkat(target, parent, base.c_str()) != 0) {
        return entry_error(name, errno, std::string("symlink: ") + std::strerror(errno));
      }
      if (opts_.preserve_owner &&
          ::fchownat(parent, base.c_str(), static_cast<uid_t>(archive_entry_uid(e)),
                     static_cast<gid_t>(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) != 0) {
        return entry_error(name, errno, std::string("chown: ") + std::strerror(errno));
      }
      ::utimensat(parent, base.c_str(), times, AT_SYMLINK_NOFOLLOW);
      CORRAL_TRY(apply_xattrs(-1, e, name, stats));
      files_.insert(rel);
      invalidate();  // a cached parent path may now run through this symlink
      return {};
    }
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO: {
      if (type != AE_IFIFO && !opts_.allow_devices) {
        return entry_error(name, EPERM,
                           std::string("refused: ") + (type == AE_IFCHR ? "character" : "block") +
                               " device node (device nodes in images are not allowed by the "
                               "store's policy)");
      }
      dev_t dev =
          type == AE_IFIFO ? 0 : ::makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
      if (!opts_.allow_setuid) perms &= ~static_cast<mode_t>(06000);
      if (::mknodat(parent, base.c_str(), type | (perms & 0777), dev) != 0) {
        return entry_error(name, errno, std::string("mknod: ") + std::strerror(errno));
      }
      if (opts_.preserve_owner &&
          ::fchownat(parent, base.c_str(), static_cast<uid_t>(archive_entry_uid(e)),
                     static_cast<gid_t>(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) != 0) {
        return entry_error(name, errno, std::string("chown: ") + std::strerror(errno));
      }
      CORRAL_TRY(apply_xattrs(-1, e, name, stats));
      files_.insert(rel);
      return {};
    }
    default:
      return entry_error(name, EINVAL, "refused: unsupported entry type (sockets and others)");
  }
}

Result<void> Extractor::sync(const fs::path& dest) {
  if (too_many_) {
    UniqueFd sync_fd(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!sync_fd || ::syncfs(sync_fd.get()) != 0) {
      return Error::from_errno("syncfs " + dest.string());
    }
    return {};
  }
  // Files first (their writeback started as they were written), then the directories that
  // name them, deepest first.
  for (const auto& rel : sync_files_) {
    UniqueFd fd = open_beneath(root_, rel, O_RDONLY | O_NOFOLLOW);
    if (!fd) {
      // Removed, or a parent replaced (by a symlink, a file) later in the layer.
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP || errno == EXDEV) continue;
      return Error::from_errno("open " + rel + " to sync it");
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::fdatasync(fd.get()) != 0) return Error::from_errno("fdatasync " + rel);
  }
  for (auto it = sync_dirs_.rbegin(); it != sync_dirs_.rend(); ++it) {
    UniqueFd fd = open_beneath(root_, *it, O_RDONLY | O_DIRECTORY);
    if (!fd) {
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP || errno == EXDEV) {
        continue;  // replaced later in the layer
      }
      return Error::from_errno("open directory " + *it + " to sync it");
    }
    if (::fsync(fd.get()) != 0) return Error::from_errno("fsync directory " + *it);
  }
  return {};
}

Result<void> Extractor::finish_dirs() {
  for (auto it = dir_times_.rbegin(); it != dir_times_.rend(); ++it) {
    UniqueFd fd = open_beneath(root_, it->first, O_RDONLY | O_DIRECTORY);
    if (!fd) continue;  // replaced later in the layer
    timespec t[2] = {it->second, it->second};
    ::futimens(fd.get(), t);
  }
  return {};
}

}  // namespace

Result<std::vector<std::string>> split_entry_path(const std::string& name) {
  if (name.empty()) return Error(EINVAL, "empty name");
  if (name.find('\0') != std::string::npos) return Error(EINVAL, "NUL in name");
  if (name[0] == '/') return Error(EINVAL, "absolute path");
  std::vector<std::string> comps;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string comp = name.substr(start, end - start);
    if (comp == "..") return Error(EINVAL, "path with a '..' component");
    if (!comp.empty() && comp != ".") comps.push_back(std::move(comp));
    start = end + 1;
  }
  return comps;
}

Result<LayerStats> extract_layer(const fs::path& archive_path, const fs::path& dest,
                                 const ExtractOptions& options) {
  UniqueFd root(::open(dest.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return Error::from_errno("open layer directory " + dest.string());

  ArchivePtr raw(archive_read_new());
  archive_read_support_filter_all(raw.get());
  archive_read_support_format_raw(raw.get());
  if (archive_read_open_filename(raw.get(), archive_path.c_str(), 1 << 20) != ARCHIVE_OK) {
    return Error(EBADMSG, "open layer " + archive_path.string() + ": " +
                              (archive_error_string(raw.get()) ? archive_error_string(raw.get())
                                                               : "unreadable"));
  }
  archive_entry* raw_entry = nullptr;
  if (archive_read_next_header(raw.get(), &raw_entry) != ARCHIVE_OK) {
    // An empty file: an empty layer.
    return Error(EBADMSG, "layer " + archive_path.string() + " is empty or unreadable");
  }

  Stream stream;
  stream.raw = raw.get();
  stream.limit = options.max_bytes;
  ArchivePtr tar(archive_read_new());
  archive_read_support_format_tar(tar.get());
  archive_read_support_format_gnutar(tar.get());
  archive_read_support_format_empty(tar.get());
  if (archive_read_open(tar.get(), &stream, nullptr, stream_read, nullptr) != ARCHIVE_OK) {
    if (stream.error) return *stream.error;
    return Error(EBADMSG, std::string("layer is not a tar archive: ") +
                              (archive_error_string(tar.get()) ? archive_error_string(tar.get())
                                                               : "unknown format"));
  }
  LayerStats stats;
  Extractor ex(root.get(), options);
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(tar.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      if (stream.error) return *stream.error;
      return Error(EBADMSG, std::string("corrupt layer archive: ") +
                                (archive_error_string(tar.get()) ? archive_error_string(tar.get())
                                                                 : "bad header"));
    }
    auto done = ex.entry(tar.get(), e, stats);
    if (!done) {
      if (stream.error) {
        return stream.error->context(std::string("layer entry '") +
                                     (archive_entry_pathname(e) ? archive_entry_pathname(e) : "") +
                                     "'");
      }
      if (done.error().code() == EBADMSG && done.error().message() == "data") {
        return Error(EBADMSG, std::string("layer entry '") + archive_entry_pathname(e) +
                                  "': corrupt data: " +
                                  (archive_error_string(tar.get()) ? archive_error_string(tar.get())
                                                                   : "read failed"));
      }
      return std::move(done).error();
    }
  }
  // Hash what follows the end-of-archive marker too: the diff_id covers the whole stream.
  const void* ignored = nullptr;
  for (;;) {
    la_ssize_t n = stream_read(tar.get(), &stream, &ignored);
    if (n <= 0) break;
  }
  if (stream.error) return *stream.error;
  CORRAL_TRY(ex.finish_dirs());
  stats.tar_bytes = stream.bytes;
  stats.diff_id = stream.hash.finish();
  if (options.expected_diff_id && *options.expected_diff_id != stats.diff_id) {
    return Error(EBADMSG, "layer content digest " + stats.diff_id +
                              " does not match the image config's diff_id " +
                              *options.expected_diff_id + " (corrupt or tampered image)");
  }
  // Durable before the caller publishes it (a rename after a crash must not expose holes).
  if (options.sync) CORRAL_TRY(ex.sync(dest));
  return stats;
}

// ---- copy fallback ----

namespace {

Result<void> remove_at(int dirfd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return {};
  if (S_ISDIR(st.st_mode)) {
    std::error_code ec;
    fs::remove_all(fs::path("/proc/self/fd/" + std::to_string(dirfd)) / name, ec);
    if (ec) return Error(ec.value(), "remove " + name + ": " + ec.message());
    return {};
  }
  if (::unlinkat(dirfd, name.c_str(), 0) != 0) return Error::from_errno("unlink " + name);
  return {};
}

void copy_meta_at(int dirfd, const std::string& name, const struct stat& st) {
  ::fchownat(dirfd, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
  if (!S_ISLNK(st.st_mode)) ::fchmodat(dirfd, name.c_str(), st.st_mode & 07777, 0);
  timespec t[2] = {st.st_atim, st.st_mtim};
  ::utimensat(dirfd, name.c_str(), t, AT_SYMLINK_NOFOLLOW);
}

Result<void> apply_dir(int src, int dst, const std::string& where) {
  UniqueFd iter_fd(::openat(src, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!iter_fd) return Error::from_errno("open " + where);
  DIR* d = ::fdopendir(iter_fd.release());
  if (d == nullptr) return Error::from_errno("opendir " + where);
  std::unique_ptr<DIR, int (*)(DIR*)> dir(d, ::closedir);
  while (dirent* de = ::readdir(dir.get())) {
    std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(src, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return Error::from_errno("stat " + where + "/" + name);
    }
    if (S_ISCHR(st.st_mode) && st.st_rdev == ::makedev(0, 0)) {  // whiteout
      CORRAL_TRY(remove_at(dst, name));
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      UniqueFd sub(::openat(src, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) return Error::from_errno("open " + where + "/" + name);
      char v = 0;
      bool opaque = ::fgetxattr(sub.get(), kOverlayOpaqueXattr, &v, 1) == 1 && v == 'y';
      struct stat dst_st {};
      bool dst_is_dir = ::fstatat(dst, name.c_str(), &dst_st, AT_SYMLINK_NOFOLLOW) == 0 &&
                        S_ISDIR(dst_st.st_mode);
      if (opaque || !dst_is_dir) CORRAL_TRY(remove_at(dst, name));
      if ((opaque || !dst_is_dir) && ::mkdirat(dst, name.c_str(), 0700) != 0) {
        return Error::from_errno("mkdir " + name);
      }
      UniqueFd dsub(::openat(dst, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!dsub) return Error::from_errno("open copy of " + where + "/" + name);
      CORRAL_TRY(apply_dir(sub.get(), dsub.get(), where + "/" + name));
      copy_meta_at(dst, name, st);
      continue;
    }
    CORRAL_TRY(remove_at(dst, name));
    if (S_ISREG(st.st_mode)) {
      UniqueFd in(::openat(src, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      UniqueFd out(
          ::openat(dst, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!in || !out) return Error::from_errno("copy " + where + "/" + name);
      off_t left = st.st_size;
      while (left > 0) {
        ssize_t n =
            ::copy_file_range(in.get(), nullptr, out.get(), nullptr, static_cast<size_t>(left), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return Error::from_errno("copy " + where + "/" + name);
        left -= n;
      }
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(src, name.c_str(), target.data(), target.size());
      if (n < 0) return Error::from_errno("readlink " + where + "/" + name);
      target.resize(static_cast<size_t>(n));
      if (::symlinkat(target.c_str(), dst, name.c_str()) != 0) {
        return Error::from_errno("symlink " + name);
      }
    } else if (::mknodat(dst, name.c_str(), st.st_mode, st.st_rdev) != 0) {
      return Error::from_errno("mknod " + name);
    }
    copy_meta_at(dst, name, st);
  }
  return {};
}

}  // namespace

Result<void> flatten_layers(const std::vector<fs::path>& layers_bottom_first,
                            const fs::path& dest) {
  UniqueFd dst(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dst) return Error::from_errno("open " + dest.string());
  for (const auto& layer : layers_bottom_first) {
    UniqueFd src(::open(layer.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!src) return Error::from_errno("open layer " + layer.string());
    CORRAL_TRY(apply_dir(src.get(), dst.get(), layer.string()));
  }
  return {};
}

}  // namespace corral::image
