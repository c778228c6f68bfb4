// Sandboxes: creation, URI fetching, safe file access, garbage collection; and draining.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include "agent_internal.hpp"
#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"

namespace corral::agent {
namespace fs = std::filesystem;
namespace asio = boost::asio;

Result<UniqueFd> open_beneath(int root, const std::string& relative, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOCTTY);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  std::string rel = relative.empty() ? "." : relative;
  long fd = ::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how);
  if (fd < 0) {
    int e = errno;
    if (e == EXDEV || e == ELOOP) {
      return Error(EACCES, "path \"" + relative +
                               "\" leaves the sandbox (.., an absolute symlink or a symlink "
                               "pointing outside); refused");
    }
    return Error(e, "open \"" + relative + "\": " + std::strerror(e));
  }
  return UniqueFd(static_cast<int>(fd));
}

namespace {

std::string hex_of(const unsigned char* d, unsigned n) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out += hex[d[i] >> 4];
    out += hex[d[i] & 15];
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  return hex_of(md, n);
}

bool is_archive_name(const std::string& n) {
  for (const char* ext :
       {".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip"}) {
    std::string e(ext);
    if (n.size() > e.size() && n.compare(n.size() - e.size(), e.size(), e) == 0) return true;
  }
  return false;
}

// Extracts with libarchive's safety checks: no "..", no absolute paths, nothing written through
// a symlink; no device nodes, no setuid bits, no owners from the archive.
Result<void> extract(const fs::path& archive_path, const fs::path& dir, uint64_t max_bytes) {
  struct archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_all(a);
  struct archive* out = archive_write_disk_new();
  archive_write_disk_set_options(out, ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                          ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                          ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS |
                                          ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM);
  auto cleanup = [&] {
    archive_read_free(a);
    archive_write_free(out);
  };
  if (archive_read_open_filename(a, archive_path.c_str(), 65536) != ARCHIVE_OK) {
    std::string e = archive_error_string(a) ? archive_error_string(a) : "unknown error";
    cleanup();
    return Error(EINVAL, "cannot read archive " + archive_path.filename().string() + ": " + e);
  }
  uint64_t total = 0;
  for (;;) {
    struct archive_entry* entry = nullptr;
    int r = archive_read_next_header(a, &entry);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      std::string e = archive_error_string(a) ? archive_error_string(a) : "unknown error";
      cleanup();
      return Error(EINVAL, "archive " + archive_path.filename().string() + ": " + e);
    }
    std::string name = archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "";
    auto type = archive_entry_filetype(entry);
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
      cleanup();
      return Error(EPERM, "archive " + archive_path.filename().string() + ": entry \"" + name +
                              "\" is a device, fifo or socket; refused");
    }
    if (archive_entry_hardlink(entry) != nullptr) {
      cleanup();
      return Error(EPERM, "archive " + archive_path.filename().string() + ": entry \"" + name +
                              "\" is a hard link; refused");
    }
    archive_entry_set_perm(entry, archive_entry_perm(entry) & 0777);  // no setuid/setgid/sticky
    fs::path target = dir / name;
    archive_entry_set_pathname(entry, target.c_str());
    if (archive_write_header(out, entry) != ARCHIVE_OK) {
      std::string e = archive_error_string(out) ? archive_error_string(out) : "unknown error";
      cleanup();
      return Error(EPERM, "archive " + archive_path.filename().string() + ": entry \"" + name +
                              "\" refused: " + e);
    }
    const void* buf;
    size_t size;
    la_int64_t offset;
    while ((r = archive_read_data_block(a, &buf, &size, &offset)) == ARCHIVE_OK) {
      total += size;
      if (total > max_bytes) {
        cleanup();
        return Error(EFBIG, "archive " + archive_path.filename().string() +
                                " unpacks to more than " + std::to_string(max_bytes) +
                                " bytes (tasks.fetch_max_bytes); refused");
      }
      if (archive_write_data_block(out, buf, size, offset) != ARCHIVE_OK) {
        std::string e = archive_error_string(out) ? archive_error_string(out) : "write failed";
        cleanup();
        return Error(EIO, "extracting " + name + ": " + e);
      }
    }
    if (r != ARCHIVE_EOF) {
      std::string e = archive_error_string(a) ? archive_error_string(a) : "read failed";
      cleanup();
      return Error(EINVAL, "archive " + archive_path.filename().string() + ": " + e);
    }
  }
  cleanup();
  return {};
}

}  // namespace

