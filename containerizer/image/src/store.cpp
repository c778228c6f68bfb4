#include "corral/image/store.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"
#include "corral/image/digest.hpp"
#include "corral/image/registry.hpp"
#include "corral/isolator/policy.hpp"

namespace corral::image {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kArchiveMaxBytes = 256ull << 30;

int64_t to_unix(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
std::chrono::system_clock::time_point from_unix(int64_t s) {
  return std::chrono::system_clock::time_point(std::chrono::seconds(s));
}

std::string random_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 12; ++i) s += hex[rng() & 15];
  return s;
}

// Holds an exclusive flock on <root>/lock (between processes and between threads: each holder
// opens its own file description).
class StoreLock {
 public:
  static Result<StoreLock> take(const fs::path& root) {
    UniqueFd fd(::open((root / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return Error::from_errno("open " + (root / "lock").string());
    while (::flock(fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR) return Error::from_errno("lock the image store");
    }
    return StoreLock(std::move(fd));
  }

 private:
  explicit StoreLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

Result<void> mkdirs(const fs::path& p) {
  std::error_code ec;
  fs::create_directories(p, ec);
  if (ec) return Error(ec.value(), "create " + p.string() + ": " + ec.message());
  return {};
}

json info_to_json(const ImageInfo& i) {
  json layers = json::array();
  for (const auto& l : i.layers) {
    layers.push_back({{"diff_id", l.diff_id},
                      {"blob_digest", l.blob_digest},
                      {"media_type", l.media_type},
                      {"blob_size", l.blob_size},
                      {"unpacked_bytes", l.unpacked_bytes}});
  }
  return {{"id", i.id},
          {"manifest_media_type", i.manifest_media_type},
          {"config_digest", i.config_digest},
          {"config", to_json(i.config)},
          {"layers", layers},
          {"blob_bytes", i.blob_bytes},
          {"unpacked_bytes", i.unpacked_bytes},
          {"source", i.source},
          {"added", to_unix(i.added)},
          {"last_used", to_unix(i.last_used)}};
}

Result<ImageInfo> info_from_json(const json& j) {
  if (!j.is_object() || !j.contains("id") || !j.contains("layers")) {
    return Error(EBADMSG, "image record is damaged");
  }
  ImageInfo i;
  i.id = j.value("id", "");
  i.manifest_media_type = j.value("manifest_media_type", "");
  i.config_digest = j.value("config_digest", "");
  CORRAL_ASSIGN_OR_RETURN(i.config, image_config_from_json(j.value("config", json::object())));
  for (const auto& l : j["layers"]) {
    LayerInfo li;
    li.diff_id = l.value("diff_id", "");
    li.blob_digest = l.value("blob_digest", "");
    li.media_type = l.value("media_type", "");
    li.blob_size = l.value("blob_size", uint64_t{0});
    li.unpacked_bytes = l.value("unpacked_bytes", uint64_t{0});
    if (!check_digest(li.diff_id)) return Error(EBADMSG, "image record has a bad diff_id");
    i.layers.push_back(std::move(li));
  }
  i.blob_bytes = j.value("blob_bytes", uint64_t{0});
  i.unpacked_bytes = j.value("unpacked_bytes", uint64_t{0});
  i.source = j.value("source", "");
  i.added = from_unix(j.value("added", int64_t{0}));
  i.last_used = from_unix(j.value("last_used", int64_t{0}));
  return i;
}

// Opens `rel` (a relative path from an archive's own metadata) strictly inside `dir`.
Result<UniqueFd> open_inside(const fs::path& dir, const std::string& rel, const std::string& what) {
  auto comps = split_entry_path(rel);
  if (!comps || comps->empty()) {
    return Error(EINVAL, what + " names the path '" + rel + "', which is not inside the archive");
  }
  UniqueFd dfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dfd) return Error::from_errno("open " + dir.string());
  std::string joined;
  for (const auto& c : *comps) joined += (joined.empty() ? "" : "/") + c;
  // RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: no escape through the archive's own symlinks.
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int f = static_cast<int>(::syscall(SYS_openat2, dfd.get(), joined.c_str(), &how, sizeof how));
  if (f < 0) {
    return Error(
        errno == ENOENT ? ENOENT : EINVAL,
        what + " '" + rel + "' cannot be opened inside the archive: " + std::strerror(errno));
  }
  return UniqueFd(f);
}

std::string fd_path(const UniqueFd& fd) { return "/proc/self/fd/" + std::to_string(fd.get()); }

// Where a source gets blobs from.
class Source {
 public:
  virtual ~Source() = default;
  virtual std::string describe() const = 0;
  // A small blob (manifest, index, config), verified.
  virtual Result<std::string> document(const Descriptor& desc) = 0;
  // Makes the layer blob available as a local file; verified against desc (digest and size).
  // `scratch` is a path the source may write to (and resume from).
  virtual Result<fs::path> layer(const Descriptor& desc, const fs::path& scratch,
                                 const std::function<void(uint64_t)>& on_bytes) = 0;
  // Whether layer() files are scratch files to delete after extraction.
  virtual bool layers_are_scratch() const = 0;
};

class RegistrySource : public Source {
 public:
  explicit RegistrySource(RegistryClient client) : client_(std::move(client)) {}
  std::string describe() const override { return "registry " + client_.registry(); }
  Result<std::string> document(const Descriptor& d) override { return client_.fetch_small_blob(d); }
  Result<fs::path> layer(const Descriptor& d, const fs::path& scratch,
                         const std::function<void(uint64_t)>& on_bytes) override {
    CORRAL_TRY(client_.fetch_blob(d, scratch, on_bytes));
    return scratch;
  }
  bool layers_are_scratch() const override { return true; }

 private:
  RegistryClient client_;
};

// An OCI layout directory (blobs/sha256/<hex>) or an unpacked docker archive.
class DirSource : public Source {
 public:
  DirSource(fs::path dir, std::string what, uint64_t max_doc)
      : dir_(std::move(dir)), what_(std::move(what)), max_doc_(max_doc) {}
  std::string describe() const override { return what_; }
  // Docker archives name files by path; OCI layouts by digest.
  std::map<std::string, std::string> paths;  // digest -> relative path

  std::string rel_for(const std::string& digest) const {
    auto it = paths.find(digest);
    return it != paths.end() ? it->second : "blobs/sha256/" + digest_hex(digest);
  }
  Result<std::string> document(const Descriptor& d) override {
    if (static_cast<uint64_t>(d.size) > max_doc_) {
      return Error(EFBIG, "document " + d.digest + " is too large");
    }
    CORRAL_ASSIGN_OR_RETURN(UniqueFd fd, open_inside(dir_, rel_for(d.digest), "blob"));
    auto text = read_file(fd_path(fd), max_doc_);
    if (!text) return text.error().context(what_);
    if (text->size() != static_cast<size_t>(d.size)) {
      return Error(EBADMSG, what_ + ": blob " + d.digest + " has " + std::to_string(text->size()) +
                                " bytes, its descriptor says " + std::to_string(d.size) +
                                " (truncated or corrupt)");
    }
    if (sha256_digest(*text) != d.digest) {
      return Error(EBADMSG, what_ + ": blob " + d.digest +
                                " does not match its digest (corrupt or tampered)");
    }
    return text;
  }
  Result<fs::path> layer(const Descriptor& d, const fs::path&,
                         const std::function<void(uint64_t)>& on_bytes) override {
    CORRAL_ASSIGN_OR_RETURN(UniqueFd fd, open_inside(dir_, rel_for(d.digest), "layer"));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return Error(EINVAL, what_ + ": layer " + d.digest + " is not a regular file");
    }
    if (st.st_size != d.size) {
      return Error(EBADMSG, what_ + ": layer blob " + d.digest + " has " +
                                std::to_string(st.st_size) + " bytes, its descriptor says " +
                                std::to_string(d.size) + " (truncated or corrupt)");
    }
    CORRAL_ASSIGN_OR_RETURN(std::string got, sha256_file(fd_path(fd)));
    if (got != d.digest) {
      return Error(EBADMSG, what_ + ": layer blob " + d.digest + " has digest " + got +
                                " (corrupt or tampered)");
    }
    if (on_bytes) on_bytes(static_cast<uint64_t>(st.st_size));
    return dir_ / rel_for(d.digest);
  }
  bool layers_are_scratch() const override { return false; }

 private:
  fs::path dir_;
  std::string what_;
  uint64_t max_doc_;
};

}  // namespace

Result<void> check_container_id(std::string_view id) {
  bool ok = !id.empty() && id.size() <= 200 && id != "." && id != "..";
  for (char c : id) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  }
  if (!ok) {
    return Error(EINVAL, "container id '" + std::string(id.substr(0, 200)) +
                             "' is invalid: use 1-200 of [A-Za-z0-9._-]");
  }
  return {};
}

