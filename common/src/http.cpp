#include "corral/common/http.hpp"

#include <cerrno>
#include <charconv>

namespace corral::http {

std::string Endpoint::to_string() const {
  if (kind == Kind::kUnix) {
    return "unix:" + path;
  }
  if (host.find(':') != std::string::npos) {
    return "[" + host + "]:" + std::to_string(port);
  }
  return host + ":" + std::to_string(port);
}

Result<Endpoint> parse_endpoint(std::string_view text) {
  const std::string original(text);
  Endpoint ep;
  if (text.starts_with("unix:")) {
    text.remove_prefix(5);
    // Accept "unix:///path" as well as "unix:/path".
    while (text.starts_with("//")) {
      text.remove_prefix(1);
    }
    if (text.empty() || text.front() != '/') {
      return Error(EINVAL, "invalid address '" + original +
                               "': a unix socket address needs an absolute path, e.g. "
                               "unix:/run/corral/agent.sock");
    }
    ep.kind = Endpoint::Kind::kUnix;
    ep.path = std::string(text);
    return ep;
  }
  if (text.starts_with("https://")) {
    return Error(EPROTONOSUPPORT, "invalid address '" + original + "': TLS is not supported yet");
  }
  if (text.starts_with("http://")) {
    text.remove_prefix(7);
  }
  // Drop any path after host:port ("http://host:5050/" is a common way to write a base URL).
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    text = text.substr(0, slash);
  }
  std::string_view port_text;
  if (text.starts_with("[")) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Error(EINVAL, "invalid address '" + original + "': expected [ipv6]:port");
    }
    ep.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return Error(EINVAL, "invalid address '" + original +
                               "': expected host:port, http://host:port or unix:/path");
    }
    ep.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  if (ep.host.empty()) {
    return Error(EINVAL, "invalid address '" + original + "': the host is empty");
  }
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() ||
      port > 65535) {
    return Error(EINVAL, "invalid address '" + original + "': the port must be a number 0-65535");
  }
  ep.port = static_cast<std::uint16_t>(port);
  return ep;
}

std::string_view target_path(std::string_view target) {
  const auto end = target.find_first_of("?#");
  return end == std::string_view::npos ? target : target.substr(0, end);
}

std::string_view target_query(std::string_view target) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) {
    return {};
  }
  auto query = target.substr(q + 1);
  if (auto hash = query.find('#'); hash != std::string_view::npos) {
    query = query.substr(0, hash);
  }
  return query;
}

Response make_response(Status status, std::string body, std::string_view content_type,
                       unsigned version) {
  Response res{status, version};
  res.set(Field::content_type, content_type);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response json_response(Status status, const nlohmann::json& body, unsigned version) {
  // `replace` keeps invalid UTF-8 from throwing at the edge of the library.
  return make_response(status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                       "application/json", version);
}

Response error_response(Status status, std::string_view message, unsigned version) {
  return json_response(status, nlohmann::json{{"error", std::string(message)}}, version);
}

Result<nlohmann::json> parse_json_body(const Request& request) {
  const std::string& body = request.body();
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) {
    return Error(EINVAL, "request body is empty; expected a JSON document");
  }
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() reads "[json.exception.parse_error.101] parse error at line 1, column 17: <why>";
    // keep <why> and report the byte offset, which is meaningful for one-line bodies too.
    std::string why = e.what();
    if (auto colon = why.find(": "); colon != std::string::npos) {
      why = why.substr(colon + 2);
    }
    return Error(EINVAL,
                 "invalid JSON in request body at byte " + std::to_string(e.byte) + ": " + why);
  } catch (const std::exception& e) {
    return Error(EINVAL, std::string("invalid JSON in request body: ") + e.what());
  }
}

std::string_view status_text(Status status) { return beast_http::obsolete_reason(status); }

}  // namespace corral::http
