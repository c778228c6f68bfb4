// The Docker containerizer. Threads:
//   callers (the agent's workers)  blocking Engine calls: pull, create, start, stats, remove
//   one event loop thread          per container one wait request and one logs stream on an
//                                  AsyncHttpClient, timers (log drain, orphans, dockerd monitor)
// Every piece of per-container state lives on the loop thread; callers reach it through
// on_loop(), which runs inline when already on that thread (so a termination callback may call
// back into the containerizer).
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>
#include <utility>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "corral/common/fd.hpp"
#include "corral/common/http_client.hpp"
#include "corral/common/log.hpp"
#include "corral/docker/docker_containerizer.hpp"

namespace corral::docker {

namespace asio = boost::asio;
namespace v1 = corral::v1;
using containerizer::Launched;
using containerizer::LaunchRequest;
using containerizer::Recovered;
using containerizer::Termination;
using containerizer::TerminationCallback;
using std::chrono::milliseconds;

namespace {

bool daemon_gone(int code) {
  return code == ENOENT || code == ECONNREFUSED || code == ECONNRESET || code == EPIPE ||
         code == ENOTCONN || code == ETIMEDOUT || code == EPROTO;
}

std::string short_id(const std::string& id) { return id.substr(0, 12); }

std::string api(const std::string& target) { return "/v" + std::string(kApiVersion) + target; }

uint64_t file_size_or_zero(const std::filesystem::path& p) {
  std::error_code ec;
  auto s = std::filesystem::file_size(p, ec);
  return ec ? 0 : s;
}

struct Watched {
  std::string container_id;
  std::string docker_id;
  std::string name;
  std::filesystem::path sandbox;
  std::optional<uint64_t> memory_limit;
  std::optional<double> cpus;
  milliseconds kill_grace{10'000};

  UniqueFd out_fd, err_fd;
  uint64_t out_written = 0, err_written = 0;  // bytes already in <sandbox>/stdout, stderr
  uint64_t out_seen = 0, err_seen = 0;        // bytes seen by the current logs stream
  std::unique_ptr<LogDemuxer> demux;
  std::shared_ptr<http::ClientStream> logs_stream, wait_stream;
  std::unique_ptr<asio::steady_timer> drain_timer;
  std::string pending_out, pending_err;  // demultiplexed, not yet written
  uint64_t bytes_received = 0;           // from the logs stream, for the drain timer
  uint64_t generation = 0;  // bumped on every (re)watch; stale callbacks compare and return
  bool logs_done = false;
  std::optional<Termination> termination;
  bool stop_requested = false;
  bool daemon_interrupted = false;  // dockerd went away at least once while it ran
  bool disconnected = false;        // waiting for dockerd to come back
  bool reported = false;
};

class Impl final : public DockerContainerizer {
 public:
  Impl(DockerOptions options, Engine engine, http::Endpoint endpoint)
      : options_(std::move(options)),
        engine_(std::move(engine)),
        work_(asio::make_work_guard(io_)),
        client_(io_, endpoint, stream_options(options_.request_timeout)),
        wait_client_(io_, endpoint, wait_options()),
        long_client_(io_, endpoint, long_options()),
        monitor_timer_(io_),
        orphan_timer_(io_) {
    thread_ = std::thread([this] {
      // A handler that throws (a third-party exception Corral did not foresee) is logged; the
      // loop, and every other container it follows, goes on.
      while (true) {
        try {
          io_.run();
          return;
        } catch (const std::exception& e) {
          log::error(std::string("Docker containerizer: unexpected exception on its event loop: ") +
                     e.what());
        }
      }
    });
  }

