#pragma once
// Task-state helpers shared by corral-master and corral-agent. Header-only; needs the generated
// schema headers (link corral_proto).

#include "corral/v1/mesos.pb.h"

namespace corral {

// A state after which the task never runs again (Mesos's terminal states).
inline bool is_terminal(v1::TaskState s) {
  switch (s) {
    case v1::TASK_FINISHED:
    case v1::TASK_FAILED:
    case v1::TASK_KILLED:
    case v1::TASK_ERROR:
    case v1::TASK_LOST:
    case v1::TASK_DROPPED:
    case v1::TASK_GONE:
    case v1::TASK_GONE_BY_OPERATOR:
      return true;
    default:
      return false;
  }
}

}  // namespace corral
