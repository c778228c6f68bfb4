// Protobuf wire framing for the agent's hot paths: appending already serialized messages (or a
// message serialized in place) as length-delimited fields, without copying them into a parent
// message first. Used by the checkpoint record writer and the batched STATUS_UPDATES call.
#pragma once

#include <google/protobuf/message_lite.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace corral::agent::wire {

inline void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

inline size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// The tag of length-delimited field `field` (wire type 2).
inline void put_tag(std::string& out, int field) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | 2);
}

// `bytes` (an already serialized message) as length-delimited field `field`.
inline void put_field(std::string& out, int field, std::string_view bytes) {
  put_tag(out, field);
  put_varint(out, bytes.size());
  out.append(bytes);
}

// `m` as length-delimited field `field`, serialized straight into `out` (no temporary string).
inline void put_message(std::string& out, int field, const google::protobuf::MessageLite& m) {
  const size_t n = m.ByteSizeLong();
  put_tag(out, field);
  put_varint(out, n);
  const size_t at = out.size();
  out.resize(at + n);
  m.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out.data() + at));
}

}  // namespace corral::agent::wire
