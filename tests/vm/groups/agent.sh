# Guest group "agent": corral-agent as a real systemd service on pure cgroup v2 — the default
# policy (cgroup v2 required) and backend (systemd: corral.slice/corral-tasks.scope), task limits
# in real cgroups, OOM reported with the memory reason, and tasks surviving both `kill -9` of the
# agent and `systemctl restart`, adopted by the next agent.
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
vm_require_build
corral="$CORRAL_BUILD/cli/corral"
agent="$CORRAL_BUILD/agent/corral-agent"
launcher="$CORRAL_BUILD/launcher/corral-launcher"
work=/var/lib/corral/agent-test
sock=/run/corral/agent.sock
mkdir -p /etc/corral/policy.d
printf '[security]\nusers = ["nobody", "root"]\n' > /etc/corral/policy.d/10-test.toml

start_agent() {
    systemctl reset-failed corral-agent-test >/dev/null 2>&1 || true
    systemd-run --unit=corral-agent-test --property=Type=notify --property=Delegate=yes \
        --property=KillMode=process --property=NotifyAccess=main \
        "$agent" --work-dir "$work" --socket "$sock" --listen "" --launcher "$launcher" >/dev/null
    for i in $(seq 100); do "$corral" agent tasks >/dev/null 2>&1 && return 0; sleep 0.1; done
    journalctl -u corral-agent-test --no-pager | tail -20; return 1
}
state_of() { "$corral" agent tasks | awk -v t="$1" '$1 == t {print $3}'; }
container_of() { "$corral" agent tasks | awk -v t="$1" '$1 == t {print $4}'; }
wait_state() {  # TASK STATE [TRIES]
    for i in $(seq "${3:-300}"); do [ "$(state_of "$1")" = "$2" ] && return 0; sleep 0.1; done
    echo "task $1: state $(state_of "$1"), wanted $2"; "$corral" agent tasks; return 1
}

vm_check "the agent starts as a notify service with the systemd cgroup backend" sh -c '
    '"$(declare -f start_agent)"'; agent='"$agent"' launcher='"$launcher"' work='"$work"' sock='"$sock"' corral='"$corral"'
    start_agent && systemctl is-active corral-agent-test && journalctl -u corral-agent-test --no-pager | grep -q "started: agent id"'

vm_check "a task gets its cgroup with the requested limits and its output is readable" sh -c '
    '"$(declare -f state_of container_of wait_state)"'; corral='"$corral"'
    "$corral" agent launch --id lim --cpus 0.5 --mem 64MiB -- "echo hi; sleep 600" || exit 1
    wait_state lim TASK_RUNNING || exit 1
    c=$(container_of lim); cg=$(ls -d /sys/fs/cgroup/corral.slice/corral-tasks.scope/task-$c)
    echo "cgroup $cg: memory.max=$(cat $cg/memory.max) cpu.max=$(cat $cg/cpu.max)"
    [ "$(cat $cg/memory.max)" = 67108864 ] && [ "$(cat $cg/cpu.max)" = "50000 100000" ] &&
    [ "$("$corral" agent logs "$c")" = hi ]'

vm_check "a task over its memory limit fails with REASON_CONTAINER_LIMITATION_MEMORY" sh -c '
    '"$(declare -f state_of container_of wait_state)"'; corral='"$corral"'
    "$corral" agent launch --id oom --mem 32MiB -- "head -c 300M /dev/zero | tail" || exit 1
    wait_state oom TASK_FAILED || exit 1
    "$corral" agent tasks --json | grep -q REASON_CONTAINER_LIMITATION_MEMORY'

vm_check "kill -9 of the agent: tasks keep running, the next agent adopts them and reports an exit that happened meanwhile" sh -c '
    '"$(declare -f start_agent state_of container_of wait_state)"'; agent='"$agent"' launcher='"$launcher"' work='"$work"' sock='"$sock"' corral='"$corral"'
    for i in $(seq 3); do "$corral" agent launch --id keep$i -- "sleep 600" >/dev/null || exit 1; done
    # "quick" ends when told to (a file in its sandbox), so that it ends while no agent runs.
    "$corral" agent launch --id quick -- "while [ ! -e /mnt/sandbox/go ]; do sleep 0.2; done; exit 4" >/dev/null || exit 1
    for i in $(seq 3); do wait_state keep$i TASK_RUNNING || exit 1; done
    wait_state quick TASK_RUNNING || exit 1
    q=$(container_of quick)
    systemctl kill -s KILL corral-agent-test; sleep 1
    touch '"$work"'/sandboxes/local/quick/$q/go
    for i in $(seq 100); do [ -e '"$work"'/runs/$q/exit.json ] && break; sleep 0.2; done
    echo "quick ended while no agent ran: $(cat '"$work"'/runs/$q/exit.json)"
    n=$(ls -d /sys/fs/cgroup/corral.slice/corral-tasks.scope/task-* | wc -l); echo "task cgroups while no agent runs: $n"
    start_agent || exit 1
    wait_state quick TASK_FAILED || exit 1
    "$corral" agent tasks | grep quick
    "$corral" agent tasks | grep quick | grep -q "exited with status 4" || exit 1
    for i in $(seq 3); do [ "$(state_of keep$i)" = TASK_RUNNING ] || { echo "keep$i: $(state_of keep$i)"; exit 1; }; done'

vm_check "systemctl restart: tasks survive and are adopted" sh -c '
    '"$(declare -f start_agent state_of container_of wait_state)"'; agent='"$agent"' launcher='"$launcher"' work='"$work"' sock='"$sock"' corral='"$corral"'
    systemctl stop corral-agent-test; start_agent || exit 1
    for i in $(seq 3); do [ "$(state_of keep$i)" = TASK_RUNNING ] || { echo "keep$i: $(state_of keep$i)"; exit 1; }; done
    c=$(container_of keep1); "$corral" agent kill "$c" && wait_state keep1 TASK_KILLED'

vm_check "drain kills what is left at the deadline and leaves no task cgroup behind" sh -c '
    '"$(declare -f state_of)"'; corral='"$corral"'
    "$corral" agent drain --deadline 1s --wait || exit 1
    "$corral" agent launch --id late -- true 2>&1 | grep -q draining || exit 1
    sleep 2; left=$(ls -d /sys/fs/cgroup/corral.slice/corral-tasks.scope/task-* 2>/dev/null | wc -l)
    echo "task cgroups left: $left"; [ "$left" = 0 ]'

systemctl stop corral-agent-test >/dev/null 2>&1 || true
vm_finish
