#include "corral/common/proto_json.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <vector>

// Why not google::protobuf::util::JsonStringToMessage / MessageToJsonString: its printer quotes
// 64-bit integers (Mesos clients expect numbers), and its parse errors do not say which field was
// wrong. A reflection walk over nlohmann::json gives both, in one small place.

namespace corral {
namespace {

namespace pb = google::protobuf;
using FD = pb::FieldDescriptor;
using json = nlohmann::json;

// Deeper nesting than this is refused rather than recursed into (ContainerID.parent chains are
// the only legitimately deep structure, and they are short).
constexpr int kMaxDepth = 100;

// ---- base64 ---------------------------------------------------------------------------------

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t n = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) |
                 uint32_t(uint8_t(in[i + 2]));
    out += kBase64Alphabet[(n >> 18) & 63];
    out += kBase64Alphabet[(n >> 12) & 63];
    out += kBase64Alphabet[(n >> 6) & 63];
    out += kBase64Alphabet[n & 63];
  }
  if (size_t rest = in.size() - i; rest > 0) {
    uint32_t n = uint32_t(uint8_t(in[i])) << 16;
    if (rest == 2) {
      n |= uint32_t(uint8_t(in[i + 1])) << 8;
    }
    out += kBase64Alphabet[(n >> 18) & 63];
    out += kBase64Alphabet[(n >> 12) & 63];
    out += rest == 2 ? kBase64Alphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

int base64_digit(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;  // standard and URL-safe alphabets
  if (c == '/' || c == '_') return 63;
  return -1;
}

// Standard or URL-safe alphabet, padding optional.
std::optional<std::string> base64_decode(std::string_view in) {
  while (!in.empty() && in.back() == '=') {
    in.remove_suffix(1);
  }
  if (in.size() % 4 == 1) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int d = base64_digit(c);
    if (d < 0) {
      return std::nullopt;
    }
    acc = (acc << 6) | uint32_t(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

// ---- number formatting helpers ----------------------------------------------------------------

json double_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}

// A float printed through its own shortest representation, so 0.1f reads 0.1 and not
// 0.100000001490116.
json float_value(float v) {
  if (!std::isfinite(v)) return double_value(v);
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) return double(v);
  return std::strtod(std::string(buf, end).c_str(), nullptr);
}

std::string describe(const json& j) {
  std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 40) {
    text = text.substr(0, 37) + "...";
  }
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "string " + text;
    case json::value_t::boolean:
      return "boolean " + text;
    default:
      return "number " + text;
  }
}

// ---- JSON -> message ------------------------------------------------------------------------

class Parser {
 public:
  explicit Parser(const JsonParseOptions& options) : options_(options) {}

  Result<void> message(const json& j, pb::Message* m, int depth) {
    if (depth > kMaxDepth) {
      return fail("nesting is deeper than " + std::to_string(kMaxDepth) + " levels");
    }
    const pb::Descriptor* d = m->GetDescriptor();
    if (j.is_string() && d->full_name() == "google.protobuf.Duration") {
      return duration_string(j.get_ref<const std::string&>(), m);
    }
    if (!j.is_object()) {
      return fail("expected an object (" + d->full_name() + "), got " + describe(j));
    }
    for (const auto& [key, value] : j.items()) {
      const FD* f = d->FindFieldByName(key);
      if (f == nullptr) {
        f = d->FindFieldByCamelcaseName(key);
      }
      if (f == nullptr || value.is_null()) {
        continue;  // unknown fields are ignored and null means absent, as in Mesos
      }
      path_.push_back(key);
      CORRAL_TRY(field(value, m, f, depth));
      path_.pop_back();
    }
    return ok();
  }

  // An Error naming the current field path.
  Error fail(const std::string& problem) const {
    std::string where;
    for (const auto& part : path_) {
      if (!where.empty() && part.front() != '[') {
        where += '.';
      }
      where += part;
    }
    if (where.empty()) {
      return Error(EINVAL, problem);
    }
    return Error(EINVAL, "at '" + where + "': " + problem);
  }

