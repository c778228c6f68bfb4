#include "corral/common/metrics.hpp"

#include <gtest/gtest.h>

namespace corral {
namespace {

TEST(Metrics, RendersPrometheusTextFormat) {
  MetricsRegistry reg;
  reg.counter("corral_tasks_launched_total", "Tasks launched", {{"role", "web"}}).inc(3);
  reg.gauge("corral_agents_connected", "Agents connected").set(2);
  auto& h = reg.histogram("corral_offer_seconds", "Offer latency", {0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  EXPECT_EQ(reg.render(),
            "# HELP corral_agents_connected Agents connected\n"
            "# TYPE corral_agents_connected gauge\n"
            "corral_agents_connected 2\n"
            "# HELP corral_offer_seconds Offer latency\n"
            "# TYPE corral_offer_seconds histogram\n"
            "corral_offer_seconds_bucket{le=\"0.10000000000000001\"} 1\n"
            "corral_offer_seconds_bucket{le=\"1\"} 2\n"
            "corral_offer_seconds_bucket{le=\"+Inf\"} 3\n"
            "corral_offer_seconds_sum 5.5499999999999998\n"
            "corral_offer_seconds_count 3\n"
            "# HELP corral_tasks_launched_total Tasks launched\n"
            "# TYPE corral_tasks_launched_total counter\n"
            "corral_tasks_launched_total{role=\"web\"} 3\n");
}

TEST(Metrics, EscapesLabelValues) {
  MetricsRegistry reg;
  reg.counter("x_total", "x", {{"path", "a\"b\\c\nd"}}).inc();
  EXPECT_NE(reg.render().find("x_total{path=\"a\\\"b\\\\c\\nd\"} 1"), std::string::npos);
}

TEST(Metrics, SameNameAndLabelsIsTheSameSeries) {
  MetricsRegistry reg;
  reg.counter("c_total", "c", {{"a", "1"}}).inc();
  reg.counter("c_total", "c", {{"a", "1"}}).inc();
  reg.counter("c_total", "c", {{"a", "2"}}).inc();
  EXPECT_DOUBLE_EQ(reg.counter("c_total", "c", {{"a", "1"}}).value(), 2);
  EXPECT_DOUBLE_EQ(reg.counter("c_total", "c", {{"a", "2"}}).value(), 1);
}

TEST(MetricsDeathTest, InvalidNameIsAProgrammingError) {
  MetricsRegistry reg;
  EXPECT_DEATH(reg.counter("bad name", "x"), "invalid metric name");
}

}  // namespace
}  // namespace corral
