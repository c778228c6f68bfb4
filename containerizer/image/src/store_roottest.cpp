// Root tests of the image store with real images and real tools (label root): images built by
// tests/image/make-image.py from busybox-static, a real `docker-registry serve` on 127.0.0.1 fed
// by `skopeo copy`, overlayfs, and the real corral-launcher running a task in the image.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/image/store.hpp"

namespace corral::image {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

const fs::path kMakeImage = fs::path(CORRAL_SOURCE_DIR) / "tests/image/make-image.py";

// Runs argv (no shell), returns exit code; output (stdout+stderr) into *out.
int run(const std::vector<std::string>& argv, std::string* out = nullptr) {
  auto tmp = TempDir::create("corral-image-run-");
  const fs::path log = tmp->path() / "out";
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (out) *out = read_file(log).value_or("");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

uint16_t free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

// TLS and token auth of a test registry.
struct RegistrySecurity {
  fs::path data_dir;           // storage (default <dir>/data): share it with a plain registry
  fs::path tls_cert, tls_key;  // serve HTTPS with these
  fs::path ca_file;            // the CA that signed tls_cert (for the readiness check)
  // auth: token (docker-registry checks JWTs signed by a key whose certificate chains to
  // token_root_certs).
  std::string token_realm, token_service, token_issuer;
  fs::path token_root_certs;
};

// A real `docker-registry serve` on 127.0.0.1:<free port>, storing in a temp dir, logging every
// request to a file.
class Registry {
 public:
  explicit Registry(const fs::path& dir, const std::string& htpasswd = "",
                    const RegistrySecurity& security = {}) {
    fs::create_directories(dir);
    port_ = free_port();
    address_ = "127.0.0.1:" + std::to_string(port_);
    log_ = dir / "registry.log";
    const fs::path config = dir / "registry.yml";
    std::ofstream yml(config);
    yml << "version: 0.1\n"
        << "log:\n  level: info\n"
        << "storage:\n  filesystem:\n    rootdirectory: "
        << (security.data_dir.empty() ? dir / "data" : security.data_dir).string()
        << "\n  delete:\n    enabled: true\n"
        << "http:\n  addr: " << address_ << "\n";
    if (!security.tls_cert.empty()) {
      yml << "  tls:\n    certificate: " << security.tls_cert.string()
          << "\n    key: " << security.tls_key.string() << "\n";
    }
    if (!htpasswd.empty()) {
      yml << "auth:\n  htpasswd:\n    realm: corral-test\n    path: " << htpasswd << "\n";
    } else if (!security.token_realm.empty()) {
      yml << "auth:\n  token:\n    realm: " << security.token_realm
          << "\n    service: " << security.token_service
          << "\n    issuer: " << security.token_issuer
          << "\n    rootcertbundle: " << security.token_root_certs.string() << "\n";
    }
    yml.close();
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execlp("docker-registry", "docker-registry", "serve", config.c_str(), nullptr);
      ::_exit(127);
    }
    http::ClientOptions client_options;
    client_options.tls.enabled = !security.tls_cert.empty();
    client_options.tls.ca_file = security.ca_file.string();
    auto client = http::HttpClient::create(address_, client_options);
    for (int i = 0; i < 100; ++i) {
      auto r = client->get("/v2/");
      if (r.ok()) {
        ready_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~Registry() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool ready() const { return ready_; }
  const std::string& address() const { return address_; }
  std::string log() const { return read_file(log_).value_or(""); }
  // Completed GET requests of blob `digest` (the registry's access log).
  int blob_gets(const std::string& digest) const {
    std::string text = log();
    int n = 0;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.find("\"GET /v2/") != std::string::npos &&
          line.find("/blobs/" + digest) != std::string::npos) {
        ++n;
      }
    }
    return n;
  }

 private:
  uint16_t port_ = 0;
  std::string address_;
  fs::path log_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

class ImageStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "the image store root tests need root (owners, whiteout "
                                  "devices, trusted xattrs, overlayfs): run them as root";
    auto d = TempDir::create("corral-image-test-");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(d).value());
    fs::permissions(dir_->path(), fs::perms(0755));
    opts_.root = dir_->path() / "store";
    open_store();
  }
  void open_store() {
    store_.reset();
    auto s = ImageStore::open(opts_);
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    store_ = std::move(s).value();
  }
  fs::path make(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"python3", kMakeImage.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string out;
    EXPECT_EQ(run(argv, &out), 0) << out;
    return args.size() > 1 ? fs::path(args[1]) : fs::path();
  }
  fs::path oci_layout(const std::string& name = "oci") {
    fs::path p = dir_->path() / name;
    fs::create_directories(p);
    make({"oci", p.string()});
    return p;
  }
  // What a task run in an image by the real corral-launcher saw.
  struct TaskRun {
    bool provisioned = false;
    int code = -1;
    std::string log, out, err;  // launcher's own output; the task's stdout and stderr
    fs::path run_dir;
    std::vector<fs::path> lower_dirs;
  };
  // The integration the native containerizer relies on: provision `ref` for `task_id`, write a
  // SandboxSpec with an overlay rootfs and the image's Env/User/WorkingDir, exec the real
  // corral-launcher running `/bin/sh -c script`.
  // userns: run the task in a user namespace mapping ids 0..65535 to host ids from *userns
  // (the overlay's layers idmapped into it); uid: the task's user instead of the image's.
  TaskRun run_in_image(const std::string& ref, const std::string& task_id,
                       const std::string& script, std::optional<uint32_t> userns = std::nullopt,
                       std::optional<uint32_t> uid = std::nullopt) {
    TaskRun task;
    auto p = store_->provision(ref, task_id);
    if (!p.ok()) {
      task.log = p.error().to_string();
      return task;
    }
    auto user = resolve_image_user(p->lower_dirs, p->config.user);
    if (!user.ok()) {
      task.log = user.error().to_string();
      return task;
    }
    task.provisioned = true;
    task.lower_dirs = p->lower_dirs;
    task.run_dir = dir_->path() / ("run-" + task_id);
    const fs::path sandbox = task.run_dir / "sandbox";
    for (const auto& d : {sandbox, task.run_dir / "upper", task.run_dir / "work"}) {
      fs::create_directories(d);
    }
    json lowers = json::array();
    for (const auto& l : p->lower_dirs) lowers.push_back(l.string());
    std::vector<std::string> env = p->config.env;
    env.push_back("CORRAL_TASK_ID=" + task_id);
    json spec = {{"argv", {"/bin/sh", "-c", script}},
                 {"env", env},
                 {"cwd", p->config.working_dir},
                 {"uid", uid ? *uid : user->uid},
                 {"gid", uid ? *uid : user->gid},
                 {"capabilities", json::array()},
                 {"namespaces", {{"cgroup", false}}},
                 {"rootfs",
                  {{"mode", "overlay"},
                   {"lower_dirs", lowers},
                   {"upper_dir", (task.run_dir / "upper").string()},
                   {"work_dir", (task.run_dir / "work").string()}}},
                 {"sandbox_dir", sandbox.string()},
                 {"exit_status_path", (task.run_dir / "exit.json").string()}};
    if (userns) {
      spec["namespaces"]["user"] = {{"host_uid", *userns}, {"host_gid", *userns}, {"count", 65536}};
    }
    std::ofstream(task.run_dir / "spec.json") << spec.dump();
    task.code =
        run({CORRAL_LAUNCHER_PATH, "--spec", (task.run_dir / "spec.json").string()}, &task.log);
    task.out = read_file(sandbox / "stdout").value_or("");
    task.err = read_file(sandbox / "stderr").value_or("");
    return task;
  }
  size_t count(const fs::path& dir) {
    size_t n = 0;
    std::error_code ec;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir, ec)) ++n;
    return n;
  }

  std::unique_ptr<TempDir> dir_;
  StoreOptions opts_;
  std::unique_ptr<ImageStore> store_;
};

