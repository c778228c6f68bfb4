// Wire compatibility of Corral's schema with Mesos's v1 HTTP APIs: JSON bodies as Mesos's
// documentation writes them must parse, print back with the same field names, enum strings and
// number types, and the binary encoding must use Mesos's field numbers and enum values.

#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "corral/common/proto_json.hpp"
#include "corral/v1/agent.pb.h"
#include "corral/v1/internal.pb.h"
#include "corral/v1/master.pb.h"
#include "corral/v1/mesos.pb.h"
#include "corral/v1/quota.pb.h"
#include "corral/v1/scheduler.pb.h"

namespace corral {
namespace {

using nlohmann::json;
namespace v1 = corral::v1;
namespace scheduler = corral::v1::scheduler;

template <typename M>
M parse_ok(const std::string& text) {
  M message;
  auto r = parse_json(text, &message);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return message;
}

// Parsing `text` and printing it back gives the same JSON (same keys, enum strings, numbers).
template <typename M>
void expect_round_trip(const std::string& text) {
  M message = parse_ok<M>(text);
  EXPECT_EQ(to_json_value(message), json::parse(text)) << to_json(message, 2);
  // And through the binary encoding.
  M back;
  ASSERT_TRUE(parse_binary(to_binary(message), &back).ok());
  EXPECT_EQ(to_json_value(back), json::parse(text));
}

// ---- scheduler API ---------------------------------------------------------------------------

// The SUBSCRIBE body of Mesos's scheduler HTTP API documentation, verbatim (tabs and the legacy
// "force" field included; "force" no longer exists in the schema and is ignored, as by Mesos).
constexpr const char* kDocsSubscribe = R"({
   "type"		: "SUBSCRIBE",

   "subscribe"	: {
      "framework_info"	: {
        "user" :  "foo",
        "name" :  "Example HTTP Framework"
      },

      "force" : true
  }
})";

TEST(SchedulerWireTest, SubscribeFromMesosDocs) {
  auto call = parse_ok<scheduler::Call>(kDocsSubscribe);
  EXPECT_EQ(call.type(), scheduler::Call::SUBSCRIBE);
  EXPECT_EQ(call.subscribe().framework_info().user(), "foo");
  EXPECT_EQ(call.subscribe().framework_info().name(), "Example HTTP Framework");
  EXPECT_FALSE(call.has_framework_id());
  // Not declared: a single-role framework in role "*" (the Mesos default).
  EXPECT_EQ(call.subscribe().framework_info().role(), "*");
  EXPECT_EQ(to_json_value(call),
            json::parse(R"({"type": "SUBSCRIBE", "subscribe": {"framework_info":
                            {"user": "foo", "name": "Example HTTP Framework"}}})"));
}

// What HTTP scheduler libraries send: nulls for every absent optional field, a MULTI_ROLE
// framework, failover timeout as a number.
TEST(SchedulerWireTest, SubscribeWithNullsAndCapabilities) {
  auto call = parse_ok<scheduler::Call>(R"({
    "type": "SUBSCRIBE", "framework_id": null,
    "subscribe": {
      "framework_info": {
        "user": "root", "name": "demo", "id": null, "failover_timeout": 604800,
        "checkpoint": true, "role": null, "roles": ["web", "batch"], "hostname": null,
        "principal": null, "webui_url": null, "labels": null,
        "capabilities": [{"type": "MULTI_ROLE"}, {"type": "PARTITION_AWARE"},
                         {"type": "TASK_KILLING_STATE"}, {"type": "GPU_RESOURCES"}]
      },
      "suppressed_roles": null
    }
  })");
  const auto& info = call.subscribe().framework_info();
  EXPECT_EQ(info.failover_timeout(), 604800.0);
  EXPECT_TRUE(info.checkpoint());
  EXPECT_FALSE(info.has_role());
  ASSERT_EQ(info.roles_size(), 2);
  ASSERT_EQ(info.capabilities_size(), 4);
  EXPECT_EQ(info.capabilities(0).type(), v1::FrameworkInfo::Capability::MULTI_ROLE);
  EXPECT_EQ(info.capabilities(1).type(), v1::FrameworkInfo::Capability::PARTITION_AWARE);
}

TEST(SchedulerWireTest, SubscribedEvent) {
  expect_round_trip<scheduler::Event>(R"({
    "type": "SUBSCRIBED",
    "subscribed": {"framework_id": {"value": "12220-3440-12532-2345"},
                   "heartbeat_interval_seconds": 15.0,
                   "master_info": {"id": "m1", "ip": 16777343, "port": 5050,
                                   "hostname": "master.local", "version": "0.1.0",
                                   "address": {"hostname": "master.local", "ip": "127.0.0.1",
                                               "port": 5050}}}
  })");
}

