# Sourced by tests/vm/groups/packages.sh (issue 10): the systemd, journald, D-Bus, Avahi and
# watchdog checks against the INSTALLED packages — the units from /lib/systemd/system, the bus
# policy files from /usr/share/dbus-1/system.d, the configuration in /etc/corral — with both
# services running, the agent registered with the master, and task "keep" RUNNING.
# Helpers from packages.sh: vm_check, step, state_of, container_of, wait_state, task_pid,
# wait_agent, main_pid, diagnose, $corral. Sets packages_agent_restarts (expected NRestarts of
# corral-agent afterwards: the watchdog check below makes systemd restart it once).

step "next check"
vm_check "journalctl finds the task's lines by CORRAL_TASK_ID, and the agent's by CORRAL_AGENT_ID" sh -c '
    lines=$(journalctl --no-pager -o verbose CORRAL_TASK_ID=keep)
    echo "$lines" | grep -E "^ *(MESSAGE|CORRAL_[A-Z_]+)=" | head -8
    echo "$lines" | grep -q "CORRAL_TASK_ID=keep" || exit 1
    aid=$(journalctl --no-pager -u corral-agent -o verbose | sed -n "s/^ *CORRAL_AGENT_ID=//p" | tail -1)
    echo "agent id in the journal: $aid"; [ -n "$aid" ] &&
    [ "$(journalctl --no-pager -q CORRAL_AGENT_ID="$aid" | wc -l)" -gt 0 ]' || diagnose

step "next check"
vm_check "busctl reaches org.corral.Agent1 and org.corral.Master1 under the packaged bus policy" sh -c '
    ls /usr/share/dbus-1/system.d/org.corral.Agent1.conf /usr/share/dbus-1/system.d/org.corral.Master1.conf || exit 1
    busctl introspect org.corral.Agent1 /org/corral/Agent1 > /tmp/agent1 || exit 1
    busctl introspect org.corral.Master1 /org/corral/Master1 > /tmp/master1 || exit 1
    grep -E "\.(KillTask|ListTasks|Drain|ReloadPolicy|TaskCount)" /tmp/agent1 | head -5
    grep -E "\.(ListAgents|AgentCount|Leader)" /tmp/master1 | head -3
    grep -q "\.KillTask" /tmp/agent1 && grep -q "\.ListAgents" /tmp/master1 || exit 1
    tasks=$(busctl call org.corral.Agent1 /org/corral/Agent1 org.corral.Agent1 ListTasks)
    agents=$(busctl get-property org.corral.Master1 /org/corral/Master1 org.corral.Master1 AgentCount)
    echo "ListTasks: $(echo "$tasks" | cut -c1-200)"; echo "AgentCount: $agents"
    echo "$tasks" | grep -q "\"keep\"" && [ "$agents" = "u 1" ]' || diagnose

step "next check"
vm_check "the bus policy refuses the agent's methods to an ordinary user (nobody), properties stay readable" sh -c '
    '"$(declare -f state_of)"'; corral='"$corral"'
    n=$(setpriv --reuid=65534 --regid=65534 --clear-groups busctl get-property org.corral.Agent1 \
        /org/corral/Agent1 org.corral.Agent1 TaskCount) || exit 1
    echo "TaskCount as nobody: $n"
    out=$(setpriv --reuid=65534 --regid=65534 --clear-groups busctl call org.corral.Agent1 \
        /org/corral/Agent1 org.corral.Agent1 KillTask s keep 2>&1); rc=$?
    echo "KillTask as nobody: rc=$rc: $out"
    [ $rc -ne 0 ] && echo "$out" | grep -qi "access denied" &&
    [ "$(state_of keep)" = TASK_RUNNING ]' || diagnose

# Discovery: the master publishes _corral-master._tcp through the guest's avahi-daemon; an agent
# with no master in agent.toml finds it. The master must listen beyond loopback to be useful to
# other machines, so the operator opens it (the guest's only NIC is qemu's restricted user net).
step "next check"
vm_check "with no master in agent.toml, the agent finds the packaged master through Avahi" sh -c '
    '"$(declare -f wait_agent state_of)"'; corral='"$corral"'
    systemctl is-active avahi-daemon || { journalctl -u avahi-daemon --no-pager | tail; exit 1; }
    sed -i "s|^#listen = \"127.0.0.1:5050\"|listen = \"0.0.0.0:5050\"|" /etc/corral/master.toml
    grep -q "^listen = \"0.0.0.0:5050\"" /etc/corral/master.toml || exit 1
    systemctl restart corral-master || exit 1
    for i in $(seq 50); do
        avahi-browse -p -t -r -k _corral-master._tcp 2>/dev/null | grep -q "^=" && break; sleep 0.3
    done
    avahi-browse -p -t -r -k _corral-master._tcp | grep "^=" | head -2
    sed -i "s|^master = .*|#master = \"\"|" /etc/corral/agent.toml
    grep -q "^master" /etc/corral/agent.toml && exit 1
    since=$(date "+%Y-%m-%d %H:%M:%S")
    systemctl restart corral-agent || exit 1
    wait_agent || exit 1
    for i in $(seq 100); do
        journalctl -u corral-agent --since "$since" --no-pager | grep -q "registered with master" && break
        sleep 0.3
    done
    journalctl -u corral-agent --since "$since" --no-pager | grep -iE "avahi|DNS-SD|master" | tail -4
    echo "StatusText: $(systemctl show -p StatusText --value corral-agent)"
    journalctl -u corral-agent --since "$since" --no-pager | grep -q "master found through DNS-SD at http://" &&
    journalctl -u corral-agent --since "$since" --no-pager | grep -q "registered with master" &&
    [ "$(state_of keep)" = TASK_RUNNING ]' || diagnose

# Watchdog: corral-agent.service has WatchdogSec=30s; a hung agent (SIGSTOP) stops pinging, systemd
# kills it (SIGABRT; KillMode=process spares the tasks) and restarts it; the task survives.
pid_keep=$(task_pid keep)
step "next check"
vm_check "watchdog: a hung agent (SIGSTOP) is restarted by systemd and the running task survives" sh -c '
    '"$(declare -f state_of container_of wait_state task_pid wait_agent main_pid)"'; corral='"$corral"'
    before=$(main_pid corral-agent); r0=$(systemctl show -p NRestarts --value corral-agent)
    echo "WatchdogUSec=$(systemctl show -p WatchdogUSec --value corral-agent); stopping pid $before"
    kill -STOP "$before"
    for i in $(seq 120); do
        [ "$(systemctl show -p NRestarts --value corral-agent)" -gt "$r0" ] && break; sleep 1
    done
    wait_agent || exit 1
    after=$(main_pid corral-agent)
    journalctl -u corral-agent --no-pager | grep -i "watchdog" | tail -2
    echo "agent pid $before -> $after, NRestarts $r0 -> $(systemctl show -p NRestarts --value corral-agent),"\
         "task pid '"$pid_keep"' -> $(task_pid keep), state $(state_of keep)"
    [ "$before" != "$after" ] && wait_state keep TASK_RUNNING && [ "$(task_pid keep)" = '"$pid_keep"' ]' || diagnose
packages_agent_restarts=1

step "next check"
vm_check "the master unit has a watchdog too, and it is being fed (no restart)" sh -c '
    w=$(systemctl show -p WatchdogUSec --value corral-master); echo "corral-master WatchdogUSec=$w"
    [ "$w" != 0 ] && [ "$w" != infinity ] && [ -n "$w" ] &&
    [ "$(systemctl show -p NRestarts --value corral-master)" = 0 ]'
