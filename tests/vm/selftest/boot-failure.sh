#!/bin/bash
# A boot that fails before the test runner starts is reported as BOOT FAILURE (exit status 125):
# root=/dev/vdz does not exist, the initramfs says so and powers off.
. "$(dirname "$0")/lib.sh"
"$VM/run" --no-build-dir --timeout 120 --append root=/dev/vdz --results "$T/r" selftest 2>"$T/err"
rc=$?
sed 's/^/  | /' "$T/err"
expect "exit status 125 (boot failure), got $rc" test "$rc" = 125
expect "message says BOOT FAILURE and why" grep -q 'BOOT FAILURE: initramfs cannot mount the root disk /dev/vdz' "$T/err"
expect "no TIMEOUT or KERNEL PANIC reported" sh -c "! grep -qE 'TIMEOUT|KERNEL PANIC' '$T/err'"
finish
