# Host side of the "basics" group: build the test .deb on the host and hand it to the guest
# through the exchange folder.
set -eu
deb=$("$CORRAL_SRC/tests/vm/testdeb/build" "$CORRAL_VM_XCHG/debs")
echo "built $deb ($(stat -c %s "$deb") bytes)"
touch "$CORRAL_VM_XCHG/debs/ready"
