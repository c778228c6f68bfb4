#include "corral/common/fd.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <system_error>

namespace corral {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    reset(other.release());
  }
  return *this;
}

int UniqueFd::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) {
    ::close(fd_);
  }
  fd_ = fd;
}

Result<Pidfd> Pidfd::open(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    return Error::from_errno("pidfd_open(" + std::to_string(pid) + ")");
  }
  return Pidfd(UniqueFd(fd), pid);
}

Result<void> Pidfd::send_signal(int sig) const {
  if (::syscall(SYS_pidfd_send_signal, fd_.get(), sig, nullptr, 0) != 0) {
    return Error::from_errno("pidfd_send_signal(pid " + std::to_string(pid_) + ")");
  }
  return {};
}

Result<bool> Pidfd::wait_exit(std::chrono::milliseconds timeout) const {
  pollfd p{fd_.get(), POLLIN, 0};
  for (;;) {
    int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return Error::from_errno("poll(pidfd of pid " + std::to_string(pid_) + ")");
    }
    return n > 0;
  }
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

TempDir::~TempDir() {
  if (!path_.empty()) {
    std::error_code ec;  // best effort: a destructor cannot report
    std::filesystem::remove_all(path_, ec);
  }
}

Result<TempDir> TempDir::create(std::string_view prefix,
                                std::optional<std::filesystem::path> parent) {
  std::filesystem::path base;
  if (parent) {
    base = *parent;
  } else if (const char* tmp = std::getenv("TMPDIR"); tmp != nullptr && *tmp != '\0') {
    base = tmp;
  } else {
    base = "/tmp";
  }
  std::string templ = (base / (std::string(prefix) + "XXXXXX")).string();
  if (::mkdtemp(templ.data()) == nullptr) {
    return Error::from_errno("creating a temporary directory under " + base.string());
  }
  return TempDir(std::filesystem::path(templ));
}

Result<std::string> read_file(const std::filesystem::path& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return Error::from_errno("open " + path.string());
  }
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno("read " + path.string());
    if (n == 0) break;
    if (data.size() + static_cast<size_t>(n) > max_bytes) {
      return Error(EFBIG, path.string() + " is larger than the " + std::to_string(max_bytes) +
                              "-byte limit for this kind of file");
    }
    data.append(buf, static_cast<size_t>(n));
  }
  return data;
}

Result<void> write_file_atomic(const std::filesystem::path& path, std::string_view data,
                               mode_t mode) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  std::string tmp = (dir / ("." + path.filename().string() + ".tmpXXXXXX")).string();
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) {
    return Error::from_errno("creating a temporary file in " + dir.string());
  }
  auto fail = [&](const std::string& what) {
    Error e = Error::from_errno(what);
    ::unlink(tmp.c_str());
    return e;
  };
  if (::fchmod(fd.get(), mode) != 0) return fail("fchmod " + tmp);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("write " + tmp);
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail("fsync " + tmp);
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return fail("rename " + tmp + " to " + path.string());
  UniqueFd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirfd) ::fsync(dirfd.get());
  return {};
}

}  // namespace corral