  ~Impl() override {
    // The agent may die (or be replaced) while containers run: stop following them, never
    // stop them.
    on_loop([this] {
      stopping_ = true;
      for (auto& [id, w] : watched_) cancel_streams(*w);
      monitor_timer_.cancel();
      orphan_timer_.cancel();
    });
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::string name() const override { return "docker"; }

  void set_termination_callback(TerminationCallback callback) override {
    std::lock_guard lock(callback_mutex_);
    callback_ = std::move(callback);
  }

  DaemonCondition daemon_condition() const override {
    std::lock_guard lock(condition_mutex_);
    return condition_;
  }

  std::size_t tracked() const override {
    return const_cast<Impl*>(this)->on_loop([this] { return watched_.size(); });
  }

  Result<Launched> launch(const LaunchRequest& request) override;
  Result<void> kill(const std::string& container_id, milliseconds grace) override;
  Result<v1::ResourceStatistics> usage(const std::string& container_id) override;
  Result<void> destroy(const std::string& container_id) override;
  Result<std::vector<Recovered>> recover(
      const std::vector<std::pair<std::string, nlohmann::json>>& checkpoints) override;

 private:
  static http::ClientOptions stream_options(milliseconds request_timeout) {
    http::ClientOptions o;
    o.request_timeout = request_timeout;
    o.max_idle_connections = 8;
    return o;
  }
  // dockerd answers POST /wait (head included) only when the container stops: no deadline.
  static http::ClientOptions wait_options() {
    http::ClientOptions o;
    o.request_timeout = std::chrono::hours(24 * 365);
    return o;
  }
  static http::ClientOptions long_options() {
    http::ClientOptions o;
    o.request_timeout = std::chrono::hours(2);  // stop?t=<grace> returns after the grace
    return o;
  }

  // Runs `f` on the loop thread and returns its result.
  template <typename F>
  auto on_loop(F f) -> decltype(f()) {
    using R = decltype(f());
    if (io_.get_executor().running_in_this_thread()) return f();
    std::packaged_task<R()> task(std::move(f));
    auto future = task.get_future();
    asio::post(io_, [&task] { task(); });
    return future.get();
  }

  void set_condition(bool reachable, const std::string& message) {
    std::lock_guard lock(condition_mutex_);
    if (condition_.reachable == reachable && (reachable || !condition_.message.empty())) return;
    condition_.reachable = reachable;
    condition_.message = message;
    condition_.since = std::chrono::system_clock::now();
    if (reachable) {
      log::notice("dockerd answers again", {{"CORRAL_DOCKER", options_.endpoint}});
    } else {
      log::error(message, {{"CORRAL_DOCKER", options_.endpoint}});
    }
  }

  void cancel_streams(Watched& w) {
    ++w.generation;
    if (w.logs_stream) w.logs_stream->cancel();
    if (w.wait_stream) w.wait_stream->cancel();
    w.logs_stream.reset();
    w.wait_stream.reset();
    w.drain_timer.reset();  // cancels a pending drain wait
  }

  std::shared_ptr<Watched> find(const std::string& container_id) {
    auto it = watched_.find(container_id);
    return it == watched_.end() ? nullptr : it->second;
  }

  // ---- on the loop thread

  void write_output(Watched& w, int stream, std::string_view data) {
    uint64_t& seen = stream == 2 ? w.err_seen : w.out_seen;
    uint64_t& written = stream == 2 ? w.err_written : w.out_written;
    const uint64_t start = seen;
    seen += data.size();
    if (seen <= written) return;  // already in the file (a re-followed stream)
    if (start < written) data.remove_prefix(written - start);
    UniqueFd& fd = stream == 2 ? w.err_fd : w.out_fd;
    if (!fd.valid()) return;
    while (!data.empty()) {
      ssize_t n = ::write(fd.get(), data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        log::warning(
            "cannot write the task's output into its sandbox: " + std::string(std::strerror(errno)),
            {{"CORRAL_CONTAINER_ID", w.container_id}});
        fd.reset();
        return;
      }
      data.remove_prefix(static_cast<std::size_t>(n));
      written += static_cast<uint64_t>(n);
    }
  }

  void watch(const std::shared_ptr<Watched>& w) {
    cancel_streams(*w);
    const uint64_t gen = w->generation;
    w->logs_done = false;
    w->out_seen = w->err_seen = 0;
    auto open_output = [&](const char* file, UniqueFd* fd) {
      if (fd->valid()) return;
      int raw =
          ::open((w->sandbox / file).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
      if (raw < 0) {
        log::warning("cannot open " + (w->sandbox / file).string() +
                         " for the task's output: " + std::strerror(errno),
                     {{"CORRAL_CONTAINER_ID", w->container_id}});
      }
      fd->reset(raw);
    };
    open_output("stdout", &w->out_fd);
    open_output("stderr", &w->err_fd);
    std::weak_ptr<Watched> weak = w;
    follow_logs(w, /*follow=*/true);

    // Exit.
    auto wait_status = std::make_shared<int>(0);
    auto wait_body = std::make_shared<std::string>();
    http::StreamCallbacks wait;
    wait.on_head = [wait_status](const http::Response& head) {
      *wait_status = static_cast<int>(head.result_int());
      return true;
    };
    wait.on_data = [wait_body](std::string_view data) {
      if (wait_body->size() < 64 * 1024) wait_body->append(data);
      return true;
    };
    wait.on_end = [this, weak, gen, wait_status, wait_body](Result<void> end) {
      auto s = weak.lock();
      if (!s || s->generation != gen || stopping_) return;
      if (*wait_status == 404) {
        report(s, lost(s->name + " was removed from dockerd behind Corral's back"));
        return;
      }
      if (!end.ok() && end.error().code() == ECANCELED) return;
      if (!end.ok() && end.error().code() == EMSGSIZE && *wait_status == 0) {
        // An error answer with a Content-Length (Boost 1.74's Beast cannot stream those):
        // the container's state says what happened.
        inspect_and_finish(s);
        return;
      }
      if (!end.ok() || *wait_status == 0) {
        daemon_lost(s, end.ok() ? Error(ECONNRESET, "connection closed") : end.error());
        return;
      }
      if (*wait_status != 200) {
        http::Response r;
        r.result(static_cast<unsigned>(*wait_status));
        r.body() = *wait_body;
        report(s, lost(engine_.api_error(r, "waiting for " + s->name).message()));
        return;
      }
      // The body is {"StatusCode": N, "Error": ...}; the final state (OOMKilled) comes from
      // inspect.
      auto j = nlohmann::json::parse(*wait_body, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("StatusCode")) {
        log::warning("dockerd's answer to wait is malformed: \"" + wait_body->substr(0, 80) +
                         "\"; reading the container's state instead",
                     {{"CORRAL_CONTAINER_ID", s->container_id}});
      }
      inspect_and_finish(s);
    };
    w->wait_stream = wait_client_.stream(
        http::make_request(http::Verb::post,
                           api("/containers/" + w->docker_id + "/wait?condition=not-running")),
        std::move(wait));
  }

  void inspect_and_finish(const std::shared_ptr<Watched>& w) {
    const uint64_t gen = w->generation;
    std::weak_ptr<Watched> weak = w;
    client_.request(
        http::make_request(http::Verb::get, api("/containers/" + w->docker_id + "/json")),
        [this, weak, gen](Result<http::Response> r) {
          auto s = weak.lock();
          if (!s || s->generation != gen || stopping_) return;
          if (!r.ok()) {
            daemon_lost(s, r.error());
            return;
          }
          if (r->result_int() == 404) {
            report(s, lost(s->name + " was removed from dockerd before its exit was read"));
            return;
          }
          auto j = nlohmann::json::parse(r->body(), nullptr, false);
          if (r->result_int() != 200 || j.is_discarded() || !j.is_object() ||
              !j.contains("State") || !j["State"].is_object()) {
            report(s,
                   lost("dockerd's answer to inspecting " + s->name +
                        " after its exit is malformed (status " + std::to_string(r->result_int()) +
                        "): \"" + r->body().substr(0, 80) + "\""));
            return;
          }
          const nlohmann::json& state = j["State"];
          if (state.contains("Running") && state["Running"].is_boolean() &&
              state["Running"].get<bool>()) {
            // wait returned while it still runs (dockerd restarting): follow it again.
            watch(s);
            return;
          }
          Termination t = termination_from_state(state, s->stop_requested, s->memory_limit);
          if (s->daemon_interrupted && !s->stop_requested && !t.oom_killed && t.code != 0) {
            t.reason = v1::TaskStatus::REASON_EXECUTOR_TERMINATED;
            t.message +=
                "; dockerd stopped or restarted while the task ran (without "
                "live-restore, dockerd stops its containers when it stops)";
          }
          s->termination = t;
          maybe_finish(s);
        });
  }

  // Streams the container's output into <sandbox>/stdout and stderr. A follow stream that ends
  // cleanly (the container stopped) is followed by one read without follow: dockerd 20.10 (the
  // docker.io of Debian 12) can end a follow stream before the last lines of a container that
  // just exited have been read from its log file, and those lines would be lost. The second read
  // starts at the beginning; write_output() skips what is already in the files.
  void follow_logs(const std::shared_ptr<Watched>& w, bool follow) {
    const uint64_t gen = w->generation;
    std::weak_ptr<Watched> weak = w;
    w->out_seen = w->err_seen = 0;
    // Frames (one per line of output) are gathered and written once per read from dockerd.
    w->demux = std::make_unique<LogDemuxer>([weak](int stream, std::string_view data) {
      if (auto s = weak.lock()) (stream == 2 ? s->pending_err : s->pending_out).append(data);
    });
    // Output.
    auto logs_status = std::make_shared<int>(0);
    http::StreamCallbacks logs;
    logs.on_head = [logs_status](const http::Response& head) {
      *logs_status = static_cast<int>(head.result_int());
      return head.result_int() == 200;
    };
    logs.on_data = [this, weak, gen](std::string_view data) {
      auto s = weak.lock();
      if (!s || s->generation != gen) return false;
      auto fed = s->demux->feed(data);
      s->bytes_received += data.size();
      if (!s->pending_out.empty()) write_output(*s, 1, std::exchange(s->pending_out, {}));
      if (!s->pending_err.empty()) write_output(*s, 2, std::exchange(s->pending_err, {}));
      if (!fed.ok()) {
        log::warning("the task's output stream from dockerd is malformed; output stops here: " +
                         fed.error().message(),
                     {{"CORRAL_CONTAINER_ID", s->container_id}});
        return false;
      }
      return true;
    };
    logs.on_end = [this, weak, gen, logs_status, follow](Result<void> end) {
      auto s = weak.lock();
      if (!s || s->generation != gen) return;
      if (!end.ok() && end.error().code() != ECANCELED && *logs_status == 200 &&
          daemon_gone(end.error().code()) && !s->termination) {
        // dockerd went away mid-stream; the wait request says so too and re-follows.
        return;
      }
      if (follow && end.ok() && *logs_status == 200 && !s->reported && !stopping_) {
        // The follow stream ended because the container stopped: read what it may have missed
        // (after this callback: the stream being ended is still running it).
        asio::post(io_, [this, weak, gen] {
          auto again = weak.lock();
          if (!again || again->generation != gen || again->reported || stopping_) return;
          follow_logs(again, /*follow=*/false);
        });
        return;
      }
      if (!end.ok() && end.error().code() != ECANCELED) {
        log::warning("the task's output stream from dockerd ended early: " + end.error().message() +
                         "; its stdout/stderr files may be incomplete",
                     {{"CORRAL_CONTAINER_ID", s->container_id}});
      }
      s->logs_done = true;
      maybe_finish(s);
    };
    w->logs_stream = client_.stream(
        http::make_request(http::Verb::get, api("/containers/" + w->docker_id + "/logs?" +
                                                (follow ? "follow=1&" : "") + "stdout=1&stderr=1")),
        std::move(logs));
  }

  void maybe_finish(const std::shared_ptr<Watched>& w) {
    if (!w->termination || w->reported) return;
    if (w->logs_done) {
      report(w, *w->termination);
      return;
    }
    if (w->drain_timer) return;
    w->drain_timer = std::make_unique<asio::steady_timer>(io_);
    arm_drain(w, w->bytes_received);
  }

  // The output may lag the exit (dockerd re-reads its log file): wait while it still flows, and
  // give up only when nothing arrived for log_drain.
  void arm_drain(const std::shared_ptr<Watched>& w, uint64_t received_before) {
    w->drain_timer->expires_after(options_.log_drain);
    std::weak_ptr<Watched> weak = w;
    const uint64_t gen = w->generation;
    w->drain_timer->async_wait([this, weak, gen, received_before](boost::system::error_code ec) {
      auto s = weak.lock();
      if (ec || !s || s->generation != gen || !s->termination || s->reported) return;
      if (s->bytes_received != received_before) {
        arm_drain(s, s->bytes_received);
        return;
      }
      log::warning("the task's output stream stalled for " +
                       std::to_string(options_.log_drain.count()) +
                       " ms after its exit; its stdout/stderr files may be incomplete",
                   {{"CORRAL_CONTAINER_ID", s->container_id}});
      report(s, *s->termination);
    });
  }

  Termination lost(const std::string& message) const {
    Termination t;
    t.kind = Termination::Kind::lost;
    t.reason = v1::TaskStatus::REASON_EXECUTOR_TERMINATED;
    t.message = message;
    return t;
  }

  void report(const std::shared_ptr<Watched>& w, const Termination& t) {
    if (w->reported) return;
    w->reported = true;
    w->disconnected = false;
    cancel_streams(*w);
    w->out_fd.reset();
    w->err_fd.reset();
    log::info("container ended: " + t.message,
              {{"CORRAL_CONTAINER_ID", w->container_id}, {"CORRAL_DOCKER_ID", w->docker_id}});
    TerminationCallback cb;
    {
      std::lock_guard lock(callback_mutex_);
      cb = callback_;
    }
    if (cb) cb(w->container_id, t);
  }

  // dockerd stopped answering while `w` ran: wait for it (monitor), then follow `w` again.
  void daemon_lost(const std::shared_ptr<Watched>& w, const Error& error) {
    if (w->reported) return;
    cancel_streams(*w);
    w->disconnected = true;
    w->daemon_interrupted = true;
    if (!monitoring_) {
      monitoring_ = true;
      down_since_ = std::chrono::steady_clock::now();
      last_error_ = error.message();
      set_condition(false, "dockerd at " + options_.endpoint +
                               " stopped answering while tasks ran (" + error.message() +
                               "); waiting up to " +
                               std::to_string(options_.daemon_down_grace.count() / 1000) +
                               " s for it to come back before reporting them lost");
      schedule_ping(milliseconds(200));
    }
  }

  void schedule_ping(milliseconds after) {
    monitor_timer_.expires_after(after);
    monitor_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping_) return;
      client_.request(
          http::make_request(http::Verb::get, "/_ping"), [this](Result<http::Response> r) {
            if (stopping_) return;
            if (r.ok() && r->result_int() == 200) {
              daemon_back();
              return;
            }
            last_error_ =
                r.ok() ? "status " + std::to_string(r->result_int()) : r.error().message();
            if (std::chrono::steady_clock::now() - down_since_ >= options_.daemon_down_grace) {
              give_up_waiting();
            }
            schedule_ping(milliseconds(500));
          });
    });
  }