// An OFFERS event in the shape Mesos sends it: scalars, port ranges, a reservation, allocation
// info, attributes of every value type.
constexpr const char* kOffersEvent = R"({
  "type": "OFFERS",
  "offers": {"offers": [{
    "id": {"value": "12214-23523-O235235"},
    "framework_id": {"value": "12124-235325-32425"},
    "agent_id": {"value": "12325-23523-S23523"},
    "hostname": "agent.host",
    "url": {"scheme": "http", "address": {"hostname": "agent.host", "ip": "10.0.0.2",
            "port": 5051}, "path": "/slave"},
    "allocation_info": {"role": "web"},
    "resources": [
      {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}, "role": "*",
       "allocation_info": {"role": "web"}},
      {"name": "mem", "type": "SCALAR", "scalar": {"value": 15360.0}, "role": "*",
       "allocation_info": {"role": "web"}},
      {"name": "gpus", "type": "SCALAR", "scalar": {"value": 1.0}, "role": "*",
       "allocation_info": {"role": "web"}},
      {"name": "ports", "type": "RANGES",
       "ranges": {"range": [{"begin": 31000, "end": 31099}, {"begin": 31200, "end": 32000}]},
       "role": "*", "allocation_info": {"role": "web"}},
      {"name": "disk", "type": "SCALAR", "scalar": {"value": 1024.5}, "role": "web",
       "reservation": {"principal": "ops", "labels": {"labels": [{"key": "k", "value": "v"}]}},
       "allocation_info": {"role": "web"}}
    ],
    "attributes": [
      {"name": "rack", "type": "TEXT", "text": {"value": "r1"}},
      {"name": "level", "type": "SCALAR", "scalar": {"value": 2.5}},
      {"name": "zones", "type": "SET", "set": {"item": ["a", "b"]}},
      {"name": "slots", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 4}]}}
    ],
    "executor_ids": [{"value": "exec-1"}],
    "domain": {"fault_domain": {"region": {"name": "eu"}, "zone": {"name": "eu-1"}}}
  }]}
})";

TEST(SchedulerWireTest, OffersEventRoundTrips) {
  expect_round_trip<scheduler::Event>(kOffersEvent);
  auto event = parse_ok<scheduler::Event>(kOffersEvent);
  ASSERT_EQ(event.offers().offers_size(), 1);
  const auto& ports = event.offers().offers(0).resources(3);
  EXPECT_EQ(ports.type(), v1::Value::RANGES);
  EXPECT_EQ(ports.ranges().range(1).end(), 32000u);
  // uint64 range bounds are JSON numbers, not strings.
  json printed = to_json_value(event);
  EXPECT_TRUE(printed["offers"]["offers"][0]["resources"][3]["ranges"]["range"][0]["begin"]
                  .is_number_unsigned());
}

// ACCEPT with LAUNCH: resources as Mesos documents them, a native-image container, limits, a
// health check, labels, environment, kill policy and filters.
constexpr const char* kAcceptLaunch = R"({
  "framework_id": {"value": "12220-3440-12532-2345"},
  "type": "ACCEPT",
  "accept": {
    "offer_ids": [{"value": "12220-3440-12532-O12"}],
    "operations": [{
      "type": "LAUNCH",
      "launch": {"task_infos": [{
        "name": "web-1",
        "task_id": {"value": "web-1"},
        "agent_id": {"value": "12220-3440-12532-S1233"},
        "resources": [
          {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}},
          {"name": "mem", "type": "SCALAR", "scalar": {"value": 128.0}},
          {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31000}]}}
        ],
        "limits": {"cpus": {"value": 2.0}, "mem": {"value": 256.0}},
        "command": {
          "value": "python3 -m http.server $PORT0",
          "shell": true,
          "user": "nobody",
          "environment": {"variables": [{"name": "PORT0", "type": "VALUE", "value": "31000"}]},
          "uris": [{"value": "https://example.com/app.tar.gz", "extract": true, "cache": false}]
        },
        "container": {
          "type": "MESOS",
          "mesos": {"image": {"type": "DOCKER", "docker": {"name": "debian:12"}, "cached": true}},
          "volumes": [{"container_path": "/data", "mode": "RW",
                       "source": {"type": "SANDBOX_PATH",
                                  "sandbox_path": {"type": "SELF", "path": "data"}}}],
          "linux_info": {"effective_capabilities": {"capabilities": ["NET_BIND_SERVICE"]},
                         "share_pid_namespace": false},
          "rlimit_info": {"rlimits": [{"type": "RLMT_NOFILE", "soft": 1024, "hard": 4096}]}
        },
        "health_check": {"type": "HTTP", "http": {"port": 31000, "path": "/", "scheme": "http"},
                         "delay_seconds": 5.0, "interval_seconds": 10.0,
                         "consecutive_failures": 3},
        "kill_policy": {"grace_period": {"nanoseconds": 5000000000}},
        "max_completion_time": {"nanoseconds": 3600000000000},
        "labels": {"labels": [{"key": "app", "value": "web"}]},
        "discovery": {"visibility": "FRAMEWORK", "name": "web",
                      "ports": {"ports": [{"number": 31000, "name": "http", "protocol": "tcp"}]}}
      }]}
    }],
    "filters": {"refuse_seconds": 5.0}
  }
})";

