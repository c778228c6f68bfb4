# Host side of the bench-launch-profile group: busybox for the rootfs, and the host's strace with
# its libraries (the guest image has no strace) for one traced launch of each runtime.
set -eu
mkdir -p "$CORRAL_VM_XCHG/bench/lib"
cp /bin/busybox "$CORRAL_VM_XCHG/bench/busybox"
cp /usr/bin/strace "$CORRAL_VM_XCHG/bench/strace"
for l in $(ldd /usr/bin/strace | awk '/libunwind/ { print $3 }'); do cp "$l" "$CORRAL_VM_XCHG/bench/lib/"; done
# the smallest possible static program (exit(0) from _start): the floor of an exec
printf 'void _start(void) { __asm__ volatile("mov $60, %%eax\\n xor %%edi, %%edi\\n syscall"); }\n' > "$CORRAL_VM_XCHG/bench/tiny.c"
gcc -Os -static -nostdlib -o "$CORRAL_VM_XCHG/bench/tiny" "$CORRAL_VM_XCHG/bench/tiny.c"
touch "$CORRAL_VM_XCHG/bench/ready"
