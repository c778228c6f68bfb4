#pragma once
// Errors are values. A Result<T> holds either a T or an Error; an Error carries an errno-style
// code and a message written for the person who has to act on it ("what went wrong, what to do").
// No exceptions cross library boundaries: third-party exceptions are caught at the edge and
// turned into an Error.

#include <cerrno>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace corral {

class Error {
 public:
  Error() = default;
  Error(int code, std::string message) : code_(code), message_(std::move(message)) {}

  // Builds an Error from errno (or the given errno value) with a message in front of the
  // system's description, e.g. "open /etc/corral/agent.toml: No such file or directory".
  static Error from_errno(std::string what, int err = errno);

  int code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes context, outermost first: Error(ENOENT,"no file").context("loading config")
  // reads "loading config: no file".
  Error context(const std::string& what) const&;
  Error context(const std::string& what) &&;

  // "message" followed by " [ENOENT]" when the code is a known errno value.
  std::string to_string() const;

 private:
  int code_ = 0;
  std::string message_;
};

// Symbolic name of an errno value ("ENOENT"), or "E<n>" for values without a name.
std::string errno_name(int code);

template <typename T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::remove_cv_t<T>, Error>, "Result<Error> is meaningless");

 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

  template <typename U>
  T value_or(U&& fallback) const& {
    return ok() ? value() : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit on purpose

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

inline Result<void> ok() { return {}; }

}  // namespace corral

// CORRAL_TRY(expr): evaluates a Result<void>-returning expression and returns its Error from the
// enclosing function if it failed.
#define CORRAL_TRY(expr)                            \
  do {                                              \
    auto corral_try_result_ = (expr);               \
    if (!corral_try_result_.ok()) {                 \
      return std::move(corral_try_result_).error(); \
    }                                               \
  } while (0)

#define CORRAL_CONCAT_INNER_(a, b) a##b
#define CORRAL_CONCAT_(a, b) CORRAL_CONCAT_INNER_(a, b)
// CORRAL_ASSIGN_OR_RETURN(decl, expr): `decl = *expr` or return expr's Error.
#define CORRAL_ASSIGN_OR_RETURN(decl, expr)                          \
  auto CORRAL_CONCAT_(corral_aor_, __LINE__) = (expr);               \
  if (!CORRAL_CONCAT_(corral_aor_, __LINE__).ok()) {                 \
    return std::move(CORRAL_CONCAT_(corral_aor_, __LINE__)).error(); \
  }                                                                  \
  decl = std::move(CORRAL_CONCAT_(corral_aor_, __LINE__)).value()
