#pragma once
// Owning handles for kernel resources: file descriptors, pidfds and temporary directories.
// Each closes/removes what it owns exactly once, in its destructor; moves transfer ownership.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "corral/common/result.hpp"

namespace corral {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  // Gives up ownership without closing.
  int release();
  // Closes the current fd (if any) and takes `fd`.
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// A pidfd: a stable handle on one process that cannot be confused with a later process that
// reuses the pid.
class Pidfd {
 public:
  Pidfd() = default;
  static Result<Pidfd> open(pid_t pid);

  pid_t pid() const { return pid_; }
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }

  Result<void> send_signal(int sig) const;
  // True once the process has exited (the pidfd becomes readable); waits up to `timeout`.
  Result<bool> wait_exit(std::chrono::milliseconds timeout) const;

 private:
  Pidfd(UniqueFd fd, pid_t pid) : fd_(std::move(fd)), pid_(pid) {}
  UniqueFd fd_;
  pid_t pid_ = -1;
};

// A directory created with mkdtemp and removed recursively when the object dies.
class TempDir {
 public:
  // Creates <parent>/<prefix>XXXXXX; parent defaults to $TMPDIR or /tmp.
  static Result<TempDir> create(std::string_view prefix = "corral-",
                                std::optional<std::filesystem::path> parent = std::nullopt);
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::filesystem::path& path() const { return path_; }

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

// Reads a whole file (refusing files larger than max_bytes with a clear error).
Result<std::string> read_file(const std::filesystem::path& path, size_t max_bytes = 64 << 20);

// Writes `data` to `path` so that readers see either the old or the new content, never a mix,
// even across a crash: write to a temp file beside it, fsync, rename, fsync the directory.
Result<void> write_file_atomic(const std::filesystem::path& path, std::string_view data,
                               mode_t mode = 0644);

}  // namespace corral