TEST_F(ImageStoreTest, ImportsAnOciLayoutAndProvisionsItsLayers) {
  auto info = store_->import(oci_layout(), {.reference = "corral-test/busybox:oci"});
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->layers.size(), 3u);
  EXPECT_EQ(info->references, std::vector<std::string>{"docker.io/corral-test/busybox:oci"});
  EXPECT_EQ(info->config.user, "app");
  EXPECT_EQ(info->config.working_dir, "/home/app");
  EXPECT_THAT(info->config.env, ::testing::Contains("GREETING=hi"));
  EXPECT_EQ(info->config.exposed_ports, std::vector<std::string>{"8080/tcp"});
  EXPECT_EQ(info->config.entrypoint, (std::vector<std::string>{"/bin/sh", "-c"}));

  auto p = store_->provision("corral-test/busybox:oci", "c1");
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  ASSERT_EQ(p->lower_dirs.size(), 3u);
  EXPECT_EQ(p->image_id, info->id);
  // Top first: layer 3 has hello.txt owned by 1000, layer 2 the whiteouts, layer 1 busybox.
  struct stat st {};
  ASSERT_EQ(::stat((p->lower_dirs[0] / "home/app/hello.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  ASSERT_EQ(::lstat((p->lower_dirs[1] / "data/removed.txt").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) << "overlay whiteout";
  char v = 0;
  EXPECT_EQ(::getxattr((p->lower_dirs[1] / "opaque").c_str(), "trusted.overlay.opaque", &v, 1), 1);
  EXPECT_TRUE(fs::exists(p->lower_dirs[2] / "bin/busybox"));
  auto user = resolve_image_user(p->lower_dirs, info->config.user);
  ASSERT_TRUE(user.ok()) << user.error().to_string();
  EXPECT_EQ(user->uid, 1000u);
  EXPECT_EQ(user->gid, 1000u);

  // Leased: cannot be removed, survives prune --all; released: both work.
  auto busy = store_->remove(info->id);
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code(), EBUSY);
  EXPECT_THAT(busy.error().message(), HasSubstr("c1"));
  auto pr = store_->prune({.all = true});
  ASSERT_TRUE(pr.ok());
  EXPECT_TRUE(pr->images_removed.empty());
  EXPECT_TRUE(fs::exists(p->lower_dirs[0]));
  ASSERT_TRUE(store_->release("c1").ok());
  ASSERT_TRUE(store_->release("c1").ok()) << "release is idempotent";
  ASSERT_TRUE(store_->remove("corral-test/busybox:oci").ok());
  EXPECT_EQ(count(opts_.root / "layers"), 0u);
  EXPECT_EQ(count(opts_.root / "images"), 0u);
  EXPECT_FALSE(store_->inspect(info->id).ok());
}

TEST_F(ImageStoreTest, DockerArchiveOciArchiveAndLayoutShareLayers) {
  auto oci = store_->import(oci_layout(), {.reference = "corral-test/busybox:oci"});
  ASSERT_TRUE(oci.ok()) << oci.error().to_string();
  fs::path docker = dir_->path() / "docker.tar";
  make({"docker-archive", docker.string()});
  auto da = store_->import(docker);
  ASSERT_TRUE(da.ok()) << da.error().to_string();
  EXPECT_EQ(da->references, std::vector<std::string>{"docker.io/corral-test/busybox:docker"});
  fs::path oa = dir_->path() / "oci.tar";
  make({"oci-archive", oa.string()});
  auto ociarch = store_->import(oa, {.reference = "corral-test/busybox:ociarchive"});
  ASSERT_TRUE(ociarch.ok()) << ociarch.error().to_string();
  ASSERT_EQ(da->layers.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(da->layers[i].diff_id, oci->layers[i].diff_id);
    EXPECT_EQ(ociarch->layers[i].diff_id, oci->layers[i].diff_id);
  }
  EXPECT_EQ(count(opts_.root / "layers"), 3u) << "layers are shared by diff_id";
  auto list = store_->list();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u) << "the OCI layout and oci-archive are the same manifest";
  EXPECT_EQ(count(opts_.root / "tmp") - 1, 0u) << "only tmp/blobs is left in tmp/";
}