ImagePolicy image_policy_from(const isolator::ImagesPolicy& images) {
  ImagePolicy p;
  p.registries = images.registries.value;
  p.patterns = images.patterns.value;
  p.require_digest = images.require_digest.value;
  p.max_image_bytes = images.max_size.value;
  std::set<std::string> origins;
  for (const auto* o : {&images.registries.origin, &images.patterns.origin,
                        &images.require_digest.origin, &images.max_size.origin}) {
    if (*o != "built-in default") origins.insert(*o);
  }
  p.origin.clear();
  for (const auto& o : origins) p.origin += (p.origin.empty() ? "" : ", ") + o;
  if (p.origin.empty()) p.origin = "built-in default";
  return p;
}

Result<void> check_reference_allowed(const ImagePolicy& policy, const Reference& ref) {
  const std::string name = ref.to_string();
  if (!policy.registries.empty() && std::find(policy.registries.begin(), policy.registries.end(),
                                              ref.registry) == policy.registries.end()) {
    std::string list;
    for (const auto& r : policy.registries) list += (list.empty() ? "" : ", ") + r;
    return Error(EPERM, "image " + name + ": registry " + ref.registry +
                            " is not allowed by the policy: images.registries = [" + list + "] (" +
                            policy.origin + "); use an allowed registry or add it");
  }
  if (!policy.patterns.empty()) {
    bool matched = false;
    for (const auto& p : policy.patterns) {
      matched = matched || match_pattern(p, name) ||
                (!ref.tag.empty() && match_pattern(p, ref.name() + ":" + ref.tag)) ||
                match_pattern(p, ref.name());
    }
    if (!matched) {
      std::string list;
      for (const auto& p : policy.patterns) list += (list.empty() ? "" : ", ") + p;
      return Error(EPERM, "image " + name + " matches none of the policy's images.patterns = [" +
                              list + "] (" + policy.origin + ")");
    }
  }
  if (policy.require_digest && ref.digest.empty()) {
    return Error(EPERM, "image " + name +
                            ": the policy requires a digest (images.require_digest"
                            " = true, " +
                            policy.origin + "); pull NAME@sha256:...");
  }
  return {};
}

class ImageStore::Impl {
 public:
  StoreOptions opts;
  fs::path root;
  std::mutex inflight_mu;
  std::map<std::string, std::shared_future<Result<ImageInfo>>> pulls;
  std::map<std::string, std::shared_future<Result<void>>> layers;

