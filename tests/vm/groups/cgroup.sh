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

vm_check "cgroupfs backend in a Delegate=yes scope (gtest)" \
    systemd-run --quiet --scope -p Delegate=yes --unit=corral-cgroupfs-test -- \
    "$bin" --gtest_filter='CgroupHost.*:*/cgroupfs' --gtest_output="xml:$RESULTS/cgroup_vmtest_cgroupfs.xml"
vm_check "systemd backend: corral.slice/corral-tasks.scope (gtest)" \
    "$bin" --gtest_filter='CgroupSystemd.*:LibcgroupQuirks.*:*/systemd' --gtest_output="xml:$RESULTS/cgroup_vmtest_systemd.xml"

# Nothing of ours is left behind but the (idle) tasks scope and its keeper.
vm_check "no task cgroup left anywhere" sh -c '
    left=$(find /sys/fs/cgroup -type d -name "task-*"); echo "$left"; [ -z "$left" ]'
vm_check "corral-tasks.scope is active under corral.slice" sh -c '
    systemctl show -P ControlGroup corral-tasks.scope; systemctl is-active corral-tasks.scope'
vm_finish