TEST_F(ImageStoreTest, HostileImagesAreRefusedAndTheHostIsUnchanged) {
  opts_.extract.max_bytes = 64 << 20;
  open_store();
  struct stat shadow_before {};
  ::stat("/etc/shadow", &shadow_before);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"traversal", "'..' component"},
      {"symlink-write", "through a symlink"},
      {"hardlink-shadow", "hardlink target '/etc/shadow'"},
      {"abs-symlink-chain", "through a symlink"},
      {"device", "device node"},
      {"overlay-xattr", "trusted.overlay.redirect"},
      {"gzip-bomb", "beyond the limit of 67108864 bytes"},
      {"bad-manifest-digest", "does not match its digest"},
      {"truncated-blob", "truncated or corrupt"},
  };
  for (const auto& [kind, message] : cases) {
    fs::path d = dir_->path() / ("hostile-" + kind);
    fs::create_directories(d);
    make({"hostile", kind, d.string()});
    auto r = store_->import(d, {.reference = "corral-test/hostile:" + kind});
    ASSERT_FALSE(r.ok()) << kind << " was accepted";
    EXPECT_THAT(r.error().message(), HasSubstr(message)) << kind;
    std::cerr << "  " << kind << ": " << r.error().message() << "\n";
  }
  for (const char* escaped : {"/tmp/corral-escape-traversal", "/etc/corral-escape-symlink",
                              "/etc/corral-escape-chain", "/corral-escape-chain"}) {
    EXPECT_FALSE(fs::exists(escaped)) << escaped;
  }
  struct stat shadow_after {};
  ::stat("/etc/shadow", &shadow_after);
  EXPECT_EQ(shadow_before.st_nlink, shadow_after.st_nlink);
  auto list = store_->list();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty()) << "no hostile image was recorded";
  for (const auto& e : fs::directory_iterator(opts_.root / "tmp")) {
    EXPECT_EQ(e.path().filename(), "blobs") << "left behind: " << e.path();
  }
  // Only well-formed layers (the base image's three, shared by the cases) may have been
  // published; never a hostile one.
  EXPECT_LE(count(opts_.root / "layers"), 3u);
}

TEST_F(ImageStoreTest, WatermarkGcRemovesUnusedImagesLeastRecentlyUsedFirst) {
  opts_.high_watermark_bytes = 1;  // every import goes over it
  opts_.low_watermark_bytes = 1;
  open_store();
  auto a = store_->import(oci_layout("a"), {.reference = "corral-test/a:1"});
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  ASSERT_TRUE(store_->provision("corral-test/a:1", "holds-a").ok());
  fs::path bdir = dir_->path() / "b";
  fs::create_directories(bdir);
  make({"oci", bdir.string(), "--size-mb", "1", "--layers", "1"});
  auto b = store_->import(bdir, {.reference = "corral-test/b:1"});
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  EXPECT_TRUE(store_->inspect("corral-test/a:1").ok()) << "leased: kept over the watermark";
  ASSERT_TRUE(store_->release("holds-a").ok());
  fs::path cdir = dir_->path() / "c";
  fs::create_directories(cdir);
  make({"oci", cdir.string(), "--size-mb", "2", "--layers", "1"});
  auto c = store_->import(cdir, {.reference = "corral-test/c:1"});
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_FALSE(store_->inspect("corral-test/a:1").ok()) << "unused: collected";
  EXPECT_FALSE(store_->inspect("corral-test/b:1").ok()) << "unused: collected";
  EXPECT_TRUE(store_->inspect("corral-test/c:1").ok()) << "the image just stored stays";
  auto usage = store_->disk_usage();
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(*usage, c->unpacked_bytes);
}