  fs::path layer_dir(const std::string& diff_id) const {
    return root / "layers" / digest_hex(diff_id);
  }
  fs::path image_file(const std::string& id) const {
    return root / "images" / (digest_hex(id) + ".json");
  }

  Result<std::map<std::string, std::string>> read_refs() {
    auto text = read_file(root / "refs.json", 64 << 20);
    if (!text) {
      if (text.error().code() == ENOENT) return std::map<std::string, std::string>{};
      return text.error();
    }
    auto j = json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return Error(EBADMSG, (root / "refs.json").string() + " is damaged (not JSON)");
    }
    std::map<std::string, std::string> refs;
    const json table = j.value("refs", json::object());
    for (const auto& [k, v] : table.items()) {
      if (v.is_string()) refs[k] = v.get<std::string>();
    }
    return refs;
  }
  Result<void> write_refs(const std::map<std::string, std::string>& refs) {
    return write_file_atomic(root / "refs.json", json{{"refs", refs}}.dump(1) + "\n", 0600);
  }

  Result<ImageInfo> read_image(const std::string& id) {
    auto text = read_file(image_file(id), 16 << 20);
    if (!text) return text.error();
    auto j = json::parse(*text, nullptr, false);
    if (j.is_discarded()) return Error(EBADMSG, image_file(id).string() + " is damaged");
    return info_from_json(j);
  }

  Result<std::map<std::string, std::string>> read_leases() {
    std::map<std::string, std::string> out;  // container -> image id
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root / "leases", ec)) {
      auto text = read_file(e.path(), 4096);
      if (!text) continue;
      std::string id = *text;
      while (!id.empty() && id.back() == '\n') id.pop_back();
      out[e.path().filename().string()] = id;
    }
    return out;
  }

  Result<std::vector<ImageInfo>> all_images() {
    CORRAL_ASSIGN_OR_RETURN(auto refs, read_refs());
    CORRAL_ASSIGN_OR_RETURN(auto leases, read_leases());
    std::vector<ImageInfo> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root / "images", ec)) {
      if (e.path().extension() != ".json") continue;
      auto text = read_file(e.path(), 16 << 20);
      if (!text) continue;
      auto j = json::parse(*text, nullptr, false);
      auto info = info_from_json(j);
      if (!info) {
        log::warning("image store: skipping damaged record", {{"PATH", e.path().string()}});
        continue;
      }
      for (const auto& [r, id] : refs) {
        if (id == info->id) info->references.push_back(r);
      }
      for (const auto& [c, id] : leases) {
        if (id == info->id) info->leases.push_back(c);
      }
      out.push_back(std::move(info).value());
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return out;
  }

  // Resolves a reference, an id or an id prefix to an image id (no lock needed: reads files
  // that are replaced atomically).
  Result<std::string> resolve(std::string_view text) {
    CORRAL_ASSIGN_OR_RETURN(auto refs, read_refs());
    if (looks_like_image_id(text)) {
      std::string hex = digest_hex(text);
      std::vector<std::string> hits;
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(root / "images", ec)) {
        std::string stem = e.path().stem().string();
        if (stem.rfind(hex, 0) == 0) hits.push_back("sha256:" + stem);
      }
      if (hits.size() == 1) return hits[0];
      if (hits.size() > 1) {
        return Error(EINVAL,
                     "image id prefix '" + std::string(text) + "' is ambiguous; give more digits");
      }
    }
    auto ref = parse_reference(text);
    if (ref) {
      auto it = refs.find(ref->to_string());
      if (it != refs.end()) return it->second;
      if (!ref->digest.empty() && fs::exists(image_file(ref->digest))) return ref->digest;
    }
    return Error(ENOENT, "image '" + std::string(text) +
                             "' is not in the store (pull or import it first: corral image "
                             "pull/import)");
  }

  void report(std::mutex& mu, Progress& p, const ProgressCallback& cb) {
    if (!cb) return;
    std::lock_guard lock(mu);
    cb(p);
  }

  // Makes sure layer `desc`/`diff_id` is extracted (deduplicated between threads).
  Result<void> ensure_layer(Source& src, const Descriptor& desc, const std::string& diff_id,
                            const std::function<void(uint64_t)>& on_bytes, LayerInfo* info) {
    std::promise<Result<void>> promise;
    std::shared_future<Result<void>> wait;
    bool owner = false;
    {
      std::lock_guard lock(inflight_mu);
      auto it = layers.find(diff_id);
      if (it != layers.end()) {
        wait = it->second;
      } else {
        wait = promise.get_future().share();
        layers[diff_id] = wait;
        owner = true;
      }
    }
    if (!owner) {
      CORRAL_TRY(wait.get());
      return read_layer_meta(diff_id, info);
    }
    auto r = extract_one(src, desc, diff_id, on_bytes);
    promise.set_value(r ? Result<void>{} : Result<void>(r.error()));
    {
      std::lock_guard lock(inflight_mu);
      layers.erase(diff_id);
    }
    CORRAL_TRY(r);
    return read_layer_meta(diff_id, info);
  }

  Result<void> read_layer_meta(const std::string& diff_id, LayerInfo* info) {
    auto text = read_file(layer_dir(diff_id) / "meta.json", 1 << 20);
    if (!text) return text.error().context("layer " + diff_id);
    auto j = json::parse(*text, nullptr, false);
    if (j.is_object()) info->unpacked_bytes = j.value("file_bytes", uint64_t{0});
    return {};
  }

  Result<void> extract_one(Source& src, const Descriptor& desc, const std::string& diff_id,
                           const std::function<void(uint64_t)>& on_bytes) {
    const fs::path final_dir = layer_dir(diff_id);
    if (fs::exists(final_dir / "meta.json")) {
      if (on_bytes) on_bytes(static_cast<uint64_t>(desc.size));
      return {};
    }
    const fs::path scratch = root / "tmp" / "blobs" / (digest_hex(desc.digest) + ".partial");
    CORRAL_ASSIGN_OR_RETURN(fs::path blob, src.layer(desc, scratch, on_bytes));
    const fs::path work =
        root / "tmp" / ("extract-" + std::to_string(::getpid()) + "-" + random_suffix());
    CORRAL_TRY(mkdirs(work / "root"));
    auto cleanup = [&] {
      std::error_code ec;
      fs::remove_all(work, ec);
    };
    ExtractOptions eo = opts.extract;
    eo.expected_diff_id = diff_id;
    auto stats = extract_layer(blob, work / "root", eo);
    if (!stats) {
      cleanup();
      if (src.layers_are_scratch()) ::unlink(scratch.c_str());
      return stats.error().context("layer " + desc.digest + " of " + src.describe());
    }
    json meta = {{"diff_id", stats->diff_id},
                 {"blob_digest", desc.digest},
                 {"tar_bytes", stats->tar_bytes},
                 {"file_bytes", stats->file_bytes},
                 {"entries", stats->entries},
                 {"setuid_cleared", stats->setuid_cleared},
                 {"xattrs_dropped", stats->xattrs_dropped}};
    if (auto w = write_file_atomic(work / "meta.json", meta.dump() + "\n", 0600); !w) {
      cleanup();
      return w.error();
    }
    if (::rename(work.c_str(), final_dir.c_str()) != 0) {
      int err = errno;
      cleanup();
      // Another process published the same layer meanwhile: use theirs.
      if ((err != EEXIST && err != ENOTEMPTY) || !fs::exists(final_dir / "meta.json")) {
        return Error::from_errno("publish layer " + diff_id, err);
      }
    }
    if (src.layers_are_scratch()) ::unlink(scratch.c_str());
    return {};
  }

  // Verifies, extracts and records one image. `manifest_body` is the platform manifest.
  Result<ImageInfo> install(Source& src, const std::string& manifest_body,
                            const std::string& manifest_digest,
                            const std::vector<std::string>& tag_refs,
                            const ProgressCallback& progress) {
    CORRAL_ASSIGN_OR_RETURN(Manifest m, parse_manifest(manifest_body));
    CORRAL_ASSIGN_OR_RETURN(std::string config_text, src.document(m.config));
    auto config = parse_image_config(config_text);
    if (!config) return config.error().context(src.describe() + ": config " + m.config.digest);
    if (config->diff_ids.size() != m.layers.size()) {
      return Error(EBADMSG, src.describe() + ": the manifest lists " +
                                std::to_string(m.layers.size()) + " layers, the config " +
                                std::to_string(config->diff_ids.size()) + " diff_ids");
    }
    uint64_t total = 0;
    for (const auto& l : m.layers) total += static_cast<uint64_t>(l.size);
    if (opts.policy.max_image_bytes != 0 && total > opts.policy.max_image_bytes) {
      return Error(EPERM, "image " + manifest_digest + " is " + isolator::format_bytes(total) +
                              ", more than the policy's images.max_size = " +
                              isolator::format_bytes(opts.policy.max_image_bytes) + " (" +
                              opts.policy.origin + ")");
    }

    std::mutex progress_mu;
    Progress p;
    p.phase = Progress::Phase::downloading;
    p.bytes_total = total;
    p.layers_total = m.layers.size();
    report(progress_mu, p, progress);

    std::vector<LayerInfo> infos(m.layers.size());
    std::vector<std::optional<Error>> errors(m.layers.size());
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    auto worker = [&] {
      for (;;) {
        size_t i = next.fetch_add(1);
        if (i >= m.layers.size() || failed) return;
        const auto& d = m.layers[i];
        infos[i].diff_id = config->diff_ids[i];
        infos[i].blob_digest = d.digest;
        infos[i].media_type = d.media_type;
        infos[i].blob_size = static_cast<uint64_t>(d.size);
        auto on_bytes = [&](uint64_t n) {
          if (!progress) return;
          std::lock_guard lock(progress_mu);
          p.bytes_done += n;
          p.phase = Progress::Phase::downloading;
          p.layer = d.digest;
          progress(p);
        };
        auto r = ensure_layer(src, d, config->diff_ids[i], on_bytes, &infos[i]);
        if (!r) {
          errors[i] = r.error();
          failed = true;
          return;
        }
        std::lock_guard lock(progress_mu);
        ++p.layers_done;
        p.phase = Progress::Phase::extracting;
        p.layer = d.digest;
        if (progress) progress(p);
      }
    };
    unsigned n = std::max(
        1u, std::min<unsigned>(opts.parallel_layers, static_cast<unsigned>(m.layers.size())));
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < n; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    for (auto& e : errors) {
      if (e) return *e;
    }

    // Documents, then the record, then the references: each step is atomic and the order means
    // a crash leaves at worst unreferenced layers or blobs for GC.
    for (const auto& [digest, body] :
         {std::pair{manifest_digest, manifest_body}, std::pair{m.config.digest, config_text}}) {
      fs::path f = root / "blobs" / "sha256" / digest_hex(digest);
      if (!fs::exists(f)) CORRAL_TRY(write_file_atomic(f, body, 0600));
    }
    ImageInfo info;
    info.id = manifest_digest;
    info.manifest_media_type = m.media_type;
    info.config_digest = m.config.digest;
    info.config = std::move(config).value();
    info.layers = std::move(infos);
    for (const auto& l : info.layers) {
      info.blob_bytes += l.blob_size;
      info.unpacked_bytes += l.unpacked_bytes;
    }
    info.source = src.describe();
    info.added = info.last_used = std::chrono::system_clock::now();
    {
      CORRAL_ASSIGN_OR_RETURN(StoreLock lock, StoreLock::take(root));
      for (const auto& l : info.layers) {
        if (!fs::exists(layer_dir(l.diff_id) / "meta.json")) {
          return Error(EAGAIN, "layer " + l.diff_id +
                                   " was garbage-collected while the image was being stored; "
                                   "pull again");
        }
      }
      if (auto old = read_image(info.id); old) info.added = old->added;
      CORRAL_TRY(write_file_atomic(image_file(info.id), info_to_json(info).dump(1) + "\n", 0600));
      CORRAL_ASSIGN_OR_RETURN(auto refs, read_refs());
      for (const auto& r : tag_refs) refs[r] = info.id;
      CORRAL_TRY(write_refs(refs));
      for (const auto& [r, id] : refs) {
        if (id == info.id) info.references.push_back(r);
      }
    }
    p.phase = Progress::Phase::done;
    p.layers_done = p.layers_total;
    report(progress_mu, p, progress);
    if (opts.high_watermark_bytes != 0) {
      auto usage = disk_usage();
      if (usage && *usage > opts.high_watermark_bytes) {
        PruneOptions po;
        po.all = true;
        po.target_bytes = opts.low_watermark_bytes ? opts.low_watermark_bytes
                                                   : opts.high_watermark_bytes / 10 * 8;
        auto pr = prune(po, info.id);
        if (!pr) log::warning("image store: watermark GC failed: " + pr.error().message());
      }
    }
    return info;
  }

  Result<uint64_t> disk_usage() {
    uint64_t total = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root / "layers", ec)) {
      auto text = read_file(e.path() / "meta.json", 1 << 20);
      if (!text) continue;
      auto j = json::parse(*text, nullptr, false);
      if (j.is_object()) total += j.value("file_bytes", uint64_t{0});
    }
    return total;
  }

  Result<PruneReport> prune(const PruneOptions& o, const std::string& keep_id = "") {
    PruneReport report;
    std::vector<fs::path> trash;
    {
      CORRAL_ASSIGN_OR_RETURN(StoreLock lock, StoreLock::take(root));
      CORRAL_ASSIGN_OR_RETURN(auto images, all_images());
      CORRAL_ASSIGN_OR_RETURN(auto refs, read_refs());
      std::vector<ImageInfo*> candidates;
      for (auto& i : images) {
        if (!i.leases.empty() || i.id == keep_id) continue;
        if (o.all || o.target_bytes || i.references.empty()) candidates.push_back(&i);
      }
      std::sort(candidates.begin(), candidates.end(),
                [](auto* a, auto* b) { return a->last_used < b->last_used; });
      std::set<std::string> removed;
      uint64_t usage = 0;
      if (o.target_bytes) {
        auto u = disk_usage();
        usage = u ? *u : 0;
      }
      for (auto* c : candidates) {
        if (o.target_bytes && usage <= *o.target_bytes) break;
        removed.insert(c->id);
        report.images_removed.push_back(c->id);
        if (o.target_bytes) {
          // Approximate: layers shared with kept images are not freed; recomputed below.
          usage = usage > c->unpacked_bytes ? usage - c->unpacked_bytes : 0;
        }
      }
      for (auto it = refs.begin(); it != refs.end();) {
        it = removed.count(it->second) ? refs.erase(it) : std::next(it);
      }
      CORRAL_TRY(write_refs(refs));
      for (const auto& id : removed) ::unlink(image_file(id).c_str());
      CORRAL_TRY(collect_unreferenced(&trash, &report));
    }
    for (const auto& t : trash) {
      std::error_code ec;
      fs::remove_all(t, ec);
    }
    return report;
  }

  // Under the lock: moves layers and blobs no image record references into tmp/ for deletion.
  Result<void> collect_unreferenced(std::vector<fs::path>* trash, PruneReport* report) {
    std::set<std::string> keep_layers, keep_blobs;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root / "images", ec)) {
      auto text = read_file(e.path(), 16 << 20);
      if (!text) continue;
      auto info = info_from_json(json::parse(*text, nullptr, false));
      if (!info) continue;
      keep_blobs.insert(digest_hex(info->id));
      keep_blobs.insert(digest_hex(info->config_digest));
      for (const auto& l : info->layers) keep_layers.insert(digest_hex(l.diff_id));
    }
    std::set<std::string> busy;
    {
      std::lock_guard lock(inflight_mu);
      for (const auto& [d, f] : layers) busy.insert(digest_hex(d));
    }
    for (const auto& e : fs::directory_iterator(root / "layers", ec)) {
      std::string name = e.path().filename().string();
      if (keep_layers.count(name) || busy.count(name)) continue;
      auto text = read_file(e.path() / "meta.json", 1 << 20);
      if (text) {
        auto j = json::parse(*text, nullptr, false);
        if (j.is_object()) report->bytes_freed += j.value("file_bytes", uint64_t{0});
      }
      fs::path t = root / "tmp" / ("trash-" + random_suffix());
      if (::rename(e.path().c_str(), t.c_str()) == 0) {
        trash->push_back(t);
        ++report->layers_removed;
      }
    }
    for (const auto& e : fs::directory_iterator(root / "blobs" / "sha256", ec)) {
      std::string name = e.path().filename().string();
      if (name.find('.') != std::string::npos) continue;  // write_file_atomic temporaries
      if (!keep_blobs.count(name)) ::unlink(e.path().c_str());
    }
    return {};
  }
};