TEST(SchedulerWireTest, AcceptWithLaunchRoundTrips) {
  expect_round_trip<scheduler::Call>(kAcceptLaunch);
  auto call = parse_ok<scheduler::Call>(kAcceptLaunch);
  const auto& task = call.accept().operations(0).launch().task_infos(0);
  EXPECT_EQ(task.resources(0).name(), "cpus");
  EXPECT_EQ(task.resources(0).type(), v1::Value::SCALAR);
  EXPECT_EQ(task.resources(0).scalar().value(), 1.0);
  // Frameworks without MULTI_ROLE send resources without allocation_info; that is fine.
  EXPECT_FALSE(task.resources(0).has_allocation_info());
  EXPECT_EQ(task.limits().at("mem").value(), 256.0);
  EXPECT_EQ(task.container().type(), v1::ContainerInfo::MESOS);
  EXPECT_EQ(task.container().mesos().image().docker().name(), "debian:12");
  EXPECT_EQ(task.kill_policy().grace_period().nanoseconds(), 5000000000);
  // int64 nanoseconds print as JSON numbers.
  json printed = to_json_value(call);
  EXPECT_TRUE(printed["accept"]["operations"][0]["launch"]["task_infos"][0]["kill_policy"]
                     ["grace_period"]["nanoseconds"]
                         .is_number_integer());
  // Limits are a JSON object keyed by resource name, as in Mesos.
  EXPECT_TRUE(printed["accept"]["operations"][0]["launch"]["task_infos"][0]["limits"].is_object());
}

TEST(SchedulerWireTest, AcceptWithDockerContainer) {
  expect_round_trip<scheduler::Call>(R"({
    "framework_id": {"value": "f"}, "type": "ACCEPT",
    "accept": {"offer_ids": [{"value": "o"}], "operations": [{"type": "LAUNCH", "launch": {
      "task_infos": [{"name": "redis", "task_id": {"value": "redis-1"},
        "agent_id": {"value": "a"},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}],
        "container": {"type": "DOCKER", "docker": {
          "image": "redis:7", "network": "BRIDGE", "privileged": false, "force_pull_image": true,
          "port_mappings": [{"host_port": 31001, "container_port": 6379, "protocol": "tcp"}],
          "parameters": [{"key": "label", "value": "team=infra"}]}}}]}}]}
  })");
}

TEST(SchedulerWireTest, AcceptWithLaunchGroupReserveAndUnreserve) {
  expect_round_trip<scheduler::Call>(R"({
    "framework_id": {"value": "f"}, "type": "ACCEPT",
    "accept": {"offer_ids": [{"value": "o1"}, {"value": "o2"}], "operations": [
      {"type": "RESERVE", "reserve": {"resources": [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0},
         "reservations": [{"type": "DYNAMIC", "role": "web", "principal": "ops"}]}]}},
      {"type": "UNRESERVE", "unreserve": {"resources": [
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 64.0}, "role": "web",
         "reservation": {"principal": "ops"}}]}},
      {"type": "CREATE", "create": {"volumes": [
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 100.0}, "role": "web",
         "disk": {"persistence": {"id": "vol-1", "principal": "ops"},
                  "volume": {"container_path": "data", "mode": "RW"}}}]}},
      {"type": "LAUNCH_GROUP", "id": {"value": "op-7"}, "launch_group": {
        "executor": {"type": "DEFAULT", "executor_id": {"value": "e"},
                     "framework_id": {"value": "f"},
                     "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}]},
        "task_group": {"tasks": [
          {"name": "a", "task_id": {"value": "a"}, "agent_id": {"value": "ag"},
           "command": {"shell": false, "value": "/bin/sleep", "arguments": ["sleep", "10"]}},
          {"name": "b", "task_id": {"value": "b"}, "agent_id": {"value": "ag"}}]}}}],
     "filters": {"refuse_seconds": 3600.0}}
  })");
}

