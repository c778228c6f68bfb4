#include "corral/cli/image.hpp"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>

#include "corral/image/digest.hpp"
#include "corral/image/store.hpp"
#include "corral/isolator/policy.hpp"

namespace corral::cli {
namespace {

using image::ImageInfo;
using image::Progress;
using nlohmann::json;

std::string mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

std::string short_id(const std::string& id) { return image::digest_hex(id).substr(0, 12); }

// Progress on stderr: a redrawn bar on a terminal, plain lines (one per layer) otherwise.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(bool quiet) : quiet_(quiet), tty_(::isatty(2) == 1) {}
  image::ProgressCallback callback() {
    if (quiet_) return {};
    return [this](const Progress& p) { show(p); };
  }
  void finish() {
    if (tty_ && drawn_) std::fputc('\n', stderr);
  }

 private:
  void show(const Progress& p) {
    if (tty_) {
      auto now = std::chrono::steady_clock::now();
      if (p.phase != Progress::Phase::done && now - last_ < std::chrono::milliseconds(100)) return;
      last_ = now;
      const int width = 30;
      int filled = p.bytes_total ? static_cast<int>(width * p.bytes_done / p.bytes_total) : 0;
      std::string bar(static_cast<size_t>(filled), '#');
      bar.resize(width, ' ');
      std::fprintf(stderr, "\r[%s] %s / %s  %zu/%zu layers ", bar.c_str(),
                   mib(p.bytes_done).c_str(), mib(p.bytes_total).c_str(), p.layers_done,
                   p.layers_total);
      drawn_ = true;
      return;
    }
    if (p.phase == Progress::Phase::downloading && p.layers_done == 0 && p.bytes_done == 0 &&
        !started_) {
      started_ = true;
      std::fprintf(stderr, "corral: %zu layers, %s to fetch\n", p.layers_total,
                   mib(p.bytes_total).c_str());
    }
    if (p.phase == Progress::Phase::extracting && p.layers_done > reported_layers_) {
      reported_layers_ = p.layers_done;
      std::fprintf(stderr, "corral: layer %s ready (%zu/%zu, %s of %s)\n",
                   short_id(p.layer).c_str(), p.layers_done, p.layers_total,
                   mib(p.bytes_done).c_str(), mib(p.bytes_total).c_str());
    }
  }

  bool quiet_, tty_;
  bool drawn_ = false, started_ = false;
  size_t reported_layers_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

json info_json(const ImageInfo& i) {
  json layers = json::array();
  for (const auto& l : i.layers) {
    layers.push_back({{"diff_id", l.diff_id},
                      {"digest", l.blob_digest},
                      {"media_type", l.media_type},
                      {"size", l.blob_size},
                      {"unpacked_bytes", l.unpacked_bytes}});
  }
  return {{"id", i.id},
          {"references", i.references},
          {"manifest_media_type", i.manifest_media_type},
          {"config_digest", i.config_digest},
          {"config", image::to_json(i.config)},
          {"layers", layers},
          {"size", i.blob_bytes},
          {"unpacked_bytes", i.unpacked_bytes},
          {"source", i.source},
          {"added", std::chrono::system_clock::to_time_t(i.added)},
          {"last_used", std::chrono::system_clock::to_time_t(i.last_used)},
          {"in_use_by", i.leases}};
}

int fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "corral: %s\n", message.c_str());
  return code;
}

class ImageCommandImpl : public ImageCommand {
 public:
  explicit ImageCommandImpl(CLI::App& app) {
    cmd_ = app.add_subcommand("image", "manage the local image store (Docker/OCI images)");
    cmd_->require_subcommand(1);
    cmd_->add_option("--root", root_, "image store directory (default /var/lib/corral/images)");
    cmd_->add_option("--policy-dir", policy_dir_,
                     "policy directory whose [images] section applies "
                     "(default /etc/corral/policy.d)");
    pull_ = cmd_->add_subcommand("pull", "pull an image from a registry (Registry HTTP API v2)");
    pull_->add_option("reference", reference_, "[REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]")
        ->required();
    pull_->add_option("--insecure-registry", pull_opts_.insecure_registries,
                      "HOST:PORT reached over plain HTTP (repeatable)");
    pull_->add_option("--credentials", credentials_,
                      "registry credentials (docker config.json format)");
    pull_->add_option("--ca-file,--ca-bundle", ca_bundle_,
                      "PEM file of the CAs that sign the registry's TLS certificate (default: "
                      "the system's CA store)");
    pull_->add_option("--platform", platform_, "OS/ARCH[/VARIANT] (default linux/amd64)");
    pull_->add_flag("-q,--quiet", quiet_, "no progress, only the image id");
    cmd_->add_flag("--no-sync", no_sync_,
                   "do not wait for layers to reach the disk before publishing them (faster; "
                   "a power loss may then damage a stored layer)");
    import_ = cmd_->add_subcommand(
        "import", "import a `docker save` archive, an OCI layout directory or an oci-archive");
    import_->add_option("path", path_, "archive file or layout directory")->required();
    import_->add_option("-t,--tag", reference_, "name to give it (and which image of several)");
    import_->add_option("--platform", platform_, "OS/ARCH[/VARIANT] (default linux/amd64)");
    import_->add_flag("-q,--quiet", quiet_, "no progress, only the image id");
    ls_ = cmd_->add_subcommand("ls", "list the images in the store");
    ls_->add_flag("--json", json_, "print JSON");
    inspect_ = cmd_->add_subcommand("inspect", "show one image as JSON");
    inspect_->add_option("image", reference_, "reference, id or id prefix")->required();
    rm_ = cmd_->add_subcommand("rm", "remove a tag, or (given an id) the image");
    rm_->add_option("image", targets_, "references or ids")->required();
    prune_ = cmd_->add_subcommand("prune", "remove untagged images and unused layers");
    prune_->add_flag("-a,--all", all_, "remove every image no container uses");
  }

