# Guest group "corral-run": `corral run` end to end on a systemd + pure cgroup v2 host — the
# policy decides, the systemd backend makes the task's cgroup, corral-launcher builds the sandbox,
# and what a user sees (output, exit code, OOM report, refusal message) is checked.
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
vm_require_build
corral=$CORRAL_BUILD/cli/corral
export CORRAL_LAUNCHER=$CORRAL_BUILD/launcher/corral-launcher
state=/var/lib/corral/run
pol=/var/tmp/policy.d
mkdir -p "$pol"

vm_check "corral run prints the task's output and exits with its code" sh -c '
    out=$('"$corral"' run -q -- /bin/sh -c "echo hello from \$(hostname); exit 7"); rc=$?
    echo "out=[$out] rc=$rc"; [ "$out" = "hello from corral" ] && [ $rc = 7 ]'

vm_check "the task runs as nobody by default, in its own pid namespace" sh -c '
    out=$('"$corral"' run -q -- /bin/sh -c "id -u; echo \$\$"); echo "$out"
    [ "$(echo "$out" | sed -n 1p)" = 65534 ] && [ "$(echo "$out" | sed -n 2p)" = 2 ]'

vm_check "the task's cgroup sits in corral.slice/corral-run.scope with the requested limits; Ctrl-C ends the task" sh -c '
    '"$corral"' run -q --memory 64MiB --pids 50 --cpus 0.5 -- /bin/sleep 120 & p=$!
    cg=""
    for i in $(seq 200); do
        cg=$(ls -d /sys/fs/cgroup/corral.slice/corral-run.scope/task-* 2>/dev/null | head -n1)
        [ -n "$cg" ] && grep -q . "$cg/cgroup.procs" 2>/dev/null && break; sleep 0.1
    done
    echo "task cgroup: $cg"
    m=$(cat "$cg/memory.max"); n=$(cat "$cg/pids.max"); c=$(cat "$cg/cpu.max"); g=$(cat "$cg/memory.oom.group")
    echo "memory.max=$m pids.max=$n cpu.max=$c memory.oom.group=$g"
    kill -INT $p; wait $p; rc=$?; echo "corral run after SIGINT: rc=$rc (130 = the task died of SIGINT)"
    [ "$m" = 67108864 ] && [ "$n" = 50 ] && [ "$c" = "50000 100000" ] && [ "$g" = 1 ] && [ $rc = 130 ]'

vm_check "a task over its memory limit is OOM-killed and reported with the memory reason" sh -c '
    '"$corral"' run --memory 32MiB -- /bin/sh -c "head -c 300M /dev/zero | tail" >/tmp/oom.out 2>&1; rc=$?
    cat /tmp/oom.out; echo "rc=$rc"
    [ $rc = 137 ] && grep -q REASON_CONTAINER_LIMITATION_MEMORY /tmp/oom.out'

vm_check "a task cannot fork past its pids limit" sh -c '
    '"$corral"' run -q --pids 10 -- /bin/sh -c "i=0; while [ \$i -lt 40 ]; do sleep 3 & i=\$((i+1)); done; wait" >/tmp/pids.out 2>&1; rc=$?
    cat /tmp/pids.out; echo "rc=$rc"; [ $rc -ne 0 ] && grep -qi "fork" /tmp/pids.out'

vm_check "a CPU cap of 0.2 throttles a busy loop (cpu.stat nr_throttled grows)" sh -c '
    '"$corral"' run -q --cpus 0.2 -- /bin/sh -c "while :; do :; done" & p=$!
    cg=""; t=0
    for i in $(seq 300); do
        cg=$(ls -d /sys/fs/cgroup/corral.slice/corral-run.scope/task-* 2>/dev/null | head -n1)
        if [ -n "$cg" ]; then
            t=$(awk "\$1 == \"nr_throttled\" {print \$2}" "$cg/cpu.stat" 2>/dev/null)
            [ "${t:-0}" -ge 3 ] && break
        fi
        sleep 0.1
    done
    echo "task cgroup: $cg"; cat "$cg/cpu.max" "$cg/cpu.stat"
    kill -INT $p; wait $p
    [ "${t:-0}" -ge 3 ]'

printf '[limits.max]\nmemory = "64MiB"\n' > "$pol/20-small.toml"
vm_check "a task asking for more than the policy allows is refused with the rule, file and line" sh -c '
    out=$('"$corral"' run --policy-dir '"$pol"' --memory 128MiB -- /bin/true 2>&1); rc=$?; echo "$out"; echo rc=$rc
    [ $rc = 125 ] && echo "$out" | grep -qF "limits.max.memory = 64MiB ('"$pol"'/20-small.toml:2)"'

vm_check "corral policy check shows where each value comes from" sh -c '
    out=$('"$corral"' policy check '"$pol"'); echo "$out"
    echo "$out" | grep -q "limits.max.memory = \"64MiB\" .*# '"$pol"'/20-small.toml:2"'

mkdir -p /var/tmp/policy-userns
printf '[user_namespace]\nenabled = true\n[security]\nusers = ["nobody", "root"]\n' > /var/tmp/policy-userns/00.toml
vm_check "with [user_namespace] enabled, root in the task is subuid 100000 on the host" sh -c '
    out=$('"$corral"' run -q --policy-dir /var/tmp/policy-userns --user root -- /bin/sh -c "id -u; cat /proc/self/uid_map; touch /mnt/sandbox/f && ls -ln /mnt/sandbox/f"); rc=$?
    echo "$out"; echo rc=$rc
    [ $rc = 0 ] && [ "$(echo "$out" | sed -n 1p)" = 0 ] && echo "$out" | sed -n 2p | grep -Eq "^ *0 +100000 +65536$"'

vm_check "no task cgroup and no sandbox is left after the runs" sh -c '
    left=$(ls -d /sys/fs/cgroup/corral.slice/corral-run.scope/task-* 2>/dev/null); echo "cgroups left: [$left]"
    sb=$(ls '"$state"' 2>/dev/null); echo "sandboxes left: [$sb]"
    [ -z "$left" ] && [ -z "$sb" ]'

vm_finish
