#!/bin/sh
# Regenerate the golden on-disk data in this directory with the real sanlock 3.8.5 binary.
#
# Usage: tests/data/make_golden.sh [OUTDIR]      (default: the directory of this script)
#
# Needs /usr/sbin/sanlock (Debian package `sanlock`); runs `sanlock direct ...` only, so no daemon,
# no watchdog and no root are needed beyond write access to a scratch directory on a filesystem
# that supports O_DIRECT (not every tmpfs does: the scratch directory is under /var/tmp).
#
# What it writes (small files only; the full areas are kept as sha256 digests):
#
#   <image>.head.bin         the first sectors of each area sanlock wrote:
#                              lockspace_*   sector 0 (host 1's delta lease + bitmap)
#                              resource_*    sectors 0-1 (leader, request record)
#                              *_acquired*   see below
#   init_images.sha256       sha256 of every whole init area, "<digest>  <image>"
#
# Images (sizes are -Z sector size / -A align size):
#
#   lockspace_512_1M         direct init -s LS:0:F:0 -Z 512 -A 1M
#   lockspace_4096_1M        direct init -s K:0:F:0 -Z 4096 -A 1M
#   lockspace_4096_2M        direct init -s LS:0:F:0 -Z 4096 -A 2M
#   lockspace_4096_4M        direct init -s LS:0:F:0 -Z 4096 -A 4M
#   lockspace_4096_8M        direct init -s LS:0:F:0 -Z 4096 -A 8M
#   lockspace_512_1M_o20     direct init -s LS:0:F:0 -Z 512 -A 1M -o 20        (io_timeout 20)
#   resource_512_1M          direct init -r LS:R1:F:0 -Z 512 -A 1M            (num_hosts 2000)
#   resource_4096_1M_n10     direct init -r K:R:F:0 -Z 4096 -A 1M -n 10
#   resource_4096_2M         direct init -r LS:R1:F:0 -Z 4096 -A 2M
#   resource_4096_4M         direct init -r LS:R1:F:0 -Z 4096 -A 4M
#   resource_4096_8M         direct init -r LS:R1:F:0 -Z 4096 -A 8M
#   resource_512_1M_clear    direct init -r LS:R1:F:0 -Z 512 -A 1M -z 1        (PAXOS_CLEAR)
#
#   lockspace_512_1M_acquired_h1   lockspace_512_1M, then
#                                  direct acquire_id -s LS:1:F:0 -e somehostname
#                                  -> head.bin = sector 0 (512 bytes)
#   lockspace_4096_1M_acquired_h2  lockspace_4096_1M, then
#                                  direct acquire_id -s K:2:F:0 -e otherhost
#                                  -> head.bin = sectors 0-1 (8192 bytes; host 2 is sector 1)
#   resource_512_1M_acquired_h1    resource_512_1M, then direct acquire -r LS:R1:F:0 -i 1 -g 1
#                                  -> head.bin = sectors 0-3 (leader, request, hosts 1 and 2)
#   resource_512_1M_acquired_h2    resource_512_1M, then direct acquire -r LS:R1:F:0 -i 2 -g 3
#                                  -> head.bin = sectors 0-3
#
# Timestamps in the acquired and cleared records are the CLOCK_MONOTONIC seconds of the machine
# that ran this script, so a re-run changes them (and their checksums): update the constants
# in tests/unit/test_records.py, test_areas.py and test_checksum.py after regenerating.
# Each acquire_id waits 2 * io_timeout (20 s) as sanlock's delta lease algorithm requires.

set -eu