TEST(SchedulerWireTest, OtherCallsFromMesosDocs) {
  auto decline = parse_ok<scheduler::Call>(R"({
    "framework_id": {"value": "12220-3440-12532-2345"}, "type": "DECLINE",
    "decline": {"offer_ids": [{"value": "12220-3440-12532-O12"},
                              {"value": "12220-3440-12532-O13"}],
                "filters": {"refuse_seconds": 60.0}}})");
  EXPECT_EQ(decline.decline().offer_ids_size(), 2);

  auto kill = parse_ok<scheduler::Call>(R"({
    "framework_id": {"value": "12220-3440-12532-2345"}, "type": "KILL",
    "kill": {"task_id": {"value": "12220-3440-12532-my-task"},
             "agent_id": {"value": "12220-3440-12532-S1233"}}})");
  EXPECT_EQ(kill.kill().task_id().value(), "12220-3440-12532-my-task");

  auto shutdown = parse_ok<scheduler::Call>(R"({
    "framework_id": {"value": "12220-3440-12532-2345"}, "type": "SHUTDOWN",
    "shutdown": {"executor_id": {"value": "123450-2340-1232-my-executor"},
                 "agent_id": {"value": "12220-3440-12532-S1233"}}})");
  EXPECT_EQ(shutdown.type(), scheduler::Call::SHUTDOWN);

  // "uuid" is raw bytes in base64: this 22-character string is a 16-byte UUID.
  auto ack = parse_ok<scheduler::Call>(R"({
    "framework_id": {"value": "12220-3440-12532-2345"}, "type": "ACKNOWLEDGE",
    "acknowledge": {"agent_id": {"value": "12220-3440-12532-S1233"},
                    "task_id": {"value": "12220-3440-12532-my-task"},
                    "uuid": "jhadf73jhakdlfha723adf"}})");
  EXPECT_EQ(ack.acknowledge().uuid().size(), 16u);

  auto reconcile = parse_ok<scheduler::Call>(R"({
    "framework_id": {"value": "12220-3440-12532-2345"}, "type": "RECONCILE",
    "reconcile": {"tasks": [{"task_id": {"value": "312325"}, "agent_id": {"value": "123535"}}]}})");
  EXPECT_EQ(reconcile.reconcile().tasks(0).agent_id().value(), "123535");

  auto message = parse_ok<scheduler::Call>(R"({
    "framework_id": {"value": "12220-3440-12532-2345"}, "type": "MESSAGE",
    "message": {"agent_id": {"value": "12220-3440-12532-S1233"},
                "executor_id": {"value": "my-framework-executor"},
                "data": "adaf838jahd748jnaldf"}})");
  EXPECT_EQ(message.message().data().size(), 15u);

  for (const char* body :
       {R"({"framework_id": {"value": "f"}, "type": "TEARDOWN"})",
        R"({"framework_id": {"value": "f"}, "type": "REVIVE", "revive": {"roles": ["web"]}})",
        R"({"framework_id": {"value": "f"}, "type": "SUPPRESS", "suppress": {"roles": []}})",
        R"({"framework_id": {"value": "f"}, "type": "REQUEST", "request": {"requests": [
             {"agent_id": {"value": "a"}, "resources": []}]}})"}) {
    scheduler::Call call;
    auto r = parse_json(body, &call);
    EXPECT_TRUE(r.ok()) << body << ": " << r.error().to_string();
  }
}

// The UPDATE event of Mesos's documentation ("bytes" is a typo there for "data"; unknown fields
// are ignored as Mesos does).
TEST(SchedulerWireTest, UpdateEventFromMesosDocs) {
  auto event = parse_ok<scheduler::Event>(R"({
    "type"	: "UPDATE",
    "update"	: {
      "status"	: {
          "task_id"	: { "value" : "12344-my-task"},
          "state"		: "TASK_RUNNING",
          "source"	: "SOURCE_EXECUTOR",
          "uuid"		: "adfadfadbhgvjayd23r2uahj",
          "bytes"		: "uhdjfhuagdj63d7hadkf"
        }
    }
  })");
  const auto& status = event.update().status();
  EXPECT_EQ(status.state(), v1::TASK_RUNNING);
  EXPECT_EQ(status.source(), v1::TaskStatus::SOURCE_EXECUTOR);
  EXPECT_EQ(status.uuid().size(), 18u);
  // The uuid prints back to the same base64 text.
  EXPECT_EQ(to_json_value(event)["update"]["status"]["uuid"], "adfadfadbhgvjayd23r2uahj");
}