ImageStore::ImageStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageStore::~ImageStore() = default;
const StoreOptions& ImageStore::options() const { return impl_->opts; }

Result<std::unique_ptr<ImageStore>> ImageStore::open(StoreOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->opts = std::move(options);
  impl->root = impl->opts.root;
  if (impl->root.empty() || !impl->root.is_absolute()) {
    return Error(EINVAL, "image store root '" + impl->root.string() + "' must be an absolute path");
  }
  for (const char* sub : {"blobs/sha256", "layers", "images", "leases", "tmp/blobs"}) {
    CORRAL_TRY(mkdirs(impl->root / sub));
  }
  ::chmod(impl->root.c_str(), 0700);
  // Leftovers of crashed processes: extraction dirs of dead pids and trash. Partial downloads
  // (tmp/blobs) stay for resuming.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(impl->root / "tmp", ec)) {
    std::string name = e.path().filename().string();
    bool stale = name.rfind("trash-", 0) == 0;
    if (name.rfind("extract-", 0) == 0 || name.rfind("archive-", 0) == 0) {
      auto dash = name.find('-');
      auto pid = std::atoi(name.c_str() + dash + 1);
      stale = pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH;
    }
    if (stale) fs::remove_all(e.path(), ec);
  }
  return std::unique_ptr<ImageStore>(new ImageStore(std::move(impl)));
}

