# Guest group "sysd": corral-agent as a Type=notify service with a watchdog (docs/dbus.md) —
# READY=1 only after recovery, STATUS= lines, org.corral.Agent1 on the real system bus under the
# shipped policy file (busctl introspect, properties, KillTask; nobody refused), journald fields
# (`journalctl CORRAL_TASK_ID=...`), and SIGSTOP of the agent -> watchdog kill -> restart by
# systemd with tasks surviving (KillMode=process, Delegate=yes) and adopted.
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
vm_require_build
corral="$CORRAL_BUILD/cli/corral"
agent="$CORRAL_BUILD/agent/corral-agent"
launcher="$CORRAL_BUILD/launcher/corral-launcher"
unit=corral-sysd-test
work=/var/lib/corral/sysd-test
sock=/run/corral/agent.sock
mkdir -p /etc/corral/policy.d
printf '[security]\nusers = ["nobody", "root"]\n' > /etc/corral/policy.d/10-test.toml
# What the package installs: the bus policy (only root owns org.corral.Agent1; methods for root
# and group corral).
mkdir -p /etc/dbus-1/system.d
cp "$CORRAL_SRC/dbus/policy/org.corral.Agent1.conf" /etc/dbus-1/system.d/
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig

cat > /run/systemd/system/$unit.service <<UNIT
[Service]
Type=notify
NotifyAccess=main
WatchdogSec=10s
TimeoutAbortSec=5s
Restart=on-failure
RestartSec=1s
KillMode=process
Delegate=yes
ExecStart=$agent --work-dir $work --socket $sock --listen "" --launcher $launcher
UNIT
systemctl daemon-reload

state_of() { "$corral" agent tasks | awk -v t="$1" '$1 == t {print $3}'; }
wait_state() {  # TASK STATE
    for i in $(seq 300); do [ "$(state_of "$1")" = "$2" ] && return 0; sleep 0.1; done
    echo "task $1: state $(state_of "$1"), wanted $2"; "$corral" agent tasks; return 1
}
status_text() { systemctl show -p StatusText --value $unit; }
prop() { busctl get-property org.corral.Agent1 /org/corral/Agent1 org.corral.Agent1 "$1"; }

vm_check "systemctl start returns once the agent said READY=1, with a STATUS= line" sh -c '
    systemctl start '$unit' || { journalctl -u '$unit' --no-pager | tail -20; exit 1; }
    s=$(systemctl show -p StatusText --value '$unit'); echo "StatusText: $s"
    systemctl is-active '$unit' && echo "$s" | grep -Eq "(standalone|discovering), agent .*, 0 tasks"'

vm_check "tasks run" sh -c '
    '"$(declare -f state_of wait_state)"'; corral='"$corral"'
    for t in keep1 keep2; do "$corral" agent launch --id $t -- "sleep 600" >/dev/null || exit 1; done
    wait_state keep1 TASK_RUNNING && wait_state keep2 TASK_RUNNING'

vm_check "busctl introspect shows org.corral.Agent1; properties read by anyone" sh -c '
    busctl introspect org.corral.Agent1 /org/corral/Agent1 | tee /tmp/introspect | grep -q "\.KillTask" &&
    grep -q "\.TaskStateChanged" /tmp/introspect && grep -q "\.TaskCount" /tmp/introspect || exit 1
    n=$(setpriv --reuid=65534 --regid=65534 --clear-groups busctl get-property org.corral.Agent1 \
        /org/corral/Agent1 org.corral.Agent1 TaskCount); echo "TaskCount as nobody: $n"; [ "$n" = "u 2" ]'

vm_check "KillTask over D-Bus: nobody is refused, root kills" sh -c '
    '"$(declare -f state_of wait_state)"'; corral='"$corral"'
    out=$(setpriv --reuid=65534 --regid=65534 --clear-groups busctl call org.corral.Agent1 \
        /org/corral/Agent1 org.corral.Agent1 KillTask s keep2 2>&1) && exit 1
    echo "nobody: $out"; echo "$out" | grep -qi "access denied" || exit 1
    [ "$(state_of keep2)" = TASK_RUNNING ] || exit 1
    busctl call org.corral.Agent1 /org/corral/Agent1 org.corral.Agent1 KillTask s keep2 &&
    wait_state keep2 TASK_KILLED'

vm_check "journalctl CORRAL_TASK_ID= finds the task lines with framework and agent ids" sh -c '
    journalctl CORRAL_TASK_ID=keep2 -o verbose --no-pager > /tmp/j; grep -c MESSAGE= /tmp/j
    grep -q "MESSAGE=task keep2 (framework local): TASK_KILLED" /tmp/j &&
    grep -q "CORRAL_FRAMEWORK_ID=local" /tmp/j && grep -q "CORRAL_AGENT_ID=local-" /tmp/j &&
    journalctl CORRAL_AGENT_ID=$(grep -m1 -o "CORRAL_AGENT_ID=.*" /tmp/j | cut -d= -f2) \
        --no-pager | grep -q "started: agent id"'

vm_check "SIGSTOP of the agent: the watchdog kills it, systemd restarts it, the task survives and is adopted; READY only after recovery" sh -c '
    '"$(declare -f state_of wait_state)"'; corral='"$corral"'
    pid=$(systemctl show -p MainPID --value '$unit'); task=$(pgrep -f "sleep 600" | head -1)
    echo "agent $pid, task $task"; kill -STOP $pid
    for i in $(seq 600); do
        n=$(systemctl show -p NRestarts --value '$unit'); [ "$n" -ge 1 ] && systemctl is-active -q '$unit' && break
        sleep 0.1; done
    echo "NRestarts=$n MainPID=$(systemctl show -p MainPID --value '$unit')"; [ "$n" -ge 1 ] || exit 1
    journalctl -u '$unit' --no-pager | grep -i watchdog | tail -2
    journalctl -u '$unit' --no-pager | grep -qi "watchdog timeout" || exit 1
    kill -0 $task || { echo "task process $task is gone"; exit 1; }
    wait_state keep1 TASK_RUNNING || exit 1
    # The restarted agent logged its recovery before systemd saw READY=1 ("Started").
    journalctl -u '$unit' -o cat --no-pager > /tmp/u
    rec=$(grep -n "task(s) recovered" /tmp/u | tail -1 | cut -d: -f1)
    started=$(grep -n "^Started " /tmp/u | tail -1 | cut -d: -f1)
    echo "recovered at line $rec, Started at line $started"; [ -n "$rec" ] && [ -n "$started" ] && [ "$rec" -lt "$started" ] || exit 1
    s=$(systemctl show -p StatusText --value '$unit'); echo "StatusText: $s"; echo "$s" | grep -q "1 tasks"'

vm_check "systemctl stop: STOPPING, tasks left running for the next agent; nothing left after a kill" sh -c '
    '"$(declare -f state_of wait_state)"'; corral='"$corral"'
    "$corral" agent kill "$("$corral" agent tasks | awk "\$1 == \"keep1\" {print \$4}")"
    wait_state keep1 TASK_KILLED; systemctl stop '$unit'; systemctl is-active -q '$unit' && exit 1; true'

vm_finish
