# Host side of the bench-launch group: hands the guest a static busybox for the benchmark rootfs
# and bench/launch/cg-launch (the agent's cgroup + launch path, built statically here: the guest
# has no compiler).
set -eu
mkdir -p "$CORRAL_VM_XCHG/bench"
cp /bin/busybox "$CORRAL_VM_XCHG/bench/busybox"
gcc -O2 -static -Wall -Wextra -o "$CORRAL_VM_XCHG/bench/cg-launch" "$CORRAL_SRC/bench/launch/cg-launch.c"
touch "$CORRAL_VM_XCHG/bench/ready"
