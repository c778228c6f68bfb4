// Generic tests of the JSON <-> protobuf helpers on a message type built at run time (common does
// not depend on Corral's schema; the Mesos wire-compatibility tests live in proto/wire_test.cpp).

#include "corral/common/proto_json.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>

namespace corral {
namespace {

namespace pb = google::protobuf;
using nlohmann::json;

constexpr const char* kSchema = R"pb(
  name: "test.proto"
  package: "t"
  syntax: "proto2"
  enum_type {
    name: "Color"
    value { name: "RED" number: 1 }
    value { name: "GREEN" number: 2 }
  }
  message_type {
    name: "Inner"
    field { name: "value" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "inner" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".t.Inner" }
  }
  message_type {
    name: "All"
    field { name: "i32" number: 1 label: LABEL_OPTIONAL type: TYPE_INT32 }
    field { name: "i64" number: 2 label: LABEL_OPTIONAL type: TYPE_INT64 }
    field { name: "u32" number: 3 label: LABEL_OPTIONAL type: TYPE_UINT32 }
    field { name: "u64" number: 4 label: LABEL_OPTIONAL type: TYPE_UINT64 }
    field { name: "d" number: 5 label: LABEL_OPTIONAL type: TYPE_DOUBLE }
    field { name: "f" number: 6 label: LABEL_OPTIONAL type: TYPE_FLOAT }
    field { name: "b" number: 7 label: LABEL_OPTIONAL type: TYPE_BOOL }
    field { name: "s" number: 8 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "raw" number: 9 label: LABEL_OPTIONAL type: TYPE_BYTES }
    field { name: "color" number: 10 label: LABEL_OPTIONAL type: TYPE_ENUM type_name: ".t.Color" }
    field {
      name: "inner"
      number: 11
      label: LABEL_OPTIONAL
      type: TYPE_MESSAGE
      type_name: ".t.Inner"
    }
    field {
      name: "items"
      number: 12
      label: LABEL_REPEATED
      type: TYPE_MESSAGE
      type_name: ".t.Inner"
    }
    field { name: "tags" number: 13 label: LABEL_REPEATED type: TYPE_STRING }
    field {
      name: "counts"
      number: 14
      label: LABEL_REPEATED
      type: TYPE_MESSAGE
      type_name: ".t.All.CountsEntry"
    }
    field { name: "snake_case_name" number: 15 label: LABEL_OPTIONAL type: TYPE_INT32 }
    field { name: "sint" number: 16 label: LABEL_OPTIONAL type: TYPE_SINT64 }
    nested_type {
      name: "CountsEntry"
      field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_INT32 }
      field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_INT64 }
      options { map_entry: true }
    }
  }
)pb";

class ProtoJsonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pb::FileDescriptorProto file;
    ASSERT_TRUE(pb::TextFormat::ParseFromString(kSchema, &file));
    ASSERT_NE(pool_.BuildFile(file), nullptr);
    const pb::Descriptor* all = pool_.FindMessageTypeByName("t.All");
    ASSERT_NE(all, nullptr);
    prototype_ = factory_.GetPrototype(all);
  }

  std::unique_ptr<pb::Message> make() { return std::unique_ptr<pb::Message>(prototype_->New()); }

  // Parses `text` into a fresh message and returns the message printed back as JSON.
  json round_trip(const std::string& text) {
    auto m = make();
    auto r = parse_json(text, m.get());
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return to_json_value(*m);
  }

  std::string parse_error(const std::string& text, const JsonParseOptions& options = {}) {
    auto m = make();
    auto r = parse_json(text, m.get(), options);
    EXPECT_FALSE(r.ok()) << "expected an error for " << text;
    if (r.ok()) return "";
    EXPECT_EQ(r.error().code(), EINVAL);
    return r.error().message();
  }

  pb::DescriptorPool pool_;
  pb::DynamicMessageFactory factory_{&pool_};
  const pb::Message* prototype_ = nullptr;
};

