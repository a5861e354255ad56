#!/bin/sh
# The main job on a local lease file (no shared storage needed): run a command under a lease
# with the seed's command, see a second copy refused while it runs, see the lease freed when it
# exits; then the lease algorithms directly on disk, and the simulator under faults.
# Usage: examples/quickstart.sh [LEASE_FILE]
set -eu
FILE=${1:-/tmp/sync_manager-quickstart.img}
SM="python3 -m sync_manager"
# A private run dir: this daemon never meets one already serving /run/sanlock.
SANLOCK_RUN_DIR=$(mktemp -d /tmp/sm-quickstart.XXXXXX)
export SANLOCK_RUN_DIR
trap '$SM client shutdown -f 1 >/dev/null 2>&1 || true; rm -rf "$SANLOCK_RUN_DIR"' EXIT

rm -f "$FILE" && : > "$FILE"
echo "== a lockspace LS and a resource lease vm1 in $FILE (io_timeout 1 s: joining takes 2 s)"
$SM direct init -s "LS:0:$FILE:0" -o 1
$SM direct init -r "LS:vm1:$FILE:1M"

echo "== run a command under lease vm1: the wrapper starts a daemon (-w 0: no watchdog here),"
echo "   joins LS as host 1, acquires vm1, then execs the command, which holds the lease"
$SM daemon -w 0 -i 1 -n vm1 -s "LS:1:$FILE:0" -l "vm1:$FILE:1M" \
    -c sh -c 'echo "vm1: running as pid $$"; sleep 4; echo "vm1: exiting with status 3"; exit 3' &
first=$!
tries=0
until $SM client status 2>/dev/null | grep -q "^r LS:vm1"; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { echo "the lease was never taken"; exit 1; }
    sleep 0.2  # polling: the wrapper reports nothing until its command runs
done
$SM client status | grep "^r "

echo "== the same command again, while the first runs: refused, and never run"
if $SM daemon -w 0 -i 1 -n vm1 -s "LS:1:$FILE:0" -l "vm1:$FILE:1M" -c echo "must not run"; then
    echo "the second command ran: lease not enforced"; exit 1
else
    echo "(refused with exit status $?, as it must be)"
fi

status=0
wait "$first" || status=$?
echo "== the first command exited with its own status ($status); the lease is free again:"
$SM direct read_leader -r "LS:vm1:$FILE:1M" | grep -E "^(owner_id|lver|timestamp) "

echo "== 3 hosts, 3 leases, 10 simulated minutes of crashes, pauses and I/O faults"
$SM sim --seed 1 --duration 600 --faults heavy