  void daemon_back() {
    monitoring_ = false;
    set_condition(true, "");
    for (auto& [id, w] : watched_) {
      if (w->disconnected && !w->reported) {
        w->disconnected = false;
        log::notice("following container " + w->name + " again after dockerd came back",
                    {{"CORRAL_CONTAINER_ID", id}});
        watch(w);
      }
    }
  }

  void give_up_waiting() {
    for (auto& [id, w] : watched_) {
      if (w->disconnected && !w->reported) {
        report(w, lost("dockerd at " + options_.endpoint + " did not answer for " +
                       std::to_string(options_.daemon_down_grace.count() / 1000) +
                       " s (last error: " + last_error_ +
                       "); the container's state is unknown. Restart dockerd; Corral removes "
                       "the container if it comes back"));
      }
    }
  }

  void stop_async(const std::string& docker_id, milliseconds grace,
                  std::function<void()> then = {}) {
    const auto secs = (grace.count() + 999) / 1000;
    long_client_.request(
        http::make_request(http::Verb::post,
                           api("/containers/" + docker_id + "/stop?t=" + std::to_string(secs))),
        [docker_id, then](Result<http::Response> r) {
          if (!r.ok()) {
            log::warning("stopping container " + short_id(docker_id) +
                         " failed: " + r.error().message());
          } else if (r->result_int() != 204 && r->result_int() != 304 && r->result_int() != 404) {
            log::warning("stopping container " + short_id(docker_id) + ": dockerd answered " +
                         std::to_string(r->result_int()) + ": " + r->body().substr(0, 200));
          }
          if (then) then();
        });
  }