TEST_F(ProtoJsonTest, SixtyFourBitIntegersArePrintedAsNumbers) {
  json out = round_trip(R"({"i64": -9223372036854775808, "u64": 18446744073709551615})");
  ASSERT_TRUE(out["i64"].is_number_integer());
  EXPECT_EQ(out["i64"].get<int64_t>(), INT64_MIN);
  ASSERT_TRUE(out["u64"].is_number_unsigned());
  EXPECT_EQ(out["u64"].get<uint64_t>(), UINT64_MAX);

  auto m = make();
  ASSERT_TRUE(parse_json(R"({"i64": 1700000000123456789})", m.get()).ok());
  EXPECT_EQ(to_json(*m), R"({"i64":1700000000123456789})");
}

TEST_F(ProtoJsonTest, IntegersAreAcceptedAsStringsAndIntegralFloats) {
  json out = round_trip(R"({"i64": "-42", "u64": "7", "i32": 3.0, "u32": 1e3, "sint": "-5"})");
  EXPECT_EQ(out, json::parse(R"({"i64": -42, "u64": 7, "i32": 3, "u32": 1000, "sint": -5})"));
}

TEST_F(ProtoJsonTest, IntegerRangeAndTypeErrorsNameTheField) {
  EXPECT_NE(parse_error(R"({"i32": 2147483648})")
                .find("at 'i32': number 2147483648 is out of "
                      "range for int32"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"u32": -1})").find("out of range for uint32"), std::string::npos);
  EXPECT_NE(parse_error(R"({"u64": "-1"})").find("at 'u64'"), std::string::npos);
  EXPECT_NE(parse_error(R"({"i32": 2.5})").find("expected an integer, got number 2.5"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"i64": "12abc"})").find("expected an integer, got string \"12abc\""),
            std::string::npos);
}

TEST_F(ProtoJsonTest, NullMeansAbsentForEveryKindOfField) {
  auto m = make();
  auto r = parse_json(R"({"i32": null, "s": null, "inner": null, "items": null, "tags": [null, "a"],
                         "counts": null, "color": null, "raw": null, "b": null})",
                      m.get());
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(to_json(*m), R"({"tags":["a"]})");
}

TEST_F(ProtoJsonTest, UnknownFieldsAreIgnored) {
  EXPECT_EQ(round_trip(R"({"nope": {"deep": [1, 2]}, "s": "x", "force": true})"),
            json::parse(R"({"s": "x"})"));
}

TEST_F(ProtoJsonTest, CamelCaseFieldNamesAreAcceptedAndSnakeCaseIsPrinted) {
  EXPECT_EQ(round_trip(R"({"snakeCaseName": 4})"), json::parse(R"({"snake_case_name": 4})"));
}

TEST_F(ProtoJsonTest, EnumsByNameOrNumberArePrintedByName) {
  EXPECT_EQ(round_trip(R"({"color": "GREEN"})"), json::parse(R"({"color": "GREEN"})"));
  EXPECT_EQ(round_trip(R"({"color": 1})"), json::parse(R"({"color": "RED"})"));
  EXPECT_EQ(round_trip(R"({"color": "2"})"), json::parse(R"({"color": "GREEN"})"));
}

TEST_F(ProtoJsonTest, UnknownEnumValueIsAnErrorUnlessIgnored) {
  std::string message = parse_error(R"({"color": "BLUE"})");
  EXPECT_NE(message.find("at 'color': string \"BLUE\" is not a known t.Color value (expected one "
                         "of RED, GREEN)"),
            std::string::npos)
      << message;
  EXPECT_NE(parse_error(R"({"color": 7})").find("number 7 is not a known t.Color"),
            std::string::npos);

  auto m = make();
  JsonParseOptions lenient;
  lenient.ignore_unknown_enum_values = true;
  ASSERT_TRUE(parse_json(R"({"color": "BLUE", "s": "kept"})", m.get(), lenient).ok());
  EXPECT_EQ(to_json(*m), R"({"s":"kept"})");
}

