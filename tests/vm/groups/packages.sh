# Guest group "packages": the operator's path. Corral's .debs (built on the host by
# packages.host.sh from this build tree) are installed OFFLINE into the fresh guest with apt-get;
# then: units enabled and started, READY reached (active), the master runs as the unprivileged
# user corral, the agent registers with it, a task runs end to end; `systemctl restart` and a
# package upgrade (dpkg -i of a newer version) keep a running task alive (same pid); `systemctl
# reload` with a broken policy keeps the old policy and the journal says why; man pages and bash
# completion are installed; purge removes what the packages created and nothing else.
#
# Hook for the systemd/D-Bus checks (issue 10, part A): if tests/vm/groups/packages.sysd.sh
# exists it is sourced after the end-to-end checks, with the packaged units running, a task
# "keep" RUNNING, and these helpers: vm_check, state_of TASK, wait_state TASK STATE, task_pid
# TASK, $corral. Put the journald-field, busctl, Avahi and watchdog (SIGSTOP) checks there.
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
xchg=$CORRAL_VM_XCHG/debs
corral=/usr/bin/corral

state_of() { "$corral" agent tasks 2>/dev/null | awk -v t="$1" '$1 == t {print $3}'; }
container_of() { "$corral" agent tasks | awk -v t="$1" '$1 == t {print $4}'; }
wait_state() { # TASK STATE [TRIES]
    for _ in $(seq "${3:-300}"); do [ "$(state_of "$1")" = "$2" ] && return 0; sleep 0.2; done
    echo "task $1: state '$(state_of "$1")', wanted $2"; "$corral" agent tasks; return 1
}
# pid of the task's own process (the `sleep` below corral-init), from its cgroup
task_pid() {
    local c; c=$(container_of "$1") || return 1
    local procs=/sys/fs/cgroup/corral.slice/corral-tasks.scope/task-$c
    for p in $(cat "$procs"/cgroup.procs "$procs"/*/cgroup.procs 2>/dev/null); do
        [ "$(cat /proc/$p/comm 2>/dev/null)" = sleep ] && { echo "$p"; return 0; }
    done
    echo "no sleep process in $procs" >&2; return 1
}
wait_agent() { # the agent answers on its socket
    for _ in $(seq 150); do "$corral" agent tasks >/dev/null 2>&1 && return 0; sleep 0.2; done
    journalctl -u corral-agent --no-pager | tail -20; return 1
}
main_pid() { systemctl show -p MainPID --value "$1"; }
diagnose() { # what systemd and the daemons say, after a failed check
    echo "---- diagnostics"; systemctl list-jobs --no-pager; systemctl status --no-pager corral-agent corral-master 2>&1 | head -30
    journalctl -b --no-pager -u corral-agent -u corral-master | tail -40
}
step() { echo "[$(date +%T)] $*"; }
export corral DEBIAN_FRONTEND=noninteractive

echo "waiting for the host side to build the packages"
for _ in $(seq 900); do [ -e "$xchg/ready" ] || [ -e "$xchg/failed" ] && break; sleep 1; done
if [ ! -e "$xchg/ready" ]; then
    vm_check "the host side built the packages" sh -c "cat $xchg/failed 2>/dev/null; false"
    vm_finish
fi
v1=$(cat "$xchg/v1/version") v2=$(cat "$xchg/v2/version")
cp "$xchg"/v1/*.deb "$xchg"/v2/*.deb /tmp/ 2>/dev/null; mkdir -p /tmp/v1 /tmp/v2
cp "$xchg"/v1/*.deb /tmp/v1/; cp "$xchg"/v2/*.deb /tmp/v2/
# what exists before, to prove that purge removes nothing else
mkdir -p /var/lib/corral && echo "not from a package" > /var/lib/corral/admin-note
getent passwd > /tmp/passwd.before

step "installing $v1"
# a slow install (TCG on a loaded host) shows what it is doing meanwhile
( while sleep 60; do step "still installing:"; ps -eo pid,etime,args --forest | grep -v "\[" | tail -15
    systemctl list-jobs --no-pager | head; done ) &
watcher=$!
vm_check "apt-get installs corral-agent, corral-master and corral-cli $v1 offline" \
    timeout 600 apt-get install -y -q --no-install-recommends /tmp/v1/corral-agent_*.deb \
    /tmp/v1/corral-master_*.deb /tmp/v1/corral-cli_*.deb </dev/null || diagnose
kill $watcher 2>/dev/null

step "next check"
vm_check "both services are enabled and active (READY reached), with a STATUS line" sh -c '
    for u in corral-agent corral-master; do
        echo "$u: $(systemctl is-enabled $u) $(systemctl is-active $u): $(systemctl show -p StatusText --value $u)"
        [ "$(systemctl is-enabled $u)" = enabled ] && [ "$(systemctl is-active $u)" = active ] || exit 1
        [ -n "$(systemctl show -p StatusText --value $u)" ] || exit 1
    done
    systemctl status --no-pager corral-agent corral-master | head -20' || diagnose

step "next check"
vm_check "the master runs as the unprivileged user corral with its state in /var/lib/corral/master" sh -c '
    pid=$(systemctl show -p MainPID --value corral-master)
    user=$(ps -o user= -p "$pid"); caps=$(grep CapEff /proc/$pid/status)
    echo "corral-master pid $pid user $user $caps"; ls -ld /var/lib/corral/master
    [ "$user" = corral ] && [ "$caps" = "CapEff:	0000000000000000" ] &&
    [ "$(stat -c %U /var/lib/corral/master)" = corral ] && [ -f /var/lib/corral/master/state.db ]'

step "next check"
vm_check "the agent socket belongs to group corral (tmpfiles, setgid /run/corral)" sh -c '
    ls -ld /run/corral /run/corral/agent.sock
    [ "$(stat -c %G /run/corral/agent.sock)" = corral ] && [ "$(stat -c %a /run/corral)" = 2750 ]'

step "next check"
vm_check "man pages of every binary and file format, and bash completion, are installed" sh -c '
    for m in man1/corral.1 man8/corral-agent.8 man8/corral-master.8 man8/corral-launcher.8 \
             man8/corral-launcher-init.8 man5/corral-agent.toml.5 man5/corral-master.toml.5 \
             man5/corral-policy.5; do
        [ -s /usr/share/man/$m.gz ] || { echo "missing /usr/share/man/$m.gz"; exit 1; }
    done
    out=$(bash -c ". /usr/share/bash-completion/completions/corral
        COMP_WORDS=(corral agent l); COMP_CWORD=2; _corral; echo \${COMPREPLY[*]}")
    echo "completion of \"corral agent l\": $out"; [ "$out" = "launch logs" ]'

step "next check"
vm_check "the agent registers with the packaged master (master set in /etc/corral/agent.toml)" sh -c '
    sed -i "s|^#master = \"\"|master = \"http://127.0.0.1:5050\"|" /etc/corral/agent.toml
    grep -q "^master = " /etc/corral/agent.toml || exit 1
    systemctl restart corral-agent || exit 1
    for i in $(seq 100); do "$corral" agents 2>/dev/null | grep -q "$(hostname)" && break; sleep 0.3; done
    "$corral" agents; "$corral" agents | grep -q "$(hostname)"'

step "next check"
vm_check "a task runs end to end: launched, running in corral.slice, output readable" sh -c '
    '"$(declare -f state_of container_of wait_state)"'
    "$corral" agent launch --id hello -- "echo hello from corral" >/dev/null || exit 1
    wait_state hello TASK_FINISHED || exit 1
    [ "$("$corral" agent logs "$(container_of hello)")" = "hello from corral" ] || exit 1
    "$corral" agent launch --id keep -- "sleep 3600" >/dev/null || exit 1
    wait_state keep TASK_RUNNING || exit 1
    ls -d /sys/fs/cgroup/corral.slice/corral-tasks.scope/task-$(container_of keep)'

pid0=$(task_pid keep)
step "next check"
vm_check "systemctl restart corral-agent: the running task survives (same pid) and is adopted" sh -c '
    '"$(declare -f state_of container_of wait_state task_pid wait_agent main_pid)"'
    before=$(main_pid corral-agent)
    systemctl restart corral-agent || exit 1
    wait_agent || exit 1
    after=$(main_pid corral-agent); echo "agent pid $before -> $after, task pid '"$pid0"' -> $(task_pid keep)"
    [ "$before" != "$after" ] && [ "$(state_of keep)" = TASK_RUNNING ] && [ "$(task_pid keep)" = '"$pid0"' ]'

step "next check"
vm_check "upgrade to $v2 with dpkg -i: services restarted, the running task survives (same pid)" sh -c '
    '"$(declare -f state_of container_of wait_state task_pid wait_agent main_pid)"'
    before=$(main_pid corral-agent)
    timeout 600 dpkg -i /tmp/v2/corral-agent_*.deb /tmp/v2/corral-master_*.deb /tmp/v2/corral-cli_*.deb </dev/null || exit 1
    wait_agent || exit 1
    after=$(main_pid corral-agent)
    echo "installed: $(dpkg-query -W -f "\${Package} \${Version}\n" corral-agent corral-master corral-cli | tr "\n" " ")"
    echo "agent pid $before -> $after, task pid '"$pid0"' -> $(task_pid keep)"
    [ "$(dpkg-query -W -f "\${Version}" corral-agent)" = "'"$v2"'" ] &&
    [ "$(dpkg-query -W -f "\${Version}" corral-master)" = "'"$v2"'" ] &&
    [ "$before" != "$after" ] && systemctl is-active corral-agent corral-master &&
    [ "$(state_of keep)" = TASK_RUNNING ] && [ "$(task_pid keep)" = '"$pid0"' ]'

step "next check"
vm_check "systemctl reload with a broken policy file keeps the old policy and the journal says why" sh -c '
    '"$(declare -f state_of container_of wait_state)"'
    printf "[limits.default]\nmemory = \"64MiB\"\n" > /etc/corral/policy.d/20-site.toml
    systemctl reload corral-agent || exit 1
    "$corral" agent launch --id p1 -- "sleep 600" >/dev/null && wait_state p1 TASK_RUNNING || exit 1
    m1=$(cat /sys/fs/cgroup/corral.slice/corral-tasks.scope/task-$(container_of p1)/memory.max)
    since=$(date "+%Y-%m-%d %H:%M:%S")
    printf "[limits.default]\nmemory = \"128MiB\"\nmemroy_swap = 0\n" > /etc/corral/policy.d/30-broken.toml
    systemctl reload corral-agent || exit 1
    sleep 1
    systemctl is-active corral-agent || exit 1
    "$corral" agent launch --id p2 -- "sleep 600" >/dev/null && wait_state p2 TASK_RUNNING || exit 1
    m2=$(cat /sys/fs/cgroup/corral.slice/corral-tasks.scope/task-$(container_of p2)/memory.max)
    echo "memory.max under the good policy: $m1; after the broken reload: $m2"
    journalctl -u corral-agent --since "$since" --no-pager | grep -i "30-broken" | tail -3
    [ "$m1" = 67108864 ] && [ "$m2" = 67108864 ] &&
    journalctl -u corral-agent --since "$since" --no-pager | grep -q "30-broken.toml:3"'
rm -f /etc/corral/policy.d/30-broken.toml

if [ -f "$CORRAL_SRC/tests/vm/groups/packages.sysd.sh" ]; then
    echo "running the systemd/D-Bus checks of tests/vm/groups/packages.sysd.sh"
    . "$CORRAL_SRC/tests/vm/groups/packages.sysd.sh"
fi

step "next check"
vm_check "no unexpected restarts (only the watchdog's, if it was tested) and no failed units" sh -c '
    for u in corral-agent corral-master; do echo "$u NRestarts=$(systemctl show -p NRestarts --value $u)"; done
    systemctl --failed --no-legend
    [ "$(systemctl show -p NRestarts --value corral-agent)" = '"${packages_agent_restarts:-0}"' ] &&
    [ "$(systemctl show -p NRestarts --value corral-master)" = 0 ] &&
    [ -z "$(systemctl --failed --no-legend)" ]'

# `systemd-analyze security` exposure of the packaged units (recorded in docs/packaging.md)
echo "---- systemd-analyze security"
systemd-analyze security --no-pager corral-agent.service corral-master.service 2>&1 | tail -4
systemd-analyze security --no-pager corral-master.service 2>&1 | grep -E "^✗" | head -40

step "next check"
vm_check "purge removes what the packages created and nothing else" sh -c '
    "$corral" agent drain --deadline 1s --wait >/dev/null || exit 1
    timeout 600 apt-get purge -y -q corral-agent corral-master corral-cli </dev/null >/dev/null || exit 1
    left=""
    for f in /usr/sbin/corral-agent /usr/sbin/corral-master /usr/bin/corral /usr/sbin/corral-launcher \
             /lib/systemd/system/corral-agent.service /lib/systemd/system/corral-master.service \
             /lib/systemd/system/corral.slice /etc/corral/agent.toml /etc/corral/master.toml \
             /etc/corral/policy.d/00-defaults.toml /var/lib/corral/agent /var/lib/corral/master \
             /run/corral /usr/lib/tmpfiles.d/corral-agent.conf /usr/lib/sysusers.d/corral-master.conf \
             /usr/share/man/man8/corral-agent.8.gz /usr/share/bash-completion/completions/corral \
             /etc/systemd/system/multi-user.target.wants/corral-agent.service; do
        [ -e "$f" ] && left+=" $f"
    done
    echo "left behind by purge:${left:- nothing}"
    systemctl is-active corral-agent corral-master; dpkg -l | grep corral
    kept=""
    [ -f /var/lib/corral/admin-note ] || kept+=" /var/lib/corral/admin-note"
    [ -f /etc/corral/policy.d/20-site.toml ] || kept+=" /etc/corral/policy.d/20-site.toml"
    echo "removed although not from the packages:${kept:- nothing}"
    getent passwd | diff /tmp/passwd.before - | sed "s/^/passwd: /"
    [ -z "$left" ] && [ -z "$kept" ] && ! dpkg -l | grep -q "^.. *corral-"'
vm_finish
