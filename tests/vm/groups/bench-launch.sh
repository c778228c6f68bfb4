# Benchmark group "bench-launch" (NOT a test, not registered with ctest): launch-to-exit time of
# /bin/true with full isolation, Corral side by side with runc, crun and systemd-run in one guest
# boot, on the same busybox rootfs. Run it with bench/launch/run; it writes
# $RESULTS/launch.md (the table for docs/benchmarks.md) and $RESULTS/raw-*.txt (milliseconds).
#   env: BENCH_RUNS (default 200)
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
vm_require_build
runs=${BENCH_RUNS:-200}
b=/var/tmp/bench
mkdir -p "$b/bundle/rootfs/bin" "$b/sandbox" "$b/out" "$b/sbin"
# Corral's binaries run from the guest's own disk, as installed ones would (runc and crun are in
# /usr/sbin): the build tree is a 9p share without a page cache, and exec'ing from it costs
# hundreds of ms per launch under TCG that no installed runtime pays.
cp "$CORRAL_BUILD/launcher/corral-launcher" "$CORRAL_BUILD/launcher/corral-launcher-init" "$b/sbin/"
# `corral run` is measured when the build tree has it (a launcher-only build does not).
[ -x "$CORRAL_BUILD/cli/corral" ] && cp "$CORRAL_BUILD/cli/corral" "$b/sbin/"
corral=$b/sbin/corral
launcher=$b/sbin/corral-launcher
export CORRAL_LAUNCHER=$launcher
for _ in $(seq 240); do [ -e "$CORRAL_VM_XCHG/bench/ready" ] && break; sleep 0.5; done
cp "$CORRAL_VM_XCHG/bench/busybox" "$b/bundle/rootfs/bin/busybox"
cp "$CORRAL_VM_XCHG/bench/cg-launch" "$b/sbin/cg-launch"
ln -sf busybox "$b/bundle/rootfs/bin/true"
ln -sf busybox "$b/bundle/rootfs/bin/sh"
ln -sf busybox "$b/bundle/rootfs/bin/sleep"
mkdir -p "$b/bundle/rootfs/proc" "$b/bundle/rootfs/dev" "$b/bundle/rootfs/sys" "$b/bundle/rootfs/tmp"

# OCI bundle for runc and crun: runc's default spec (all namespaces but user, default caps,
# masked paths), running /bin/true on the read-only busybox rootfs without a terminal.
(cd "$b/bundle" && runc spec)
sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"sh"$/"\/bin\/true"/' "$b/bundle/config.json"
grep -q '"/bin/true"' "$b/bundle/config.json" || { echo "could not edit the OCI config"; exit 1; }

# corral-launcher spec: the same rootfs, every namespace, default seccomp and capabilities, in a
# fresh task cgroup made by the cgroupfs backend inside a delegated scope (see below).
spec() {  # $1 = cgroup dir ("" for none)
    cat <<JSON
{"argv": ["/bin/true"], "env": ["PATH=/bin"], "hostname": "bench",
 "rootfs": {"mode": "dir", "path": "$b/bundle/rootfs", "readonly": true},
 "sandbox_dir": "$b/sandbox", "exit_status_path": "$b/out/exit.json",
 "stdout": {"path": "$b/out/stdout"}, "stderr": {"path": "$b/out/stderr"},
 "cgroup_dir": "$1"}
JSON
}
spec "" > "$b/spec-nocg.json"

# Times one command per line of $runs runs with bash's EPOCHREALTIME (no fork for the clock).
measure() {  # name command...
    local name=$1; shift
    local out=$RESULTS/raw-$name.txt i t0 t1
    : > "$out"
    for i in $(seq "$runs"); do
        t0=$EPOCHREALTIME
        "$@" >/dev/null 2>&1 || { echo "FAIL: $name run $i: $*"; "$@"; return 1; }
        t1=$EPOCHREALTIME
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }' >> "$out"
    done
}
stats() {  # name -> "p50 p99 mean"
    sort -n "$RESULTS/raw-$1.txt" | awk '{ v[NR] = $1; s += $1 } END {
        p50 = v[int((NR + 1) * 0.50)]; p99 = v[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]
        printf "%.1f %.1f %.1f\n", p50, p99, s / NR }'
}

export BENCH_B=$b
i=0
runc_one() { i=$((i + 1)); runc run --bundle "$b/bundle" "bench-runc-$i-$$"; }
crun_one() { i=$((i + 1)); crun run --bundle "$b/bundle" "bench-crun-$i-$$"; }

vm_check "bare fork/exec of /bin/true (baseline)" measure bare /bin/true
vm_check "runc run (cgroupfs driver)" measure runc runc_one
vm_check "crun run (cgroupfs driver)" measure crun crun_one
vm_check "systemd-run --scope" measure systemd_run systemd-run --quiet --scope /bin/true
vm_check "corral-launcher without a cgroup" measure corral_launcher "$launcher" --spec "$b/spec-nocg.json"
# The agent's path: a fresh task cgroup per launch (made as the cgroupfs backend makes it, inside
# a Delegate=yes scope as the agent runs), corral-launcher started into it, the cgroup removed.
# bench/launch/cg-launch does the mkdir, limit writes and rmdir in-process as the agent does (a
# shell's external mkdir and rmdir would add two process starts the agent never pays).
cat > "$b/cg-bench.sh" <<SH
set -u
cg=/sys/fs/cgroup\$(cut -d: -f3 /proc/self/cgroup)
mkdir -p "\$cg/supervisor" && echo \$\$ > "\$cg/supervisor/cgroup.procs" &&
    echo "+cpu +memory +pids +io" > "\$cg/cgroup.subtree_control" || exit 1
