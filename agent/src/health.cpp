// Health checks run by the agent (Mesos HealthCheck: COMMAND, HTTP, TCP). Each check runs on the
// worker pool with its timeout; results come back to the loop. A change of health is a
// TASK_RUNNING update with `healthy` set; `consecutive_failures` failures in a row (after the
// grace period) kill the task, which then ends TASK_FAILED with
// REASON_TASK_HEALTH_CHECK_STATUS_UPDATED.
//
// HTTP and TCP checks connect to 127.0.0.1:<port> in the task's network namespace (the host's
// for tasks with ports; otherwise the thread doing the check joins the task's namespace with
// setns, which only affects that thread). COMMAND checks run `/bin/sh -c <command>` inside the
// task's mount, network, uts, ipc and pid namespaces as the task's user (through nsenter).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <thread>

#include "agent_internal.hpp"
#include "corral/common/fd.hpp"
#include "corral/common/log.hpp"

extern char** environ;

namespace corral::agent {
namespace asio = boost::asio;

namespace {

struct CheckTarget {
  pid_t task_init = -1;  // PID 1 of the task's namespaces (-1: unknown)
  bool host_network = false;
  std::string user;
};

// PID 1 of the task: the supervisor's (launcher's) only child.
pid_t task_init_of(pid_t launcher) {
  auto children = read_file(
      "/proc/" + std::to_string(launcher) + "/task/" + std::to_string(launcher) + "/children",
      4096);
  if (!children) return -1;
  long v = std::strtol(children->c_str(), nullptr, 10);
  return v > 0 ? static_cast<pid_t>(v) : -1;
}

// Runs fn in a fresh thread that joined the task's network namespace (unless host network).
template <typename Fn>
Result<void> in_task_net(const CheckTarget& target, Fn fn) {
  if (target.host_network) return fn();
  if (target.task_init <= 0) return Error(ESRCH, "the task's process is gone");
  Result<void> out;
  std::thread th([&] {
    UniqueFd ns(::open(("/proc/" + std::to_string(target.task_init) + "/ns/net").c_str(),
                       O_RDONLY | O_CLOEXEC));
    if (!ns || ::setns(ns.get(), CLONE_NEWNET) != 0) {
      out = Error::from_errno("joining the task's network namespace");
      return;
    }
    out = fn();
  });
  th.join();
  return out;
}

Result<UniqueFd> connect_local(uint32_t port, std::chrono::milliseconds timeout) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s) return Error::from_errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int r = ::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  if (r != 0 && errno != EINPROGRESS)
    return Error::from_errno("connect 127.0.0.1:" + std::to_string(port));
  pollfd p{s.get(), POLLOUT, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
    return Error(ETIMEDOUT, "connect 127.0.0.1:" + std::to_string(port) + ": timed out");
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0)
    return Error(err, "connect 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(err));
  return s;
}

Result<void> http_check(const v1::HealthCheck::HTTPCheckInfo& h,
                        std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  CORRAL_ASSIGN_OR_RETURN(UniqueFd s, connect_local(h.port(), timeout));
  std::string path = h.path().empty() ? "/" : h.path();
  if (path.front() != '/' || path.find_first_of("\r\n ") != std::string::npos)
    return Error(EINVAL, "health check path \"" + path + "\" is invalid");
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(h.port()) +
                    "\r\nUser-Agent: corral-agent health check\r\nConnection: close\r\n\r\n";
  if (::send(s.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
    return Error::from_errno("sending the health check request");
  std::string head;
  while (head.find("\r\n") == std::string::npos && head.size() < 4096) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{s.get(), POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      return Error(ETIMEDOUT, "no HTTP answer within the timeout");
    char buf[1024];
    ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
    if (n <= 0) return Error(ECONNRESET, "connection closed before an HTTP status line");
    head.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  if (std::sscanf(head.c_str(), "HTTP/%*d.%*d %d", &status) != 1)
    return Error(EPROTO, "not an HTTP answer");
  bool ok = false;
  if (h.statuses_size() > 0) {
    for (auto st : h.statuses()) ok = ok || static_cast<int>(st) == status;
  } else {
    ok = status >= 200 && status < 400;
  }
  if (!ok) return Error(EIO, "HTTP status " + std::to_string(status));
  return {};
}

Result<void> command_check(const v1::CommandInfo& cmd, const CheckTarget& target,
                           std::chrono::milliseconds timeout) {
  if (target.task_init <= 0) return Error(ESRCH, "the task's process is gone");
  std::vector<std::string> args = {"nsenter", "--target", std::to_string(target.task_init),
                                   "--mount", "--net",    "--uts",
                                   "--ipc",   "--pid",    "--wdns=/mnt/sandbox"};
  if (!target.user.empty()) {
    uint32_t uid = 0, gid = 0;
    if (target.user.find_first_not_of("0123456789") == std::string::npos) {
      uid = gid = static_cast<uint32_t>(std::stoul(target.user));
    } else if (struct passwd* pw = ::getpwnam(target.user.c_str())) {
      uid = pw->pw_uid;
      gid = pw->pw_gid;
    }
    args.push_back("--setuid=" + std::to_string(uid));
    args.push_back("--setgid=" + std::to_string(gid));
  }
  args.push_back("--");
  if (!cmd.has_shell() || cmd.shell()) {
    args.insert(args.end(), {"/bin/sh", "-c", cmd.value()});
  } else {
    args.push_back(cmd.value());
    for (int i = 1; i < cmd.arguments_size(); ++i) args.push_back(cmd.arguments(i));
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, "nsenter", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return Error(rc, "starting nsenter for the command health check");
  auto pidfd = Pidfd::open(pid);
  bool done = pidfd && pidfd->wait_exit(timeout).value_or(false);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return Error(ETIMEDOUT, "the health check command did not finish within the timeout");
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error(EIO, "the health check command " +
                          std::string(WIFEXITED(status)
                                          ? "exited with " + std::to_string(WEXITSTATUS(status))
                                          : "was killed"));
  }
  return {};
}

}  // namespace

void AgentImpl::start_health_checks(TaskRecord& t) {
  if (!t.info.has_health_check() || t.containerizer != "native") return;
  const auto& hc = t.info.health_check();
  t.health_started = now_seconds();
  t.health_timer = std::make_shared<asio::steady_timer>(io_);
  auto delay = std::chrono::milliseconds(static_cast<int64_t>(hc.delay_seconds() * 1000));
  std::string id = t.container_id;
  auto run = std::make_shared<std::function<void()>>();
  std::weak_ptr<asio::steady_timer> weak = t.health_timer;
  *run = [this, id, run, weak] {
    auto* task = find(id);
    auto timer = weak.lock();
    if (!task || !timer || is_terminal(task->state) || stopped_) return;
    const auto hc = task->info.health_check();
    CheckTarget target;
    pid_t launcher = task->checkpoint.is_object() && task->checkpoint.contains("pid")
                         ? task->checkpoint["pid"].get<pid_t>()
                         : -1;
    target.task_init = launcher > 0 ? task_init_of(launcher) : -1;
    bool has_ports = false;
    for (const auto& r : task->info.resources())
      has_ports = has_ports || (r.name() == "ports" && r.ranges().range_size() > 0);
    target.host_network = has_ports;
    target.user = task->user;
    auto timeout = std::chrono::milliseconds(static_cast<int64_t>(hc.timeout_seconds() * 1000));
    ++metrics_.health_checks;
    asio::post(pool_, [this, id, hc, target, timeout, run, weak] {
      Result<void> r;
      switch (hc.type()) {
        case v1::HealthCheck::HTTP:
          r = in_task_net(target, [&] { return http_check(hc.http(), timeout); });
          break;
        case v1::HealthCheck::TCP:
          r = in_task_net(target, [&]() -> Result<void> {
            CORRAL_ASSIGN_OR_RETURN(UniqueFd s, connect_local(hc.tcp().port(), timeout));
            return {};
          });
          break;
        case v1::HealthCheck::COMMAND:
          r = command_check(hc.command(), target, timeout);
          break;
        default:
          r = Error(EINVAL, "health check type must be COMMAND, HTTP or TCP");
      }
      asio::post(io_, [this, id, r, run, weak] {
        auto* task = find(id);
        auto timer = weak.lock();
        if (!task || !timer || is_terminal(task->state)) return;
        const auto& hc = task->info.health_check();
        bool in_grace =
            now_seconds() - task->health_started < hc.delay_seconds() + hc.grace_period_seconds();
        if (r.ok()) {
          task->health_failures = 0;
          if (!task->health_known || !task->healthy) {
            task->health_known = true;
            task->healthy = true;
            update(*task, v1::TASK_RUNNING, v1::TaskStatus::SOURCE_EXECUTOR,
                   v1::TaskStatus::REASON_TASK_HEALTH_CHECK_STATUS_UPDATED, "", true);
          }
        } else {
          ++metrics_.health_check_failures;
          task->health_message = r.error().message();
          if (!in_grace || task->health_known) {
            ++task->health_failures;
            if (!task->health_known || task->healthy) {
              task->health_known = true;
              task->healthy = false;
              update(*task, v1::TASK_RUNNING, v1::TaskStatus::SOURCE_EXECUTOR,
                     v1::TaskStatus::REASON_TASK_HEALTH_CHECK_STATUS_UPDATED,
                     "health check failed: " + r.error().message(), false);
            }
            if (task->health_failures >= static_cast<int>(hc.consecutive_failures()) &&
                !task->health_killed) {
              task->health_killed = true;
              log::warning("task " + task->info.task_id().value() + " failed " +
                               std::to_string(task->health_failures) +
                               " health checks in a row: killing it",
                           {{"CORRAL_TASK_ID", task->info.task_id().value()},
                            {"CORRAL_FRAMEWORK_ID", task->framework.id().value()}});
              kill(*task, std::nullopt);
              return;
            }
          }
        }
        timer->expires_after(
            std::chrono::milliseconds(static_cast<int64_t>(hc.interval_seconds() * 1000)));
        timer->async_wait([run](boost::system::error_code ec) {
          if (!ec) (*run)();
        });
      });
    });
  };
  t.health_timer->expires_after(delay);
  t.health_timer->async_wait([run](boost::system::error_code ec) {
    if (!ec) (*run)();
  });
}

void AgentImpl::stop_health_checks(TaskRecord& t) {
  if (t.health_timer) {
    t.health_timer->cancel();
    t.health_timer.reset();
  }
}

}  // namespace corral::agent