// The integration the native containerizer relies on: provision, write a SandboxSpec with an
// overlay rootfs, exec the real corral-launcher, look at what the task saw.
TEST_F(ImageStoreTest, RunsATaskInTheImageThroughTheLauncher) {
  auto info = store_->import(oci_layout(), {.reference = "corral-test/busybox:run"});
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  const std::string script =
      "echo motd=$(cat /etc/motd); "
      "if test -e /data/removed.txt; then echo removed=present; else echo removed=gone; fi; "
      "echo keep=$(cat /data/keep.txt); echo opaque=$(ls /opaque); "
      "echo uid=$(id -u) gid=$(id -g); echo pwd=$(pwd); echo greeting=$GREETING; "
      "echo hello=$(cat hello.txt); echo written > /home/app/new.txt && echo wrote=yes";
  TaskRun task = run_in_image("corral-test/busybox:run", "task-1", script);
  ASSERT_TRUE(task.provisioned) << task.log;
  const fs::path run_dir = task.run_dir;
  const std::string& stdout_text = task.out;
  ASSERT_EQ(task.code, 0) << task.log << "\nstdout:\n" << task.out << "\nstderr:\n" << task.err;
  EXPECT_THAT(stdout_text, HasSubstr("motd=hello from layer 2\n"));
  EXPECT_THAT(stdout_text, HasSubstr("removed=gone\n")) << "whiteout honoured";
  EXPECT_THAT(stdout_text, HasSubstr("keep=keep\n"));
  EXPECT_THAT(stdout_text, HasSubstr("opaque=b.txt\n")) << "opaque directory honoured";
  EXPECT_THAT(stdout_text, HasSubstr("uid=1000 gid=1000\n")) << "the image's User";
  EXPECT_THAT(stdout_text, HasSubstr("pwd=/home/app\n")) << "the image's WorkingDir";
  EXPECT_THAT(stdout_text, HasSubstr("greeting=hi\n")) << "the image's Env";
  EXPECT_THAT(stdout_text, HasSubstr("hello=hello from layer 3\n"));
  EXPECT_THAT(stdout_text, HasSubstr("wrote=yes\n"));
  // Writes land in the task's upper dir, never in the shared layers; the overlay mount lived
  // only in the task's mount namespace.
  EXPECT_TRUE(fs::exists(run_dir / "upper/home/app/new.txt"));
  for (const auto& l : task.lower_dirs) EXPECT_FALSE(fs::exists(l / "home/app/new.txt"));
  std::string mounts = read_file("/proc/self/mountinfo").value_or("");
  EXPECT_EQ(mounts.find((run_dir / "upper").string()), std::string::npos);
  ASSERT_TRUE(store_->release("task-1").ok());
}

// Every file of the layers with its owner, mode, size and content hash-ish (size + mtime), to
// show that nothing a task does changes the store.
std::map<std::string, std::string> snapshot(const std::vector<fs::path>& layers) {
  std::map<std::string, std::string> out;
  for (const auto& l : layers) {
    for (const auto& e : fs::recursive_directory_iterator(l)) {
      struct stat st {};
      if (::lstat(e.path().c_str(), &st) != 0) continue;
      std::string content;
      if (S_ISREG(st.st_mode)) content = read_file(e.path()).value_or("?").substr(0, 4096);
      out[e.path().string()] = std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) + " " +
                               std::to_string(st.st_mode) + " " + std::to_string(st.st_size) + " " +
                               content;
    }
  }
  return out;
}

