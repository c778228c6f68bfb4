#include "corral/launcher/exit_status.hpp"

#include <gtest/gtest.h>

namespace corral::launcher {
namespace {

TEST(ExitStatus, ParsesEachState) {
  auto exited = parse_exit_status(R"({"state":"exited","code":3,"killed_after_grace":false})");
  ASSERT_TRUE(exited.ok());
  EXPECT_EQ(exited->state, ExitStatus::State::exited);
  EXPECT_EQ(exited->code, 3);

  auto signaled = parse_exit_status(
      R"({"state":"signaled","signal":9,"signal_name":"SIGKILL","core_dumped":false,)"
      R"("killed_after_grace":true})");
  ASSERT_TRUE(signaled.ok());
  EXPECT_EQ(signaled->signal, 9);
  EXPECT_EQ(signaled->signal_name, "SIGKILL");
  EXPECT_TRUE(signaled->killed_after_grace);

  auto failed = parse_exit_status(R"({"state":"failed","code":127,"error":"exec x: ENOENT"})");
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->state, ExitStatus::State::failed);
  EXPECT_EQ(failed->error, "exec x: ENOENT");
}

TEST(ExitStatus, RejectsGarbage) {
  EXPECT_FALSE(parse_exit_status("").ok());
  EXPECT_FALSE(parse_exit_status("{}").ok());
  EXPECT_FALSE(parse_exit_status(R"({"state":"sleeping"})").ok());
}

}  // namespace
}  // namespace corral::launcher
