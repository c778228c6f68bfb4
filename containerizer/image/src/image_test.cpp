// Unit tests of corral_image's logic: references, policy patterns, manifests, and layer
// extraction of crafted (hostile) tar streams into a temp dir. Unprivileged: owners are not
// preserved, and nothing here needs whiteout devices or trusted xattrs (the root tests cover
// those with real images).
#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "corral/common/fd.hpp"
#include "corral/image/digest.hpp"
#include "corral/image/extract.hpp"
#include "corral/image/manifest.hpp"
#include "corral/image/reference.hpp"
#include "corral/image/registry.hpp"
#include "corral/image/store.hpp"

namespace corral::image {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Writes a tar (gzip when asked) with the given entries.
struct TarEntry {
  std::string name;
  mode_t type = AE_IFREG;
  std::string data;
  std::string link;  // symlink target or hardlink target
  bool hardlink = false;
  mode_t perm = 0644;
  unsigned dev_major = 0;
};

void write_tar(const fs::path& path, const std::vector<TarEntry>& entries, bool gzip = false) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (gzip) archive_write_add_filter_gzip(a);
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  for (const auto& e : entries) {
    archive_entry* en = archive_entry_new();
    archive_entry_set_pathname(en, e.name.c_str());
    if (e.hardlink) {
      archive_entry_set_hardlink(en, e.link.c_str());
      archive_entry_set_filetype(en, AE_IFREG);
    } else {
      archive_entry_set_filetype(en, e.type);
      if (e.type == AE_IFLNK) archive_entry_set_symlink(en, e.link.c_str());
      if (e.type == AE_IFCHR) archive_entry_set_rdevmajor(en, e.dev_major);
    }
    archive_entry_set_perm(en, e.perm);
    archive_entry_set_size(en, e.type == AE_IFREG && !e.hardlink ? e.data.size() : 0);
    archive_write_header(a, en);
    if (!e.data.empty() && !e.hardlink) archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(en);
  }
  archive_write_close(a);
  archive_write_free(a);
}

class ExtractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("corral-extract-test-");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(d).value());
    dest_ = dir_->path() / "layer";
    fs::create_directory(dest_);
    outside_ = dir_->path() / "outside";
    fs::create_directory(outside_);
    opts_.preserve_owner = false;
  }
  Result<LayerStats> extract(const std::vector<TarEntry>& entries, bool gzip = false) {
    const fs::path tar = dir_->path() / "layer.tar";
    write_tar(tar, entries, gzip);
    return extract_layer(tar, dest_, opts_);
  }
  bool outside_untouched() const { return fs::is_empty(outside_); }

  std::unique_ptr<TempDir> dir_;
  fs::path dest_, outside_;
  ExtractOptions opts_;
};