TEST_F(ProtoJsonTest, DoublesAndFloats) {
  json out = round_trip(R"({"d": 1.0, "f": 0.1})");
  ASSERT_TRUE(out["d"].is_number_float());
  EXPECT_EQ(out["d"].get<double>(), 1.0);
  // 0.1f prints as 0.1, not as the nearest double to the float.
  EXPECT_EQ(out["f"].get<double>(), 0.1);
  EXPECT_EQ(round_trip(R"({"d": "NaN"})")["d"], "NaN");
  EXPECT_EQ(round_trip(R"({"d": "-Infinity"})")["d"], "-Infinity");
  EXPECT_EQ(round_trip(R"({"d": "2.5"})")["d"], 2.5);
  EXPECT_NE(parse_error(R"({"d": "soon"})").find("at 'd': expected a number, got string \"soon\""),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"f": 1e300})").find("out of range for a float"), std::string::npos);
}

TEST_F(ProtoJsonTest, BytesAreBase64) {
  auto m = make();
  ASSERT_TRUE(parse_json(R"({"raw": "AP8Q"})", m.get()).ok());
  const pb::FieldDescriptor* raw = m->GetDescriptor()->FindFieldByName("raw");
  EXPECT_EQ(m->GetReflection()->GetString(*m, raw), std::string("\x00\xff\x10", 3));
  EXPECT_EQ(to_json(*m), R"({"raw":"AP8Q"})");

  // URL-safe alphabet and missing padding are accepted; output is standard and padded.
  EXPECT_EQ(round_trip(R"({"raw": "-_8"})")["raw"], "+/8=");
  EXPECT_EQ(round_trip(R"({"raw": "YQ"})")["raw"], "YQ==");
  EXPECT_NE(parse_error(R"({"raw": "a*b"})").find("at 'raw': expected base64-encoded bytes"),
            std::string::npos);
}

TEST_F(ProtoJsonTest, BooleansAcceptStringSpellings) {
  EXPECT_EQ(round_trip(R"({"b": "true"})"), json::parse(R"({"b": true})"));
  EXPECT_NE(parse_error(R"({"b": 1})").find("at 'b': expected true or false, got number 1"),
            std::string::npos);
}

TEST_F(ProtoJsonTest, MapsAreObjectsKeyedByTheMapKey) {
  EXPECT_EQ(round_trip(R"({"counts": {"1": 10, "2": "20"}})"),
            json::parse(R"({"counts": {"1": 10, "2": 20}})"));
  // The map's wire form (a list of entries) is read as well.
  EXPECT_EQ(round_trip(R"({"counts": [{"key": 3, "value": 30}]})"),
            json::parse(R"({"counts": {"3": 30}})"));
  EXPECT_NE(parse_error(R"({"counts": {"x": 1}})").find("at 'counts.x'"), std::string::npos);
}

TEST_F(ProtoJsonTest, ErrorsNameNestedPathsWithIndices) {
  std::string message = parse_error(R"({"items": [{"value": "ok"}, {"inner": {"value": 5}}]})");
  EXPECT_EQ(message, "invalid t.All: at 'items[1].inner.value': expected a string, got number 5");
  EXPECT_EQ(parse_error(R"({"tags": "one"})"),
            "invalid t.All: at 'tags': expected an array, got string \"one\"");
  EXPECT_EQ(parse_error(R"({"inner": []})"),
            "invalid t.All: at 'inner': expected an object (t.Inner), got an array");
}

TEST_F(ProtoJsonTest, MalformedJsonReportsTheByteOffset) {
  std::string message = parse_error(R"({"s": "x",, })");
  EXPECT_NE(message.find("invalid JSON for t.All at byte 11"), std::string::npos) << message;
  EXPECT_EQ(parse_error("[1, 2]"), "invalid t.All: expected a JSON object, got an array");
  EXPECT_NE(parse_error("").find("invalid JSON for t.All at byte"), std::string::npos);
}