TEST_F(ImageStoreTest, RunsATaskInTheImageInAUserNamespaceWithIdmappedLayers) {
  auto info = store_->import(oci_layout(), {.reference = "corral-test/busybox:userns"});
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  constexpr uint32_t kHostBase = 300000;
  std::vector<fs::path> layers;
  {
    auto p = store_->provision(info->id, "peek");
    ASSERT_TRUE(p.ok()) << p.error().to_string();
    layers = p->lower_dirs;
    ASSERT_TRUE(store_->release("peek").ok());
  }
  const auto before = snapshot(layers);
  ASSERT_FALSE(before.empty());

  // As the image's User (app = 1000): the image's owners inside, its own writes land in the
  // upper dir under the shifted host ids.
  const std::string as_app =
      "echo ids=$(id -u):$(id -g); read a b c < /proc/self/uid_map; echo map=$a $b $c; "
      "echo root=$(stat -c %u:%g /); echo motd=$(stat -c %u:%g /etc/motd) $(cat /etc/motd); "
      "echo hello=$(stat -c %u:%g /home/app/hello.txt); "
      "if test -e /data/removed.txt; then echo removed=present; else echo removed=gone; fi; "
      "echo opaque=$(ls /opaque); "
      "echo written > /home/app/new.txt && echo new=$(stat -c %u:%g /home/app/new.txt); "
      "echo more >> /home/app/hello.txt && echo append=ok; "
      "if echo x >> /etc/motd 2>/dev/null; then echo motd-write=yes; else echo motd-write=no; fi";
  TaskRun app = run_in_image(info->id, "userns-app", as_app, kHostBase);
  ASSERT_TRUE(app.provisioned) << app.log;
  ASSERT_EQ(app.code, 0) << app.log << "\nstdout:\n" << app.out << "\nstderr:\n" << app.err;
  EXPECT_THAT(app.out, HasSubstr("ids=1000:1000\n"));
  EXPECT_THAT(app.out, HasSubstr("map=0 300000 65536\n")) << "the task is in a user namespace";
  EXPECT_THAT(app.out, HasSubstr("root=0:0\n")) << "the image's / belongs to root inside";
  EXPECT_THAT(app.out, HasSubstr("motd=0:0 hello from layer 2\n")) << "image uid 0 is 0 inside";
  EXPECT_THAT(app.out, HasSubstr("hello=1000:1000\n")) << "image uid 1000 is 1000 inside";
  EXPECT_THAT(app.out, HasSubstr("removed=gone\n")) << "whiteout honoured";
  EXPECT_THAT(app.out, HasSubstr("opaque=b.txt\n")) << "opaque directory honoured";
  EXPECT_THAT(app.out, HasSubstr("new=1000:1000\n"));
  EXPECT_THAT(app.out, HasSubstr("append=ok\n")) << "its own image file is app's to write";
  EXPECT_THAT(app.out, HasSubstr("motd-write=no\n")) << "root's file is not app's to write";
  struct stat st {};
  ASSERT_EQ(::stat((app.run_dir / "upper/home/app/new.txt").c_str(), &st), 0)
      << "the task's write is in its upper dir";
  EXPECT_EQ(st.st_uid, kHostBase + 1000) << "app inside is the shifted uid on the host";
  EXPECT_EQ(st.st_gid, kHostBase + 1000);
  ASSERT_EQ(::stat((app.run_dir / "upper").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kHostBase) << "the upper dir is given to the namespace's root";
  ASSERT_EQ(::stat((app.run_dir / "upper/home/app/hello.txt").c_str(), &st), 0) << "copied up";
  EXPECT_EQ(st.st_uid, kHostBase + 1000) << "the copy-up keeps the image's owner, shifted";
  EXPECT_EQ(read_file(app.run_dir / "upper/home/app/hello.txt").value_or(""),
            "hello from layer 3\nmore\n");

  // As root of the namespace (no capabilities): it may change root's image files, but only its
  // copies in the upper dir;
  // the layers (and their owners) are the same afterwards, and the layers are not in its view.
  const std::string as_root =
      "echo ids=$(id -u):$(id -g); echo changed > /etc/motd && echo motd=$(cat /etc/motd); "
      "rm /data/keep.txt && echo rm=ok; "
      "mkdir -p /var/new && echo mkdir=ok";
  TaskRun root = run_in_image(info->id, "userns-root", as_root, kHostBase, 0u);
  ASSERT_TRUE(root.provisioned) << root.log;
  ASSERT_EQ(root.code, 0) << root.log << "\nstdout:\n" << root.out << "\nstderr:\n" << root.err;
  EXPECT_THAT(root.out, HasSubstr("ids=0:0\n"));
  EXPECT_THAT(root.out, HasSubstr("motd=changed\n"));
  EXPECT_THAT(root.out, HasSubstr("rm=ok\n"));
  EXPECT_THAT(root.out, HasSubstr("mkdir=ok\n"));
  ASSERT_EQ(::stat((root.run_dir / "upper/etc/motd").c_str(), &st), 0) << "copied up";
  EXPECT_EQ(st.st_uid, kHostBase) << "the copy-up keeps the image's owner, shifted";
  EXPECT_EQ(read_file(root.run_dir / "upper/etc/motd").value_or(""), "changed\n");
  EXPECT_TRUE(fs::is_character_file(root.run_dir / "upper/data/keep.txt"))
      << "the removal is a whiteout in the upper dir";
  EXPECT_EQ(snapshot(layers), before) << "the store's layers are unchanged";

  // A third task sees the image as it was: nothing of the first two leaked into the layers.
  TaskRun again = run_in_image(info->id, "userns-again",
                               "cat /etc/motd; cat /data/keep.txt; test -e /var/new || echo "
                               "no-new",
                               kHostBase, 0u);
  ASSERT_EQ(again.code, 0) << again.log << again.err;
  EXPECT_EQ(again.out, "hello from layer 2\nkeep\nno-new\n");
  std::string mounts = read_file("/proc/self/mountinfo").value_or("");
  for (const auto& l : layers) EXPECT_EQ(mounts.find(l.string()), std::string::npos);
  for (const auto& id : {"userns-app", "userns-root", "userns-again"}) {
    ASSERT_TRUE(store_->release(id).ok());
  }
}

TEST_F(ImageStoreTest, CopyFallbackFlattensTheLayers) {
  auto info = store_->import(oci_layout(), {.reference = "corral-test/busybox:flat"});
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  auto p = store_->provision(info->id, "flat-1");
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  std::vector<fs::path> bottom_first(p->lower_dirs.rbegin(), p->lower_dirs.rend());
  const fs::path rootfs = dir_->path() / "rootfs";
  fs::create_directory(rootfs);
  ASSERT_TRUE(flatten_layers(bottom_first, rootfs).ok());
  EXPECT_FALSE(fs::exists(rootfs / "data/removed.txt"));
  EXPECT_TRUE(fs::exists(rootfs / "data/keep.txt"));
  EXPECT_FALSE(fs::exists(rootfs / "opaque/a.txt"));
  EXPECT_TRUE(fs::exists(rootfs / "opaque/b.txt"));
  EXPECT_EQ(read_file(rootfs / "etc/motd").value_or(""), "hello from layer 2\n");
  struct stat st {};
  ASSERT_EQ(::stat((rootfs / "home/app/hello.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
}

class RegistryTest : public ImageStoreTest {
 protected:
  // Pushes the test image to the registry with skopeo; returns "ADDR/corral/busybox:TAG".
  std::string push(Registry& reg, const fs::path& layout, const std::string& tag,
                   const std::vector<std::string>& extra = {}) {
    std::string ref = reg.address() + "/corral/busybox:" + tag;
    std::vector<std::string> argv = {"skopeo", "copy", "--dest-tls-verify=false"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("oci:" + layout.string() + ":latest");
    argv.push_back("docker://" + ref);
    std::string out;
    EXPECT_EQ(run(argv, &out), 0) << out;
    return ref;
  }
  PullOptions insecure(const Registry& reg) {
    PullOptions o;
    o.insecure_registries = {reg.address()};
    return o;
  }
};

TEST_F(RegistryTest, PullsFromARealRegistryAndMatchesTheImport) {
  Registry reg(dir_->path() / "registry");
  ASSERT_TRUE(reg.ready()) << "docker-registry did not start:\n" << reg.log();
  fs::path layout = oci_layout();
  std::string ref = push(reg, layout, "1");
  std::vector<Progress> seen;
  auto opts = insecure(reg);
  opts.progress = [&](const Progress& p) { seen.push_back(p); };
  auto info = store_->pull(ref, opts);
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->layers.size(), 3u);
  EXPECT_EQ(info->config.user, "app");
  EXPECT_EQ(info->references, std::vector<std::string>{ref});
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().phase, Progress::Phase::done);
  EXPECT_EQ(seen.back().bytes_done, seen.back().bytes_total);
  EXPECT_EQ(seen.back().layers_done, 3u);
  // The same layers as the import of the same layout.
  auto imported = store_->import(layout, {.reference = "corral-test/busybox:same"});
  ASSERT_TRUE(imported.ok());
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(imported->layers[i].diff_id, info->layers[i].diff_id);
  // By digest, too; and a second pull downloads nothing.
  auto by_digest = store_->pull(reg.address() + "/corral/busybox@" + info->id, insecure(reg));
  ASSERT_TRUE(by_digest.ok()) << by_digest.error().to_string();
  EXPECT_EQ(by_digest->id, info->id);
  for (const auto& l : info->layers) EXPECT_EQ(reg.blob_gets(l.blob_digest), 1) << l.blob_digest;
  // Unknown tags and registries say so.
  auto missing = store_->pull(reg.address() + "/corral/busybox:nope", insecure(reg));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message(), HasSubstr("has no manifest for corral/busybox:nope"));
}

TEST_F(RegistryTest, TenConcurrentPullsOfANewImageDownloadItOnce) {
  Registry reg(dir_->path() / "registry");
  ASSERT_TRUE(reg.ready()) << reg.log();
  std::string ref = push(reg, oci_layout(), "concurrent");
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::vector<std::string> ids(10);
  for (int i = 0; i < 10; ++i) {
    threads.emplace_back([&, i] {
      auto r = store_->pull(ref, insecure(reg));
      if (r.ok()) {
        ++ok;
        ids[i] = r->id;
        auto p = store_->provision(ref, "task-" + std::to_string(i));
        if (!p.ok()) --ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 10);
  auto info = store_->inspect(ref);
  ASSERT_TRUE(info.ok());
  for (const auto& id : ids) EXPECT_EQ(id, info->id);
  EXPECT_EQ(info->leases.size(), 10u);
  for (const auto& l : info->layers) {
    EXPECT_EQ(reg.blob_gets(l.blob_digest), 1) << "layer " << l.blob_digest << " downloaded more "
                                               << "than once";
  }
}

TEST_F(RegistryTest, ACrashDuringAPullLeavesTheStoreConsistentAndTheNextPullCompletes) {
  Registry reg(dir_->path() / "registry");
  ASSERT_TRUE(reg.ready()) << reg.log();
  fs::path layout = dir_->path() / "big";
  fs::create_directories(layout);
  make({"oci", layout.string(), "--size-mb", "24", "--layers", "2"});
  std::string ref = push(reg, layout, "big");
  store_.reset();
  pid_t child = ::fork();
  if (child == 0) {
    auto s = ImageStore::open(opts_);
    if (!s.ok()) ::_exit(2);
    PullOptions o = insecure(reg);
    o.progress = [](const Progress& p) {
      if (p.bytes_done > (6u << 20)) ::kill(::getpid(), SIGKILL);  // crash mid-download
    };
    (void)(*s)->pull(ref, o);
    ::_exit(3);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the pull was not cut";
  EXPECT_GE(count(opts_.root / "tmp/blobs"), 1u) << "the interrupted download is kept to resume";
  open_store();
  auto none = store_->inspect(ref);
  EXPECT_FALSE(none.ok()) << "a half-pulled image must not be visible";
  auto info = store_->pull(ref, insecure(reg));
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->layers.size(), 5u);
  auto p = store_->provision(ref, "after-crash");
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  for (const auto& l : p->lower_dirs) EXPECT_TRUE(fs::exists(l));
  EXPECT_EQ(count(opts_.root / "tmp/blobs"), 0u) << "partial downloads are cleaned up";
}

TEST_F(RegistryTest, BasicAuthFromACredentialsFile) {
  const fs::path htpasswd = dir_->path() / "htpasswd";
  std::string hash;
  ASSERT_EQ(run({"python3", "-W", "ignore", "-c",
                 "import crypt,sys; sys.stdout.write(crypt.crypt('s3cret', "
                 "crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))"},
                &hash),
            0)
      << hash;
  std::ofstream(htpasswd) << "corral:" << hash << "\n";
  Registry reg(dir_->path() / "registry", htpasswd.string());
  ASSERT_TRUE(reg.ready()) << reg.log();
  std::string ref = push(reg, oci_layout(), "auth", {"--dest-creds", "corral:s3cret"});
  auto anonymous = store_->pull(ref, insecure(reg));
  ASSERT_FALSE(anonymous.ok());
  EXPECT_THAT(anonymous.error().message(), HasSubstr("requires a user name and password"));
  const fs::path creds = dir_->path() / "config.json";
  std::ofstream(creds)
      << json{{"auths", {{reg.address(), {{"auth", "Y29ycmFsOnMzY3JldA=="}}}}}}.dump();
  auto opts = insecure(reg);
  opts.credentials_file = creds;
  auto info = store_->pull(ref, opts);
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->layers.size(), 3u);
  std::ofstream(creds)
      << json{{"auths", {{reg.address(), {{"username", "corral"}, {"password", "wrong"}}}}}}.dump();
  open_store();
  auto refused = store_->pull(reg.address() + "/corral/busybox@" + info->id, opts);
  // A pull always asks the registry for the manifest, even of an image already in the store.
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error().message(), HasSubstr("refused"));
}

TEST_F(RegistryTest, PolicyRefusesBeforeDownloading) {
  Registry reg(dir_->path() / "registry");
  ASSERT_TRUE(reg.ready()) << reg.log();
  std::string ref = push(reg, oci_layout(), "policy");
  opts_.policy.registries = {"127.0.0.1:1"};
  opts_.policy.origin = "/etc/corral/policy.d/10-images.toml:2";
  open_store();
  auto r = store_->pull(ref, insecure(reg));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), EPERM);
  EXPECT_THAT(r.error().message(), HasSubstr("10-images.toml:2"));
  opts_.policy = {};
  opts_.policy.max_image_bytes = 1024;
  open_store();
  r = store_->pull(ref, insecure(reg));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("images.max_size"));
  EXPECT_EQ(count(opts_.root / "layers"), 0u);
}