 private:
  Result<void> field(const json& j, pb::Message* m, const FD* f, int depth) {
    if (f->is_map()) {
      return map(j, m, f, depth);
    }
    if (f->is_repeated()) {
      if (!j.is_array()) {
        return fail("expected an array, got " + describe(j));
      }
      for (size_t i = 0; i < j.size(); ++i) {
        if (j[i].is_null()) {
          continue;
        }
        path_.push_back("[" + std::to_string(i) + "]");
        CORRAL_TRY(value(j[i], m, f, /*add=*/true, depth));
        path_.pop_back();
      }
      return ok();
    }
    return value(j, m, f, /*add=*/false, depth);
  }

  // A map field: a JSON object keyed by the map key. A list of {"key": .., "value": ..} entries
  // (the map's wire form) is accepted as well.
  Result<void> map(const json& j, pb::Message* m, const FD* f, int depth) {
    const pb::Reflection* r = m->GetReflection();
    if (j.is_array()) {
      for (size_t i = 0; i < j.size(); ++i) {
        path_.push_back("[" + std::to_string(i) + "]");
        CORRAL_TRY(message(j[i], r->AddMessage(m, f), depth + 1));
        path_.pop_back();
      }
      return ok();
    }
    if (!j.is_object()) {
      return fail("expected an object (a map), got " + describe(j));
    }
    const FD* key_field = f->message_type()->map_key();
    const FD* value_field = f->message_type()->map_value();
    for (const auto& [key, item] : j.items()) {
      path_.push_back(key);
      pb::Message* entry = r->AddMessage(m, f);
      CORRAL_TRY(value(json(key), entry, key_field, /*add=*/false, depth + 1));
      if (!item.is_null()) {
        CORRAL_TRY(value(item, entry, value_field, /*add=*/false, depth + 1));
      }
      path_.pop_back();
    }
    return ok();
  }

  // One value: sets a singular field or appends to a repeated one.
  Result<void> value(const json& j, pb::Message* m, const FD* f, bool add, int depth) {
    const pb::Reflection* r = m->GetReflection();
    switch (f->cpp_type()) {
      case FD::CPPTYPE_MESSAGE: {
        pb::Message* sub = add ? r->AddMessage(m, f) : r->MutableMessage(m, f);
        return message(j, sub, depth + 1);
      }
      case FD::CPPTYPE_INT32: {
        CORRAL_ASSIGN_OR_RETURN(auto v, integer<int32_t>(j));
        add ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
        return ok();
      }
      case FD::CPPTYPE_INT64: {
        CORRAL_ASSIGN_OR_RETURN(auto v, integer<int64_t>(j));
        add ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
        return ok();
      }
      case FD::CPPTYPE_UINT32: {
        CORRAL_ASSIGN_OR_RETURN(auto v, integer<uint32_t>(j));
        add ? r->AddUInt32(m, f, v) : r->SetUInt32(m, f, v);
        return ok();
      }
      case FD::CPPTYPE_UINT64: {
        CORRAL_ASSIGN_OR_RETURN(auto v, integer<uint64_t>(j));
        add ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
        return ok();
      }
      case FD::CPPTYPE_DOUBLE: {
        CORRAL_ASSIGN_OR_RETURN(auto v, floating(j));
        add ? r->AddDouble(m, f, v) : r->SetDouble(m, f, v);
        return ok();
      }
      case FD::CPPTYPE_FLOAT: {
        CORRAL_ASSIGN_OR_RETURN(auto v, floating(j));
        if (std::isfinite(v) && std::fabs(v) > double(std::numeric_limits<float>::max())) {
          return fail("number " + j.dump() + " is out of range for a float");
        }
        add ? r->AddFloat(m, f, float(v)) : r->SetFloat(m, f, float(v));
        return ok();
      }
      case FD::CPPTYPE_BOOL: {
        bool v = false;
        if (j.is_boolean()) {
          v = j.get<bool>();
        } else if (j.is_string() && (j == "true" || j == "false")) {
          v = j == "true";
        } else {
          return fail("expected true or false, got " + describe(j));
        }
        add ? r->AddBool(m, f, v) : r->SetBool(m, f, v);
        return ok();
      }
      case FD::CPPTYPE_STRING: {
        if (!j.is_string()) {
          return fail("expected a string, got " + describe(j));
        }
        std::string v = j.get<std::string>();
        if (f->type() == FD::TYPE_BYTES) {
          auto decoded = base64_decode(v);
          if (!decoded) {
            return fail("expected base64-encoded bytes, got " + describe(j) +
                        " which is not valid base64");
          }
          v = std::move(*decoded);
        }
        add ? r->AddString(m, f, std::move(v)) : r->SetString(m, f, std::move(v));
        return ok();
      }
      case FD::CPPTYPE_ENUM: {
        const pb::EnumValueDescriptor* e = enum_value(j, f->enum_type());
        if (e == nullptr) {
          if (options_.ignore_unknown_enum_values && (j.is_string() || j.is_number())) {
            return ok();
          }
          return fail(unknown_enum(j, f->enum_type()));
        }
        add ? r->AddEnum(m, f, e) : r->SetEnum(m, f, e);
        return ok();
      }
    }
    return fail("unsupported field type");
  }

