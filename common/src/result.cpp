#include "corral/common/result.hpp"

#include <cstring>

namespace corral {

Error Error::from_errno(std::string what, int err) {
  what += ": ";
  what += std::strerror(err);
  return Error(err, std::move(what));
}

Error Error::context(const std::string& what) const& {
  return Error(code_, what + ": " + message_);
}

Error Error::context(const std::string& what) && {
  message_.insert(0, what + ": ");
  return std::move(*this);
}

std::string errno_name(int code) {
  // strerrorname_np is glibc >= 2.32 (Debian 12 has 2.36).
  if (const char* name = strerrorname_np(code)) {
    return name;
  }
  return "E" + std::to_string(code);
}

std::string Error::to_string() const {
  if (code_ == 0) {
    return message_;
  }
  return message_ + " [" + errno_name(code_) + "]";
}

}  // namespace corral
