# Guest group "multinode" (tests/vm/run --nodes 2 --forward 0:80 multinode): every node serves
# its name over HTTP on port 80; each node reaches every other node over the cluster network
# (10.10.0.0/24, names node<i>); the host side (multinode.host.sh) fetches node 0's page through
# the forwarded 127.0.0.1 port. The nodes and the host meet in $CORRAL_VM_XCHG (a shared folder).
. "$CORRAL_SRC/tests/vm/groups/lib.sh"
me=$CORRAL_VM_NODE
X=$CORRAL_VM_XCHG

wait_for() { # seconds file...: wait until all files exist
    local deadline=$((SECONDS + $1)) f; shift
    for f in "$@"; do
        while [ ! -e "$f" ]; do
            [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $f"; return 1; }
            sleep 0.5
        done
    done
}
http_is() { # host port expected-body (busybox nc; Debian's busybox wget is unreliable, RECIPE.md)
    local body
    body=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 15 busybox nc -w 5 "$1" "$2" | tr -d '\r' | tail -n 1)
    echo "GET http://$1:$2/ -> '$body'"
    [ "$body" = "$3" ]
}

vm_check "at least two nodes" test "$CORRAL_VM_NODES" -ge 2
vm_check "cluster address is 10.10.0.$((me + 1))/24" \
    sh -c "ip -br addr show dev '${CORRAL_VM_CLUSTER_IF:-none}' | grep -w '10.10.0.$((me + 1))/24'"
mkdir -p /srv/www && echo "hello from node$me" > /srv/www/index.html
vm_check "busybox httpd serves on :80" busybox httpd -p 80 -h /srv/www
vm_check "own server answers on localhost" http_is 127.0.0.1 80 "hello from node$me"
touch "$X/ready.node$me"

peers=()
for ((i = 0; i < CORRAL_VM_NODES; i++)); do [ $i = "$me" ] || peers+=("$i"); done
vm_check "all peers started their servers" wait_for 300 $(for i in "${peers[@]}"; do echo "$X/ready.node$i"; done)
for i in "${peers[@]}"; do
    vm_check "ping node$i" ping -c 2 -W 5 "node$i"
    vm_check "HTTP from node$i over the cluster network" http_is "node$i" 80 "hello from node$i"
done
if [ "$me" = 0 ]; then
    # stay up until the host side has fetched our page through the forwarded port
    vm_check "host side reached node0 through the 127.0.0.1 forward" wait_for 300 "$X/host-done"
    vm_check "host side got node0's page" grep -qx "hello from node0" "$X/host-done"
fi
# nobody powers off while a peer may still be testing it
touch "$X/done.node$me"
vm_check "all peers finished" wait_for 300 $(for i in "${peers[@]}"; do echo "$X/done.node$i"; done)
vm_finish