Result<void> fetch_uri(const v1::CommandInfo::URI& uri, const fs::path& dir,
                       const isolator::Policy& policy, uint64_t max_bytes) {
  std::string value = uri.value();
  std::string want_sha;
  if (auto hash = value.find("#sha256="); hash != std::string::npos) {
    want_sha = value.substr(hash + 8);
    value = value.substr(0, hash);
    for (auto& c : want_sha) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (want_sha.size() != 64 ||
        want_sha.find_first_not_of("0123456789abcdef") != std::string::npos)
      return Error(EINVAL, "URI " + uri.value() + ": #sha256= must be 64 hex digits");
  }
  std::string name = uri.output_file();
  std::string data;
  if (value.rfind("http://", 0) == 0) {
    auto rest = value.substr(7);
    auto slash = rest.find('/');
    std::string hostport = rest.substr(0, slash);
    std::string target = slash == std::string::npos ? "/" : rest.substr(slash);
    if (name.empty()) name = fs::path(target.substr(0, target.find('?'))).filename().string();
    http::ClientOptions o;
    o.body_limit = max_bytes;
    o.request_timeout = std::chrono::minutes(10);
    auto client = http::HttpClient::create(hostport, o);
    if (!client)
      return Error(client.error().code(), "URI " + value + ": " + client.error().message());
    auto resp = client->get(target);
    if (!resp)
      return Error(resp.error().code(), "fetching " + value + ": " + resp.error().message());
    if (resp->result() != http::Status::ok)
      return Error(EIO, "fetching " + value + ": HTTP " + std::to_string(resp->result_int()));
    data = std::move(resp->body());
  } else if (value.rfind("https://", 0) == 0) {
    return Error(ENOTSUP, "URI " + value +
                              ": https is not supported by the fetcher yet; use http:// with "
                              "#sha256=<digest>, or a local file");
  } else {
    std::string path = value.rfind("file://", 0) == 0 ? value.substr(7) : value;
    if (path.empty() || path.front() != '/')
      return Error(EINVAL, "URI " + value + ": use http://..., file:///path or an absolute path");
    fs::path p = fs::weakly_canonical(path);
    // Local files are read as root: only below the host paths the policy allows for volumes.
    const auto section = policy.effective("*");
    bool allowed = false;
    if (section.volume_paths) {
      for (const auto& prefix : section.volume_paths->value) {
        fs::path pre(prefix);
        auto rel = p.lexically_relative(pre);
        if (!rel.empty() && rel.native().rfind("..", 0) != 0) allowed = true;
      }
    }
    if (!allowed) {
      return Error(EPERM,
                   "URI " + value +
                       ": local files may only be fetched from the host paths the policy "
                       "allows (volumes.allowed_host_paths); add the directory there or serve "
                       "the file over http");
    }
    if (name.empty()) name = p.filename().string();
    CORRAL_ASSIGN_OR_RETURN(data, read_file(p, max_bytes));
  }
  if (!want_sha.empty()) {
    std::string got = sha256_hex(data);
    if (got != want_sha) {
      return Error(EINVAL, "URI " + value + ": checksum mismatch (sha256 " + got + ", expected " +
                               want_sha + "); refusing to use it");
    }
  }
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
    return Error(EINVAL, "URI " + value + ": output file name \"" + name + "\" is invalid");
  fs::path out = dir / name;
  UniqueFd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     uri.executable() ? 0755 : 0644));
  if (!fd) return Error::from_errno("creating " + out.string());
  size_t off = 0;
  while (off < data.size()) {
    ssize_t w = ::write(fd.get(), data.data() + off, data.size() - off);
    if (w <= 0) return Error::from_errno("writing " + out.string());
    off += static_cast<size_t>(w);
  }
  fd.reset();
  bool extract_it =
      (!uri.has_extract() || uri.extract()) && !uri.executable() && is_archive_name(name);
  if (extract_it) CORRAL_TRY(extract(out, dir, max_bytes));
  return {};
}