TEST(SchedulerWireTest, UpdateEventForMemoryLimitKill) {
  expect_round_trip<scheduler::Event>(R"({
    "type": "UPDATE",
    "update": {"status": {
      "task_id": {"value": "hog"}, "agent_id": {"value": "a1"},
      "state": "TASK_FAILED", "source": "SOURCE_AGENT",
      "reason": "REASON_CONTAINER_LIMITATION_MEMORY",
      "message": "Memory limit exceeded: 128 MiB",
      "timestamp": 1700000000.25,
      "uuid": "AAECAwQFBgcICQoLDA0ODw==",
      "limitation": {"resources": [{"name": "mem", "type": "SCALAR", "scalar": {"value": 128.0}}]},
      "container_status": {"container_id": {"value": "c1"}, "executor_pid": 4242,
                           "network_infos": [{"ip_addresses": [{"protocol": "IPv4",
                                                                "ip_address": "10.0.0.2"}]}]},
      "unreachable_time": {"nanoseconds": 1700000000123456789}
    }}
  })");
}

TEST(SchedulerWireTest, RemainingEvents) {
  expect_round_trip<scheduler::Event>(
      R"({"type": "RESCIND", "rescind": {"offer_id": {"value": "12214-23523-O235235"}}})");
  expect_round_trip<scheduler::Event>(R"({"type": "MESSAGE", "message": {
      "agent_id": {"value": "12214-23523-S235235"},
      "executor_id": {"value": "12214-23523-my-executor"}, "data": "AAEC"}})");
  expect_round_trip<scheduler::Event>(R"({"type": "FAILURE", "failure": {
      "agent_id": {"value": "12214-23523-S235235"},
      "executor_id": {"value": "12214-23523-my-executor"}, "status": 1}})");
  expect_round_trip<scheduler::Event>(
      R"({"type": "ERROR", "error": {"message": "Framework is not authorized"}})");
  expect_round_trip<scheduler::Event>(R"({"type": "HEARTBEAT"})");
  expect_round_trip<scheduler::Event>(R"({"type": "INVERSE_OFFERS", "inverse_offers": {
      "inverse_offers": [{"id": {"value": "io1"}, "framework_id": {"value": "f"},
                          "agent_id": {"value": "a"},
                          "unavailability": {"start": {"nanoseconds": 1},
                                             "duration": {"nanoseconds": 3600000000000}}}]}})");
}

TEST(SchedulerWireTest, ErrorsNameTheFieldAndTheProblem) {
  scheduler::Call call;
  auto r = parse_json(
      R"({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"failover_timeout": "soon"}}})",
      &call);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), EINVAL);
  EXPECT_EQ(r.error().message(),
            "invalid corral.v1.scheduler.Call: at 'subscribe.framework_info.failover_timeout': "
            "expected a number, got string \"soon\"");

  r = parse_json(R"({"type": "SUBSCRIB"})", &call);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("at 'type': string \"SUBSCRIB\" is not a known "
                                     "corral.v1.scheduler.Call.Type value"),
            std::string::npos)
      << r.error().message();

  r = parse_json(R"({"type": "ACCEPT", "accept": {"operations": [{"type": "LAUNCH", "launch":
      {"task_infos": [{"resources": [{"name": "cpus", "scalar": {"value": "one"}}]}]}}]}})",
                 &call);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(
                "at 'accept.operations[0].launch.task_infos[0].resources[0].scalar.value'"),
            std::string::npos)
      << r.error().message();
}

TEST(SchedulerWireTest, EnumsByNumberAreAccepted) {
  auto call = parse_ok<scheduler::Call>(R"({"type": 1, "subscribe": {"framework_info":
      {"user": "u", "name": "n", "capabilities": [{"type": 6}]}}})");
  EXPECT_EQ(call.type(), scheduler::Call::SUBSCRIBE);
  EXPECT_EQ(call.subscribe().framework_info().capabilities(0).type(),
            v1::FrameworkInfo::Capability::MULTI_ROLE);
}

// ---- numeric values: the binary encoding depends on them ----------------------------------------

TEST(BinaryWireTest, TaskStateValuesAreMesos) {
  EXPECT_EQ(v1::TASK_STARTING, 0);
  EXPECT_EQ(v1::TASK_RUNNING, 1);
  EXPECT_EQ(v1::TASK_FINISHED, 2);
  EXPECT_EQ(v1::TASK_FAILED, 3);
  EXPECT_EQ(v1::TASK_KILLED, 4);
  EXPECT_EQ(v1::TASK_LOST, 5);
  EXPECT_EQ(v1::TASK_STAGING, 6);
  EXPECT_EQ(v1::TASK_ERROR, 7);
  EXPECT_EQ(v1::TASK_KILLING, 8);
  EXPECT_EQ(v1::TASK_DROPPED, 9);
  EXPECT_EQ(v1::TASK_UNREACHABLE, 10);
  EXPECT_EQ(v1::TASK_GONE, 11);
  EXPECT_EQ(v1::TASK_GONE_BY_OPERATOR, 12);
  EXPECT_EQ(v1::TASK_UNKNOWN, 13);
}

