#pragma once
// HTTP/1.1 message types and helpers shared by Corral's server (http_server.hpp) and client
// (http_client.hpp). Messages are Boost.Beast's own types with string bodies, so everything
// Beast offers on them (fields, status codes, keep_alive()) is available directly.
// The wire contract (limits, error bodies, streaming) is documented in docs/api/http.md.

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <nlohmann/json.hpp>

#include "corral/common/result.hpp"

namespace corral::http {

namespace beast_http = boost::beast::http;

using Request = beast_http::request<beast_http::string_body>;
using Response = beast_http::response<beast_http::string_body>;
using Fields = beast_http::fields;
using Field = beast_http::field;
using Status = beast_http::status;
using Verb = beast_http::verb;

// Where a server listens or a client connects.
//   "http://host:port", "host:port", "[::1]:port"  TCP (port 0 = any free port, servers only)
//   "unix:/run/corral/agent.sock"                   unix stream socket
struct Endpoint {
  enum class Kind { kTcp, kUnix };
  Kind kind = Kind::kTcp;
  std::string host;        // kTcp: name or address literal (no brackets)
  std::uint16_t port = 0;  // kTcp
  std::string path;        // kUnix

  // "host:port" ("[v6]:port") or "unix:/path"; parse_endpoint(to_string()) round-trips.
  std::string to_string() const;
};
Result<Endpoint> parse_endpoint(std::string_view text);

// The path part of a request target, without "?query" (and without "#fragment").
std::string_view target_path(std::string_view target);
// The raw query string after '?', or empty.
std::string_view target_query(std::string_view target);

// A response with the given body and Content-Type; Content-Length is set.
Response make_response(Status status, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8",
                       unsigned version = 11);
// application/json response of `body.dump()`.
Response json_response(Status status, const nlohmann::json& body, unsigned version = 11);
// Every error Corral's HTTP server sends looks like this: application/json
// {"error": "<message>"}, so clients can always show the message to the user.
Response error_response(Status status, std::string_view message, unsigned version = 11);

// Parses the request body as JSON. The Error (EINVAL) is written for the client and meant to be
// sent back as a 400 via error_response(): it names the problem and where it is, e.g.
// "invalid JSON in request body at byte 17: syntax error while parsing object key -
// unexpected '}'; expected string literal", or "request body is empty; expected JSON".
Result<nlohmann::json> parse_json_body(const Request& request);

// The reason phrase for a status ("Not Found").
std::string_view status_text(Status status);

}  // namespace corral::http
