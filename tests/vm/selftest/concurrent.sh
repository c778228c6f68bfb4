#!/bin/bash
# Two runs at once do not collide (own run directories, shares, results), and a run returns its
# group's exit status: run A's group passes (0), run B's group exits 3.
. "$(dirname "$0")/lib.sh"
"$VM/run" --no-build-dir --timeout 400 --results "$T/a" selftest 2>"$T/a.err" >"$T/a.out" &
A=$!
"$VM/run" --no-build-dir --timeout 400 --results "$T/b" --env CORRAL_VM_SELFTEST_EXIT=3 selftest 2>"$T/b.err" >"$T/b.out" &
B=$!
wait "$A"; ra=$?
wait "$B"; rb=$?
for x in a b; do echo "-- run $x"; sed 's/^/  | /' "$T/$x.err" "$T/$x.out"; done
ia=$(run_id_of "$T/a.err") ib=$(run_id_of "$T/b.err")
expect "run A exit status 0, got $ra" test "$ra" = 0
expect "run B exit status 3 (its group's), got $rb" test "$rb" = 3
expect "two different run ids ($ia, $ib)" test -n "$ia" -a -n "$ib" -a "$ia" != "$ib"
expect "run A's guest wrote run A's id to run A's results" grep -qx "$ia" "$T/a/node0/run-id"
expect "run B's guest wrote run B's id to run B's results" grep -qx "$ib" "$T/b/node0/run-id"
expect "run A's gtest-style XML copied back" grep -q 'failures="0"' "$T/a/node0/vm-selftest.xml"
expect "no qemu of either run is left" sh -c "! pgrep -f 'corral\.run=($ia|$ib)( |\$)'"
finish
