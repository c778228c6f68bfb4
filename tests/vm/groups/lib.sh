# tests/vm/groups/lib.sh - helpers for guest test groups (sourced, runs inside the guest).
#
#   vm_check NAME CMD [ARGS...]   run CMD; PASS if it exits 0, else FAIL (output kept for the XML)
#   vm_gtest BINARY [ARGS...]     run a gtest binary from the build tree, XML to $RESULTS/<name>.xml
#   vm_require_build              fail the group loudly if no build tree is shared
#   vm_finish                     write $RESULTS/<group>.xml (JUnit/gtest format); exit 1 if any
#                                 check failed, 0 otherwise
# Environment (set by corral-vm-guest): CORRAL_SRC, CORRAL_BUILD (read-only), RESULTS (read-write,
# copied back to the host), CORRAL_VM_GROUP, CORRAL_VM_NODE, CORRAL_VM_NODES, CORRAL_VM_XCHG
# (read-write, shared by all nodes and the group's host side), CORRAL_VM_IP (cluster address).
set -u
_vm_tests=0 _vm_failures=0 _vm_cases=""

_vm_xml_escape() { sed -e 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g; s/"/\&quot;/g' -e 's/[^[:print:]\t]//g'; }

vm_check() {
    local name=$1; shift
    local out t0 t1 rc
    t0=$(date +%s.%N)
    out=$("$@" 2>&1); rc=$?
    t1=$(date +%s.%N)
    _vm_tests=$((_vm_tests + 1))
    [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    /'
    local time; time=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
    local x="    <testcase name=\"$(printf '%s' "$name" | _vm_xml_escape)\" classname=\"vm.${CORRAL_VM_GROUP}\" time=\"$time\""
    if [ $rc = 0 ]; then
        echo "PASS: $name (${time}s)"
        _vm_cases+="$x/>"$'\n'
    else
        echo "FAIL: $name (exit status $rc, ${time}s)"
        _vm_failures=$((_vm_failures + 1))
        _vm_cases+="$x>"$'\n'"      <failure message=\"exit status $rc\"><![CDATA[$(printf '%s' "$out" | tail -n 50 | sed 's/]]>/]] >/g')]]></failure>"$'\n'"    </testcase>"$'\n'
    fi
    return $rc
}

vm_require_build() {
    if [ -z "${CORRAL_BUILD:-}" ] || [ ! -d "$CORRAL_BUILD" ]; then
        echo "FAIL: no build tree shared with the guest (tests/vm/run --build-dir DIR)" >&2
        exit 1
    fi
}

vm_gtest() {
    local bin=$1; shift
    local name; name=$(basename "$bin")
    [ -x "$bin" ] || { echo "FAIL: gtest binary $bin missing (build the tree first)"; _vm_failures=$((_vm_failures + 1)); return 1; }
    "$bin" --gtest_output="xml:$RESULTS/$name.xml" "$@"
    local rc=$?
    [ $rc = 0 ] || _vm_failures=$((_vm_failures + 1))
    return $rc
}

vm_finish() {
    {
        echo '<?xml version="1.0" encoding="UTF-8"?>'
        echo "<testsuites tests=\"$_vm_tests\" failures=\"$_vm_failures\" errors=\"0\" name=\"vm.${CORRAL_VM_GROUP}\">"
        echo "  <testsuite name=\"vm.${CORRAL_VM_GROUP}.node${CORRAL_VM_NODE:-0}\" tests=\"$_vm_tests\" failures=\"$_vm_failures\" errors=\"0\">"
        printf '%s' "$_vm_cases"
        echo "  </testsuite>"
        echo "</testsuites>"
    } > "$RESULTS/vm-${CORRAL_VM_GROUP}.xml"
    echo "== ${CORRAL_VM_GROUP}: $_vm_tests check(s), $_vm_failures failure(s)"
    [ "$_vm_failures" = 0 ]
    exit $?
}