TEST_F(ProtoJsonTest, DeepNestingIsRefusedNotRecursedInto) {
  std::string deep;
  for (int i = 0; i < 500; ++i) deep += R"({"inner": )";
  deep += "{}";
  for (int i = 0; i < 500; ++i) deep += "}";
  EXPECT_NE(parse_error(deep).find("nesting is deeper than"), std::string::npos);
}

TEST_F(ProtoJsonTest, ParseClearsTheTargetFirst) {
  auto m = make();
  ASSERT_TRUE(parse_json(R"({"s": "old", "tags": ["a"]})", m.get()).ok());
  ASSERT_TRUE(parse_json(R"({"tags": ["b"]})", m.get()).ok());
  EXPECT_EQ(to_json(*m), R"({"tags":["b"]})");
}

TEST_F(ProtoJsonTest, InvalidUtf8InAStringFieldDoesNotThrow) {
  auto m = make();
  const pb::FieldDescriptor* s = m->GetDescriptor()->FindFieldByName("s");
  m->GetReflection()->SetString(m.get(), s, std::string("a\xff", 2));
  std::string out;
  EXPECT_NO_THROW(out = to_json(*m));
  EXPECT_EQ(out, "{\"s\":\"a\xEF\xBF\xBD\"}");
}

TEST_F(ProtoJsonTest, BinaryRoundTripAndGarbage) {
  auto m = make();
  ASSERT_TRUE(parse_json(R"({"i64": 5, "s": "x", "counts": {"1": 2}})", m.get()).ok());
  std::string wire = to_binary(*m);
  auto back = make();
  ASSERT_TRUE(parse_binary(wire, back.get()).ok());
  EXPECT_EQ(to_json(*back), to_json(*m));

  auto r = parse_binary(std::string("\xff\xff\xff", 3), back.get());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), EINVAL);
  EXPECT_NE(r.error().message().find("invalid t.All: the body is not a valid protobuf encoding"),
            std::string::npos);
}

TEST(WireFormatTest, ContentTypeHeader) {
  EXPECT_EQ(*wire_format_from_content_type(""), WireFormat::kJson);
  EXPECT_EQ(*wire_format_from_content_type("application/json"), WireFormat::kJson);
  EXPECT_EQ(*wire_format_from_content_type("Application/JSON; charset=utf-8"), WireFormat::kJson);
  EXPECT_EQ(*wire_format_from_content_type("application/x-protobuf"), WireFormat::kProtobuf);
  auto r = wire_format_from_content_type("text/plain");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ENOTSUP);
  EXPECT_NE(r.error().message().find("'text/plain'"), std::string::npos);
}

TEST(WireFormatTest, AcceptHeader) {
  EXPECT_EQ(*wire_format_from_accept(""), WireFormat::kJson);  // a missing Accept is fine
  EXPECT_EQ(*wire_format_from_accept("*/*"), WireFormat::kJson);
  EXPECT_EQ(*wire_format_from_accept("application/json"), WireFormat::kJson);
  EXPECT_EQ(*wire_format_from_accept("application/x-protobuf"), WireFormat::kProtobuf);
  EXPECT_EQ(*wire_format_from_accept("application/json;q=0.5, application/x-protobuf"),
            WireFormat::kProtobuf);
  EXPECT_EQ(*wire_format_from_accept("application/x-protobuf;q=0.2, */*;q=0.9"), WireFormat::kJson);
  EXPECT_EQ(*wire_format_from_accept("text/html, application/x-protobuf"), WireFormat::kProtobuf);
  auto r = wire_format_from_accept("text/html");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ENOTSUP);
  EXPECT_EQ(content_type_of(WireFormat::kProtobuf), "application/x-protobuf");
  EXPECT_EQ(content_type_of(WireFormat::kJson), "application/json");
}

}  // namespace
}  // namespace corral
