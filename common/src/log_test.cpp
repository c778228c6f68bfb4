#include "corral/common/log.hpp"

#include <gtest/gtest.h>

namespace corral {
namespace {

TEST(Log, SinkReceivesStructuredFieldsAndLevelFilters) {
  std::vector<log::Record> seen;
  log::set_sink([&](const log::Record& r) { seen.push_back(r); });
  log::set_level(log::Level::info);
  log::debug("hidden");
  log::info("task started", {{"CORRAL_TASK_ID", "t1"}, {"CORRAL_FRAMEWORK_ID", "f1"}});
  log::set_sink(nullptr);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].message, "task started");
  EXPECT_EQ(seen[0].level, log::Level::info);
  ASSERT_EQ(seen[0].fields.size(), 2u);
  EXPECT_EQ(seen[0].fields[0].key, "CORRAL_TASK_ID");
  EXPECT_EQ(seen[0].fields[0].value, "t1");
}

TEST(Log, ParsesLevelNames) {
  log::Level l;
  ASSERT_TRUE(log::parse_level("warning", &l));
  EXPECT_EQ(l, log::Level::warning);
  EXPECT_FALSE(log::parse_level("loud", &l));
}

TEST(Log, StderrLineCarriesLevelMessageAndQuotedFields) {
  testing::internal::CaptureStderr();
  log::set_identifier("corral-test");
  log::warning("disk almost full", {{"CORRAL_AGENT_ID", "a 1"}});
  std::string out = testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("corral-test WARN disk almost full CORRAL_AGENT_ID=\"a 1\"\n"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace corral
