# tests/vm/selftest/lib.sh - helpers for the harness's own host-side tests (sourced).
set -u
VM=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=$(mktemp -d /var/tmp/corral-vm-selftest.XXXXXX)
trap 'rm -rf "$T"' EXIT
FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
expect() { # description command...
    local d=$1; shift
    if "$@"; then pass "$d"; else fail "$d"; fi
}
run_id_of() { # stderr file of a tests/vm/run -> its run id (corral-vm-run.XXXXXX)
    grep -o 'run corral-vm-run\.[A-Za-z0-9]*' "$1" | head -n1 | cut -d' ' -f2
}
qemu_of_run() { # run id -> pids of its qemu processes (the id is on their kernel command line)
    pgrep -f "corral\.run=$1( |\$)"
}
no_qemu_of_run() { ! qemu_of_run "$1" >/dev/null; }
qemu_running() { qemu_of_run "$1" >/dev/null; }
wait_until() { # seconds command...
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -lt "$deadline" ] || return 1; sleep 0.2; done
}
finish() {
    if [ "$FAILS" = 0 ]; then echo "== all passed"; exit 0; fi
    echo "== $FAILS failure(s)"; exit 1
}
