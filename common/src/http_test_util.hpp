#pragma once
// Helpers for the HTTP tests: a server running on its own thread, a temp dir for unix sockets,
// and a raw blocking socket for sending what a well-behaved client never would.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "corral/common/http_server.hpp"

namespace corral::http::testing {

using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "corral-http-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed";
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A Server listening on 127.0.0.1:0 and a unix socket, run by one io_context thread.
class RunningServer {
 public:
  RunningServer(Router router, ServerOptions options = {}) {
    server_ = std::make_unique<Server>(io_, std::move(router), std::move(options));
    auto tcp = server_->listen("127.0.0.1:0");
    EXPECT_TRUE(tcp.ok()) << tcp.error().to_string();
    unix_path_ = (dir_.path() / "http.sock").string();
    auto unix_listen = server_->listen("unix:" + unix_path_);
    EXPECT_TRUE(unix_listen.ok()) << unix_listen.error().to_string();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RunningServer() {
    stop_and_wait();
    work_.reset();
    io_.stop();
    if (thread_.joinable()) {
      thread_.join();
    }
    server_.reset();
  }
  // Graceful stop; true when every connection was gone within `wait`.
  bool stop_and_wait(std::chrono::milliseconds wait = 10s) {
    if (stopped_) {
      return true;
    }
    stopped_ = true;
    auto done = std::make_shared<std::promise<void>>();
    auto future = done->get_future();
    server_->stop([done] { done->set_value(); });
    return future.wait_for(wait) == std::future_status::ready;
  }

  Server& server() { return *server_; }
  boost::asio::io_context& io() { return io_; }
  std::uint16_t port() const { return server_->tcp_port(); }
  std::string tcp_address() const { return "127.0.0.1:" + std::to_string(server_->tcp_port()); }
  std::string unix_address() const { return "unix:" + unix_path_; }
  const std::string& unix_path() const { return unix_path_; }

 private:
  TempDir dir_;
  boost::asio::io_context io_;
  // Keeps run() going between tests' actions even if the server had nothing pending.
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{
      boost::asio::make_work_guard(io_)};
  std::unique_ptr<Server> server_;
  std::string unix_path_;
  std::thread thread_;
  bool stopped_ = false;
};

// A blocking socket with a receive timeout, for byte-exact conversations with the server.
class RawSocket {
 public:
  static RawSocket tcp(std::uint16_t port) {
    RawSocket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(s.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return s;
  }
  static RawSocket unix_socket(const std::string& path) {
    RawSocket s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    EXPECT_EQ(::connect(s.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return s;
  }
  RawSocket(RawSocket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  ~RawSocket() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }

  // False once the peer closed (EPIPE / ECONNRESET).
  bool send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Reads until the peer closes the connection or `wait` passes. `closed` says which.
  std::string read_until_closed(bool* closed, std::chrono::milliseconds wait = 5s) {
    std::string out;
    *closed = false;
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto r = read_some(deadline);
      if (r == 0) {
        *closed = true;
        break;
      }
      if (r < 0) {
        break;
      }
    }
    out.swap(buffer_);
    return out;
  }

  // Reads one complete response with a Content-Length body (or none) and returns it whole.
  std::string read_response(std::chrono::milliseconds wait = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (true) {
      const auto end_of_head = buffer_.find("\r\n\r\n");
      if (end_of_head != std::string::npos) {
        std::size_t length = 0;
        const auto cl = lower(buffer_.substr(0, end_of_head)).find("content-length:");
        if (cl != std::string::npos) {
          length = std::stoul(buffer_.substr(cl + 15));
        }
        const std::size_t total = end_of_head + 4 + length;
        if (buffer_.size() >= total) {
          std::string response = buffer_.substr(0, total);
          buffer_.erase(0, total);
          return response;
        }
      }
      if (read_some(deadline) <= 0) {
        std::string partial;
        partial.swap(buffer_);
        return partial;
      }
    }
  }

  // Reads until `marker` has arrived; returns everything read so far (consumed).
  std::string read_until(std::string_view marker, std::chrono::milliseconds wait = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (buffer_.find(marker) == std::string::npos) {
      if (read_some(deadline) <= 0) {
        break;
      }
    }
    const auto at = buffer_.find(marker);
    const std::size_t take = at == std::string::npos ? buffer_.size() : at + marker.size();
    std::string out = buffer_.substr(0, take);
    buffer_.erase(0, take);
    return out;
  }

  int fd() const { return fd_; }

 private:
  explicit RawSocket(int fd) : fd_(fd) { EXPECT_GE(fd_, 0); }

  static std::string lower(std::string s) {
    for (auto& c : s) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return s;
  }

  // >0 bytes appended, 0 on EOF, -1 on timeout or error.
  ssize_t read_some(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return -1;
    }
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(left.count() / 1'000'000);
    tv.tv_usec = static_cast<suseconds_t>(left.count() % 1'000'000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));
      return n;
    }
    if (n == 0) {
      return 0;
    }
    return errno == ECONNRESET ? 0 : -1;
  }

  int fd_;
  std::string buffer_;
};

inline std::string status_line(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}

}  // namespace corral::http::testing