sed "s|@CG@|\$cg|" $b/spec-cg.tmpl > $b/spec-cg.json
out=$RESULTS/raw-corral_launcher_cg.txt
: > "\$out"
for i in \$(seq $runs); do
    t0=\$EPOCHREALTIME
    $b/sbin/cg-launch "\$cg/task-bench" $launcher --spec $b/spec-cg.json >/dev/null 2>&1 || exit 1
    t1=\$EPOCHREALTIME
    awk -v a="\$t0" -v b="\$t1" 'BEGIN { printf "%.3f\\n", (b - a) * 1000 }' >> "\$out"
done
SH
spec "@CG@/task-bench" > "$b/spec-cg.tmpl"
vm_check "corral-launcher with a fresh task cgroup per launch" \
    systemd-run --quiet --scope -p Delegate=yes --unit=corral-bench bash "$b/cg-bench.sh"
if [ -x "$corral" ]; then
    vm_check "corral run (policy, systemd backend task cgroup, launcher, teardown)" \
        measure corral_run "$corral" run -q --rootfs "$b/bundle/rootfs" -- /bin/true
fi

{
    echo "| launcher | p50 ms | p99 ms | mean ms | p50 vs runc | p50 vs crun |"
    echo "|---|---|---|---|---|---|"
    read -r r50 _ _ < <(stats runc)
    read -r c50 _ _ < <(stats crun)
    for n in bare runc crun systemd_run corral_launcher corral_launcher_cg corral_run; do
        [ -s "$RESULTS/raw-$n.txt" ] || continue
        read -r p50 p99 mean < <(stats $n)
        awk -v n="$n" -v a="$p50" -v b="$p99" -v m="$mean" -v r="$r50" -v c="$c50" \
            'BEGIN { printf "| %s | %s | %s | %s | %.2f | %.2f |\n", n, a, b, m, a / r, a / c }'
    done
} > "$RESULTS/launch.md"
echo "runs per launcher: $runs" >> "$RESULTS/launch.md"

# Teardown of a task with 500 processes, the agent's kill: SIGTERM to corral-launcher (grace 0)
# until it has exited and the task's cgroup is removed (bench/launch/cg-launch forwards the
# signal and removes the cgroup), in a fresh task cgroup of a Delegate=yes scope as above.
cat > "$b/spec-td.json" <<JSON
{"argv": ["/bin/sh", "-c", "i=0; while [ \$i -lt 500 ]; do sleep 1000 & i=\$((i + 1)); done; wait"],
 "env": ["PATH=/bin"], "hostname": "bench", "kill_grace_ms": 0,
 "rootfs": {"mode": "dir", "path": "$b/bundle/rootfs", "readonly": true},
 "sandbox_dir": "$b/sandbox", "exit_status_path": "$b/out/exit-td.json",
 "stdout": {"path": "$b/out/stdout-td"}, "stderr": {"path": "$b/out/stderr-td"},
 "cgroup_dir": "@CG@/task-td"}
JSON
cat > "$b/td-bench.sh" <<SH
set -u
cg=/sys/fs/cgroup\$(cut -d: -f3 /proc/self/cgroup)
mkdir -p "\$cg/supervisor" && echo \$\$ > "\$cg/supervisor/cgroup.procs" &&
    echo "+memory +pids" > "\$cg/cgroup.subtree_control" || exit 1
sed -i "s|@CG@|\$cg|" $b/spec-td.json
$b/sbin/cg-launch "\$cg/task-td" $launcher --spec $b/spec-td.json >/dev/null 2>&1 &
p=\$!
for _ in \$(seq 600); do
    [ "\$(wc -l < "\$cg/task-td/cgroup.procs" 2>/dev/null || echo 0)" -ge 501 ] && break
    sleep 0.2
done
procs=\$(wc -l < "\$cg/task-td/cgroup.procs")
t0=\$EPOCHREALTIME
kill -TERM \$p; wait \$p
t1=\$EPOCHREALTIME
[ ! -e "\$cg/task-td" ] || { echo "task cgroup still there"; exit 1; }
awk -v a="\$t0" -v b="\$t1" -v n="\$procs" 'BEGIN { printf "teardown of a task with %d processes (SIGTERM to corral-launcher with grace 0 until it has exited and the task cgroup is removed): %.0f ms\\n", n, (b - a) * 1000 }' >> $RESULTS/launch.md
SH
vm_check "teardown of a task with 500 processes through corral-launcher" \
    systemd-run --quiet --scope -p Delegate=yes --unit=corral-bench-td bash "$b/td-bench.sh"
cat "$RESULTS/launch.md"
vm_finish
