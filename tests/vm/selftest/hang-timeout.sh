#!/bin/bash
# A hung guest is killed at the timeout; the failure says TIMEOUT and shows the console's tail.
# The guest hangs for real: rdinit=/bin/sh leaves the initramfs shell waiting on a console that
# never gets input.
. "$(dirname "$0")/lib.sh"
start=$SECONDS
"$VM/run" --no-build-dir --timeout 25 --append rdinit=/bin/sh --results "$T/r" selftest 2>"$T/err"
rc=$?
took=$((SECONDS - start))
sed 's/^/  | /' "$T/err"
id=$(run_id_of "$T/err")
expect "exit status 124 (timeout), got $rc" test "$rc" = 124
expect "killed at the timeout (took ${took}s, limit 25s + margin)" test "$took" -lt 60
expect "message says TIMEOUT" grep -q 'TIMEOUT: guest had not started the group after 25s' "$T/err"
expect "message shows the console's tail" grep -q 'last 60 lines of the console' "$T/err"
expect "the console tail is the guest's (the initramfs shell)" grep -qi 'job control\|/ #' "$T/err"
expect "console log copied to the results" test -s "$T/r/node0/console.log"
expect "no qemu of run $id is left" no_qemu_of_run "$id"
finish
