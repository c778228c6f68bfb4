# Host side of the bench-launch group: hands the guest a static busybox for the benchmark rootfs.
set -eu
mkdir -p "$CORRAL_VM_XCHG/bench"
cp /bin/busybox "$CORRAL_VM_XCHG/bench/busybox"
touch "$CORRAL_VM_XCHG/bench/ready"