  static const pb::EnumValueDescriptor* enum_value(const json& j, const pb::EnumDescriptor* e) {
    if (j.is_string()) {
      const auto& name = j.get_ref<const std::string&>();
      if (const auto* v = e->FindValueByName(name)) {
        return v;
      }
      int number = 0;
      auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), number);
      if (ec == std::errc() && end == name.data() + name.size()) {
        return e->FindValueByNumber(number);
      }
      return nullptr;
    }
    if (j.is_number_integer() && j.get<int64_t>() >= INT_MIN && j.get<int64_t>() <= INT_MAX) {
      return e->FindValueByNumber(int(j.get<int64_t>()));
    }
    return nullptr;
  }

  static std::string unknown_enum(const json& j, const pb::EnumDescriptor* e) {
    std::string names;
    constexpr int kListed = 12;
    for (int i = 0; i < e->value_count() && i < kListed; ++i) {
      names += (i ? ", " : "") + e->value(i)->name();
    }
    if (e->value_count() > kListed) {
      names += ", ...";
    }
    if (!j.is_string() && !j.is_number()) {
      return "expected a " + e->name() + " name (" + names + "), got " + describe(j);
    }
    return describe(j) + " is not a known " + e->full_name() + " value (expected one of " + names +
           ")";
  }

  template <typename T>
  Result<T> integer(const json& j) {
    const char* kind = std::is_signed_v<T> ? "an integer" : "a non-negative integer";
    auto out_of_range = [&] {
      return fail("number " + j.dump() + " is out of range for " +
                  (sizeof(T) == 4 ? (std::is_signed_v<T> ? "int32" : "uint32")
                                  : (std::is_signed_v<T> ? "int64" : "uint64")));
    };
    if (j.is_number_unsigned()) {
      uint64_t v = j.get<uint64_t>();
      if (v > uint64_t(std::numeric_limits<T>::max())) return out_of_range();
      return T(v);
    }
    if (j.is_number_integer()) {
      int64_t v = j.get<int64_t>();
      if (v < int64_t(std::numeric_limits<T>::min()) ||
          (v > 0 && uint64_t(v) > uint64_t(std::numeric_limits<T>::max()))) {
        return out_of_range();
      }
      return T(v);
    }
    if (j.is_number_float()) {
      // 3.0 and 1e3 are integers; 2.5 is not.
      double v = j.get<double>();
      if (!std::isfinite(v) || std::trunc(v) != v) {
        return fail(std::string("expected ") + kind + ", got " + describe(j));
      }
      if (v < double(std::numeric_limits<T>::min()) ||
          v >= std::ldexp(1.0, std::numeric_limits<T>::digits)) {
        return out_of_range();
      }
      return T(v);
    }
    if (j.is_string()) {
      // Protobuf's JSON mapping writes 64-bit integers as strings; accept that form for any width.
      const auto& s = j.get_ref<const std::string&>();
      T v{};
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec == std::errc::result_out_of_range) return out_of_range();
      if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return v;
    }
    return fail(std::string("expected ") + kind + ", got " + describe(j));
  }

  Result<double> floating(const json& j) {
    if (j.is_number()) {
      return j.get<double>();
    }
    if (j.is_string()) {
      const auto& s = j.get_ref<const std::string&>();
      if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
      if (s == "Infinity") return std::numeric_limits<double>::infinity();
      if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
      double v = 0;
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return v;
    }
    return fail("expected a number, got " + describe(j));
  }

  // google.protobuf.Duration's JSON string form: "-1.5s", "30s", "0.000000001s".
  Result<void> duration_string(const std::string& s, pb::Message* m) {
    auto bad = [&] { return fail("expected a duration like \"1.5s\", got " + describe(json(s))); };
    if (s.size() < 2 || s.back() != 's') return bad();
    std::string_view text(s.data(), s.size() - 1);
    bool negative = !text.empty() && text.front() == '-';
    if (negative) text.remove_prefix(1);
    std::string_view whole = text.substr(0, text.find('.'));
    std::string_view fraction;
    if (whole.size() < text.size()) fraction = text.substr(whole.size() + 1);
    if (whole.empty() || fraction.size() > 9) return bad();
    int64_t seconds = 0;
    auto [end, ec] = std::from_chars(whole.data(), whole.data() + whole.size(), seconds);
    if (ec != std::errc() || end != whole.data() + whole.size()) return bad();
    int32_t nanos = 0;
    for (size_t i = 0; i < 9; ++i) {
      char c = i < fraction.size() ? fraction[i] : '0';
      if (c < '0' || c > '9') return bad();
      nanos = nanos * 10 + (c - '0');
    }
    const pb::Descriptor* d = m->GetDescriptor();
    const pb::Reflection* r = m->GetReflection();
    r->SetInt64(m, d->FindFieldByName("seconds"), negative ? -seconds : seconds);
    r->SetInt32(m, d->FindFieldByName("nanos"), negative ? -nanos : nanos);
    return ok();
  }

  const JsonParseOptions& options_;
  std::vector<std::string> path_;
};

