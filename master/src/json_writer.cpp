#include "json_writer.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <vector>

namespace corral::master {
namespace {

namespace pb = google::protobuf;
using FD = pb::FieldDescriptor;

// The fields of one message type in the order nlohmann writes object keys (sorted by name),
// each with its `"name":` prefix ready to append.
struct Plan {
  struct Entry {
    const FD* field;
    std::string key;
  };
  std::vector<Entry> fields;
};

const Plan& plan_of(const pb::Descriptor* d) {
  thread_local std::unordered_map<const pb::Descriptor*, Plan> plans;
  auto it = plans.find(d);
  if (it != plans.end()) return it->second;
  Plan p;
  for (int i = 0; i < d->field_count(); ++i) {
    const FD* f = d->field(i);
    std::string key;
    key.reserve(f->name().size() + 3);
    key += '"';
    key += f->name();
    key += "\":";
    p.fields.push_back({f, std::move(key)});
  }
  std::sort(p.fields.begin(), p.fields.end(), [](const Plan::Entry& a, const Plan::Entry& b) {
    return a.field->name() < b.field->name();
  });
  return plans.emplace(d, std::move(p)).first->second;
}

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void append_base64(std::string& out, std::string_view in) {
  out.reserve(out.size() + (in.size() + 2) / 3 * 4);
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
    if (rest == 2) n |= uint32_t(uint8_t(in[i + 1])) << 8;
    out += kBase64Alphabet[(n >> 18) & 63];
    out += kBase64Alphabet[(n >> 12) & 63];
    out += rest == 2 ? kBase64Alphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
}

// Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), the set
// nlohmann's decoder accepts.
bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (end - p < len) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int i = 2; i < len; ++i) {
      if (p[i] < 0x80 || p[i] > 0xBF) return false;
    }
    p += len;
  }
  return true;
}

template <typename T>
void append_int(std::string& out, T v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.append(buf, end);
}

}  // namespace

void JsonWriter::string(std::string_view s) {
  // Fast path: printable ASCII without quote or backslash is copied as is.
  bool plain = true;
  for (unsigned char c : s) {
    if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') {
      plain = false;
      break;
    }
  }
  if (plain) {
    out_.reserve(out_.size() + s.size() + 2);
    out_ += '"';
    out_.append(s);
    out_ += '"';
    return;
  }
  if (!valid_utf8(s)) {
    // Rare: let nlohmann itself decide where the replacement characters go.
    out_ += nlohmann::json(std::string(s))
                .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return;
  }
  out_ += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '\b':
        out_ += "\\b";
        break;
      case '\t':
        out_ += "\\t";
        break;
      case '\n':
        out_ += "\\n";
        break;
      case '\f':
        out_ += "\\f";
        break;
      case '\r':
        out_ += "\\r";
        break;
      case '"':
        out_ += "\\\"";
        break;
      case '\\':
        out_ += "\\\\";
        break;
      default:
        if (c < 0x20) {
          static constexpr char kHex[] = "0123456789abcdef";
          out_ += "\\u00";
          out_ += kHex[c >> 4];
          out_ += kHex[c & 15];
        } else {
          out_ += ch;
        }
    }
  }
  out_ += '"';
}

void JsonWriter::number(double v) {
  if (std::isnan(v)) {
    out_ += "\"NaN\"";
    return;
  }
  if (std::isinf(v)) {
    out_ += v > 0 ? "\"Infinity\"" : "\"-Infinity\"";
    return;
  }
  // nlohmann's own shortest-form printer, so the digits match its dump() exactly.
  char buf[64];
  char* end = nlohmann::detail::to_chars(buf, buf + sizeof buf, v);
  out_.append(buf, end);
}

void JsonWriter::message(const pb::Message& m) {
  const Plan& plan = plan_of(m.GetDescriptor());
  const pb::Reflection* r = m.GetReflection();
  out_ += '{';
  bool first = true;
  for (const auto& e : plan.fields) {
    const FD* f = e.field;
    if (f->is_repeated() ? r->FieldSize(m, f) == 0 : !r->HasField(m, f)) continue;
    if (!first) out_ += ',';
    first = false;
    out_ += e.key;
    field(m, f);
  }
  out_ += '}';
}