  void reap_orphans(std::vector<std::pair<std::string, std::string>> orphans) {
    for (const auto& [docker_id, name] : orphans) {
      bool adopted = false;
      for (const auto& [id, w] : watched_) adopted |= w->docker_id == docker_id;
      if (adopted) continue;
      log::warning("stopping and removing orphan container " + name +
                   " (labelled for this agent, but no task of the agent knows it)");
      std::string id = docker_id;
      stop_async(id, options_.orphan_stop_grace, [this, id] {
        client_.request(
            http::make_request(http::Verb::delete_, api("/containers/" + id + "?force=1&v=1")),
            [id](Result<http::Response>) {});
      });
    }
  }

  Result<std::string> docker_id_of(const std::string& container_id) {
    auto id = on_loop([&]() -> std::string {
      auto w = find(container_id);
      return w ? w->docker_id : std::string();
    });
    if (id.empty()) {
      return Error(ENOENT, "container " + container_id +
                               " is not known to the Docker "
                               "containerizer");
    }
    return id;
  }

  Result<void> ensure_image(const ImageRef& ref, bool force_pull) {
    if (!force_pull) {
      auto have = engine_.inspect_image(ref.full());
      if (have.ok()) return {};
      if (have.error().code() != ENOENT) return have.error();
    }
    std::optional<RegistryAuth> auth;
    if (!options_.policy.config.value.empty()) {
      CORRAL_ASSIGN_OR_RETURN(
          auth, registry_auth_from_config(options_.policy.config.value, ref.registry));
    }
    log::info("pulling image " + ref.full() + " through dockerd" +
              (auth ? " as " + auth->username : std::string()));
    return engine_.pull(ref, auth, options_.pull_progress);
  }

