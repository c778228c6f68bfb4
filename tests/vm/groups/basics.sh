# Guest group "basics": what every later guest test relies on. systemd is PID 1, the cgroup v2
# hierarchy is the only one and has the controllers Corral uses, a transient scope with MemoryMax
# is OOM-killed and memory.events counts it, and a .deb built on the host (basics.host.sh)
# installs with apt offline and its unit starts under systemctl.
. "$CORRAL_SRC/tests/vm/groups/lib.sh"

# ---- systemd and cgroup v2 ----
vm_check "PID 1 is systemd" sh -c '[ "$(cat /proc/1/comm)" = systemd ] && readlink /proc/1/exe | grep -x /usr/lib/systemd/systemd'
vm_check "systemd booted with no failed units" sh -c '
    systemctl is-system-running; f=$(systemctl --failed --no-legend --plain); echo "$f"; [ -z "$f" ]'
vm_check "/sys/fs/cgroup is cgroup2 (unified hierarchy)" sh -c '[ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]'
vm_check "no cgroup v1 hierarchy is mounted" sh -c 'grep cgroup /proc/mounts; ! awk "\$3 == \"cgroup\"" /proc/mounts | grep -q .'
vm_check "cgroup.controllers lists cpuset cpu io memory pids" sh -c '
    c=" $(cat /sys/fs/cgroup/cgroup.controllers) "; echo "controllers:$c"
    for k in cpuset cpu io memory pids; do case "$c" in *" $k "*) ;; *) echo "missing $k"; exit 1 ;; esac; done'
vm_check "a Delegate=yes scope can enable all five controllers below it" \
    systemd-run --quiet --scope -p Delegate=yes --unit=corral-deleg sh -c '
    cg=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)
    mkdir "$cg/leaf" "$cg/sub" && echo $$ > "$cg/leaf/cgroup.procs" &&
    echo "+cpuset +cpu +io +memory +pids" > "$cg/cgroup.subtree_control" &&
    echo "sub-cgroup controllers: $(cat "$cg/sub/cgroup.controllers")" &&
    [ "$(cat "$cg/sub/cgroup.controllers")" = "cpuset cpu io memory pids" ]'

# ---- OOM: a transient scope with MemoryMax (see RECIPE.md pitfall 3: assert oom_kill >= 1) ----
oom_kill() { awk '$1 == "oom_kill" {print $2}' "$1"; }
before=$(oom_kill /sys/fs/cgroup/system.slice/memory.events)
vm_check "scope with MemoryMax=20M and OOMPolicy=continue: its memory.events counts the OOM kill" \
    systemd-run --quiet --scope -p MemoryMax=20M -p OOMPolicy=continue --unit=corral-oom1 sh -c '
    head -c 100M /dev/zero | tail; echo "pipeline exit status $? (137 = SIGKILL)"
    ev=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.events; cat "$ev"
    [ "$(awk "\$1 == \"oom_kill\" {print \$2}" "$ev")" -ge 1 ]'
systemd-run --quiet --scope -p MemoryMax=20M --unit=corral-oom2 sh -c 'head -c 100M /dev/zero | tail'
vm_check "scope with MemoryMax=20M (default OOMPolicy=stop): Result=oom-kill" \
    sh -c 'r=$(systemctl show -P Result corral-oom2.scope); echo "Result=$r"; [ "$r" = oom-kill ]'
after=$(oom_kill /sys/fs/cgroup/system.slice/memory.events)
vm_check "system.slice memory.events oom_kill grew by >= 2 ($before -> $after)" test "$after" -ge $((before + 2))
systemctl reset-failed corral-oom2.scope 2>/dev/null

# ---- a host-built .deb, installed offline with apt; its unit starts ----
deb=$CORRAL_VM_XCHG/debs/corral-vm-hello_1.0_all.deb
for _ in $(seq 120); do [ -e "$CORRAL_VM_XCHG/debs/ready" ] && break; sleep 0.5; done
vm_check "host built the test .deb" test -f "$deb"
vm_check "the guest cannot connect out of user-mode networking (restrict=on)" \
    sh -c '! timeout 5 busybox nc -w 3 10.0.2.2 80 </dev/null'
cp "$deb" /var/tmp/ 2>/dev/null
vm_check "apt-get install ./corral-vm-hello_1.0_all.deb (offline)" \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y /var/tmp/corral-vm-hello_1.0_all.deb
vm_check "dpkg reports corral-vm-hello installed" \
    sh -c '[ "$(dpkg-query -W -f "\${Status} \${Version}" corral-vm-hello)" = "install ok installed 1.0" ]'
vm_check "systemctl start corral-vm-hello.service" systemctl start corral-vm-hello.service
vm_check "corral-vm-hello.service is active and runs in its own cgroup" sh -c '
    systemctl is-active corral-vm-hello.service
    for i in $(seq 50); do [ -s /run/corral-vm-hello/started ] && break; sleep 0.1; done
    cat /run/corral-vm-hello/started
    [ "$(systemctl is-active corral-vm-hello.service)" = active ] &&
    grep -qx "0::/system.slice/corral-vm-hello.service" /run/corral-vm-hello/started &&
    [ "$(systemctl show -P ControlGroup corral-vm-hello.service)" = /system.slice/corral-vm-hello.service ]'
vm_check "systemctl stop corral-vm-hello.service" sh -c '
    systemctl stop corral-vm-hello.service; s=$(systemctl is-active corral-vm-hello.service); echo "$s"; [ "$s" = inactive ]'
vm_finish