void JsonWriter::message(const pb::Message& m, const Extra& extra) {
  const Plan& plan = plan_of(m.GetDescriptor());
  const pb::Reflection* r = m.GetReflection();
  out_ += '{';
  bool first = true;
  auto sep = [&] {
    if (!first) out_ += ',';
    first = false;
  };
  size_t x = 0;
  auto flush_extra_before = [&](std::string_view name) {
    while (x < extra.size() && extra[x].first < name) {
      sep();
      string(extra[x].first);
      out_ += ':';
      out_ += extra[x].second;
      ++x;
    }
  };
  for (const auto& e : plan.fields) {
    const FD* f = e.field;
    flush_extra_before(f->name());
    if (x < extra.size() && extra[x].first == f->name()) continue;  // replaced
    if (f->is_repeated() ? r->FieldSize(m, f) == 0 : !r->HasField(m, f)) continue;
    sep();
    out_ += e.key;
    field(m, f);
  }
  while (x < extra.size()) {
    sep();
    string(extra[x].first);
    out_ += ':';
    out_ += extra[x].second;
    ++x;
  }
  out_ += '}';
}

void JsonWriter::object(const nlohmann::json& obj, const Splice& extra) {
  out_ += '{';
  bool first = true;
  auto sep = [&] {
    if (!first) out_ += ',';
    first = false;
  };
  size_t x = 0;
  auto splice = [&] {
    sep();
    string(extra[x].first);
    out_ += ':';
    extra[x].second(*this);
    ++x;
  };
  for (const auto& [key, v] : obj.items()) {
    while (x < extra.size() && extra[x].first < key) splice();
    if (x < extra.size() && extra[x].first == key) continue;  // replaced below
    sep();
    string(key);
    out_ += ':';
    out_ += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  while (x < extra.size()) splice();
  out_ += '}';
}

void JsonWriter::field(const pb::Message& m, const FD* f) {
  if (f->is_map()) return map_field(m, f);
  if (f->is_repeated()) {
    const int n = m.GetReflection()->FieldSize(m, f);
    out_ += '[';
    for (int i = 0; i < n; ++i) {
      if (i > 0) out_ += ',';
      value(m, f, i);
    }
    out_ += ']';
    return;
  }
  value(m, f, -1);
}

void JsonWriter::map_field(const pb::Message& m, const FD* f) {
  // nlohmann keeps object keys in a std::map: sorted by key text, the last duplicate wins.
  const pb::Reflection* r = m.GetReflection();
  const FD* key_field = f->message_type()->map_key();
  const FD* value_field = f->message_type()->map_value();
  const int n = r->FieldSize(m, f);
  std::vector<std::pair<std::string, int>> keys;
  keys.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const pb::Message& entry = r->GetRepeatedMessage(m, f, i);
    std::string text;
    if (key_field->cpp_type() == FD::CPPTYPE_STRING) {
      text = entry.GetReflection()->GetString(entry, key_field);
    } else {
      JsonWriter w(text);
      w.value(entry, key_field, -1);
    }
    keys.emplace_back(std::move(text), i);
  }
  std::stable_sort(keys.begin(), keys.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  out_ += '{';
  bool first = true;
  for (size_t k = 0; k < keys.size(); ++k) {
    if (k + 1 < keys.size() && keys[k + 1].first == keys[k].first) continue;  // last wins
    if (!first) out_ += ',';
    first = false;
    string(keys[k].first);
    out_ += ':';
    value(r->GetRepeatedMessage(m, f, keys[k].second), value_field, -1);
  }
  out_ += '}';
}

void JsonWriter::value(const pb::Message& m, const FD* f, int index) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FD::CPPTYPE_MESSAGE:
      return message(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
    case FD::CPPTYPE_INT32:
      return append_int(out_, rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
    case FD::CPPTYPE_INT64:
      return append_int(out_, rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
    case FD::CPPTYPE_UINT32:
      return append_int(out_, rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
    case FD::CPPTYPE_UINT64:
      return append_int(out_, rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
    case FD::CPPTYPE_DOUBLE:
      return number(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case FD::CPPTYPE_FLOAT: {
      // As proto_json: the float's own shortest form, read back as a double.
      float v = rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f);
      if (!std::isfinite(v)) return number(v);
      char buf[64];
      auto [end, ec] = std::to_chars(buf, buf + sizeof(buf) - 1, v);
      if (ec != std::errc()) return number(double(v));
      *end = '\0';
      return number(std::strtod(buf, nullptr));
    }
    case FD::CPPTYPE_BOOL:
      out_ += (rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false";
      return;
    case FD::CPPTYPE_STRING: {
      std::string scratch;
      const std::string& v = rep ? r->GetRepeatedStringReference(m, f, index, &scratch)
                                 : r->GetStringReference(m, f, &scratch);
      if (f->type() == FD::TYPE_BYTES) {
        out_ += '"';
        append_base64(out_, v);
        out_ += '"';
        return;
      }
      return string(v);
    }
    case FD::CPPTYPE_ENUM: {
      const pb::EnumValueDescriptor* e = rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f);
      return string(e->name());
    }
  }
  out_ += "null";
}

std::string fast_json(const pb::Message& m) {
  std::string out;
  JsonWriter(out).message(m);
  return out;
}

}  // namespace corral::master
