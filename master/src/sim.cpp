#include "corral/master/sim.hpp"

#include <boost/asio/post.hpp>
#include <cstring>
#include <deque>
#include <random>

#include "corral/common/proto_json.hpp"
#include "corral/common/recordio.hpp"

namespace corral::master::sim {
namespace {

std::string random_uuid16() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string out(16, '\0');
  for (int i = 0; i < 16; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  return out;
}

WireFormat fmt(bool protobuf) { return protobuf ? WireFormat::kProtobuf : WireFormat::kJson; }

// Calls go out at most kMaxInFlight at a time, in order, over the client's keep-alive
// connections (like a real agent or scheduler library), instead of one new connection per
// concurrent call.
constexpr int kMaxInFlight = 4;
struct CallQueue {
  std::deque<std::pair<http::Request, std::function<void(Result<http::Response>)>>> waiting;
  int in_flight = 0;

  void send(http::AsyncHttpClient& client, http::Request req,
            std::function<void(Result<http::Response>)> done,
            const std::shared_ptr<void>& keepalive) {
    waiting.emplace_back(std::move(req), std::move(done));
    pump(client, keepalive);
  }
  void pump(http::AsyncHttpClient& client, const std::shared_ptr<void>& keepalive) {
    while (in_flight < kMaxInFlight && !waiting.empty()) {
      auto [req, done] = std::move(waiting.front());
      waiting.pop_front();
      in_flight++;
      client.request(std::move(req),
                     [this, &client, keepalive, done = std::move(done)](Result<http::Response> r) {
                       in_flight--;
                       done(std::move(r));
                       pump(client, keepalive);
                     });
    }
  }
};

// Opens the long-lived event stream of a simulated agent (REGISTER) or framework (SUBSCRIBE):
// a 200 head carries the stream id in `id_header`; the body is RecordIO of `Event` messages,
// each handed to self->handle(). `flag` (connected / subscribed) is cleared when the stream
// ends, and set by the 200 head when `flag_on_head`. The callbacks hold the state weakly: the
// state holds the stream.
template <typename Event, typename S>
std::shared_ptr<http::ClientStream> open_event_stream(const std::shared_ptr<S>& self,
                                                      http::Request req, const char* id_header,
                                                      const char* what, bool S::*flag,
                                                      bool flag_on_head) {
  std::weak_ptr<S> weak = self;
  self->decoder = RecordIoDecoder();
  http::StreamCallbacks cb;
  cb.on_head = [weak, id_header, what, flag, flag_on_head](const http::Response& head) {
    auto s = weak.lock();
    if (!s) return false;
    std::lock_guard lock(s->mu);
    if (head.result() != http::Status::ok) {
      s->error = std::to_string(head.result_int()) + " on " + what;
      return false;
    }
    s->stream_id = std::string(head[id_header]);
    if (flag_on_head) (*s).*flag = true;
    return true;
  };
  cb.on_data = [weak](std::string_view data) {
    auto s = weak.lock();
    if (!s) return false;
    auto records = s->decoder.feed(data);
    if (!records) return false;
    for (const auto& rec : *records) {
      Event ev;
      if (!parse_message(fmt(s->opts.protobuf), rec, &ev)) continue;
      s->handle(ev);
    }
    return true;
  };
  cb.on_end = [weak, flag](Result<void>) {
    auto s = weak.lock();
    if (!s) return;
    std::lock_guard lock(s->mu);
    (*s).*flag = false;
  };
  return self->client.stream(std::move(req), std::move(cb));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Agent

struct Agent::State : std::enable_shared_from_this<Agent::State> {
  boost::asio::io_context& io;
  AgentOptions opts;
  http::AsyncHttpClient client;
  mutable std::mutex mu;
  std::string id;
  std::string stream_id;
  bool connected = false;
  std::vector<v1::internal::AgentEvent> events;
  std::map<std::pair<std::string, std::string>, v1::Task> tasks;
  std::map<std::string, v1::FrameworkInfo> frameworks;
  size_t acked = 0;
  std::string error;
  std::shared_ptr<http::ClientStream> stream;
  RecordIoDecoder decoder;
  CallQueue calls;

  // A master registering thousands of agents at once answers late: wait for it.
  static http::ClientOptions client_options() {
    http::ClientOptions o;
    o.request_timeout = std::chrono::minutes(5);
    return o;
  }
  State(boost::asio::io_context& io_, http::Endpoint master, AgentOptions o)
      : io(io_), opts(std::move(o)), client(io_, std::move(master), client_options()) {}

  std::string body(const v1::internal::AgentCall& call) const {
    return serialize_message(fmt(opts.protobuf), call);
  }

  void post_call(v1::internal::AgentCall call) {
    std::string sid;
    {
      std::lock_guard lock(mu);
      call.mutable_agent_id()->set_value(id);
      sid = stream_id;
    }
    auto req = http::make_request(http::Verb::post, "/api/v1/agent", body(call),
                                  content_type_of(fmt(opts.protobuf)));
    req.set("Corral-Agent-Stream-Id", sid);
    auto self = shared_from_this();
    calls.send(
        client, std::move(req),
        [self](Result<http::Response> r) {
          std::lock_guard lock(self->mu);
          if (!r) {
            self->error = r.error().message();
          } else if (r->result() != http::Status::accepted) {
            self->error = std::to_string(r->result_int()) + " " + r->body();
          }
        },
        self);
  }

  void status(const std::string& fw, const std::string& task, v1::TaskState st) {
    v1::internal::AgentCall call;
    call.set_type(v1::internal::AgentCall::STATUS_UPDATE);
    auto* u = call.mutable_status_update();
    u->mutable_framework_id()->set_value(fw);
    std::string uuid = random_uuid16();
    u->set_uuid(uuid);
    u->set_latest_state(st);
    auto* s = u->mutable_status();
    s->mutable_task_id()->set_value(task);
    s->set_state(st);
    s->set_uuid(uuid);
    s->set_source(v1::TaskStatus::SOURCE_EXECUTOR);
    {
      std::lock_guard lock(mu);
      auto it = tasks.find({fw, task});
      if (it != tasks.end()) {
        it->second.set_state(st);
        it->second.set_status_update_uuid(uuid);
        it->second.set_status_update_state(st);
      }
      s->mutable_agent_id()->set_value(id);
    }
    post_call(std::move(call));
  }

  void handle(const v1::internal::AgentEvent& ev) {
    using E = v1::internal::AgentEvent;
    {
      std::lock_guard lock(mu);
      if (opts.record_events) events.push_back(ev);
      if (ev.type() == E::REGISTERED) id = ev.registered().agent_id().value();
      if (ev.type() == E::REREGISTERED) id = ev.reregistered().agent_id().value();
      if (ev.type() == E::ERROR) error = ev.error().message();
      if (ev.type() == E::ACKNOWLEDGE) acked++;
    }
    switch (ev.type()) {
      case E::PING:
        if (opts.auto_pong) {
          v1::internal::AgentCall pong;
          pong.set_type(v1::internal::AgentCall::PONG);
          pong.mutable_pong()->set_sequence(ev.ping().sequence());
          post_call(std::move(pong));
        }
        break;
      case E::RUN_TASK: {
        const auto& ti = ev.run_task().task();
        std::string fw = ev.run_task().framework().id().value();
        {
          std::lock_guard lock(mu);
          v1::Task t;
          t.set_name(ti.name());
          *t.mutable_task_id() = ti.task_id();
          t.mutable_framework_id()->set_value(fw);
          t.mutable_agent_id()->set_value(id);
          t.set_state(v1::TASK_STAGING);
          *t.mutable_resources() = ti.resources();
          tasks[{fw, ti.task_id().value()}] = t;
          frameworks[fw] = ev.run_task().framework();
        }
        if (opts.auto_run) status(fw, ti.task_id().value(), v1::TASK_RUNNING);
        break;
      }
      case E::KILL_TASK:
        if (opts.auto_run) {
          status(ev.kill_task().framework_id().value(), ev.kill_task().task_id().value(),
                 v1::TASK_KILLED);
        }
        break;
      case E::SHUTDOWN_FRAMEWORK: {
        std::vector<std::string> ids;
        {
          std::lock_guard lock(mu);
          for (auto& [k, t] : tasks) {
            if (k.first == ev.shutdown_framework().framework_id().value()) ids.push_back(k.second);
          }
        }
        for (const auto& t : ids) {
          status(ev.shutdown_framework().framework_id().value(), t, v1::TASK_KILLED);
        }
        break;
      }
      default:
        break;
    }
  }

  void connect() {
    v1::internal::AgentCall call;
    std::string known_id;
    {
      std::lock_guard lock(mu);
      known_id = id;
    }
    v1::AgentInfo info;
    info.set_hostname(opts.hostname);
    info.set_port(5051);
    auto add = [&](const char* name, double v) {
      auto* r = info.add_resources();
      r->set_name(name);
      r->set_type(v1::Value::SCALAR);
      r->mutable_scalar()->set_value(v);
    };
    add("cpus", opts.cpus);
    add("mem", opts.mem);
    add("disk", opts.disk);
    if (!opts.ports.empty()) {
      auto* r = info.add_resources();
      r->set_name("ports");
      r->set_type(v1::Value::RANGES);
      for (const auto& [b, e] : opts.ports) {
        auto* range = r->mutable_ranges()->add_range();
        range->set_begin(b);
        range->set_end(e);
      }
    }
    if (known_id.empty()) {
      call.set_type(v1::internal::AgentCall::REGISTER);
      *call.mutable_register_()->mutable_agent_info() = info;
      call.mutable_register_()->set_version("sim");
    } else {
      call.set_type(v1::internal::AgentCall::REREGISTER);
      info.mutable_id()->set_value(known_id);
      call.mutable_agent_id()->set_value(known_id);
      auto* rr = call.mutable_reregister();
      *rr->mutable_agent_info() = info;
      rr->set_version("sim");
      std::lock_guard lock(mu);
      for (const auto& [k, t] : tasks) *rr->add_tasks() = t;
      for (const auto& [k, f] : frameworks) *rr->add_frameworks() = f;
    }
    auto req = http::make_request(http::Verb::post, "/api/v1/agent", body(call),
                                  content_type_of(fmt(opts.protobuf)));
    stream = open_event_stream<v1::internal::AgentEvent>(shared_from_this(), std::move(req),
                                                         "Corral-Agent-Stream-Id", "register",
                                                         &State::connected, /*flag_on_head=*/true);
  }
};

Agent::Agent(boost::asio::io_context& io, http::Endpoint master, AgentOptions options)
    : state_(std::make_shared<State>(io, std::move(master), std::move(options))) {}

Agent::~Agent() {
  // The stream belongs to the io thread: cancel it there (the lambda keeps the state alive).
  boost::asio::post(state_->io, [s = state_] {
    if (s->stream) s->stream->cancel();
  });
}

void Agent::connect() {
  boost::asio::post(state_->io, [s = state_] { s->connect(); });
}

void Agent::disconnect() {
  boost::asio::post(state_->io, [s = state_] {
    if (s->stream) s->stream->cancel();
    s->stream.reset();
    std::lock_guard lock(s->mu);
    s->connected = false;
  });
}

void Agent::send_status(const std::string& framework_id, const std::string& task_id,
                        v1::TaskState state) {
  boost::asio::post(state_->io, [s = state_, framework_id, task_id, state] {
    s->status(framework_id, task_id, state);
  });
}

std::string Agent::id() const {
  std::lock_guard lock(state_->mu);
  return state_->id;
}
bool Agent::connected() const {
  std::lock_guard lock(state_->mu);
  return state_->connected;
}
std::vector<v1::internal::AgentEvent> Agent::events() const {
  std::lock_guard lock(state_->mu);
  return state_->events;
}
std::map<std::pair<std::string, std::string>, v1::Task> Agent::tasks() const {
  std::lock_guard lock(state_->mu);
  return state_->tasks;
}
size_t Agent::acknowledged() const {
  std::lock_guard lock(state_->mu);
  return state_->acked;
}
std::string Agent::last_error() const {
  std::lock_guard lock(state_->mu);
  return state_->error;
}
void Agent::set_id(const std::string& id) {
  std::lock_guard lock(state_->mu);
  state_->id = id;
}

// ---------------------------------------------------------------------------------------------
// Framework

struct Framework::State : std::enable_shared_from_this<Framework::State> {
  boost::asio::io_context& io;
  FrameworkOptions opts;
  http::AsyncHttpClient client;
  mutable std::mutex mu;
  std::string id;
  std::string stream_id;
  bool subscribed = false;
  std::vector<v1::scheduler::Event> events;
  std::vector<int> statuses;
  std::string error;
  std::shared_ptr<http::ClientStream> stream;
  RecordIoDecoder decoder;
  EventHandler handler;
  Framework* owner = nullptr;
  CallQueue calls;

  State(boost::asio::io_context& io_, http::Endpoint master, FrameworkOptions o)
      : io(io_), opts(std::move(o)), client(io_, std::move(master)) {}

  void call(v1::scheduler::Call c) {
    std::string sid;
    {
      std::lock_guard lock(mu);
      c.mutable_framework_id()->set_value(id);
      sid = stream_id;
    }
    auto req = http::make_request(http::Verb::post, "/api/v1/scheduler",
                                  serialize_message(fmt(opts.protobuf), c),
                                  content_type_of(fmt(opts.protobuf)));
    req.set("Mesos-Stream-Id", sid);
    auto self = shared_from_this();
    calls.send(
        client, std::move(req),
        [self](Result<http::Response> r) {
          std::lock_guard lock(self->mu);
          if (!r) {
            self->statuses.push_back(-1);
            self->error = r.error().message();
            return;
          }
          self->statuses.push_back(r->result_int());
          if (r->result() != http::Status::accepted) self->error = r->body();
        },
        self);
  }

  void subscribe() {
    v1::scheduler::Call c;
    c.set_type(v1::scheduler::Call::SUBSCRIBE);
    auto* fi = c.mutable_subscribe()->mutable_framework_info();
    fi->set_name(opts.name);
    fi->set_user(opts.user);
    fi->set_failover_timeout(opts.failover_timeout);
    for (const auto& r : opts.roles) fi->add_roles(r);
    fi->add_capabilities()->set_type(v1::FrameworkInfo::Capability::MULTI_ROLE);
    if (opts.partition_aware) {
      fi->add_capabilities()->set_type(v1::FrameworkInfo::Capability::PARTITION_AWARE);
    }
    {
      std::lock_guard lock(mu);
      if (!id.empty()) {
        fi->mutable_id()->set_value(id);
        c.mutable_framework_id()->set_value(id);
      }
    }
    auto req = http::make_request(http::Verb::post, "/api/v1/scheduler",
                                  serialize_message(fmt(opts.protobuf), c),
                                  content_type_of(fmt(opts.protobuf)));
    req.set(http::Field::accept, content_type_of(fmt(opts.protobuf)));
    stream = open_event_stream<v1::scheduler::Event>(shared_from_this(), std::move(req),
                                                     "Mesos-Stream-Id", "SUBSCRIBE",
                                                     &State::subscribed, /*flag_on_head=*/false);
  }

  // Every event is recorded, then given to the handler (outside the lock).
  void handle(const v1::scheduler::Event& ev) {
    EventHandler h;
    Framework* handler_owner = nullptr;
    {
      std::lock_guard lock(mu);
      if (opts.record_events) events.push_back(ev);
      if (ev.type() == v1::scheduler::Event::SUBSCRIBED) {
        id = ev.subscribed().framework_id().value();
        subscribed = true;
      }
      if (ev.type() == v1::scheduler::Event::ERROR) error = ev.error().message();
      h = handler;
      handler_owner = owner;
    }
    if (h && handler_owner) h(*handler_owner, ev);
  }
};

Framework::Framework(boost::asio::io_context& io, http::Endpoint master, FrameworkOptions options)
    : state_(std::make_shared<State>(io, std::move(master), std::move(options))) {
  state_->owner = this;
}

Framework::~Framework() {
  {
    std::lock_guard lock(state_->mu);
    state_->owner = nullptr;
    state_->handler = nullptr;
  }
  boost::asio::post(state_->io, [s = state_] {
    if (s->stream) s->stream->cancel();
  });
}

void Framework::subscribe() {
  boost::asio::post(state_->io, [s = state_] { s->subscribe(); });
}
void Framework::disconnect() {
  boost::asio::post(state_->io, [s = state_] {
    if (s->stream) s->stream->cancel();
    s->stream.reset();
    std::lock_guard lock(s->mu);
    s->subscribed = false;
  });
}
void Framework::on_event(EventHandler handler) {
  std::lock_guard lock(state_->mu);
  state_->handler = std::move(handler);
}
void Framework::call(v1::scheduler::Call call) {
  // On the io thread already (from a handler): send at once, keeping order.
  if (state_->io.get_executor().running_in_this_thread()) {
    state_->call(std::move(call));
    return;
  }
  boost::asio::post(state_->io,
                    [s = state_, c = std::move(call)]() mutable { s->call(std::move(c)); });
}
std::string Framework::id() const {
  std::lock_guard lock(state_->mu);
  return state_->id;
}
void Framework::set_id(const std::string& id) {
  std::lock_guard lock(state_->mu);
  state_->id = id;
}
bool Framework::subscribed() const {
  std::lock_guard lock(state_->mu);
  return state_->subscribed;
}
std::vector<v1::scheduler::Event> Framework::events() const {
  std::lock_guard lock(state_->mu);
  return state_->events;
}
std::vector<int> Framework::statuses() const {
  std::lock_guard lock(state_->mu);
  return state_->statuses;
}
std::string Framework::last_error() const {
  std::lock_guard lock(state_->mu);
  return state_->error;
}

v1::scheduler::Call Framework::launch(const v1::Offer& offer, const std::string& task_id,
                                      double cpus, double mem) {
  v1::scheduler::Call c;
  c.set_type(v1::scheduler::Call::ACCEPT);
  auto* acc = c.mutable_accept();
  *acc->add_offer_ids() = offer.id();
  acc->mutable_filters()->set_refuse_seconds(0);
  auto* op = acc->add_operations();
  op->set_type(v1::Offer::Operation::LAUNCH);
  auto* t = op->mutable_launch()->add_task_infos();
  t->set_name(task_id);
  t->mutable_task_id()->set_value(task_id);
  *t->mutable_agent_id() = offer.agent_id();
  t->mutable_command()->set_value("sleep 1000");
  auto add = [&](const char* name, double v) {
    auto* r = t->add_resources();
    r->set_name(name);
    r->set_type(v1::Value::SCALAR);
    r->mutable_scalar()->set_value(v);
  };
  add("cpus", cpus);
  add("mem", mem);
  return c;
}

v1::scheduler::Call Framework::decline(const v1::Offer& offer, double refuse_seconds) {
  v1::scheduler::Call c;
  c.set_type(v1::scheduler::Call::DECLINE);
  *c.mutable_decline()->add_offer_ids() = offer.id();
  c.mutable_decline()->mutable_filters()->set_refuse_seconds(refuse_seconds);
  return c;
}

}  // namespace corral::master::sim
