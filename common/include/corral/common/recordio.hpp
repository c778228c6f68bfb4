#pragma once
// RecordIO framing as the Mesos v1 streaming APIs use it: each record is its length in bytes as
// ASCII decimal, a '\n', then exactly that many bytes ("5\nhello"). The scheduler API's
// SUBSCRIBE response carries one RecordIO record (one JSON event) per HTTP chunk, but a reader
// must not rely on that: TCP and proxies may split or merge chunks, so the decoder accepts the
// bytes in any split.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "corral/common/result.hpp"

namespace corral {

// Frames one record: "<size>\n<record>".
std::string recordio_encode(std::string_view record);

// Incremental decoder. Feed it the bytes of a stream as they arrive; it returns every record
// completed by those bytes. A length prefix that is not decimal digits, is empty, or announces
// a record larger than max_record_size is an error (EPROTO / EMSGSIZE) reported as soon as the
// offending byte arrives, before any memory for the record is reserved. After an error the
// decoder stays failed: the stream cannot be resynchronised, so the caller must drop the
// connection.
class RecordIoDecoder {
 public:
  static constexpr std::size_t kDefaultMaxRecordSize = 64u * 1024 * 1024;

  explicit RecordIoDecoder(std::size_t max_record_size = kDefaultMaxRecordSize);

  // Appends `data` to the stream and returns the records it completed (possibly none).
  Result<std::vector<std::string>> feed(std::string_view data);

  // Call at end of stream. OK when the stream ended on a record boundary; otherwise an Error
  // (EPROTO) saying how much of the last record was missing.
  Result<void> finish() const;

  // True while part of a record (or of its length prefix) has been read.
  bool mid_record() const { return state_ == State::kData || prefix_digits_ > 0; }
  bool failed() const { return state_ == State::kFailed; }
  std::size_t max_record_size() const { return max_record_size_; }

 private:
  enum class State { kPrefix, kData, kFailed };
  Error fail(Error error);

  std::size_t max_record_size_;
  State state_ = State::kPrefix;
  std::uint64_t expected_ = 0;     // length announced by the current prefix
  std::size_t prefix_digits_ = 0;  // digits of the current prefix seen so far
  std::string record_;             // bytes of the current record seen so far
  Error error_;
};

}  // namespace corral