SANLOCK=${SANLOCK:-/usr/sbin/sanlock}
OUT=${1:-$(dirname "$0")}
SCRATCH=$(mktemp -d /var/tmp/sync_manager_golden.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT

MIB=1048576

# area NAME SIZE_MIB: an empty sparse file of exactly one area
area() {
    truncate -s "$(($2 * MIB))" "$SCRATCH/$1"
    echo "$SCRATCH/$1"
}

# head NAME BYTES: keep the first BYTES of the image as NAME.head.bin
head_bin() {
    dd if="$SCRATCH/$1" of="$OUT/$1.head.bin" bs="$2" count=1 status=none
}

digest() {
    (cd "$SCRATCH" && sha256sum "$1") >>"$SCRATCH/digests"
}

: >"$SCRATCH/digests"

# --- lockspaces ------------------------------------------------------------------------------

f=$(area lockspace_512_1M 1)
"$SANLOCK" direct init -s "LS:0:$f:0" -Z 512 -A 1M
digest lockspace_512_1M
head_bin lockspace_512_1M 512

f=$(area lockspace_4096_1M 1)
"$SANLOCK" direct init -s "K:0:$f:0" -Z 4096 -A 1M
digest lockspace_4096_1M
head_bin lockspace_4096_1M 4096

for a in 2 4 8; do
    f=$(area "lockspace_4096_${a}M" "$a")
    "$SANLOCK" direct init -s "LS:0:$f:0" -Z 4096 -A "${a}M"
    digest "lockspace_4096_${a}M"
    head_bin "lockspace_4096_${a}M" 4096
done

f=$(area lockspace_512_1M_o20 1)
"$SANLOCK" direct init -s "LS:0:$f:0" -Z 512 -A 1M -o 20
digest lockspace_512_1M_o20
head_bin lockspace_512_1M_o20 512

# --- resources -------------------------------------------------------------------------------

f=$(area resource_512_1M 1)
"$SANLOCK" direct init -r "LS:R1:$f:0" -Z 512 -A 1M
digest resource_512_1M
head_bin resource_512_1M 1024

f=$(area resource_4096_1M_n10 1)
"$SANLOCK" direct init -r "K:R:$f:0" -Z 4096 -A 1M -n 10
digest resource_4096_1M_n10
head_bin resource_4096_1M_n10 8192

for a in 2 4 8; do
    f=$(area "resource_4096_${a}M" "$a")
    "$SANLOCK" direct init -r "LS:R1:$f:0" -Z 4096 -A "${a}M"
    digest "resource_4096_${a}M"
    head_bin "resource_4096_${a}M" 8192
done

f=$(area resource_512_1M_clear 1)
"$SANLOCK" direct init -r "LS:R1:$f:0" -Z 512 -A 1M -z 1
digest resource_512_1M_clear
head_bin resource_512_1M_clear 1024

# --- owned leases (real timestamps and ballots) ----------------------------------------------

cp "$SCRATCH/lockspace_512_1M" "$SCRATCH/lockspace_512_1M_acquired_h1"
"$SANLOCK" direct acquire_id -s "LS:1:$SCRATCH/lockspace_512_1M_acquired_h1:0" -e somehostname
head_bin lockspace_512_1M_acquired_h1 512

cp "$SCRATCH/lockspace_4096_1M" "$SCRATCH/lockspace_4096_1M_acquired_h2"
"$SANLOCK" direct acquire_id -s "K:2:$SCRATCH/lockspace_4096_1M_acquired_h2:0" -e otherhost
head_bin lockspace_4096_1M_acquired_h2 8192

cp "$SCRATCH/resource_512_1M" "$SCRATCH/resource_512_1M_acquired_h1"
"$SANLOCK" direct acquire -r "LS:R1:$SCRATCH/resource_512_1M_acquired_h1:0" -i 1 -g 1
head_bin resource_512_1M_acquired_h1 2048

cp "$SCRATCH/resource_512_1M" "$SCRATCH/resource_512_1M_acquired_h2"
"$SANLOCK" direct acquire -r "LS:R1:$SCRATCH/resource_512_1M_acquired_h2:0" -i 2 -g 3
head_bin resource_512_1M_acquired_h2 2048

cp "$SCRATCH/digests" "$OUT/init_images.sha256"
echo "golden data written to $OUT"
