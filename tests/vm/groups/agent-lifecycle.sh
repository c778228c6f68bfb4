# Guest group "agent-lifecycle": the agent's task lifecycle tests (agent/src/agent_roottest.cpp,
# the real corral-agent binary and launcher driven over the unix socket API) in the guest, where
# cgroup v2 is required and the systemd backend is used (CORRAL_AGENT_TEST_IN_GUEST=1: no
# require_v2 = false, waits five times longer for the emulated CPU): launch and the status order
# STARTING -> RUNNING -> FINISHED, an exit code, kill with SIGTERM and SIGKILL after the grace
# period (each task in its own cgroup), a failing COMMAND health check -> task killed and reported
# TASK_FAILED unhealthy, a URI with a bad checksum refused (a good one fetched, a path outside the
# policy refused).
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
vm_require_build
bin=$CORRAL_BUILD/agent/corral_agent_roottest
vm_check "corral_agent_roottest is built" test -x "$bin"

# Output to a file, not through vm_check's pipe: a task a failing test leaves behind must not keep
# the group waiting for EOF. timeout: a hang is a failure, not a lost guest.
run_gtest() { # NAME FILTER
    local name=$1 filter=$2
    CORRAL_AGENT_TEST_IN_GUEST=1 timeout 400 "$bin" --gtest_filter="$filter" \
        --gtest_output="xml:$RESULTS/agent_lifecycle_$name.xml" > "$RESULTS/agent_lifecycle_$name.log" 2>&1
    local rc=$?
    cat "$RESULTS/agent_lifecycle_$name.log"
    return $rc
}
vm_check "launch, status order, exit code (gtest)" run_gtest run \
    'AgentTest.ALocalTaskRunsToFinishedWithStatusesInOrderAndItsOutputIsReadable:AgentTest.AFailingTaskReportsItsExitCode'
vm_check "kill with grace, then SIGKILL; tasks in their cgroups (gtest)" run_gtest kill \
    'AgentTest.KillUsesTheGracePeriodThenSigkill'
vm_check "a failing health check kills the task, reported unhealthy (gtest)" run_gtest health \
    'AgentTest.ATaskFailingItsHealthCheckIsKilledAndReportedUnhealthy'
vm_check "a URI with a bad checksum is refused (gtest)" run_gtest uri \
    'AgentTest.AUriWithABadChecksumIsRefusedAndAGoodOneIsFetched'
vm_check "no task cgroup left" sh -c '
    left=$(find /sys/fs/cgroup -type d -name "task-*"); echo "$left"; [ -z "$left" ]'
vm_finish
