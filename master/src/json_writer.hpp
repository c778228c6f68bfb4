#pragma once
// A streaming protobuf -> JSON writer for the master's large answers (GET_STATE, GET_TASKS,
// the operator SUBSCRIBED snapshot, /state). It appends straight into one buffer, with no
// intermediate nlohmann tree, and writes byte for byte what corral::to_json() writes for the
// same message (the Mesos v1 JSON dialect of common/proto_json.hpp: keys sorted as nlohmann
// sorts them, enums by name, 64-bit integers as numbers, bytes in base64, invalid UTF-8
// replaced with U+FFFD), so clients cannot tell the two apart. json_writer_test checks that
// equality over every field type.
//
// Not thread-safe across threads sharing a JsonWriter; the per-type field tables are
// thread-local.

#include <google/protobuf/message.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace corral::master {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  // The whole message as a JSON object (same bytes as corral::to_json(message)).
  void message(const google::protobuf::Message& m);
  // The message with extra keys: `extra` (sorted by key, each value already JSON text) is
  // merged in key order and replaces a field of the same name, as assigning those keys on
  // to_json_value(m) and dumping would.
  using Extra = std::vector<std::pair<std::string_view, std::string>>;
  void message(const google::protobuf::Message& m, const Extra& extra);
  // A JSON object from nlohmann (keys in its order) with `extra` keys spliced in, each written
  // by a callback. `extra` is sorted by key and replaces keys of the same name.
  using Splice = std::vector<std::pair<std::string_view, std::function<void(JsonWriter&)>>>;
  void object(const nlohmann::json& obj, const Splice& extra);
  // A JSON string literal, escaped as nlohmann escapes it (ensure_ascii off, replace handler).
  void string(std::string_view s);
  // A double as nlohmann prints it (shortest round-trip form); NaN and infinities as the
  // strings "NaN", "Infinity", "-Infinity" as proto_json writes them.
  void number(double v);
  void raw(std::string_view s) { out_.append(s); }
  void raw(char c) { out_.push_back(c); }
  std::string& buffer() { return out_; }

 private:
  void field(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f);
  void value(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f,
             int index);
  void map_field(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor* f);

  std::string& out_;
};

// Convenience: the message's JSON text.
std::string fast_json(const google::protobuf::Message& m);

}  // namespace corral::master