TEST_F(ExtractTest, ExtractsFilesDirsSymlinksAndHardlinks) {
  auto r = extract({{"./etc/", AE_IFDIR, "", "", false, 0755},
                    {"etc/passwd", AE_IFREG, "root:x:0:0::/:/bin/sh\n"},
                    {"bin/sh", AE_IFLNK, "", "busybox"},
                    {"etc/passwd-copy", AE_IFREG, "", "etc/passwd", true},
                    {"bin/tool", AE_IFREG, "#!", "", false, 04755}},
                   true);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(*read_file(dest_ / "etc/passwd"), "root:x:0:0::/:/bin/sh\n");
  EXPECT_EQ(fs::read_symlink(dest_ / "bin/sh"), "busybox");
  EXPECT_TRUE(fs::equivalent(dest_ / "etc/passwd", dest_ / "etc/passwd-copy"));
  struct stat st {};
  ASSERT_EQ(::stat((dest_ / "bin/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u) << "setuid is cleared unless the policy allows it";
  EXPECT_EQ(r->setuid_cleared, 1u);
  EXPECT_EQ(r->entries, 5u);
}

// The durable extraction syncs the layer's own files and dirs: entries removed or replaced
// later in the layer (a directory replaced by a symlink, a file by a directory) are skipped,
// and a layer with more entries than the targeted sync handles falls back to syncfs().
TEST_F(ExtractTest, SyncedLayerWithReplacedEntriesAndManyFilesExtracts) {
  opts_.sync = true;
  auto r = extract({{"a/", AE_IFDIR, "", "", false, 0755},
                    {"a/f", AE_IFREG, "one"},
                    {"a", AE_IFLNK, "", "b"},
                    {"c", AE_IFREG, "file"},
                    {"c/", AE_IFDIR, "", "", false, 0755},
                    {"c/g", AE_IFREG, "two"}});
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(fs::read_symlink(dest_ / "a"), "b");
  EXPECT_EQ(*read_file(dest_ / "c/g"), "two");
  fs::remove_all(dest_);
  fs::create_directory(dest_);
  std::vector<TarEntry> many;
  for (int i = 0; i < 2100; ++i) many.push_back({"d/f" + std::to_string(i), AE_IFREG, "x"});
  auto big = extract(many);
  ASSERT_TRUE(big.ok()) << big.error().to_string();
  EXPECT_EQ(big->entries, 2100u);
  EXPECT_EQ(*read_file(dest_ / "d/f2099"), "x");
}

TEST_F(ExtractTest, DiffIdIsTheUncompressedStreamDigest) {
  const fs::path plain = dir_->path() / "plain.tar";
  write_tar(plain, {{"a", AE_IFREG, "hello"}});
  auto want = sha256_file(plain);
  ASSERT_TRUE(want.ok());
  auto r = extract({{"a", AE_IFREG, "hello"}}, true);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->diff_id, *want);
  fs::remove_all(dest_);
  fs::create_directory(dest_);
  opts_.expected_diff_id = "sha256:" + std::string(64, '0');
  auto bad = extract({{"a", AE_IFREG, "hello"}}, true);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message(), HasSubstr("does not match the image config's diff_id"));
}

TEST_F(ExtractTest, RefusesPathTraversal) {
  auto r = extract({{"a/../../outside/x", AE_IFREG, "escaped"}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("layer entry 'a/../../outside/x'"));
  EXPECT_THAT(r.error().message(), HasSubstr("'..'"));
  EXPECT_TRUE(outside_untouched());
}

TEST_F(ExtractTest, RefusesAbsolutePaths) {
  auto r = extract({{(outside_ / "x").string(), AE_IFREG, "escaped"}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("absolute path"));
  EXPECT_TRUE(outside_untouched());
}

TEST_F(ExtractTest, RefusesWritingThroughASymlink) {
  auto r = extract({{"link", AE_IFLNK, "", outside_.string()}, {"link/x", AE_IFREG, "escaped"}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("layer entry 'link/x'"));
  EXPECT_THAT(r.error().message(), HasSubstr("through a symlink"));
  EXPECT_TRUE(outside_untouched());
}

TEST_F(ExtractTest, RefusesRelativeSymlinkChainsOut) {
  auto r = extract(
      {{"a", AE_IFLNK, "", ".."}, {"b", AE_IFLNK, "", "a/outside"}, {"b/x", AE_IFREG, "escaped"}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("through a symlink"));
  EXPECT_TRUE(outside_untouched());
}

TEST_F(ExtractTest, RefusesHardlinksOutOfTheLayer) {
  for (const std::string target : {"/etc/shadow", "../outside/f", "not-yet-extracted"}) {
    fs::remove_all(dest_);
    fs::create_directory(dest_);
    auto r = extract({{"shadow", AE_IFREG, "", target, true}});
    ASSERT_FALSE(r.ok()) << target;
    EXPECT_THAT(r.error().message(), HasSubstr("layer entry 'shadow'")) << target;
    EXPECT_FALSE(fs::exists(dest_ / "shadow"));
  }
}

TEST_F(ExtractTest, RefusesHardlinkThroughASymlink) {
  // The target name runs through a symlink of the same layer: not a file of this layer.
  auto r = extract({{"etc", AE_IFLNK, "", "/etc"}, {"shadow", AE_IFREG, "", "etc/shadow", true}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("not a file created earlier in this layer"));
}

TEST_F(ExtractTest, RefusesDeviceNodesUnlessAllowed) {
  auto r = extract({{"sda", AE_IFCHR, "", "", false, 0660, 8}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("layer entry 'sda'"));
  EXPECT_THAT(r.error().message(), HasSubstr("device node"));
}

TEST_F(ExtractTest, StopsADecompressionBombAtTheLimit) {
  opts_.max_bytes = 1 << 20;
  auto r = extract({{"zeros", AE_IFREG, std::string(8 << 20, '\0')}}, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), EFBIG);
  EXPECT_THAT(r.error().message(), HasSubstr("beyond the limit of 1048576 bytes"));
  EXPECT_THAT(r.error().message(), HasSubstr("'zeros'"));
  uintmax_t written = 0;
  for (const auto& e : fs::recursive_directory_iterator(dest_)) {
    if (e.is_regular_file()) written += e.file_size();
  }
  EXPECT_LE(written, 2u << 20) << "extraction must stop near the limit, not after the bomb";
}

TEST_F(ExtractTest, LimitsEntries) {
  opts_.max_entries = 3;
  auto r = extract(
      {{"a", AE_IFREG, "1"}, {"b", AE_IFREG, "2"}, {"c", AE_IFREG, "3"}, {"d", AE_IFREG, "4"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), E2BIG);
  EXPECT_THAT(r.error().message(), HasSubstr("more than 3 entries"));
}

TEST_F(ExtractTest, TruncatedArchiveIsAnError) {
  const fs::path tar = dir_->path() / "t.tar.gz";
  write_tar(tar, {{"big", AE_IFREG, std::string(1 << 20, 'x')}}, true);
  fs::resize_file(tar, fs::file_size(tar) / 2);
  auto r = extract_layer(tar, dest_, opts_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), EBADMSG) << r.error().to_string();
}

TEST(SplitEntryPath, NormalisesAndRefuses) {
  EXPECT_EQ(*split_entry_path("./a//b/./c/"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(split_entry_path("./")->empty());
  EXPECT_FALSE(split_entry_path("/etc/passwd").ok());
  EXPECT_FALSE(split_entry_path("a/../b").ok());
  EXPECT_FALSE(split_entry_path("").ok());
  EXPECT_TRUE(split_entry_path("a/..b/c..").ok());
}

TEST(Reference, ParsesAndNormalises) {
  auto r = parse_reference("busybox");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->to_string(), "docker.io/library/busybox:latest");
  r = parse_reference("127.0.0.1:5000/team/app:1.2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "team/app");
  EXPECT_EQ(r->tag, "1.2");
  const std::string d = "sha256:" + std::string(64, 'a');
  r = parse_reference("localhost/app@" + d);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "localhost");
  EXPECT_EQ(r->digest, d);
  EXPECT_TRUE(r->tag.empty());
  EXPECT_THAT(parse_reference("Upper/Case").error().message(), HasSubstr("invalid repository"));
  EXPECT_THAT(parse_reference("app@sha256:12").error().message(), HasSubstr("malformed"));
  EXPECT_THAT(parse_reference("app:bad tag").error().message(), HasSubstr("invalid tag"));
}

TEST(Reference, PatternsAndPolicy) {
  EXPECT_TRUE(match_pattern("127.0.0.1:5000/team/*", "127.0.0.1:5000/team/app:1"));
  EXPECT_FALSE(match_pattern("127.0.0.1:5000/team/*", "127.0.0.1:5000/team/sub/app:1"));
  EXPECT_TRUE(match_pattern("127.0.0.1:5000/**", "127.0.0.1:5000/team/sub/app:1"));
  ImagePolicy p;
  p.registries = {"127.0.0.1:5000"};
  p.origin = "10-images.toml:2";
  auto ref = parse_reference("10.0.0.1:5000/app:1");
  auto c = check_reference_allowed(p, *ref);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), EPERM);
  EXPECT_THAT(c.error().message(), HasSubstr("registry 10.0.0.1:5000 is not allowed"));
  EXPECT_THAT(c.error().message(), HasSubstr("10-images.toml:2"));
  p.registries.clear();
  p.require_digest = true;
  EXPECT_THAT(check_reference_allowed(p, *ref).error().message(), HasSubstr("requires a digest"));
  p.require_digest = false;
  p.patterns = {"10.0.0.1:5000/team/**"};
  EXPECT_THAT(check_reference_allowed(p, *ref).error().message(),
              HasSubstr("matches none of the policy's images.patterns"));
}

TEST(Reference, PolicyFromTheImagesSection) {
  auto policy = isolator::load_policy_text(isolator::builtin_policy(),
                                           "[images]\nregistries = [\"127.0.0.1:5000\"]\n"
                                           "max_size = \"1MiB\"\n",
                                           "10-images.toml");
  ASSERT_TRUE(policy.ok()) << policy.error().message();
  ImagePolicy p = image_policy_from(policy->images);
  EXPECT_EQ(p.registries, std::vector<std::string>{"127.0.0.1:5000"});
  EXPECT_EQ(p.max_image_bytes, 1u << 20);
  EXPECT_EQ(p.origin, "10-images.toml:2, 10-images.toml:3");
  auto refused = check_reference_allowed(p, *parse_reference("busybox"));
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error().message(), HasSubstr("registry docker.io is not allowed"));
}

TEST(Manifest, ParsesAllFourMediaTypesAndSelectsThePlatform) {
  const std::string d1 = "sha256:" + std::string(64, '1');
  const std::string d2 = "sha256:" + std::string(64, '2');
  for (const char* type : {media::kDockerManifest, media::kOciManifest}) {
    nlohmann::json m = {{"schemaVersion", 2},
                        {"mediaType", type},
                        {"config", {{"digest", d1}, {"size", 10}}},
                        {"layers", {{{"digest", d2}, {"size", 20}}}}};
    auto parsed = parse_manifest(m.dump());
    ASSERT_TRUE(parsed.ok()) << parsed.error().to_string();
    EXPECT_EQ(parsed->layers[0].digest, d2);
  }
  for (const char* type : {media::kDockerList, media::kOciIndex}) {
    nlohmann::json i = {
        {"schemaVersion", 2},
        {"mediaType", type},
        {"manifests",
         {{{"digest", d1}, {"size", 1}, {"platform", {{"os", "linux"}, {"architecture", "arm64"}}}},
          {{"digest", d2},
           {"size", 1},
           {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}};
    auto idx = parse_index(i.dump());
    ASSERT_TRUE(idx.ok()) << idx.error().to_string();
    EXPECT_EQ(select_platform(*idx, Platform{})->digest, d2);
    auto none = select_platform(*idx, *parse_platform("linux/s390x"));
    ASSERT_FALSE(none.ok());
    EXPECT_THAT(none.error().message(), HasSubstr("linux/arm64, linux/amd64"));
  }
  nlohmann::json bad = {{"schemaVersion", 2},
                        {"mediaType", media::kOciManifest},
                        {"config", {{"digest", "sha256:xyz"}, {"size", 1}}},
                        {"layers", nlohmann::json::array()}};
  EXPECT_THAT(parse_manifest(bad.dump()).error().message(), HasSubstr("manifest.config.digest"));
  EXPECT_THAT(parse_manifest(R"({"schemaVersion":1})").error().message(), HasSubstr("schema 1"));
}

TEST(Manifest, ImageConfigKeepsWhatTasksUse) {
  auto c = parse_image_config(R"({"config":{"Env":["A=1"],"User":"app","WorkingDir":"/w",
    "Entrypoint":["/bin/sh"],"Cmd":["-c","x"],"ExposedPorts":{"80/tcp":{}}},
    "rootfs":{"type":"layers","diff_ids":["sha256:)" +
                              std::string(64, 'c') + R"("]}})");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_EQ(c->user, "app");
  EXPECT_EQ(c->exposed_ports, std::vector<std::string>{"80/tcp"});
  auto back = image_config_from_json(to_json(*c));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(to_json(*back), to_json(*c));
}

TEST(Registry, ParsesWwwAuthenticate) {
  auto c = parse_www_authenticate(
      R"(Bearer realm="http://127.0.0.1:5001/token",service="registry",scope="repository:a/b:pull")");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->scheme, "Bearer");
  EXPECT_EQ(c->params["realm"], "http://127.0.0.1:5001/token");
  EXPECT_EQ(c->params["scope"], "repository:a/b:pull");
  EXPECT_EQ(parse_www_authenticate(R"(Basic realm="Registry Realm")")->scheme, "Basic");
}

TEST(Registry, TlsRegistryCaFileComesFromTheRegistrysEntryElseTheBundle) {
  auto ref = parse_reference("registry.example:5000/app:1");
  ASSERT_TRUE(ref.ok());
  RegistryOptions o;
  o.ca_bundle = "/nonexistent/all.pem";
  auto c = RegistryClient::create(*ref, o);
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  auto m = c->manifest("1");  // fails before connecting: the CA file is checked first
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code(), ENOENT);
  EXPECT_THAT(m.error().message(), HasSubstr("cannot read the CA file /nonexistent/all.pem"));
  EXPECT_THAT(m.error().message(), HasSubstr("--ca-file FILE"));
  EXPECT_THAT(m.error().message(), HasSubstr("registry.example:5000"));
  o.registry_ca_files["registry.example:5000"] = "/nonexistent/registry.pem";
  o.registry_ca_files["other:5000"] = "/nonexistent/other.pem";
  c = RegistryClient::create(*ref, o);
  ASSERT_TRUE(c.ok());
  m = c->manifest("1");
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.error().message(), HasSubstr("/nonexistent/registry.pem"));
}

TEST(Store, ContainerIds) {
  EXPECT_TRUE(check_container_id("task-1.abc_2").ok());
  EXPECT_FALSE(check_container_id("../x").ok());
  EXPECT_FALSE(check_container_id("").ok());
}

}  // namespace
}  // namespace corral::image