Result<ImageInfo> ImageStore::pull(std::string_view reference, const PullOptions& options) {
  CORRAL_ASSIGN_OR_RETURN(Reference ref, parse_reference(reference));
  CORRAL_TRY(check_reference_allowed(impl_->opts.policy, ref));
  const std::string key = ref.to_string();
  std::promise<Result<ImageInfo>> promise;
  std::shared_future<Result<ImageInfo>> wait;
  bool owner = false;
  {
    std::lock_guard lock(impl_->inflight_mu);
    auto it = impl_->pulls.find(key);
    if (it != impl_->pulls.end()) {
      wait = it->second;
    } else {
      wait = promise.get_future().share();
      impl_->pulls[key] = wait;
      owner = true;
    }
  }
  if (!owner) return wait.get();

  auto run = [&]() -> Result<ImageInfo> {
    RegistryOptions ro;
    ro.credentials_file = options.credentials_file;
    ro.ca_bundle = options.ca_bundle;
    ro.registry_ca_files = options.registry_ca_files;
    ro.insecure_registries = options.insecure_registries;
    ro.timeout = options.timeout;
    ro.max_document_bytes = impl_->opts.max_document_bytes;
    CORRAL_ASSIGN_OR_RETURN(RegistryClient client, RegistryClient::create(ref, ro));
    if (options.progress) {
      Progress p;
      options.progress(p);
    }
    CORRAL_ASSIGN_OR_RETURN(FetchedManifest fm,
                            client.manifest(ref.digest.empty() ? ref.tag : ref.digest));
    if (is_index_type(fm.media_type)) {
      CORRAL_ASSIGN_OR_RETURN(Index idx, parse_index(fm.body));
      auto chosen = select_platform(idx, options.platform);
      if (!chosen) return chosen.error().context("image " + key);
      CORRAL_ASSIGN_OR_RETURN(fm, client.manifest(chosen->digest));
      if (!is_manifest_type(fm.media_type)) {
        return Error(EBADMSG, "image " + key + ": the index points at another index");
      }
    }
    RegistrySource src(std::move(client));
    auto info = impl_->install(src, fm.body, fm.digest, {key}, options.progress);
    if (!info) return info.error().context("pulling " + key);
    return info;
  };
  auto result = run();
  promise.set_value(result);
  {
    std::lock_guard lock(impl_->inflight_mu);
    impl_->pulls.erase(key);
  }
  return result;
}