// A test PKI made with the openssl command: a CA, a server certificate for 127.0.0.1 and
// localhost signed by it, a second CA nobody trusts, and a self-signed RSA token signer.
struct TestPki {
  fs::path ca, server_cert, server_key, other_ca, token_cert, token_key;
};

TestPki make_test_pki(const fs::path& dir) {
  fs::create_directories(dir);
  TestPki pki{dir / "ca.crt",       dir / "server.crt",       dir / "server.key",
              dir / "other-ca.crt", dir / "token-signer.crt", dir / "token-signer.key"};
  const fs::path ext = dir / "server.ext";
  std::ofstream(ext) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
  const std::vector<std::vector<std::string>> steps = {
      {"openssl",
       "req",
       "-x509",
       "-newkey",
       "ec",
       "-pkeyopt",
       "ec_paramgen_curve:P-256",
       "-nodes",
       "-keyout",
       (dir / "ca.key").string(),
       "-out",
       pki.ca.string(),
       "-days",
       "2",
       "-subj",
       "/CN=corral test CA",
       "-addext",
       "basicConstraints=critical,CA:TRUE",
       "-addext",
       "keyUsage=critical,keyCertSign,cRLSign"},
      {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", (dir / "other-ca.key").string(), "-out", pki.other_ca.string(), "-days", "2",
       "-subj", "/CN=untrusted CA", "-addext", "basicConstraints=critical,CA:TRUE"},
      {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", pki.server_key.string(), "-out", (dir / "server.csr").string(), "-subj",
       "/CN=127.0.0.1"},
      {"openssl", "x509", "-req", "-in", (dir / "server.csr").string(), "-CA", pki.ca.string(),
       "-CAkey", (dir / "ca.key").string(), "-CAcreateserial", "-out", pki.server_cert.string(),
       "-days", "2", "-extfile", ext.string()},
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
       pki.token_key.string(), "-out", pki.token_cert.string(), "-days", "2", "-subj",
       "/CN=corral test token signer"},
  };
  for (const auto& argv : steps) {
    std::string out;
    EXPECT_EQ(run(argv, &out), 0) << argv[1] << " " << argv[2] << ": " << out;
  }
  return pki;
}

