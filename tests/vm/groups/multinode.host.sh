# Host side of the "multinode" group (run by tests/vm/run on the host while the guests run):
# fetch node 0's page through the forwarded port and tell the guests what came back.
set -u
X=$CORRAL_VM_XCHG
port=${CORRAL_VM_FWD_0_80:?run with --forward 0:80}
deadline=$((SECONDS + 400))
while [ ! -e "$X/ready.node0" ]; do
    [ $SECONDS -lt $deadline ] || { echo "FAIL: node0 never became ready"; exit 1; }
    sleep 0.5
done
listen=$(ss -Hltn "sport = :$port" | awk '{print $4}')
echo "forward listens on: $listen"
[ "$listen" = "127.0.0.1:$port" ] || { echo "FAIL: forward is not bound to 127.0.0.1 only"; exit 1; }
body=$(curl -sS --max-time 20 "http://127.0.0.1:$port/")
echo "host GET http://127.0.0.1:$port/ -> '$body'"
echo "$body" > "$X/host-done.tmp" && mv "$X/host-done.tmp" "$X/host-done"
[ "$body" = "hello from node0" ] || { echo "FAIL: unexpected answer"; exit 1; }
echo "PASS: host reached node0 through 127.0.0.1:$port"