Result<ImageInfo> ImageStore::import(const fs::path& path, const ImportOptions& options) {
  std::optional<Reference> want;
  if (!options.reference.empty()) {
    CORRAL_ASSIGN_OR_RETURN(want, parse_reference(options.reference));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Error::from_errno("import " + path.string());
  fs::path dir = path;
  std::optional<TempDir> unpacked;
  std::string kind;
  if (S_ISREG(st.st_mode)) {
    // docker-archive or oci-archive: unpack with the same safe extractor (no owners, no
    // devices), then read it as a directory.
    CORRAL_ASSIGN_OR_RETURN(
        TempDir t,
        TempDir::create("archive-" + std::to_string(::getpid()) + "-", impl_->root / "tmp"));
    ExtractOptions eo;
    eo.preserve_owner = false;
    eo.max_bytes = kArchiveMaxBytes;
    auto r = extract_layer(path, t.path(), eo);
    if (!r) return r.error().context("reading the archive " + path.string());
    dir = t.path();
    unpacked = std::move(t);
  } else if (!S_ISDIR(st.st_mode)) {
    return Error(EINVAL, path.string() + " is neither an archive file nor a directory");
  }
  const bool oci = fs::exists(dir / "index.json");
  const bool docker = fs::exists(dir / "manifest.json");
  if (!oci && !docker) {
    return Error(EINVAL, path.string() +
                             " is not an image: no index.json (OCI layout) or manifest.json "
                             "(docker save) in it");
  }
  kind = (oci ? std::string(unpacked ? "oci-archive " : "oci layout ")
              : std::string("docker-archive ")) +
         path.string();
  DirSource src(dir, kind, impl_->opts.max_document_bytes);
  std::vector<std::string> tags;
  if (want) tags.push_back(want->to_string());
  std::string manifest_body, manifest_digest;

  if (oci) {
    auto text = read_file(dir / "index.json", impl_->opts.max_document_bytes);
    if (!text) return text.error().context(kind);
    auto idx = parse_index(*text);
    if (!idx) return idx.error().context(kind + ": index.json");
    std::vector<Descriptor> picks;
    for (const auto& d : idx->manifests) {
      if (!want) {
        picks.push_back(d);
        continue;
      }
      for (const char* key : {"org.opencontainers.image.ref.name", "io.containerd.image.name"}) {
        auto it = d.annotations.find(key);
        if (it == d.annotations.end()) continue;
        auto named = parse_reference(it->second);
        if (it->second == want->tag || it->second == options.reference ||
            (named && named->to_string() == want->to_string())) {
          picks.push_back(d);
          break;
        }
      }
    }
    if (picks.empty() && want && idx->manifests.size() == 1) picks = idx->manifests;
    if (picks.size() != 1) {
      std::string names;
      for (const auto& d : idx->manifests) {
        auto it = d.annotations.find("org.opencontainers.image.ref.name");
        names += (names.empty() ? "" : ", ") +
                 (it != d.annotations.end() ? it->second : d.digest.substr(0, 19));
      }
      return Error(EINVAL, kind + " holds " + std::to_string(idx->manifests.size()) + " images (" +
                               names + ")" +
                               (picks.empty() ? "; none matches " + options.reference
                                              : "; name one with --tag/--reference"));
    }
    Descriptor d = picks[0];
    if (!want) {
      for (const char* key : {"io.containerd.image.name", "org.opencontainers.image.ref.name"}) {
        auto it = d.annotations.find(key);
        if (it == d.annotations.end()) continue;
        // A full name ("registry/repo:tag") is a reference; a bare tag ("latest") is not.
        if (it->second.find('/') != std::string::npos ||
            it->second.find(':') != std::string::npos) {
          auto named = parse_reference(it->second);
          if (named) {
            tags.push_back(named->to_string());
            break;
          }
        }
      }
    }
    CORRAL_ASSIGN_OR_RETURN(std::string body, src.document(d));
    auto doc = json::parse(body, nullptr, false);
    CORRAL_ASSIGN_OR_RETURN(std::string type, document_media_type(doc));
    if (is_index_type(type)) {
      CORRAL_ASSIGN_OR_RETURN(Index inner, parse_index(body));
      CORRAL_ASSIGN_OR_RETURN(d, select_platform(inner, options.platform));
      CORRAL_ASSIGN_OR_RETURN(body, src.document(d));
    }
    manifest_body = std::move(body);
    manifest_digest = d.digest;
  } else {
    auto text = read_file(dir / "manifest.json", impl_->opts.max_document_bytes);
    if (!text) return text.error().context(kind);
    auto j = json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_array() || j.empty()) {
      return Error(EBADMSG, kind + ": manifest.json is not a non-empty JSON array");
    }
    const json* entry = nullptr;
    for (const auto& e : j) {
      if (!want) {
        entry = &e;
        break;
      }
      for (const auto& t : e.value("RepoTags", json::array())) {
        auto named =
            t.is_string() ? parse_reference(t.get<std::string>()) : Result<Reference>(Error());
        if (named && named->to_string() == want->to_string()) entry = &e;
      }
    }
    if (entry == nullptr && j.size() == 1) entry = &j[0];
    if (entry == nullptr) {
      return Error(EINVAL, kind + ": no image in manifest.json is tagged " + options.reference);
    }
    if (!want) {
      for (const auto& t : entry->value("RepoTags", json::array())) {
        if (!t.is_string()) continue;
        auto named = parse_reference(t.get<std::string>());
        if (named) tags.push_back(named->to_string());
      }
    }
    std::string config_rel = entry->value("Config", "");
    CORRAL_ASSIGN_OR_RETURN(UniqueFd cfd, open_inside(dir, config_rel, "manifest.json Config"));
    auto config_text = read_file(fd_path(cfd), impl_->opts.max_document_bytes);
    if (!config_text) return config_text.error().context(kind + ": config");
    Manifest m;
    m.config.media_type = media::kOciConfig;
    m.config.digest = sha256_digest(*config_text);
    m.config.size = static_cast<int64_t>(config_text->size());
    src.paths[m.config.digest] = config_rel;
    for (const auto& l : entry->value("Layers", json::array())) {
      if (!l.is_string()) return Error(EBADMSG, kind + ": manifest.json Layers has a non-string");
      std::string rel = l.get<std::string>();
      CORRAL_ASSIGN_OR_RETURN(UniqueFd lfd, open_inside(dir, rel, "manifest.json layer"));
      struct stat lst {};
      ::fstat(lfd.get(), &lst);
      CORRAL_ASSIGN_OR_RETURN(std::string digest, sha256_file(fd_path(lfd)));
      Descriptor d;
      d.media_type = media::kOciLayerTar;
      d.digest = digest;
      d.size = lst.st_size;
      src.paths[digest] = rel;
      m.layers.push_back(d);
    }
    manifest_body = manifest_to_json(m);
    manifest_digest = sha256_digest(manifest_body);
  }
  for (const auto& t : tags) {
    auto r = parse_reference(t);
    if (r) CORRAL_TRY(check_reference_allowed(impl_->opts.policy, *r));
  }
  if (!impl_->opts.policy.patterns.empty() && tags.empty()) {
    return Error(EPERM, kind + ": the policy's images.patterns (" + impl_->opts.policy.origin +
                            ") allow only named images; import it with a name (--tag)");
  }
  auto info = impl_->install(src, manifest_body, manifest_digest, tags, options.progress);
  if (!info) return info.error().context("importing " + path.string());
  return info;
}