// ---- message -> JSON ------------------------------------------------------------------------

json single_value(const pb::Message& m, const FD* f, int index);

json field_value(const pb::Message& m, const FD* f) {
  const pb::Reflection* r = m.GetReflection();
  if (f->is_map()) {
    json object = json::object();
    const FD* key_field = f->message_type()->map_key();
    const FD* value_field = f->message_type()->map_value();
    for (int i = 0; i < r->FieldSize(m, f); ++i) {
      const pb::Message& entry = r->GetRepeatedMessage(m, f, i);
      json key = single_value(entry, key_field, -1);
      std::string key_text = key.is_string() ? key.get<std::string>() : key.dump();
      object[key_text] = single_value(entry, value_field, -1);
    }
    return object;
  }
  if (f->is_repeated()) {
    json array = json::array();
    for (int i = 0; i < r->FieldSize(m, f); ++i) {
      array.push_back(single_value(m, f, i));
    }
    return array;
  }
  return single_value(m, f, -1);
}

// The value of a singular field (index < 0) or of one element of a repeated field.
json single_value(const pb::Message& m, const FD* f, int index) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FD::CPPTYPE_MESSAGE:
      return to_json_value(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
    case FD::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case FD::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
    case FD::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case FD::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case FD::CPPTYPE_DOUBLE:
      return double_value(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case FD::CPPTYPE_FLOAT:
      return float_value(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case FD::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case FD::CPPTYPE_STRING: {
      std::string v = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      return f->type() == FD::TYPE_BYTES ? base64_encode(v) : v;
    }
    case FD::CPPTYPE_ENUM: {
      const pb::EnumValueDescriptor* e = rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f);
      return e->name();
    }
  }
  return nullptr;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

Result<void> parse_json_value(const nlohmann::json& value, google::protobuf::Message* out,
                              const JsonParseOptions& options) {
  out->Clear();
  Parser parser(options);
  if (!value.is_object()) {
    return Error(EINVAL, "invalid " + out->GetDescriptor()->full_name() +
                             ": expected a JSON object, got " + describe(value));
  }
  auto result = parser.message(value, out, 0);
  if (!result.ok()) {
    return std::move(result).error().context("invalid " + out->GetDescriptor()->full_name());
  }
  return ok();
}

Result<void> parse_json(std::string_view text, google::protobuf::Message* out,
                        const JsonParseOptions& options) {
  json value;
  try {
    value = json::parse(text);
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
    std::string what = e.what();
    if (auto pos = what.find("] "); pos != std::string::npos) {
      what.erase(0, pos + 2);
    }
    out->Clear();
    return Error(EINVAL, "invalid JSON for " + out->GetDescriptor()->full_name() + " at byte " +
                             std::to_string(e.byte) + ": " + what);
  }
  return parse_json_value(value, out, options);
}

nlohmann::json to_json_value(const google::protobuf::Message& message) {
  json object = json::object();
  std::vector<const FD*> fields;
  message.GetReflection()->ListFields(message, &fields);
  for (const FD* f : fields) {
    if (f->is_extension()) {
      continue;
    }
    object[f->name()] = field_value(message, f);
  }
  return object;
}

std::string to_json(const google::protobuf::Message& message, int indent) {
  return to_json_value(message).dump(indent, ' ', false, json::error_handler_t::replace);
}

Result<void> parse_binary(std::string_view bytes, google::protobuf::Message* out) {
  if (bytes.size() > size_t(INT_MAX) ||
      !out->ParsePartialFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    out->Clear();
    return Error(EINVAL, "invalid " + out->GetDescriptor()->full_name() +
                             ": the body is not a valid protobuf encoding (" +
                             std::to_string(bytes.size()) + " bytes)");
  }
  return ok();
}

std::string to_binary(const google::protobuf::Message& message) {
  return message.SerializePartialAsString();
}

std::string_view content_type_of(WireFormat format) {
  return format == WireFormat::kProtobuf ? kProtobufContentType : kJsonContentType;
}

Result<WireFormat> wire_format_from_content_type(std::string_view content_type) {
  std::string_view media = trim(content_type.substr(0, content_type.find(';')));
  if (media.empty() || iequals(media, kJsonContentType)) {
    return WireFormat::kJson;
  }
  if (iequals(media, kProtobufContentType)) {
    return WireFormat::kProtobuf;
  }
  return Error(ENOTSUP, "unsupported Content-Type '" + std::string(content_type) +
                            "'; send application/json or application/x-protobuf");
}

Result<WireFormat> wire_format_from_accept(std::string_view accept) {
  if (trim(accept).empty()) {
    return WireFormat::kJson;
  }
  double json_q = -1;
  double protobuf_q = -1;
  while (!accept.empty()) {
    size_t comma = accept.find(',');
    std::string_view range = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view() : accept.substr(comma + 1);

    std::string_view media = trim(range.substr(0, range.find(';')));
    double q = 1.0;
    for (size_t pos = range.find(';'); pos != std::string_view::npos;) {
      size_t next = range.find(';', pos + 1);
      std::string_view param = trim(range.substr(pos + 1, next - pos - 1));
      if (param.size() > 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
        std::string_view number = param.substr(2);
        double v = 0;
        auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), v);
        if (ec == std::errc() && end == number.data() + number.size()) {
          q = v;
        }
      }
      pos = next;
    }
    if (iequals(media, kJsonContentType) || media == "*/*" || iequals(media, "application/*")) {
      json_q = std::max(json_q, q);
    }
    if (iequals(media, kProtobufContentType)) {
      protobuf_q = std::max(protobuf_q, q);
    }
  }
  if (protobuf_q > 0 && protobuf_q > json_q) {
    return WireFormat::kProtobuf;
  }
  if (json_q > 0) {
    return WireFormat::kJson;
  }
  return Error(ENOTSUP,
               "none of the media types in the Accept header is served here; accept "
               "application/json or application/x-protobuf");
}

Result<void> parse_message(WireFormat format, std::string_view body, google::protobuf::Message* out,
                           const JsonParseOptions& options) {
  if (format == WireFormat::kProtobuf) {
    return parse_binary(body, out);
  }
  return parse_json(body, out, options);
}

std::string serialize_message(WireFormat format, const google::protobuf::Message& message) {
  return format == WireFormat::kProtobuf ? to_binary(message) : to_json(message);
}

}  // namespace corral