  bool parsed() const override { return cmd_->parsed(); }

  int run() override {
    image::StoreOptions so;
    so.root = root_;
    so.extract.sync = !no_sync_;
    auto policy = isolator::load_policy_dir(policy_dir_);
    if (!policy) {
      return fail("the policy in " + policy_dir_ + " is invalid:\n" + policy.error().message(), 78);
    }
    so.policy = image::image_policy_from(policy->images);
    auto store = image::ImageStore::open(so);
    if (!store) return fail("cannot open the image store: " + store.error().to_string());
    auto& s = **store;
    image::Platform platform;
    if (!platform_.empty()) {
      auto p = image::parse_platform(platform_);
      if (!p) return fail(p.error().message(), 64);
      platform = *p;
    }
    if (pull_->parsed() || import_->parsed()) {
      ProgressPrinter printer(quiet_);
      Result<ImageInfo> info = Error();
      if (pull_->parsed()) {
        pull_opts_.credentials_file = credentials_;
        pull_opts_.ca_bundle = ca_bundle_;
        pull_opts_.platform = platform;
        pull_opts_.progress = printer.callback();
        info = s.pull(reference_, pull_opts_);
      } else {
        image::ImportOptions io;
        io.reference = reference_;
        io.platform = platform;
        io.progress = printer.callback();
        info = s.import(path_, io);
      }
      printer.finish();
      if (!info) return fail(info.error().message());
      if (!quiet_) {
        std::fprintf(stderr, "corral: %s: %zu layers, %s (%s unpacked)\n",
                     info->references.empty() ? "untagged" : info->references[0].c_str(),
                     info->layers.size(), mib(info->blob_bytes).c_str(),
                     mib(info->unpacked_bytes).c_str());
      }
      std::printf("%s\n", info->id.c_str());
      return 0;
    }
    if (ls_->parsed()) {
      auto list = s.list();
      if (!list) return fail(list.error().message());
      if (json_) {
        json out = json::array();
        for (const auto& i : *list) out.push_back(info_json(i));
        std::printf("%s\n", out.dump(2).c_str());
        return 0;
      }
      std::printf("%-50s %-12s %-7s %10s %10s %s\n", "REFERENCE", "ID", "LAYERS", "SIZE",
                  "UNPACKED", "IN USE");
      for (const auto& i : *list) {
        std::vector<std::string> refs = i.references;
        if (refs.empty()) refs.push_back("<untagged>");
        for (const auto& r : refs) {
          std::printf("%-50s %-12s %-7zu %10s %10s %zu\n", r.c_str(), short_id(i.id).c_str(),
                      i.layers.size(), mib(i.blob_bytes).c_str(), mib(i.unpacked_bytes).c_str(),
                      i.leases.size());
        }
      }
      return 0;
    }
    if (inspect_->parsed()) {
      auto info = s.inspect(reference_);
      if (!info) return fail(info.error().message());
      std::printf("%s\n", info_json(*info).dump(2).c_str());
      return 0;
    }
    if (rm_->parsed()) {
      int rc = 0;
      for (const auto& t : targets_) {
        auto r = s.remove(t);
        if (!r) {
          rc = 1;
          std::fprintf(stderr, "corral: %s\n", r.error().message().c_str());
        } else {
          std::printf("removed %s\n", t.c_str());
        }
      }
      return rc;
    }
    if (prune_->parsed()) {
      auto r = s.prune({.all = all_});
      if (!r) return fail(r.error().message());
      for (const auto& id : r->images_removed) std::printf("removed %s\n", id.c_str());
      std::printf("%zu image(s), %zu layer(s) removed, %s freed\n", r->images_removed.size(),
                  r->layers_removed, mib(r->bytes_freed).c_str());
      return 0;
    }
    return fail("unknown image subcommand", 64);
  }

 private:
  CLI::App* cmd_ = nullptr;
  CLI::App *pull_ = nullptr, *import_ = nullptr, *ls_ = nullptr, *inspect_ = nullptr,
           *rm_ = nullptr, *prune_ = nullptr;
  std::string root_ = image::kDefaultStoreRoot;
  std::string policy_dir_ = isolator::kDefaultPolicyDir;
  std::string reference_, path_, credentials_, ca_bundle_, platform_;
  std::vector<std::string> targets_;
  image::PullOptions pull_opts_;
  bool quiet_ = false, json_ = false, all_ = false, no_sync_ = false;
};

}  // namespace

std::unique_ptr<ImageCommand> add_image_command(CLI::App& app) {
  return std::make_unique<ImageCommandImpl>(app);
}

}  // namespace corral::cli