Result<std::vector<ImageInfo>> ImageStore::list() { return impl_->all_images(); }

Result<ImageInfo> ImageStore::inspect(std::string_view text) {
  CORRAL_ASSIGN_OR_RETURN(std::string id, impl_->resolve(text));
  CORRAL_ASSIGN_OR_RETURN(auto images, impl_->all_images());
  for (auto& i : images) {
    if (i.id == id) return i;
  }
  return Error(ENOENT, "image " + id + " vanished (removed meanwhile)");
}

Result<void> ImageStore::remove(std::string_view text) {
  std::vector<fs::path> trash;
  {
    CORRAL_ASSIGN_OR_RETURN(StoreLock lock, StoreLock::take(impl_->root));
    CORRAL_ASSIGN_OR_RETURN(std::string id, impl_->resolve(text));
    CORRAL_ASSIGN_OR_RETURN(auto refs, impl_->read_refs());
    auto ref = parse_reference(text);
    bool by_ref = !looks_like_image_id(text) && ref && refs.count(ref->to_string());
    size_t remaining = 0;
    for (const auto& [r, i] : refs) remaining += i == id ? 1 : 0;
    if (by_ref && remaining > 1) {
      refs.erase(ref->to_string());  // only the tag goes
      return impl_->write_refs(refs);
    }
    CORRAL_ASSIGN_OR_RETURN(auto leases, impl_->read_leases());
    std::string users;
    for (const auto& [c, i] : leases) {
      if (i == id) users += (users.empty() ? "" : ", ") + c;
    }
    if (!users.empty()) {
      return Error(EBUSY, "image " + id + " is in use by container(s) " + users +
                              "; it can be removed once they are gone");
    }
    for (auto it = refs.begin(); it != refs.end();) {
      it = it->second == id ? refs.erase(it) : std::next(it);
    }
    CORRAL_TRY(impl_->write_refs(refs));
    ::unlink(impl_->image_file(id).c_str());
    PruneReport ignored;
    CORRAL_TRY(impl_->collect_unreferenced(&trash, &ignored));
  }
  for (const auto& t : trash) {
    std::error_code ec;
    fs::remove_all(t, ec);
  }
  return {};
}

