#pragma once
// Protobuf messages <-> JSON in the dialect of Mesos's v1 HTTP APIs, plus the binary encoding
// and Content-Type/Accept handling for the two wire formats those APIs speak.
//
// The JSON dialect (what Mesos itself reads and writes, so unmodified Mesos clients work):
//  * object keys are the .proto field names (snake_case); lowerCamelCase names are accepted too;
//  * enums are written by name; read by name or by number;
//  * 64-bit integers are written as JSON numbers (protobuf's own printer quotes them); read as
//    numbers or as decimal strings;
//  * doubles/floats are numbers ("NaN", "Infinity", "-Infinity" as strings);
//  * bytes are base64 (standard alphabet, padded); read in standard or URL-safe alphabet, padding
//    optional;
//  * map fields are JSON objects keyed by the map key;
//  * only fields that are set are written.
// Reading is liberal, like Mesos: unknown fields are ignored, `null` means "absent" for any field,
// and an empty array or object is just empty. It is strict about types: a string where a number
// belongs is an error unless it spells a number. google.protobuf.Duration also reads the "1.5s"
// string form.
//
// Errors (EINVAL) name the message type, the field path and the problem, e.g.
//   invalid corral.v1.scheduler.Call: at 'subscribe.framework_info.failover_timeout': expected a
//   number, got string "soon"

#include <google/protobuf/message.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "corral/common/result.hpp"

namespace corral {

struct JsonParseOptions {
  // An enum name the schema does not know is an error by default, so that a typo such as
  // "type": "SUBSCRIB" is reported rather than silently read as "no type". Set this to leave such
  // fields unset instead (for forward compatibility with newer peers).
  bool ignore_unknown_enum_values = false;
};

// Parses `json` (a JSON object) into `out`, which is cleared first.
Result<void> parse_json(std::string_view json, google::protobuf::Message* out,
                        const JsonParseOptions& options = {});
// Same, from an already parsed JSON value.
Result<void> parse_json_value(const nlohmann::json& json, google::protobuf::Message* out,
                              const JsonParseOptions& options = {});

// The message as a JSON value / as compact JSON text (`indent` >= 0 pretty-prints). Never throws:
// invalid UTF-8 in string fields is replaced with U+FFFD.
nlohmann::json to_json_value(const google::protobuf::Message& message);
std::string to_json(const google::protobuf::Message& message, int indent = -1);

// Binary protobuf. Missing fields are never an error (the schema has no `required` fields).
Result<void> parse_binary(std::string_view bytes, google::protobuf::Message* out);
std::string to_binary(const google::protobuf::Message& message);

// The two wire formats of the v1 HTTP APIs.
enum class WireFormat { kJson, kProtobuf };

inline constexpr std::string_view kJsonContentType = "application/json";
inline constexpr std::string_view kProtobufContentType = "application/x-protobuf";

// "application/json" or "application/x-protobuf".
std::string_view content_type_of(WireFormat format);

// The format of a request body from its Content-Type header (parameters such as
// "; charset=utf-8" ignored, case-insensitive). An empty header means JSON, as in Mesos.
// Anything else is an Error (ENOTSUP; answer 415) that names the supported types.
Result<WireFormat> wire_format_from_content_type(std::string_view content_type);

// The format to answer in, from an Accept header. Empty (absent), "*/*", "application/*" and
// "application/json" choose JSON; "application/x-protobuf" chooses protobuf; with both, the higher
// q-value wins (JSON on a tie). Nothing acceptable is an Error (ENOTSUP; answer 406).
Result<WireFormat> wire_format_from_accept(std::string_view accept);

// parse_json / parse_binary by format.
Result<void> parse_message(WireFormat format, std::string_view body, google::protobuf::Message* out,
                           const JsonParseOptions& options = {});
// to_json / to_binary by format.
std::string serialize_message(WireFormat format, const google::protobuf::Message& message);

}  // namespace corral
