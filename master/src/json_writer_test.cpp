// The streaming JSON writer must write exactly what common/proto_json's to_json() writes (the
// bytes clients of GET_STATE, GET_TASKS and /state have always received).
#include "json_writer.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "corral/common/proto_json.hpp"
#include "corral/v1/master.pb.h"
#include "corral/v1/mesos.pb.h"
#include "corral/v1/scheduler.pb.h"

namespace corral::master {
namespace {

v1::Task full_task() {
  v1::Task t;
  t.set_name("web \"front\"\n\ttab\\slash/\x01\x1f\x7f é 日本 🐄");
  t.mutable_task_id()->set_value("task-1");
  t.mutable_framework_id()->set_value("fw-1");
  t.mutable_agent_id()->set_value("agent-1");
  t.set_state(v1::TASK_RUNNING);
  for (const char* n : {"cpus", "mem", "disk"}) {
    auto* r = t.add_resources();
    r->set_name(n);
    r->set_type(v1::Value::SCALAR);
    r->mutable_scalar()->set_value(0.1 + 1024.5 * (n[0] == 'm'));
    r->mutable_allocation_info()->set_role("eng/web");
  }
  auto* ports = t.add_resources();
  ports->set_name("ports");
  ports->set_type(v1::Value::RANGES);
  auto* range = ports->mutable_ranges()->add_range();
  range->set_begin(31000);
  range->set_end(31005);
  for (int i = 0; i < 4; ++i) {
    auto* s = t.add_statuses();
    s->mutable_task_id()->set_value("task-1");
    s->set_state(i % 2 ? v1::TASK_RUNNING : v1::TASK_STARTING);
    s->set_timestamp(1.7e9 + i * 0.123456789);
    s->set_uuid(std::string("\x00\xff\x10 uuid bytes!!", 16).substr(0, 12 + i));
    s->set_source(v1::TaskStatus::SOURCE_EXECUTOR);
    s->set_healthy(i == 3);
    s->set_message(i == 2 ? std::string("bad \xc3\x28 utf8 \xe2\x82") : "ok");
  }
  t.set_status_update_state(v1::TASK_RUNNING);
  t.set_status_update_uuid("0123456789abcdef");
  auto* label = t.mutable_labels()->add_labels();
  label->set_key("k");
  label->set_value("v");
  (*t.mutable_limits())["mem"].set_value(2048);
  (*t.mutable_limits())["cpus"].set_value(std::numeric_limits<double>::infinity());
  (*t.mutable_limits())["b"].set_value(1e-7);
  (*t.mutable_limits())["a"].set_value(-0.0);
  t.set_user("nobody");
  return t;
}

TEST(JsonWriter, SameBytesAsToJsonForATaskWithEveryKindOfField) {
  v1::Task t = full_task();
  EXPECT_EQ(fast_json(t), to_json(t));
}

TEST(JsonWriter, SameBytesForNumbersAtTheEdges) {
  v1::Task t;
  for (double v :
       {0.0, 1.0, -1.5, 0.1, 1e21, 1e-5, 123456789.123, 1.7976931348623157e308,
        std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::quiet_NaN(),
        -std::numeric_limits<double>::infinity()}) {
    auto* s = t.add_statuses();
    s->set_timestamp(v);
  }
  EXPECT_EQ(fast_json(t), to_json(t));
  v1::scheduler::Call::Decline d;  // filters.refuse_seconds is a double; int/uint64 elsewhere
  d.mutable_filters()->set_refuse_seconds(5);
  d.add_offer_ids()->set_value("o");
  EXPECT_EQ(fast_json(d), to_json(d));
  v1::TimeInfo time;
  time.set_nanoseconds(std::numeric_limits<int64_t>::min());
  EXPECT_EQ(fast_json(time), to_json(time));
}

TEST(JsonWriter, SameBytesForRandomStrings) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 12, '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 256);
    v1::TaskID id;
    id.set_value(s);
    ASSERT_EQ(fast_json(id), to_json(id)) << "string " << i;
  }
}

TEST(JsonWriter, ExtraKeysAreMergedInOrderAndReplaceFields) {
  v1::Task t = full_task();
  nlohmann::json expected = to_json_value(t);
  expected["id"] = "task-1";
  expected["resources"] = {{"cpus", 0.1}};
  expected["zz"] = 1;
  std::string out;
  JsonWriter(out).message(t, {{"id", "\"task-1\""}, {"resources", "{\"cpus\":0.1}"}, {"zz", "1"}});
  EXPECT_EQ(out, expected.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

TEST(JsonWriter, SplicedObjectMatchesNlohmann) {
  nlohmann::json base = {{"b", 1}, {"d", "x"}, {"f", nlohmann::json::array()}};
  nlohmann::json expected = base;
  expected["a"] = "spliced";
  expected["d"] = {1, 2};
  expected["z"] = nlohmann::json::object();
  std::string out;
  JsonWriter(out).object(base, {{"a", [](JsonWriter& w) { w.string("spliced"); }},
                                {"d", [](JsonWriter& w) { w.raw("[1,2]"); }},
                                {"z", [](JsonWriter& w) { w.raw("{}"); }}});
  EXPECT_EQ(out, expected.dump());
}

TEST(JsonWriter, ResponseWithNestedMessagesAndEmptyOnes) {
  v1::master::Response r;
  r.set_type(v1::master::Response::GET_STATE);
  auto* st = r.mutable_get_state();
  st->mutable_get_executors();
  *st->mutable_get_tasks()->add_tasks() = full_task();
  auto* agent = st->mutable_get_agents()->add_agents();
  agent->mutable_agent_info()->set_hostname("h");
  agent->set_active(true);
  agent->mutable_registered_time()->set_nanoseconds(1700000000123456789);
  EXPECT_EQ(fast_json(r), to_json(r));
}

}  // namespace
}  // namespace corral::master