Result<void> AgentImpl::prepare_sandbox(const containerizer::LaunchRequest& request,
                                        const isolator::Policy& policy, uint64_t fetch_max) {
  std::error_code ec;
  fs::create_directories(request.sandbox_dir, ec);
  if (ec)
    return Error(ec.value(), "creating " + request.sandbox_dir.string() + ": " + ec.message());
  fs::create_directories(request.run_dir, ec);
  if (ec) return Error(ec.value(), "creating " + request.run_dir.string() + ": " + ec.message());
  ::chmod(request.run_dir.c_str(), 0700);
  ::chmod(request.sandbox_dir.c_str(), 0750);
  for (const auto& uri : request.task.command().uris())
    CORRAL_TRY(fetch_uri(uri, request.sandbox_dir, policy, fetch_max));
  // The task owns its sandbox (as seen from the host: shifted by the user namespace).
  uint32_t uid = 0, gid = 0;
  const std::string& user = request.decision.user;
  if (!user.empty() && user.find_first_not_of("0123456789") == std::string::npos) {
    uid = gid = static_cast<uint32_t>(std::stoul(user));
    if (struct passwd* pw = ::getpwuid(uid)) gid = pw->pw_gid;
  } else if (!user.empty()) {
    struct passwd pw {};
    struct passwd* found = nullptr;
    char buf[8192];
    ::getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found);
    if (!found) return Error(ENOENT, "user \"" + user + "\" does not exist on this agent");
    uid = found->pw_uid;
    gid = found->pw_gid;
  }
  if (policy.userns_enabled.value) {
    uid += static_cast<uint32_t>(policy.userns_start.value);
    gid += static_cast<uint32_t>(policy.userns_start.value);
  }
  for (auto it = fs::recursive_directory_iterator(request.sandbox_dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    ::lchown(it->path().c_str(), uid, gid);
  }
  ::chown(request.sandbox_dir.c_str(), uid, gid);
  return {};
}

// ---- garbage collection -------------------------------------------------------------------------

void AgentImpl::schedule_gc() {
  gc_timer_.expires_after(config_.gc_interval);
  gc_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopped_) return;
    double now = now_seconds();
    double max_age = std::chrono::duration<double>(config_.gc_max_age).count();
    struct statvfs st {};
    double used = 0;
    if (::statvfs(config_.work_dir.c_str(), &st) == 0 && st.f_blocks > 0)
      used = 1.0 - static_cast<double>(st.f_bavail) / static_cast<double>(st.f_blocks);
    std::vector<std::pair<double, std::string>> by_age;
    for (const auto& [path, finished] : gc_) by_age.emplace_back(finished, path);
    std::sort(by_age.begin(), by_age.end());
    std::vector<std::string> remove;
    bool over = used > config_.gc_disk_watermark;
    for (const auto& [finished, path] : by_age) {
      if (now - finished > max_age || over) remove.push_back(path);
      // Above the watermark: the oldest half first; the next round re-checks.
      if (over && remove.size() * 2 >= by_age.size()) over = false;
    }
    for (const auto& path : remove) {
      gc_.erase(path);
      pending_batch_.gc[path] = std::nullopt;
    }
    if (!remove.empty()) {
      metrics_.sandboxes_collected += remove.size();
      asio::post(pool_, [remove] {
        for (const auto& p : remove) {
          std::error_code e;
          fs::remove_all(p, e);
        }
      });
      schedule_flush();
    }
    schedule_gc();
  });
}

// ---- draining -----------------------------------------------------------------------------------

void AgentImpl::drain(double deadline, bool kill_at_deadline) {
  if (!drain_) {
    drain_ = DrainState{};
    drain_->started = now_seconds();
    log::notice("draining: no new tasks are accepted");
  }
  drain_->deadline = deadline;
  drain_->kill_at_deadline = kill_at_deadline;
  auto check = std::make_shared<std::function<void()>>();
  auto timer = std::make_shared<asio::steady_timer>(io_);
  *check = [this, check, timer] {
    if (!drain_ || stopped_) return;
    int live = 0;
    for (auto& [id, t] : tasks_) {
      if (!is_terminal(t->state)) ++live;
    }
    if (live == 0) return;
    if (drain_->deadline > 0 && now_seconds() >= drain_->deadline && drain_->kill_at_deadline &&
        !drain_->killed) {
      drain_->killed = true;
      log::notice("drain deadline reached: killing " + std::to_string(live) + " task(s)");
      for (auto& [id, t] : tasks_) kill(*t, std::nullopt);
    }
    timer->expires_after(std::chrono::milliseconds(250));
    timer->async_wait([check](boost::system::error_code ec) {
      if (!ec) (*check)();
    });
  };
  (*check)();
}

nlohmann::json AgentImpl::drain_progress() const {
  nlohmann::json j;
  j["draining"] = drain_.has_value();
  int live = 0;
  nlohmann::json remaining = nlohmann::json::array();
  for (const auto& [id, t] : tasks_) {
    if (is_terminal(t->state)) continue;
    ++live;
    remaining.push_back({{"task_id", t->info.task_id().value()},
                         {"framework_id", t->framework.id().value()},
                         {"state", v1::TaskState_Name(t->state)}});
  }
  j["running_tasks"] = live;
  j["tasks"] = remaining;
  if (drain_) {
    j["started"] = drain_->started;
    j["deadline"] = drain_->deadline;
    j["killed_at_deadline"] = drain_->killed;
    j["done"] = live == 0;
  }
  return j;
}

}  // namespace corral::agent
