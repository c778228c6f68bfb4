#pragma once
// A Containerizer that runs nothing: launch() succeeds at once, kill() ends the container at once
// (SIGTERM), recover() finds every checkpointed container still running. For the agent's unit
// tests and for the status-update throughput benchmark (bench/agent), where the real task path
// (policy, sandbox, checkpoint, link, acknowledgements) is measured without process launches.
#include <signal.h>

#include <atomic>
#include <mutex>

#include "corral/containerizer/containerizer.hpp"

namespace corral::agent {

class InstantContainerizer : public containerizer::Containerizer {
 public:
  std::string name() const override { return "native"; }
  void set_termination_callback(containerizer::TerminationCallback callback) override {
    std::lock_guard lock(mu_);
    callback_ = std::move(callback);
  }
  Result<containerizer::Launched> launch(const containerizer::LaunchRequest& request) override {
    ++launches;
    containerizer::Launched l;
    l.checkpoint = {{"instant", request.container_id}};
    return l;
  }
  Result<void> kill(const std::string& container_id, std::chrono::milliseconds) override {
    containerizer::TerminationCallback cb;
    {
      std::lock_guard lock(mu_);
      cb = callback_;
    }
    containerizer::Termination t;
    t.kind = containerizer::Termination::Kind::signaled;
    t.signal = SIGTERM;
    t.message = "killed by signal 15";
    if (cb) cb(container_id, t);
    return {};
  }
  Result<v1::ResourceStatistics> usage(const std::string&) override {
    return v1::ResourceStatistics();
  }
  Result<void> destroy(const std::string&) override { return {}; }
  Result<std::vector<containerizer::Recovered>> recover(
      const std::vector<std::pair<std::string, nlohmann::json>>& checkpoints) override {
    std::vector<containerizer::Recovered> out;
    for (const auto& [id, cp] : checkpoints) out.push_back({id, true});
    return out;
  }

  std::atomic<uint64_t> launches{0};

 private:
  std::mutex mu_;
  containerizer::TerminationCallback callback_;
};

}  // namespace corral::agent
