# Guest group "selftest": the smallest group, used by the harness's own tests (boot, timeout,
# kill, concurrency). Proves the shares and the environment a group gets.
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
echo "node ${CORRAL_VM_NODE} of ${CORRAL_VM_NODES}, run ${CORRAL_VM_RUN_ID}, uptime $(cut -d' ' -f1 /proc/uptime)s"
vm_check "PID 1 is systemd" test "$(cat /proc/1/comm)" = systemd
vm_check "source tree is shared read-only" sh -c "test -f '$CORRAL_SRC/tests/vm/run' && ! touch '$CORRAL_SRC/.vm-write-test' 2>/dev/null"
vm_check "results folder is writable" sh -c "echo '${CORRAL_VM_RUN_ID}' > '$RESULTS/run-id'"
vm_check "this guest was booted for this run" grep -qw "corral.run=${CORRAL_VM_RUN_ID}" /proc/cmdline
if [ -n "${CORRAL_VM_SELFTEST_EXIT:-}" ]; then
    echo "exiting with ${CORRAL_VM_SELFTEST_EXIT} as asked"; exit "${CORRAL_VM_SELFTEST_EXIT}"
fi
if [ -n "${CORRAL_VM_SELFTEST_HANG:-}" ]; then
    echo "hanging as asked"; touch "$RESULTS/hanging"; sleep infinity
fi
vm_finish
