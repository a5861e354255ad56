#!/bin/sh
# The main job on a local lease file (no shared storage needed): make a lockspace and a lease,
# join as host 1, take the lease, show it, release it, and prove the simulator finds no
# violation under faults. Usage: examples/quickstart.sh [LEASE_FILE]
set -eu
FILE=${1:-/tmp/sync_manager-quickstart.img}
SM="python3 -m sync_manager"

rm -f "$FILE" && : > "$FILE"
echo "== a lockspace LS and a resource lease vm1 in $FILE (io_timeout 1 s, so joining takes 2 s)"
$SM direct init -s "LS:0:$FILE:0" -o 1
$SM direct init -r "LS:vm1:$FILE:1M"
echo "== host 1 joins the lockspace and acquires vm1"
$SM direct acquire_id -s "LS:1:$FILE:0" -e quickstart-host
$SM direct acquire -r "LS:vm1:$FILE:1M" -i 1 -g 1
echo "== what is on disk (sanlock's dump format)"
$SM direct dump "$FILE"
echo "== host 2 is refused while host 1 holds it"
$SM direct acquire -r "LS:vm1:$FILE:1M" -i 2 -g 1 || echo "(refused, as it must be)"
echo "== host 1 releases; host 2 takes it"
$SM direct release -r "LS:vm1:$FILE:1M" -i 1 -g 1
$SM direct acquire -r "LS:vm1:$FILE:1M" -i 2 -g 1
$SM direct read_leader -r "LS:vm1:$FILE:1M"
echo "== 3 hosts, 3 leases, 10 simulated minutes of crashes, pauses and I/O faults"
$SM sim --seed 1 --duration 600 --faults heavy
