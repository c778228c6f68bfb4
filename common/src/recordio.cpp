#include "corral/common/recordio.hpp"

#include <cerrno>

namespace corral {

std::string recordio_encode(std::string_view record) {
  std::string out = std::to_string(record.size());
  out.reserve(out.size() + 1 + record.size());
  out.push_back('\n');
  out.append(record);
  return out;
}

RecordIoDecoder::RecordIoDecoder(std::size_t max_record_size) : max_record_size_(max_record_size) {}

Error RecordIoDecoder::fail(Error error) {
  state_ = State::kFailed;
  record_.clear();
  record_.shrink_to_fit();
  error_ = error;
  return error;
}

Result<std::vector<std::string>> RecordIoDecoder::feed(std::string_view data) {
  if (state_ == State::kFailed) {
    return error_;
  }
  std::vector<std::string> records;
  std::size_t i = 0;
  while (i < data.size()) {
    if (state_ == State::kPrefix) {
      const char c = data[i++];
      if (c == '\n') {
        if (prefix_digits_ == 0) {
          return fail(
              Error(EPROTO, "RecordIO: empty length prefix (expected '<decimal length>\\n')"));
        }
        prefix_digits_ = 0;
        if (expected_ == 0) {
          records.emplace_back();
          continue;
        }
        // The length was checked against max_record_size_ digit by digit, so reserving it is
        // bounded by what the caller agreed to hold.
        record_.clear();
        record_.reserve(static_cast<std::size_t>(expected_));
        state_ = State::kData;
        continue;
      }
      if (c < '0' || c > '9') {
        return fail(Error(EPROTO, std::string("RecordIO: invalid byte 0x") +
                                      "0123456789abcdef"[(static_cast<unsigned char>(c) >> 4)] +
                                      "0123456789abcdef"[static_cast<unsigned char>(c) & 0xf] +
                                      " in length prefix (expected decimal digits then '\\n')"));
      }
      expected_ = expected_ * 10 + static_cast<std::uint64_t>(c - '0');
      ++prefix_digits_;
      // Checked per digit, so an absurd prefix ("99999999999999999999...") fails long before it
      // could overflow or make us allocate anything.
      if (expected_ > max_record_size_) {
        return fail(Error(EMSGSIZE, "RecordIO: record length prefix exceeds the limit of " +
                                        std::to_string(max_record_size_) + " bytes"));
      }
      continue;
    }
    // State::kData
    const std::size_t want = static_cast<std::size_t>(expected_) - record_.size();
    const std::size_t take = std::min(want, data.size() - i);
    record_.append(data.substr(i, take));
    i += take;
    if (record_.size() == expected_) {
      records.push_back(std::move(record_));
      record_ = std::string();
      expected_ = 0;
      state_ = State::kPrefix;
    }
  }
  return records;
}

Result<void> RecordIoDecoder::finish() const {
  switch (state_) {
    case State::kFailed:
      return error_;
    case State::kData:
      return Error(EPROTO, "RecordIO: stream ended inside a record: got " +
                               std::to_string(record_.size()) + " of " + std::to_string(expected_) +
                               " bytes");
    case State::kPrefix:
      if (prefix_digits_ > 0) {
        return Error(EPROTO, "RecordIO: stream ended inside a record's length prefix");
      }
      return ok();
  }
  return ok();
}

}  // namespace corral
