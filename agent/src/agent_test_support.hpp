#pragma once
// Test support for corral-agent's end-to-end tests: an in-test master speaking the agent link
// and the agent binary as a child process driven over its unix socket API.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/http_server.hpp"
#include "corral/common/proto_json.hpp"
#include "corral/common/recordio.hpp"
#include "corral/v1/agent.pb.h"
#include "corral/v1/internal.pb.h"

namespace corral::agent::agent_testing {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
namespace internal = corral::v1::internal;

// Set by the guest group agent-lifecycle (tests/vm/groups/agent-lifecycle.sh): the tests run in
// the qemu guest with systemd and cgroup v2, so the agent requires cgroups (no require_v2 =
// false) and, the guest being emulated (TCG), every wait is five times longer.
inline bool in_guest() {
  const char* v = std::getenv("CORRAL_AGENT_TEST_IN_GUEST");
  return v && std::string(v) == "1";
}
inline std::chrono::seconds patience(std::chrono::seconds s) { return in_guest() ? s * 5 : s; }

// ---- an in-test master ----------------------------------------------------------------------
class FakeMaster {
 public:
  FakeMaster() : work_(io_.get_executor()) {
    http::Router r;
    r.add(http::Verb::post, "/api/v1/agent", [this](std::shared_ptr<http::Exchange> ex) {
      internal::AgentCall call;
      if (!parse_binary(ex->request().body(), &call).ok()) {
        ex->respond(http::error_response(http::Status::bad_request, "bad call"));
        return;
      }
      std::lock_guard lock(mu_);
      calls_.push_back(call);
      if (call.type() == internal::AgentCall::REGISTER ||
          call.type() == internal::AgentCall::REREGISTER) {
        auto head = http::make_response(http::Status::ok, "", "application/x-protobuf");
        head.set("Corral-Agent-Stream-Id", "stream-" + std::to_string(calls_.size()));
        stream_ = ex->start_stream(head);
        internal::AgentEvent ev;
        if (call.type() == internal::AgentCall::REGISTER) {
          ev.set_type(internal::AgentEvent::REGISTERED);
          ev.mutable_registered()->mutable_agent_id()->set_value("agent-from-master");
          ev.mutable_registered()->set_heartbeat_interval_seconds(1);
        } else {
          ev.set_type(internal::AgentEvent::REREGISTERED);
          *ev.mutable_reregistered()->mutable_agent_id() = call.agent_id();
          ev.mutable_reregistered()->set_heartbeat_interval_seconds(1);
        }
        stream_->write_chunk(recordio_encode(to_binary(ev)));
        return;
      }
      if (call.type() == internal::AgentCall::STATUS_UPDATE) {
        const auto& u = call.status_update();
        updates_.push_back(u);
        if (auto_ack_ && stream_) {
          internal::AgentEvent ack;
          ack.set_type(internal::AgentEvent::ACKNOWLEDGE);
          *ack.mutable_acknowledge()->mutable_framework_id() = u.framework_id();
          *ack.mutable_acknowledge()->mutable_task_id() = u.status().task_id();
          ack.mutable_acknowledge()->set_uuid(u.uuid());
          stream_->write_chunk(recordio_encode(to_binary(ack)));
        }
      }
      ex->respond(http::make_response(http::Status::accepted, ""));
    });
    server_ = std::make_unique<http::Server>(io_, std::move(r));
    EXPECT_TRUE(server_->listen("127.0.0.1:0").ok());
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeMaster() {
    {
      std::lock_guard lock(mu_);
      if (stream_) stream_->close();
    }
    boost::asio::post(io_, [this] { server_.reset(); });
    work_.reset();
    io_.stop();
    thread_.join();
  }
  std::string address() const { return "http://127.0.0.1:" + std::to_string(server_->tcp_port()); }
  void send(const internal::AgentEvent& ev) {
    std::lock_guard lock(mu_);
    ASSERT_TRUE(stream_ && stream_->is_open());
    stream_->write_chunk(recordio_encode(to_binary(ev)));
  }
  void drop_stream() {
    std::lock_guard lock(mu_);
    if (stream_) stream_->close();
    stream_.reset();
  }
  bool connected() {
    std::lock_guard lock(mu_);
    return stream_ && stream_->is_open();
  }
  std::vector<internal::AgentCall> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::vector<internal::StatusUpdate> updates() {
    std::lock_guard lock(mu_);
    return updates_;
  }
  // Distinct updates (by uuid) of one task, in arrival order.
  std::vector<v1::TaskState> states_of(const std::string& task) {
    std::lock_guard lock(mu_);
    std::vector<v1::TaskState> out;
    std::set<std::string> seen;
    for (const auto& u : updates_) {
      if (u.status().task_id().value() != task || !seen.insert(u.uuid()).second) continue;
      out.push_back(u.status().state());
    }
    return out;
  }
  void set_auto_ack(bool on) {
    std::lock_guard lock(mu_);
    auto_ack_ = on;
  }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::unique_ptr<http::Server> server_;
  std::thread thread_;
  std::mutex mu_;
  std::shared_ptr<http::StreamWriter> stream_;
  std::vector<internal::AgentCall> calls_;
  std::vector<internal::StatusUpdate> updates_;
  bool auto_ack_ = true;
};

// ---- the agent as a process --------------------------------------------------------------------
class AgentProcess {
 public:
  AgentProcess(fs::path dir, std::string master)
      : dir_(std::move(dir)), master_(std::move(master)) {}
  ~AgentProcess() { stop(); }
  void start() {
    std::vector<std::string> args = {CORRAL_AGENT_PATH,
                                     "--work-dir",
                                     (dir_ / "work").string(),
                                     "--socket",
                                     socket(),
                                     "--listen",
                                     "",
                                     "--policy-dir",
                                     (dir_ / "policy").string(),
                                     "--launcher",
                                     CORRAL_LAUNCHER_PATH,
                                     "--master",
                                     master_};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      int log = ::open((dir_ / "agent.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(log, 1);
      ::dup2(log, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 200 * (in_guest() ? 5 : 1); ++i) {
      auto c = client();
      if (c && c->get("/health")) return;
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "the agent did not come up; its log:\n"
                  << read_file(dir_ / "agent.log").value_or("");
  }
  void kill9() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  bool alive() const { return pid_ > 0 && ::kill(pid_, 0) == 0; }
  std::string socket() const { return (dir_ / "agent.sock").string(); }
  Result<http::HttpClient> client() { return http::HttpClient::create("unix:" + socket()); }

  Result<http::Response> post_json(const std::string& target, const std::string& body) {
    CORRAL_ASSIGN_OR_RETURN(http::HttpClient c, client());
    return c.post(target, body);
  }
  v1::agent::Response call(const std::string& json) {
    auto r = post_json("/api/v1", json);
    EXPECT_TRUE(r.ok());
    v1::agent::Response resp;
    if (r && r->result() == http::Status::ok) {
      EXPECT_TRUE(parse_json(r->body(), &resp).ok()) << r->body();
    }
    return resp;
  }
  // The task's newest state as GET_TASKS shows it (any list).
  std::optional<v1::Task> task(const std::string& id) {
    auto r = call(R"({"type":"GET_TASKS"})");
    const auto& t = r.get_tasks();
    for (const auto* list :
         {&t.pending_tasks(), &t.launched_tasks(), &t.terminated_tasks(), &t.completed_tasks()}) {
      for (const auto& task : *list) {
        if (task.task_id().value() == id) return task;
      }
    }
    return std::nullopt;
  }
  std::optional<v1::Task> wait_state(const std::string& id, std::set<v1::TaskState> states,
                                     std::chrono::seconds timeout = 60s) {
    auto deadline = std::chrono::steady_clock::now() + patience(timeout);
    while (std::chrono::steady_clock::now() < deadline) {
      auto t = task(id);
      if (t && states.count(t->state())) return t;
      std::this_thread::sleep_for(100ms);
    }
    return task(id);
  }
  Result<http::Response> launch(const std::string& task_json,
                                const std::string& framework = "local") {
    return post_json("/corral/v1/tasks",
                     R"({"framework_id":")" + framework + R"(","task":)" + task_json + "}");
  }
  std::string log() { return read_file(dir_ / "agent.log").value_or(""); }
  std::vector<std::string> extra_args;  // appended to the command line (e.g. --config FILE)

 private:
  fs::path dir_;
  std::string master_;
  pid_t pid_ = -1;
};

}  // namespace corral::agent::agent_testing