Result<PruneReport> ImageStore::prune(const PruneOptions& options) { return impl_->prune(options); }

Result<Provisioned> ImageStore::provision(std::string_view text, std::string_view container_id) {
  CORRAL_TRY(check_container_id(container_id));
  CORRAL_ASSIGN_OR_RETURN(StoreLock lock, StoreLock::take(impl_->root));
  CORRAL_ASSIGN_OR_RETURN(std::string id, impl_->resolve(text));
  CORRAL_ASSIGN_OR_RETURN(ImageInfo info, impl_->read_image(id));
  const auto& pol = impl_->opts.policy;
  if (!pol.registries.empty() || !pol.patterns.empty() || pol.require_digest) {
    auto ref = parse_reference(text);
    if (!ref || looks_like_image_id(text)) {
      CORRAL_ASSIGN_OR_RETURN(auto refs, impl_->read_refs());
      Error last(EPERM, "image " + id + " has no name the policy (" + pol.origin + ") allows");
      bool ok = false;
      for (const auto& [r, i] : refs) {
        if (i != id) continue;
        auto pr = parse_reference(r);
        if (!pr) continue;
        if (pol.require_digest) pr->digest = id;
        auto c = check_reference_allowed(pol, *pr);
        if (c)
          ok = true;
        else
          last = c.error();
      }
      if (!ok) return last;
    } else {
      CORRAL_TRY(check_reference_allowed(pol, *ref));
    }
  }
  if (pol.max_image_bytes != 0 && info.blob_bytes > pol.max_image_bytes) {
    return Error(
        EPERM, "image " + id + " is larger than the policy's images.max_size (" + pol.origin + ")");
  }
  const fs::path lease = impl_->root / "leases" / std::string(container_id);
  if (auto existing = read_file(lease, 4096); existing) {
    std::string held = *existing;
    while (!held.empty() && held.back() == '\n') held.pop_back();
    if (held != id) {
      return Error(EEXIST, "container " + std::string(container_id) + " already holds image " +
                               held + "; release it first");
    }
  }
  Provisioned out;
  out.image_id = id;
  out.config = info.config;
  for (auto it = info.layers.rbegin(); it != info.layers.rend(); ++it) {
    fs::path dir = impl_->layer_dir(it->diff_id);
    if (!fs::exists(dir / "meta.json")) {
      return Error(EIO, "image " + id + ": layer " + it->diff_id +
                            " is missing from the store (damaged); remove and pull it again");
    }
    out.lower_dirs.push_back(dir / "root");
  }
  CORRAL_TRY(write_file_atomic(lease, id + "\n", 0600));
  info.last_used = std::chrono::system_clock::now();
  (void)write_file_atomic(impl_->image_file(id), info_to_json(info).dump(1) + "\n", 0600);
  return out;
}

Result<void> ImageStore::release(std::string_view container_id) {
  CORRAL_TRY(check_container_id(container_id));
  const fs::path lease = impl_->root / "leases" / std::string(container_id);
  if (::unlink(lease.c_str()) != 0 && errno != ENOENT) {
    return Error::from_errno("release " + lease.string());
  }
  return {};
}

Result<uint64_t> ImageStore::disk_usage() { return impl_->disk_usage(); }

}  // namespace corral::image