// An htpasswd line for docker-registry (bcrypt).
std::string htpasswd_line(const std::string& user, const std::string& password) {
  std::string hash;
  EXPECT_EQ(run({"htpasswd", "-nbB", user, password}, &hash), 0) << hash;
  while (!hash.empty() && (hash.back() == '\n' || hash.back() == '\r')) hash.pop_back();
  return hash + "\n";
}

class SecureRegistryTest : public RegistryTest {
 protected:
  void SetUp() override {
    RegistryTest::SetUp();
    pki_ = make_test_pki(dir_->path() / "pki");
    data_ = dir_->path() / "registry-data";
    // Fixtures go in through a plain registry on the same storage (skopeo need not trust
    // the test CA); the secure registry then serves them.
    Registry plain(dir_->path() / "plain", "", {.data_dir = data_});
    ASSERT_TRUE(plain.ready()) << plain.log();
    push(plain, oci_layout(), "secure");
    repo_tag_ = "corral/busybox:secure";
  }
  RegistrySecurity tls() const {
    return {.data_dir = data_,
            .tls_cert = pki_.server_cert,
            .tls_key = pki_.server_key,
            .ca_file = pki_.ca};
  }
  fs::path credentials(const std::string& registry, const std::string& user,
                       const std::string& password) {
    const fs::path file = dir_->path() / "config.json";
    std::ofstream(file)
        << json{{"auths", {{registry, {{"username", user}, {"password", password}}}}}}.dump();
    return file;
  }
  void expect_task_runs(const std::string& ref, const std::string& task_id) {
    TaskRun task = run_in_image(ref, task_id, "echo motd=$(cat /etc/motd); echo uid=$(id -u)");
    ASSERT_TRUE(task.provisioned) << task.log;
    EXPECT_EQ(task.code, 0) << task.log << "\n" << task.err;
    EXPECT_THAT(task.out, HasSubstr("motd=hello from layer 2\nuid=1000\n"));
    EXPECT_TRUE(store_->release(task_id).ok());
  }

