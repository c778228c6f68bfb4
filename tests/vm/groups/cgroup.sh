# Guest group "cgroup": the cgroup v2 backends of isolator/ (isolator/vmtest/cgroup_vmtest.cpp)
# on a real systemd + pure cgroup v2 host: OOM kill seen through the memory.events notification,
# fork bomb held at pids.max and torn down with cgroup.kill (and the freeze + SIGKILL fallback),
# cpu.max throttling in cpu.stat, io.max/io.weight, 100 tasks leave no cgroup, an agent killed
# with SIGKILL leaves its tasks running and the next manager adopts or cleans them up.
# The cgroupfs backend runs in a Delegate=yes scope, as corral-agent.service would give it; the
# systemd backend creates corral.slice/corral-tasks.scope over D-Bus itself.
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
vm_require_build
bin=$CORRAL_BUILD/isolator/corral_cgroup_vmtest
vm_check "corral_cgroup_vmtest is built" test -x "$bin"

# Output goes to a file, not through vm_check's pipe: a task process a failing test leaves behind
# must not keep the group waiting for EOF. timeout: a hang shows as a failure, not a lost guest.
run_gtest() { # NAME [systemd-run args --] FILTER
    local name=$1 filter=$2; shift 2
    timeout 200 "$@" "$bin" --gtest_filter="$filter" \
        --gtest_output="xml:$RESULTS/cgroup_vmtest_$name.xml" > "$RESULTS/cgroup_vmtest_$name.log" 2>&1
    local rc=$?
    cat "$RESULTS/cgroup_vmtest_$name.log"
    return $rc
}
vm_check "cgroupfs backend in a Delegate=yes scope (gtest)" run_gtest cgroupfs 'CgroupHost.*:*/cgroupfs' \
    systemd-run --quiet --scope -p Delegate=yes --unit=corral-cgroupfs-test --
vm_check "systemd backend: corral.slice/corral-tasks.scope (gtest)" run_gtest systemd \
    'CgroupSystemd.*:LibcgroupQuirks.*:*/systemd'
grep -h '^MEASURE' "$RESULTS"/cgroup_vmtest_*.log

# Nothing of ours is left behind but the (idle) tasks scope and its keeper.
vm_check "no task cgroup left anywhere" sh -c '
    left=$(find /sys/fs/cgroup -type d -name "task-*"); echo "$left"; [ -z "$left" ]'
vm_check "corral-tasks.scope is active under corral.slice" sh -c '
    systemctl show -P ControlGroup corral-tasks.scope; systemctl is-active corral-tasks.scope'
vm_finish