TEST(BinaryWireTest, ReasonsSourcesAndCallTypesAreMesos) {
  EXPECT_EQ(v1::TaskStatus::REASON_CONTAINER_LIMITATION_MEMORY, 8);
  EXPECT_EQ(v1::TaskStatus::REASON_CONTAINER_LIMITATION, 19);
  EXPECT_EQ(v1::TaskStatus::REASON_CONTAINER_LIMITATION_DISK, 20);
  EXPECT_EQ(v1::TaskStatus::REASON_CONTAINER_LAUNCH_FAILED, 21);
  EXPECT_EQ(v1::TaskStatus::REASON_AGENT_DRAINING, 34);
  EXPECT_EQ(v1::TaskStatus::SOURCE_MASTER, 0);
  EXPECT_EQ(v1::TaskStatus::SOURCE_AGENT, 1);
  EXPECT_EQ(v1::TaskStatus::SOURCE_EXECUTOR, 2);
  EXPECT_EQ(v1::Offer::Operation::LAUNCH_GROUP, 6);
  EXPECT_EQ(v1::ContainerInfo::DOCKER, 1);
  EXPECT_EQ(v1::ContainerInfo::MESOS, 2);
  EXPECT_EQ(v1::Image::DOCKER, 2);
  EXPECT_EQ(scheduler::Call::SUPPRESS, 12);
  EXPECT_EQ(scheduler::Call::UPDATE_FRAMEWORK, 17);
  EXPECT_EQ(scheduler::Event::HEARTBEAT, 8);
  EXPECT_EQ(scheduler::Event::UPDATE_OPERATION_STATUS, 11);
  EXPECT_EQ(v1::master::Call::DRAIN_AGENT, 37);
  EXPECT_EQ(v1::master::Call::UPDATE_QUOTA, 36);
  EXPECT_EQ(v1::agent::Call::LAUNCH_NESTED_CONTAINER_SESSION, 17);
  EXPECT_EQ(v1::agent::Call::ATTACH_CONTAINER_INPUT, 18);
}

// Bytes written by hand from Mesos's field numbers: what a Mesos client sends as
// application/x-protobuf decodes here, and what Corral writes is what Mesos expects.
TEST(BinaryWireTest, EncodingUsesMesosFieldNumbers) {
  // TaskStatus{task_id{value:"t"} (1), state: TASK_RUNNING (2), uuid: 0xAB (11)}.
  const std::string status_bytes("\x0a\x03\x0a\x01t\x10\x01\x5a\x01\xab", 10);
  v1::TaskStatus status;
  status.mutable_task_id()->set_value("t");
  status.set_state(v1::TASK_RUNNING);
  status.set_uuid("\xab");
  EXPECT_EQ(to_binary(status), status_bytes);

  // scheduler Call{framework_id{value:"f"} (1), type: DECLINE=4 (2),
  //                decline{offer_ids[{value:"o"}] (1)} (5)}.
  const std::string call_bytes(
      "\x0a\x03\x0a\x01"
      "f"
      "\x10\x04\x2a\x05\x0a\x03\x0a\x01o",
      14);
  scheduler::Call call;
  ASSERT_TRUE(parse_binary(call_bytes, &call).ok());
  EXPECT_EQ(call.type(), scheduler::Call::DECLINE);
  EXPECT_EQ(call.framework_id().value(), "f");
  EXPECT_EQ(call.decline().offer_ids(0).value(), "o");

  // TaskInfo.limits is field 15, a map<string, Value.Scalar>: entry{key:"mem" value{value:1.0}}.
  v1::TaskInfo task;
  (*task.mutable_limits())["mem"].set_value(1.0);
  const std::string limit_bytes("\x7a\x10\x0a\x03mem\x12\x09\x09\x00\x00\x00\x00\x00\x00\xf0\x3f",
                                18);
  EXPECT_EQ(to_binary(task), limit_bytes);
}

// ---- operator API ------------------------------------------------------------------------------

