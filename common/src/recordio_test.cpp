#include "corral/common/recordio.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

namespace {

// Largest single allocation made on this thread while tracking is on; lets a test prove that
// an absurd length prefix is refused without the decoder ever asking for that memory.
thread_local bool g_track_allocations = false;
thread_local std::size_t g_largest_allocation = 0;

}  // namespace

void* operator new(std::size_t size) {
  if (g_track_allocations && size > g_largest_allocation) {
    g_largest_allocation = size;
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) {
    return p;
  }
  throw std::bad_alloc();
}
// Every variant that pairs with the deletes below must allocate with malloc too: under ASan the
// library's own nothrow new (used by std::stable_sort's temporary buffer) would otherwise be
// freed here with free(), an alloc-dealloc mismatch.
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  if (g_track_allocations && size > g_largest_allocation) {
    g_largest_allocation = size;
  }
  return std::malloc(size == 0 ? 1 : size);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace corral {
namespace {

std::vector<std::string> feed_all(RecordIoDecoder& decoder, std::string_view data) {
  auto records = decoder.feed(data);
  EXPECT_TRUE(records.ok()) << records.error().to_string();
  return records.ok() ? *records : std::vector<std::string>{};
}

TEST(RecordIo, EncodesLengthNewlineBytes) {
  EXPECT_EQ(recordio_encode("hello"), "5\nhello");
  EXPECT_EQ(recordio_encode(""), "0\n");
  EXPECT_EQ(recordio_encode("{\"type\":\"HEARTBEAT\"}"), "20\n{\"type\":\"HEARTBEAT\"}");
}

TEST(RecordIo, RoundTripAtEverySplitPoint) {
  const std::vector<std::string> records = {
      R"({"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"f1"}}})", "",
      std::string("binary\0with\nnewlines\n", 21), std::string(1000, 'x'), "last"};
  std::string stream;
  for (const auto& r : records) {
    stream += recordio_encode(r);
  }
  // Two pieces, split at every possible byte.
  for (std::size_t split = 0; split <= stream.size(); ++split) {
    RecordIoDecoder decoder;
    auto got = feed_all(decoder, std::string_view(stream).substr(0, split));
    auto rest = feed_all(decoder, std::string_view(stream).substr(split));
    got.insert(got.end(), rest.begin(), rest.end());
    ASSERT_EQ(got, records) << "split at " << split;
    EXPECT_TRUE(decoder.finish().ok());
  }
  // One byte at a time.
  RecordIoDecoder decoder;
  std::vector<std::string> got;
  for (char c : stream) {
    auto some = feed_all(decoder, std::string_view(&c, 1));
    got.insert(got.end(), some.begin(), some.end());
  }
  EXPECT_EQ(got, records);
  EXPECT_FALSE(decoder.mid_record());
  EXPECT_TRUE(decoder.finish().ok());
}

TEST(RecordIo, TruncatedRecordIsReportedAtEndOfStream) {
  RecordIoDecoder decoder;
  auto records = feed_all(decoder, "5\nhello11\nhello");
  EXPECT_EQ(records, std::vector<std::string>{"hello"});
  EXPECT_TRUE(decoder.mid_record());
  auto end = decoder.finish();
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error().code(), EPROTO);
  EXPECT_EQ(end.error().message(), "RecordIO: stream ended inside a record: got 5 of 11 bytes");
}

TEST(RecordIo, TruncatedLengthPrefixIsReportedAtEndOfStream) {
  RecordIoDecoder decoder;
  EXPECT_TRUE(feed_all(decoder, "12").empty());
  auto end = decoder.finish();
  ASSERT_FALSE(end.ok());
  EXPECT_NE(end.error().message().find("length prefix"), std::string::npos);
}

TEST(RecordIo, AbsurdLengthPrefixRejectedWithoutAllocatingIt) {
  RecordIoDecoder decoder;  // default limit: 64 MiB
  g_largest_allocation = 0;
  g_track_allocations = true;
  // 10^20 - 1 bytes announced; no newline even needed to refuse it.
  auto result = decoder.feed("99999999999999999999");
  g_track_allocations = false;
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), EMSGSIZE);
  EXPECT_NE(result.error().message().find("exceeds the limit of 67108864 bytes"), std::string::npos)
      << result.error().message();
  EXPECT_LT(g_largest_allocation, 4096u) << "the decoder allocated for the announced record";
  // The stream cannot be resynchronised: the decoder stays failed.
  EXPECT_TRUE(decoder.failed());
  EXPECT_FALSE(decoder.feed("5\nhello").ok());
  EXPECT_FALSE(decoder.finish().ok());
}

TEST(RecordIo, ConfigurableLimitAcceptsUpToItAndRejectsBeyond) {
  RecordIoDecoder decoder(8);
  EXPECT_EQ(feed_all(decoder, "8\n12345678"), std::vector<std::string>{"12345678"});
  auto result = decoder.feed("9\n");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), EMSGSIZE);
}

TEST(RecordIo, NonNumericOrEmptyPrefixIsAProtocolError) {
  for (std::string_view bad : {"abc\n", "1x\n", "\n", "-5\nhello", " 5\nhello"}) {
    RecordIoDecoder decoder;
    auto result = decoder.feed(bad);
    ASSERT_FALSE(result.ok()) << bad;
    EXPECT_EQ(result.error().code(), EPROTO) << bad;
  }
  RecordIoDecoder decoder;
  auto result = decoder.feed("x");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().message(),
            "RecordIO: invalid byte 0x78 in length prefix (expected decimal digits then '\\n')");
}

}  // namespace
}  // namespace corral
