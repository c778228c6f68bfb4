#!/bin/bash
# Compatibility test: the unmodified npm package `mesos-framework` registers a framework with a
# real corral-master and launches a task on a simulated agent (corral-master-scale --hold).
# Fails loudly when node or the package is missing (scripts/install-deps installs nodejs and
# npm; tests/compat/setup-npm installs the package into a cache outside the repository).
#
#   tests/compat/mesos_framework_test.sh <corral-master> <corral-master-scale> [<corral-agent> <corral-launcher>]
# With the last two the task runs on a real corral-agent instead of a simulated one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
master_bin="$1"
scale_bin="$2"

command -v node >/dev/null || { echo "FAIL: node is not installed; run scripts/install-deps (nodejs, npm)" >&2; exit 1; }
cache="$("$here/setup-npm")" || { echo "FAIL: could not install the npm package mesos-framework" >&2; exit 1; }

work="$(mktemp -d /tmp/corral-compat.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$master_bin" --listen "127.0.0.1:$port" --work-dir "$work/master" --log-level warning \
  >"$work/master.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "FAIL: corral-master did not start:"; cat "$work/master.log"; exit 1; }

if [ -n "${3:-}" ]; then
  # A real corral-agent (and corral-launcher) runs the task: the whole path framework -> master
  # -> agent link -> sandbox. The host may lack cgroup v2, so the policy allows running without.
  agent_bin="$3"
  launcher_bin="$4"
  mkdir -p "$work/policy"
  # The library's framework runs as root; Corral's built-in policy allows only nobody.
  printf '[cgroups]\nrequire_v2 = false\n[security]\nusers = ["nobody", "root"]\n' >"$work/policy/00-test.toml"
  "$agent_bin" --master "http://127.0.0.1:$port" --work-dir "$work/agent" --socket "$work/agent.sock" \
    --listen "" --policy-dir "$work/policy" --launcher "$launcher_bin" --kill-tasks-on-exit \
    >"$work/agents.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    grep -q 'registered with master' "$work/agents.log" && break
    sleep 0.1
  done
  grep -q 'registered with master' "$work/agents.log" || { echo "FAIL: corral-agent did not register:"; cat "$work/agents.log"; exit 1; }
else
  "$scale_bin" --master "http://127.0.0.1:$port" --agents 1 --frameworks 0 --hold \
    >"$work/agents.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    grep -q '^agent ' "$work/agents.log" && break
    sleep 0.1
  done
  grep -q '^agent ' "$work/agents.log" || { echo "FAIL: the simulated agent did not register:"; cat "$work/agents.log"; exit 1; }
fi

# The library writes its log file under ./logs of the working directory.
mkdir -p "$work/node/logs"
if ! (cd "$work/node" && NODE_PATH="$cache/node_modules" timeout 90 node "$here/mesos_framework_launch.js" 127.0.0.1 "$port"); then
  echo "FAIL: mesos-framework could not launch a task; master log:" >&2
  cat "$work/master.log" >&2
  echo "agent log:" >&2
  cat "$work/agents.log" >&2
  exit 1
fi
# The master agrees: one running task of that framework.
state="$(curl -sf "http://127.0.0.1:$port/state")"
python3 - "$state" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
fws = [f for f in s["frameworks"] if f["name"] == "corral-compat-mesos-framework"]
assert len(fws) == 1, "framework not in /state: %r" % [f["name"] for f in s["frameworks"]]
states = [t["state"] for t in fws[0]["tasks"]]
assert states == ["TASK_RUNNING"], "tasks in /state: %r" % states
print("OK: /state shows the framework with one TASK_RUNNING task")
PY