TEST(MasterWireTest, HealthVersionAndStateCalls) {
  auto call = parse_ok<v1::master::Call>(R"({"type": "GET_HEALTH"})");
  EXPECT_EQ(call.type(), v1::master::Call::GET_HEALTH);
  expect_round_trip<v1::master::Response>(R"({"type": "GET_HEALTH",
                                              "get_health": {"healthy": true}})");
  expect_round_trip<v1::master::Response>(R"({"type": "GET_VERSION", "get_version":
      {"version_info": {"version": "0.1.0", "build_time": 1700000000.0, "git_sha": "abc"}}})");
  expect_round_trip<v1::master::Response>(R"({"type": "GET_METRICS", "get_metrics":
      {"metrics": [{"name": "master/uptime_secs", "value": 12.5}]}})");
  expect_round_trip<v1::master::Response>(R"({"type": "GET_STATE", "get_state": {
      "get_tasks": {"tasks": [{"name": "t", "task_id": {"value": "t"},
                               "framework_id": {"value": "f"}, "agent_id": {"value": "a"},
                               "state": "TASK_RUNNING", "status_update_state": "TASK_RUNNING",
                               "status_update_uuid": "AAECAwQFBgcICQoLDA0ODw==",
                               "limits": {"cpus": {"value": 2.0}}}]},
      "get_frameworks": {"frameworks": [{"framework_info": {"user": "u", "name": "n",
                                                            "id": {"value": "f"}},
                                         "active": true, "connected": true, "recovered": false,
                                         "registered_time": {"nanoseconds": 1700000000000000000}}]},
      "get_agents": {"agents": [{"agent_info": {"hostname": "h", "port": 5051,
                                                "id": {"value": "a"}},
                                 "active": true, "version": "0.1.0",
                                 "total_resources": [{"name": "cpus", "type": "SCALAR",
                                                      "scalar": {"value": 8.0}}],
                                 "drain_info": {"state": "DRAINING",
                                                "config": {"mark_gone": true}}}]},
      "get_executors": {}}})");
  expect_round_trip<v1::master::Response>(R"({"type": "GET_ROLES", "get_roles": {"roles": [
      {"name": "web", "weight": 2.0, "frameworks": [{"value": "f"}]}]}})");
}

TEST(MasterWireTest, QuotaCalls) {
  expect_round_trip<v1::master::Call>(R"({"type": "UPDATE_QUOTA", "update_quota": {
      "force": false, "quota_configs": [{"role": "dev",
        "guarantees": {"cpus": {"value": 10.0}, "mem": {"value": 2048.0}},
        "limits": {"cpus": {"value": 20.0}}}]}})");
  expect_round_trip<v1::master::Response>(R"({"type": "GET_QUOTA", "get_quota": {"status": {
      "configs": [{"role": "dev", "limits": {"cpus": {"value": 20.0}}}]}}})");
  auto set = parse_ok<v1::master::Call>(R"({"type": "SET_QUOTA", "set_quota": {"quota_request":
      {"role": "dev", "guarantee": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}]}}})");
  EXPECT_EQ(set.set_quota().quota_request().guarantee(0).scalar().value(), 1.0);
}

TEST(MasterWireTest, ReservationAndAgentCalls) {
  expect_round_trip<v1::master::Call>(R"({"type": "RESERVE_RESOURCES", "reserve_resources": {
      "agent_id": {"value": "a"}, "resources": [{"name": "cpus", "type": "SCALAR",
        "scalar": {"value": 1.0}, "reservations": [{"type": "DYNAMIC", "role": "web",
                                                    "principal": "ops"}]}]}})");
  expect_round_trip<v1::master::Call>(
      R"({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "a"}}})");
  expect_round_trip<v1::master::Call>(
      R"({"type": "TEARDOWN", "teardown": {"framework_id": {"value": "f"}}})");

  // google.protobuf.Duration reads both its object form and its "10s" string form.
  auto drain = parse_ok<v1::master::Call>(R"({"type": "DRAIN_AGENT", "drain_agent": {
      "agent_id": {"value": "a"}, "max_grace_period": "10.5s", "mark_gone": true}})");
  EXPECT_EQ(drain.drain_agent().max_grace_period().seconds(), 10);
  EXPECT_EQ(drain.drain_agent().max_grace_period().nanos(), 500000000);
  expect_round_trip<v1::master::Call>(R"({"type": "DRAIN_AGENT", "drain_agent": {
      "agent_id": {"value": "a"}, "max_grace_period": {"seconds": 10, "nanos": 5}}})");
  v1::master::Call bad;
  auto r = parse_json(R"({"drain_agent": {"max_grace_period": "10 minutes"}})", &bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("at 'drain_agent.max_grace_period': expected a duration"),
            std::string::npos);
}

TEST(MasterWireTest, SubscribeEvents) {
  expect_round_trip<v1::master::Event>(R"({"type": "TASK_UPDATED", "task_updated": {
      "framework_id": {"value": "f"}, "state": "TASK_FINISHED",
      "status": {"task_id": {"value": "t"}, "state": "TASK_FINISHED"}}})");
  expect_round_trip<v1::master::Event>(
      R"({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": "a"}}})");
  expect_round_trip<v1::master::Event>(R"({"type": "SUBSCRIBED", "subscribed": {
      "get_state": {"get_tasks": {}}, "heartbeat_interval_seconds": 15.0}})");
}

