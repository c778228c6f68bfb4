#include "corral/cli/agent_cmd.hpp"

#include <unistd.h>

#include <cstdio>
#include <thread>

#include "corral/common/config.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/v1/agent.pb.h"

namespace corral::cli {
namespace {

struct AgentOptions {
  std::string socket = "/run/corral/agent.sock";
  bool json = false;
  std::string name, task_id, cpus, mem, user;
  std::vector<std::string> command;
  std::string container;
  bool follow = false, stderr_log = false;
  std::string deadline;
  bool no_kill = false, wait = false;
  int64_t tail = -65536;
};

int fail(const std::string& m) {
  std::fprintf(stderr, "corral: %s\n", m.c_str());
  return 1;
}

Result<http::HttpClient> connect(const AgentOptions& o) {
  auto c = http::HttpClient::create("unix:" + o.socket);
  if (!c) return c;
  auto h = c->get("/health");
  if (!h) {
    return Error(h.error().code(),
                 "cannot reach the agent at " + o.socket + ": " + h.error().message() +
                     " (is corral-agent running? `systemctl status corral-agent`; are you root "
                     "or in group corral? --socket names another socket)");
  }
  return c;
}

Result<std::string> error_of(const http::Response& r) {
  auto j = nlohmann::json::parse(r.body(), nullptr, false);
  if (j.is_object() && j.contains("error")) return j["error"].get<std::string>();
  return std::string(r.body());
}

int tasks(const AgentOptions& o) {
  auto c = connect(o);
  if (!c) return fail(c.error().message());
  auto r = c->post("/api/v1", R"({"type":"GET_TASKS"})");
  if (!r) return fail(r.error().message());
  if (o.json) {
    std::printf("%s\n", r->body().c_str());
    return 0;
  }
  v1::agent::Response resp;
  if (auto p = parse_json(r->body(), &resp); !p.ok()) return fail(p.error().message());
  std::printf("%-24s %-12s %-16s %-34s %s\n", "TASK", "FRAMEWORK", "STATE", "CONTAINER", "MESSAGE");
  const auto& t = resp.get_tasks();
  for (const auto* list :
       {&t.pending_tasks(), &t.launched_tasks(), &t.terminated_tasks(), &t.completed_tasks()}) {
    for (const auto& task : *list) {
      std::string container, message;
      for (const auto& s : task.statuses()) {
        if (s.has_container_status()) container = s.container_status().container_id().value();
        if (s.has_message()) message = s.message();
      }
      std::printf("%-24s %-12s %-16s %-34s %s\n", task.task_id().value().c_str(),
                  task.framework_id().value().c_str(), v1::TaskState_Name(task.state()).c_str(),
                  container.c_str(), message.substr(0, 80).c_str());
    }
  }
  return 0;
}

int launch(const AgentOptions& o) {
  if (o.command.empty()) return fail("no command; usage: corral agent launch [options] -- COMMAND");
  nlohmann::json task;
  std::string id = o.task_id.empty()
                       ? (o.name.empty() ? "task" : o.name) + "." + std::to_string(::getpid()) +
                             "." + std::to_string(time(nullptr))
                       : o.task_id;
  task["name"] = o.name.empty() ? id : o.name;
  task["task_id"] = {{"value", id}};
  std::string cmd;
  for (const auto& a : o.command) cmd += (cmd.empty() ? "" : " ") + a;
  task["command"] = {{"value", cmd}};
  if (!o.user.empty()) task["command"]["user"] = o.user;
  nlohmann::json res = nlohmann::json::array();
  if (!o.cpus.empty()) {
    try {
      res.push_back(
          {{"name", "cpus"}, {"type", "SCALAR"}, {"scalar", {{"value", std::stod(o.cpus)}}}});
    } catch (...) {
      return fail("--cpus must be a number, e.g. 0.5");
    }
  }
  if (!o.mem.empty()) {
    auto b = parse_bytes(o.mem);
    if (!b) return fail("--mem: " + b.error().message());
    res.push_back({{"name", "mem"},
                   {"type", "SCALAR"},
                   {"scalar", {{"value", static_cast<double>(*b) / (1 << 20)}}}});
  }
  if (!res.empty()) task["resources"] = res;
  auto c = connect(o);
  if (!c) return fail(c.error().message());
  auto r =
      c->post("/corral/v1/tasks", nlohmann::json{{"framework_id", "local"}, {"task", task}}.dump());
  if (!r) return fail(r.error().message());
  if (r->result() != http::Status::accepted)
    return fail("the agent refused the task: " + *error_of(*r));
  auto j = nlohmann::json::parse(r->body(), nullptr, false);
  if (o.json) {
    std::printf("%s\n", r->body().c_str());
  } else {
    std::printf("task %s: container %s\n", id.c_str(), j.value("container_id", "").c_str());
  }
  return 0;
}

int kill_container(const AgentOptions& o) {
  auto c = connect(o);
  if (!c) return fail(c.error().message());
  auto r = c->post("/api/v1",
                   nlohmann::json{{"type", "KILL_CONTAINER"},
                                  {"kill_container",
                                   {{"container_id", {{"value", o.container}}}, {"signal", 15}}}}
                       .dump());
  if (!r) return fail(r.error().message());
  if (r->result() != http::Status::ok) return fail(*error_of(*r));
  std::printf("killing %s (SIGTERM, then SIGKILL after the grace period)\n", o.container.c_str());
  return 0;
}

int logs(const AgentOptions& o) {
  auto c = connect(o);
  if (!c) return fail(c.error().message());
  std::string target = "/corral/v1/logs/" + o.container + (o.stderr_log ? "/stderr" : "/stdout") +
                       "?offset=" + std::to_string(o.tail) + (o.follow ? "&follow=1" : "");
  http::StreamCallbacks cb;
  int status = 0;
  cb.on_head = [&](const http::Response& h) {
    status = h.result_int();
    return true;
  };
  std::string err;
  cb.on_data = [&](std::string_view d) {
    if (status != 200) {
      err.append(d);
      return true;
    }
    std::fwrite(d.data(), 1, d.size(), stdout);
    std::fflush(stdout);
    return true;
  };
  auto end = c->stream(http::make_request(http::Verb::get, target), cb);
  if (status != 200) return fail(err.empty() ? "HTTP " + std::to_string(status) : err);
  if (!end.ok()) return fail(end.error().message());
  return 0;
}

int drain(const AgentOptions& o) {
  auto c = connect(o);
  if (!c) return fail(c.error().message());
  nlohmann::json body = {{"kill", !o.no_kill}};
  if (!o.deadline.empty()) {
    auto d = parse_duration(o.deadline);
    if (!d) return fail("--deadline: " + d.error().message());
    body["deadline_seconds"] = static_cast<double>(d->count()) / 1000.0;
  }
  auto r = c->post("/corral/v1/drain", body.dump());
  if (!r) return fail(r.error().message());
  if (r->result() != http::Status::accepted) return fail(*error_of(*r));
  std::printf("draining: the agent accepts no new tasks%s\n",
              o.deadline.empty()
                  ? ""
                  : (o.no_kill ? "" : ("; tasks still running after " + o.deadline + " are killed"))
                        .c_str());
  int last = -1;
  for (;;) {
    auto p = c->get("/corral/v1/drain");
    if (!p) return fail(p.error().message());
    auto j = nlohmann::json::parse(p->body(), nullptr, false);
    int running = j.value("running_tasks", 0);
    if (running != last) {
      std::printf("%d task(s) still running\n", running);
      std::fflush(stdout);
      last = running;
    }
    if (running == 0) {
      std::printf("drained\n");
      return 0;
    }
    if (!o.wait) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

}  // namespace

std::function<std::optional<int>()> add_agent_commands(CLI::App& app) {
  auto o = std::make_shared<AgentOptions>();
  auto* agent =
      app.add_subcommand("agent", "work with the agent on this machine (unix socket API)");
  agent->require_subcommand(1);
  agent->add_option("--socket", o->socket, "the agent's socket (default /run/corral/agent.sock)");
  auto* t = agent->add_subcommand("tasks", "list the agent's tasks");
  t->add_flag("--json", o->json, "print the GET_TASKS answer as JSON");
  auto* l = agent->add_subcommand("launch", "run a local task (framework \"local\") on this agent");
  l->add_option("--name", o->name, "task name");
  l->add_option("--id", o->task_id, "task id (default: NAME.PID.TIME)");
  l->add_option("--cpus", o->cpus, "CPUs (cpu.max), e.g. 0.5");
  l->add_option("--mem", o->mem, "memory (memory.max), e.g. 256MiB");
  l->add_option("--user", o->user, "user to run as (must be allowed by the policy)");
  l->add_flag("--json", o->json, "print the agent's answer as JSON");
  l->add_option("command", o->command, "the command (run by /bin/sh -c), after --")->required();
  auto* k = agent->add_subcommand("kill", "kill a task's container (SIGTERM, then SIGKILL)");
  k->add_option("container", o->container, "container id (corral agent tasks)")->required();
  auto* g = agent->add_subcommand("logs", "print a task's stdout (or stderr)");
  g->add_option("container", o->container, "container id")->required();
  g->add_flag("-f,--follow", o->follow, "keep printing new output until the task ends");
  g->add_flag("--stderr", o->stderr_log, "stderr instead of stdout");
  g->add_option("--tail", o->tail, "bytes from the end (negative) or offset from the start");
  auto* d = agent->add_subcommand("drain", "stop accepting tasks; wait for or kill running ones");
  d->add_option("--deadline", o->deadline, "kill what still runs after this long, e.g. 5m");
  d->add_flag("--no-kill", o->no_kill, "never kill; just wait");
  d->add_flag("--wait", o->wait, "wait until no task runs, printing progress");
  return [o, t, l, k, g, d]() -> std::optional<int> {
    if (t->parsed()) return tasks(*o);
    if (l->parsed()) return launch(*o);
    if (k->parsed()) return kill_container(*o);
    if (g->parsed()) return logs(*o);
    if (d->parsed()) return drain(*o);
    return std::nullopt;
  };
}

}  // namespace corral::cli