  TestPki pki_;
  fs::path data_;
  std::string repo_tag_;
};

TEST_F(SecureRegistryTest, TlsWithBasicAuthNeedsTheRightCaAndPasswordThenRunsATask) {
  const fs::path htpasswd = dir_->path() / "htpasswd";
  std::ofstream(htpasswd) << htpasswd_line("corral", "s3cret");
  Registry reg(dir_->path() / "tls", htpasswd.string(), tls());
  ASSERT_TRUE(reg.ready()) << reg.log();
  const std::string ref = reg.address() + "/" + repo_tag_;
  PullOptions opts;  // no insecure registries: HTTPS
  opts.credentials_file = credentials(reg.address(), "corral", "s3cret");

  // The system store does not know the test CA.
  auto untrusted = store_->pull(ref, opts);
  ASSERT_FALSE(untrusted.ok());
  EXPECT_EQ(untrusted.error().code(), EACCES);
  EXPECT_THAT(untrusted.error().message(), HasSubstr("is not trusted"));
  EXPECT_THAT(untrusted.error().message(), HasSubstr("system's CA store"));
  EXPECT_THAT(untrusted.error().message(), HasSubstr("--ca-file"));
  // Another CA is not the one.
  opts.ca_bundle = pki_.other_ca;
  auto other = store_->pull(ref, opts);
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(other.error().message(), HasSubstr("is not trusted"));
  EXPECT_THAT(other.error().message(), HasSubstr(pki_.other_ca.string()));
  // Plain HTTP to a TLS registry (listed as insecure by mistake) fails; never a success.
  PullOptions plain = opts;
  plain.insecure_registries = {reg.address()};
  EXPECT_FALSE(store_->pull(ref, plain).ok());
  // The right CA (per registry, over the bundle) and a wrong password.
  opts.registry_ca_files[reg.address()] = pki_.ca;
  opts.credentials_file = credentials(reg.address(), "corral", "wrong");
  auto refused = store_->pull(ref, opts);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), EACCES);
  EXPECT_THAT(refused.error().message(), HasSubstr("refused"));
  EXPECT_EQ(count(opts_.root / "layers"), 0u);
  // Right CA, right password.
  opts.credentials_file = credentials(reg.address(), "corral", "s3cret");
  auto info = store_->pull(ref, opts);
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->layers.size(), 3u);
  EXPECT_EQ(info->config.user, "app");
  expect_task_runs(ref, "tls-task");
}

TEST_F(SecureRegistryTest, BearerTokenFromARealTokenServerOverTls) {
  const fs::path token_dir = dir_->path() / "token";
  fs::create_directories(token_dir);
  const fs::path port_file = token_dir / "port";
  const fs::path token_log = token_dir / "requests.log";
  pid_t token_pid = ::fork();
  if (token_pid == 0) {
    int fd = ::open((token_dir / "server.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    const fs::path script = fs::path(CORRAL_SOURCE_DIR) / "tests/image/token-server.py";
    ::execlp("python3", "python3", script.c_str(), "--port-file", port_file.c_str(),
             "--signing-key", pki_.token_key.c_str(), "--signing-cert", pki_.token_cert.c_str(),
             "--issuer", "corral-test-issuer", "--service", "corral-test-registry", "--user",
             "corral:t0ken-pass", "--cert", pki_.server_cert.c_str(), "--key",
             pki_.server_key.c_str(), "--log", token_log.c_str(), nullptr);
    ::_exit(127);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{token_pid};
  for (int i = 0; i < 100 && !fs::exists(port_file); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(fs::exists(port_file))
      << "the token server did not start: " << read_file(token_dir / "server.log").value_or("");
  const std::string realm = "https://127.0.0.1:" + read_file(port_file).value_or("") + "/token";
  RegistrySecurity security = tls();
  security.token_realm = realm;
  security.token_service = "corral-test-registry";
  security.token_issuer = "corral-test-issuer";
  security.token_root_certs = pki_.token_cert;
  Registry reg(dir_->path() / "token-registry", "", security);
  ASSERT_TRUE(reg.ready()) << reg.log();
  const std::string ref = reg.address() + "/" + repo_tag_;
  PullOptions opts;
  opts.ca_bundle = pki_.ca;  // the registry and its token service share the test CA

  auto anonymous = store_->pull(ref, opts);
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.error().code(), EACCES);
  EXPECT_THAT(anonymous.error().message(),
              HasSubstr("the token service " + realm + " refused access to corral/busybox"));
  opts.credentials_file = credentials(reg.address(), "corral", "wrong");
  auto wrong = store_->pull(ref, opts);
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.error().message(), HasSubstr("HTTP 401"));
  EXPECT_EQ(count(opts_.root / "layers"), 0u);

  opts.credentials_file = credentials(reg.address(), "corral", "t0ken-pass");
  auto info = store_->pull(ref, opts);
  ASSERT_TRUE(info.ok()) << info.error().to_string() << "\nregistry:\n" << reg.log();
  EXPECT_EQ(info->layers.size(), 3u);
  // The token the pull used was issued by the token server for exactly this repository.
  const std::string requests = read_file(token_log).value_or("");
  EXPECT_THAT(requests, HasSubstr(R"("status": 200, "user": "corral", )"
                                  R"("scope": "repository:corral/busybox:pull")"))
      << requests;
  expect_task_runs(ref, "token-task");
}

}  // namespace
}  // namespace corral::image