TEST(AgentWireTest, ContainerCalls) {
  expect_round_trip<v1::agent::Call>(R"({"type": "GET_CONTAINERS",
      "get_containers": {"show_nested": true, "show_standalone": false}})");
  expect_round_trip<v1::agent::Call>(R"({"type": "LAUNCH_NESTED_CONTAINER_SESSION",
      "launch_nested_container_session": {
        "container_id": {"value": "debug", "parent": {"value": "c1"}},
        "command": {"shell": false, "value": "/bin/sh", "arguments": ["sh", "-i"]},
        "container": {"type": "MESOS", "tty_info": {"window_size": {"rows": 24,
                                                                    "columns": 80}}}}})");
  expect_round_trip<v1::agent::Call>(R"({"type": "ATTACH_CONTAINER_INPUT",
      "attach_container_input": {"type": "PROCESS_IO", "process_io": {
        "type": "DATA", "data": {"type": "STDIN", "data": "bHMK"}}}})");
  expect_round_trip<v1::agent::Call>(R"({"type": "ATTACH_CONTAINER_OUTPUT",
      "attach_container_output": {"container_id": {"value": "c1"}}})");
  expect_round_trip<v1::agent::Response>(R"({"type": "WAIT_CONTAINER", "wait_container": {
      "exit_status": 9, "state": "TASK_FAILED",
      "reason": "REASON_CONTAINER_LIMITATION_MEMORY"}})");
  expect_round_trip<v1::agent::Response>(R"({"type": "GET_CONTAINERS", "get_containers": {
      "containers": [{"framework_id": {"value": "f"}, "container_id": {"value": "c1"},
        "resource_statistics": {"timestamp": 1700000000.5, "cpus_user_time_secs": 1.25,
                                "mem_total_bytes": 134217728, "mem_limit_bytes": 268435456,
                                "cpus_nr_throttled": 3}}]}})");
}

// ---- agent <-> master link (Corral-only) -------------------------------------------------------

TEST(InternalWireTest, ReregisterAndStatusUpdateRoundTrip) {
  expect_round_trip<v1::internal::AgentCall>(R"({
    "agent_id": {"value": "a1"}, "type": "REREGISTER",
    "reregister": {
      "agent_info": {"hostname": "h1", "id": {"value": "a1"},
                     "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}}]},
      "version": "0.1.0", "boot_id": "b7c8",
      "capabilities": [{"type": "MULTI_ROLE"}, {"type": "TASK_RESOURCE_LIMITS"}],
      "tasks": [{"name": "t", "task_id": {"value": "t"}, "framework_id": {"value": "f"},
                 "agent_id": {"value": "a1"}, "state": "TASK_RUNNING"}],
      "frameworks": [{"user": "u", "name": "n", "id": {"value": "f"}}]
    }
  })");
  expect_round_trip<v1::internal::AgentCall>(R"({
    "agent_id": {"value": "a1"}, "type": "STATUS_UPDATE",
    "status_update": {"framework_id": {"value": "f"}, "agent_id": {"value": "a1"},
                      "uuid": "AAECAwQFBgcICQoLDA0ODw==", "timestamp": 1700000000.5,
                      "latest_state": "TASK_FINISHED",
                      "status": {"task_id": {"value": "t"}, "state": "TASK_RUNNING",
                                 "uuid": "AAECAwQFBgcICQoLDA0ODw=="}}
  })");
  expect_round_trip<v1::internal::AgentEvent>(R"({
    "type": "RUN_TASK",
    "run_task": {"framework": {"user": "u", "name": "n", "id": {"value": "f"}},
                 "task": {"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a1"},
                          "command": {"value": "true"},
                          "limits": {"mem": {"value": 64.0}}}}
  })");
  expect_round_trip<v1::internal::AgentEvent>(R"({"type": "KILL_TASK", "kill_task": {
      "framework_id": {"value": "f"}, "task_id": {"value": "t"},
      "kill_policy": {"grace_period": {"nanoseconds": 1000000000}}}})");
  expect_round_trip<v1::internal::AgentEvent>(
      R"({"type": "PING", "ping": {"sequence": 18446744073709551615}})");
  expect_round_trip<v1::internal::AgentEvent>(R"({"type": "ACKNOWLEDGE", "acknowledge": {
      "framework_id": {"value": "f"}, "task_id": {"value": "t"},
      "uuid": "AAECAwQFBgcICQoLDA0ODw=="}})");
}

}  // namespace
}  // namespace corral