  DockerOptions options_;
  Engine engine_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  http::AsyncHttpClient client_;
  http::AsyncHttpClient wait_client_;
  http::AsyncHttpClient long_client_;
  asio::steady_timer monitor_timer_;
  asio::steady_timer orphan_timer_;
  std::thread thread_;

  // Loop-thread state.
  std::map<std::string, std::shared_ptr<Watched>> watched_;
  bool stopping_ = false;
  bool monitoring_ = false;
  std::chrono::steady_clock::time_point down_since_;
  std::string last_error_;

  std::mutex callback_mutex_;
  TerminationCallback callback_;
  mutable std::mutex condition_mutex_;
  DaemonCondition condition_;
};

Result<Launched> Impl::launch(const LaunchRequest& request) {
  static const std::regex kId("^[A-Za-z0-9._-]{1,200}$");
  if (!std::regex_match(request.container_id, kId)) {
    return Error(EINVAL, "container id \"" + request.container_id +
                             "\" is not valid ([A-Za-z0-9._-], 1 to 200 characters)");
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(request.sandbox_dir, ec)) {
    return Error(ENOENT, "sandbox " + request.sandbox_dir.string() + " is not a directory");
  }
  const bool known = on_loop([&] { return find(request.container_id) != nullptr; });
  if (known) {
    return Error(EEXIST, "container " + request.container_id + " is already running here");
  }
  CORRAL_ASSIGN_OR_RETURN(nlohmann::json config, build_create_config(request, options_));
  CORRAL_ASSIGN_OR_RETURN(ImageRef ref, parse_image_ref(task_image(request.task)));
  const bool force_pull = request.task.container().type() == v1::ContainerInfo::DOCKER
                              ? request.task.container().docker().force_pull_image()
                              : !request.task.container().mesos().image().cached();
  auto image = ensure_image(ref, force_pull);
  if (!image.ok()) {
    if (daemon_gone(image.error().code())) set_condition(false, image.error().message());
    return image.error();
  }
  const std::string name = options_.name_prefix + request.container_id;
  CORRAL_ASSIGN_OR_RETURN(std::string docker_id, engine_.create_container(name, config));
  auto started = engine_.start_container(docker_id);
  if (!started.ok()) {
    auto removed = engine_.remove_container(docker_id);
    if (!removed.ok()) log::warning(removed.error().message());
    return started.error().context("task " + request.task.task_id().value() +
                                   " did not start in dockerd");
  }
  std::optional<pid_t> pid;
  if (auto j = engine_.inspect_container(docker_id); j.ok()) {
    const auto& p = (*j)["State"];
    if (p.contains("Pid") && p["Pid"].is_number_integer() && p["Pid"].get<int64_t>() > 0) {
      pid = static_cast<pid_t>(p["Pid"].get<int64_t>());
    }
  }

  auto w = std::make_shared<Watched>();
  w->container_id = request.container_id;
  w->docker_id = docker_id;
  w->name = name;
  w->sandbox = request.sandbox_dir;
  w->memory_limit = request.decision.limits.memory_max;
  w->cpus = request.decision.limits.cpus;
  w->kill_grace = request.kill_grace;
  on_loop([&] {
    watched_[w->container_id] = w;
    watch(w);
  });

  Launched out;
  out.pid = pid;
  out.checkpoint = {{"docker_id", docker_id},
                    {"name", name},
                    {"image", ref.full()},
                    {"sandbox", request.sandbox_dir.string()},
                    {"kill_grace_ms", request.kill_grace.count()},
                    {"agent_label", options_.agent_label}};
  if (w->memory_limit) out.checkpoint["memory_limit"] = *w->memory_limit;
  if (w->cpus) out.checkpoint["cpus"] = *w->cpus;
  set_condition(true, "");
  return out;
}

Result<void> Impl::kill(const std::string& container_id, milliseconds grace) {
  return on_loop([&]() -> Result<void> {
    auto w = find(container_id);
    if (!w) {
      return Error(ENOENT, "container " + container_id +
                               " is not known to the Docker "
                               "containerizer");
    }
    if (w->reported) return {};
    w->stop_requested = true;
    stop_async(w->docker_id, grace);
    return {};
  });
}

Result<v1::ResourceStatistics> Impl::usage(const std::string& container_id) {
  CORRAL_ASSIGN_OR_RETURN(std::string docker_id, docker_id_of(container_id));
  CORRAL_ASSIGN_OR_RETURN(nlohmann::json stats, engine_.container_stats(docker_id));
  v1::ResourceStatistics r = stats_to_resource_statistics(stats);
  auto limits = on_loop([&] {
    auto w = find(container_id);
    return std::make_pair(w ? w->cpus : std::nullopt, w ? w->memory_limit : std::nullopt);
  });
  if (limits.first) r.set_cpus_limit(*limits.first);
  if (limits.second) r.set_mem_limit_bytes(*limits.second);
  return r;
}

Result<void> Impl::destroy(const std::string& container_id) {
  auto w = on_loop([&]() -> std::shared_ptr<Watched> {
    auto found = find(container_id);
    if (!found) return nullptr;
    if (!found->reported) {
      Termination t;
      t.kind = Termination::Kind::signaled;
      t.signal = 9;
      t.reason = v1::TaskStatus::REASON_EXECUTOR_TERMINATED;
      t.message = "destroyed while it still ran";
      report(found, t);
    }
    cancel_streams(*found);
    watched_.erase(container_id);
    return found;
  });
  if (!w) return {};
  return engine_.remove_container(w->docker_id);
}

Result<std::vector<Recovered>> Impl::recover(
    const std::vector<std::pair<std::string, nlohmann::json>>& checkpoints) {
  CORRAL_ASSIGN_OR_RETURN(
      nlohmann::json listed,
      engine_.list_containers(std::string(kLabelAgent) + "=" + options_.agent_label));
  std::map<std::string, nlohmann::json> by_id;
  for (const auto& c : listed) by_id[c["Id"].get<std::string>()] = c;

  std::vector<Recovered> out;
  std::vector<std::shared_ptr<Watched>> adopt, vanished;
  std::set<std::string> known_ids;
  for (const auto& [container_id, cp] : checkpoints) {
    if (!cp.is_object() || !cp.contains("docker_id") || !cp["docker_id"].is_string() ||
        !cp.contains("sandbox") || !cp["sandbox"].is_string()) {
      return Error(EINVAL, "checkpoint of container " + container_id +
                               " is not one the Docker containerizer wrote (no docker_id and "
                               "sandbox)");
    }
    auto w = std::make_shared<Watched>();
    w->container_id = container_id;
    w->docker_id = cp["docker_id"].get<std::string>();
    w->name = cp.contains("name") && cp["name"].is_string() ? cp["name"].get<std::string>()
                                                            : options_.name_prefix + container_id;
    w->sandbox = cp["sandbox"].get<std::string>();
    if (cp.contains("memory_limit") && cp["memory_limit"].is_number_unsigned())
      w->memory_limit = cp["memory_limit"].get<uint64_t>();
    if (cp.contains("cpus") && cp["cpus"].is_number()) w->cpus = cp["cpus"].get<double>();
    if (cp.contains("kill_grace_ms") && cp["kill_grace_ms"].is_number_integer()) {
      w->kill_grace = milliseconds(cp["kill_grace_ms"].get<int64_t>());
    }
    w->out_written = file_size_or_zero(w->sandbox / "stdout");
    w->err_written = file_size_or_zero(w->sandbox / "stderr");
    known_ids.insert(w->docker_id);
    Recovered r;
    r.container_id = container_id;
    auto it = by_id.find(w->docker_id);
    if (it == by_id.end()) {
      r.running = false;
      vanished.push_back(w);
    } else {
      const auto& state = it->second.contains("State") ? it->second["State"] : nlohmann::json();
      r.running = state.is_string() && state.get<std::string>() == "running";
      adopt.push_back(w);
    }
    out.push_back(r);
  }
  std::vector<std::pair<std::string, std::string>> orphans;
  for (const auto& [id, c] : by_id) {
    if (known_ids.count(id)) continue;
    std::string name = id;
    if (c.contains("Names") && c["Names"].is_array() && !c["Names"].empty() &&
        c["Names"][0].is_string()) {
      name = c["Names"][0].get<std::string>();
    }
    orphans.emplace_back(id, name);
  }
  on_loop([&] {
    for (auto& w : adopt) {
      watched_[w->container_id] = w;
      watch(w);
    }
    for (auto& w : vanished) {
      watched_[w->container_id] = w;
      // After recover() returns, as the agent expects.
      asio::post(io_, [this, w] {
        report(w, lost(w->name + " (" + short_id(w->docker_id) +
                       ") no longer exists in dockerd; it was removed while the agent was away"));
      });
    }
    if (!orphans.empty()) {
      log::warning(std::to_string(orphans.size()) +
                   " container(s) labelled for this agent belong to no known task; stopping "
                   "them in " +
                   std::to_string(options_.orphan_grace.count() / 1000) + " s");
      orphan_timer_.expires_after(options_.orphan_grace);
      orphan_timer_.async_wait([this, orphans](boost::system::error_code ec) {
        if (!ec && !stopping_) reap_orphans(orphans);
      });
    }
  });
  set_condition(true, "");
  return out;
}

}  // namespace

Result<std::unique_ptr<DockerContainerizer>> open_docker_containerizer(DockerOptions options) {
  static const std::regex kLabel("^[A-Za-z0-9._-]{1,100}$");
  if (!std::regex_match(options.agent_label, kLabel)) {
    return Error(EINVAL, "docker agent label \"" + options.agent_label +
                             "\" is not valid ([A-Za-z0-9._-], 1 to 100 characters)");
  }
  auto endpoint = http::parse_endpoint(options.endpoint);
  if (!endpoint.ok()) {
    return Error(EINVAL, "docker endpoint \"" + options.endpoint + "\" is not valid: " +
                             endpoint.error().message() + " (expected unix:/path or host:port)");
  }
  EngineOptions eo;
  eo.endpoint = options.endpoint;
  eo.request_timeout = options.request_timeout;
  eo.pull_timeout = options.pull_timeout;
  Engine engine(eo);
  CORRAL_ASSIGN_OR_RETURN(EngineVersion version, engine.negotiate());
  log::info("Docker containerizer: dockerd " + version.engine + " (API " + version.api_version +
            ") at " + options.endpoint);
  return std::unique_ptr<DockerContainerizer>(
      new Impl(std::move(options), std::move(engine), *endpoint));
}

}  // namespace corral::docker
