#!/bin/bash
# Killing the harness leaves no qemu behind: SIGKILL (PR_SET_PDEATHSIG) and SIGTERM (trap), and
# the next run removes the directory a SIGKILLed run left.
. "$(dirname "$0")/lib.sh"
start_run() { # name -> RP (runner pid), RID (run id)
    "$VM/run" --no-build-dir --timeout 300 --append rdinit=/bin/sh --results "$T/$1" selftest 2>"$T/$1.err" &
    RP=$!
    wait_until 60 sh -c "grep -q 'run corral-vm-run' '$T/$1.err'" || { fail "$1: runner did not start"; cat "$T/$1.err"; finish; }
    RID=$(run_id_of "$T/$1.err")
    expect "$1: qemu of run $RID is running" wait_until 10 qemu_running "$RID"
}
start_run sigkill
kill -KILL "$RP"; wait "$RP" 2>/dev/null
expect "SIGKILL of the runner: qemu of run $RID gone within 5 s" wait_until 5 no_qemu_of_run "$RID"
killed_dir=/var/tmp/$RID
expect "SIGKILL leaves its run directory (removed by the next run)" test -d "$killed_dir"

start_run sigterm
expect "the next run removed the dead run's directory" test ! -e "$killed_dir"
kill -TERM "$RP"; wait "$RP"; rc=$?
expect "SIGTERM of the runner: exit status 143, got $rc" test "$rc" = 143
expect "SIGTERM of the runner: qemu of run $RID gone" wait_until 5 no_qemu_of_run "$RID"
expect "SIGTERM of the runner: run directory removed" test ! -e "/var/tmp/$RID"
finish
