# Profiling group "bench-launch-profile" (NOT a test, not registered with ctest): where the
# launch-to-exit time of corral-launcher goes inside the TCG guest. Runs a few launches of
# corral-launcher with one isolation feature changed at a time, the exec cost of the binaries
# alone, crun/runc for reference, and one `strace -f -r -T` of corral-launcher and of crun.
# Writes $RESULTS/profile.md and $RESULTS/strace-*.txt. Run:
#   tests/vm/run --build-dir build/<dir> --timeout 1200 --env BENCH_RUNS=15 bench-launch-profile
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
vm_require_build
runs=${BENCH_RUNS:-15}
b=/var/tmp/bench
mkdir -p "$b/bundle/rootfs/bin" "$b/sandbox" "$b/out" "$b/sbin"
for _ in $(seq 240); do [ -e "$CORRAL_VM_XCHG/bench/ready" ] && break; sleep 0.5; done
# from the guest's disk, as installed binaries (the 9p build share has no page cache)
cp "$CORRAL_BUILD/launcher/corral-launcher" "$CORRAL_BUILD/launcher/corral-launcher-init" \
    "$CORRAL_VM_XCHG/bench/tiny" "$b/sbin/"
launcher=$b/sbin/corral-launcher
init=$b/sbin/corral-launcher-init
cp "$CORRAL_VM_XCHG/bench/busybox" "$b/bundle/rootfs/bin/busybox"
ln -sf busybox "$b/bundle/rootfs/bin/true"
mkdir -p "$b/bundle/rootfs/proc" "$b/bundle/rootfs/dev" "$b/bundle/rootfs/sys" "$b/bundle/rootfs/tmp"
(cd "$b/bundle" && runc spec)
sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"sh"$/"\/bin\/true"/' "$b/bundle/config.json"
spec() {  # $1 = extra JSON members
    cat <<JSON
{"argv": ["/bin/true"], "env": ["PATH=/bin"], "hostname": "bench",
 "rootfs": {"mode": "dir", "path": "$b/bundle/rootfs", "readonly": true},
 "sandbox_dir": "$b/sandbox", "exit_status_path": "$b/out/exit.json",
 "stdout": {"path": "$b/out/stdout"}, "stderr": {"path": "$b/out/stderr"} $1}
JSON
}
spec "" > "$b/full.json"
spec ', "seccomp": {"mode": "unconfined"}' > "$b/noseccomp.json"
spec ', "namespaces": {"net": false, "cgroup": false}' > "$b/nonet.json"
measure() {  # name command...
    local name=$1; shift
    local out=$RESULTS/raw-$name.txt i t0 t1
    : > "$out"
    for i in $(seq "$runs"); do
        t0=$EPOCHREALTIME
        "$@" >/dev/null 2>&1
        t1=$EPOCHREALTIME
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }' >> "$out"
    done
    sort -n "$out" | awk -v n="$name" '{ v[NR] = $1 } END { printf "| %s | %.1f |\n", n, v[int((NR + 1) / 2)] }' >> "$RESULTS/profile.md"
}
i=0
crun_one() { i=$((i + 1)); crun run --bundle "$b/bundle" "p-crun-$i"; }
runc_one() { i=$((i + 1)); runc run --bundle "$b/bundle" "p-runc-$i"; }
echo "| variant | p50 ms |" > "$RESULTS/profile.md"
echo "|---|---|" >> "$RESULTS/profile.md"
measure bare /bin/true
measure crun crun_one
measure runc runc_one
measure crun_version crun --version
measure tiny_static_exec "$b/sbin/tiny"
measure launcher_9p "$CORRAL_BUILD/launcher/corral-launcher" --spec "$b/full.json"
measure launcher_full "$launcher" --spec "$b/full.json"
measure launcher_noseccomp "$launcher" --spec "$b/noseccomp.json"
measure launcher_nonet "$launcher" --spec "$b/nonet.json"
measure launcher_version "$launcher" --version
measure init_exec "$init"
for v in ${PROFILE_EXTRA:-}; do measure "launcher_$v" "$launcher" --spec "$b/$v.json"; done
# the loader's --library-path reaches strace only, not the traced programs
st() { /lib64/ld-linux-x86-64.so.2 --library-path "$CORRAL_VM_XCHG/bench/lib" "$CORRAL_VM_XCHG/bench/strace" "$@"; }
st -f -tt -T -o "$RESULTS/strace-launcher.txt" "$launcher" --spec "$b/full.json" >/dev/null 2>&1
st -f -tt -T -o "$RESULTS/strace-crun.txt" crun run --bundle "$b/bundle" p-crun-strace >/dev/null 2>&1
st -c -f -o "$RESULTS/strace-c-launcher.txt" "$launcher" --spec "$b/full.json" >/dev/null 2>&1
st -c -f -o "$RESULTS/strace-c-crun.txt" crun run --bundle "$b/bundle" p-crun-strace2 >/dev/null 2>&1
mount | wc -l >> "$RESULTS/profile.md"
cat "$RESULTS/profile.md"
vm_check "profile ran" true
vm_finish
