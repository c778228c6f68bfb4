#include "corral/common/result.hpp"

#include <gtest/gtest.h>

namespace corral {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return Error(EINVAL, "value must be positive, got " + std::to_string(v));
  return v;
}

Result<int> doubled(int v) {
  CORRAL_ASSIGN_OR_RETURN(int x, parse_positive(v));
  return x * 2;
}

Result<void> check(int v) {
  CORRAL_TRY(doubled(v));
  return {};
}

TEST(Result, CarriesValueOrError) {
  auto good = doubled(21);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 42);
  auto bad = doubled(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), EINVAL);
  EXPECT_EQ(bad.error().message(), "value must be positive, got -1");
  EXPECT_EQ(bad.value_or(7), 7);
}

TEST(Result, TryPropagatesErrorsFromNestedCalls) {
  EXPECT_TRUE(check(3).ok());
  Result<void> r = check(0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "value must be positive, got 0");
}

TEST(Error, ToStringAppendsErrnoName) {
  EXPECT_EQ(Error(ENOENT, "open /x: No such file or directory").to_string(),
            "open /x: No such file or directory [ENOENT]");
  EXPECT_EQ(Error(0, "plain").to_string(), "plain");
  EXPECT_EQ(errno_name(EACCES), "EACCES");
}

TEST(Error, FromErrnoIncludesSystemDescription) {
  Error e = Error::from_errno("open /etc/corral/agent.toml", ENOENT);
  EXPECT_EQ(e.code(), ENOENT);
  EXPECT_EQ(e.message(), "open /etc/corral/agent.toml: No such file or directory");
}

TEST(Error, ContextIsPrefixedOutermostFirst) {
  Error e = Error(EIO, "disk full").context("writing checkpoint").context("launching task t1");
  EXPECT_EQ(e.message(), "launching task t1: writing checkpoint: disk full");
  EXPECT_EQ(e.code(), EIO);
}

}  // namespace
}  // namespace corral
