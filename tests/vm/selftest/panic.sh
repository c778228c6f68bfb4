#!/bin/bash
# A kernel panic is reported as such (exit status 126, KERNEL PANIC), not as a timeout.
# rdinit=/nonexistent: no /init to run, the kernel cannot mount a root on its own -> panic.
. "$(dirname "$0")/lib.sh"
"$VM/run" --no-build-dir --timeout 120 --append rdinit=/nonexistent --results "$T/r" selftest 2>"$T/err"
rc=$?
sed 's/^/  | /' "$T/err"
expect "exit status 126 (kernel panic), got $rc" test "$rc" = 126
expect "message says KERNEL PANIC" grep -q 'KERNEL PANIC: Kernel panic - not syncing' "$T/err"
expect "no TIMEOUT reported" sh -c "! grep -q TIMEOUT '$T/err'"
finish
