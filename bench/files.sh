#!/usr/bin/env bash
# bench/files.sh — file upload and download throughput with real agents:
# three `shardnet agent` processes on 127.0.0.1, one channel of three
# replicas, files of 1 MiB and 64 MiB put and got with curl at 1 and 16
# clients (distinct contents in every phase: equal chunks are stored once),
# beside the machine's physical limits: dd's synced sequential write speed
# and sha256sum's speed. It prints one line per phase: files, bytes,
# seconds, MiB/s. Bounded: every wait and transfer has a deadline.
#
#   bench/files.sh                       # 1 MiB: 32 files × 1, 64 × 16;
#                                        # 64 MiB: 4 × 1, 16 × 16
#   SMALL=16 BIG=4 bench/files.sh        # files per 16-client phase
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Ports of its own, so that it can run beside the other benchmarks.
SN_GOSSIP=(27946 27956 27966)
SN_CLUSTER=(27947 27957 27967)
SN_HTTP=(28500 28510 28520)

SMALL=${SMALL:-64} # 1 MiB files at 16 clients (half as many at 1)
BIG=${BIG:-16}     # 64 MiB files at 16 clients (a quarter at 1)

install_trap
make_work
command -v curl >/dev/null || die "curl is required"
log "building bin/shardnet"
SN_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
make -s -C "$ROOT" build
start_shardnet media

now() { date +%s.%N; }
# report WHAT FILES BYTES START END
report() {
	awk -v what="$1" -v f="$2" -v b="$3" -v s="$4" -v e="$5" 'BEGIN {
		t = e - s; printf "%-34s %4d files %11d bytes %7.2f s %8.1f MiB/s\n", what, f, b, t, b / t / 1048576 }'
}

# make_set NAME COUNT MIB: COUNT files of MIB MiB of random bytes.
make_set() {
	mkdir -p "$WORK/src/$1"
	local k
	for ((k = 0; k < $2; k++)); do
		head -c "$(($3 << 20))" /dev/urandom >"$WORK/src/$1/f$k"
	done
}

put_one() { # NODE FILE PATH
	curl -sS -f --max-time 600 -H "Authorization: Bearer $TOKEN" -T "$2" \
		"$(sn_url "$1")/v1/channels/media/files/$3" -o /dev/null
}
get_one() { # NODE PATH
	curl -sS -f --max-time 600 -H "Authorization: Bearer $TOKEN" \
		"$(sn_url "$1")/v1/channels/media/files/$2" -o /dev/null
}
# pool CLIENTS CMD ARGS...: runs CMD ARG for every ARG, CLIENTS at once;
# fails if any does.
pool() {
	local clients=$1 cmd=$2 arg running=0 failed=0
	shift 2
	for arg in "$@"; do
		if ((running >= clients)); then
			wait -n || failed=1
			running=$((running - 1))
		fi
		"$cmd" "$arg" &
		running=$((running + 1))
	done
	while ((running > 0)); do
		wait -n || failed=1
		running=$((running - 1))
	done
	return "$failed"
}

# phase NAME CLIENTS: uploads every file of set NAME through n1 with
# CLIENTS curls at once, then downloads them through n3 likewise.
phase() {
	local name=$1 clients=$2 files bytes t0 t1 names
	mapfile -t names < <(cd "$WORK/src/$name" && ls)
	files=${#names[@]}
	bytes=$(du -cb "$WORK/src/$name"/* | tail -n 1 | cut -f1)
	up() { put_one 0 "$WORK/src/$name/$1" "$name/$1"; }
	down() { get_one 2 "$name/$1"; }
	t0=$(now)
	pool "$clients" up "${names[@]}" || die "upload $name failed"
	t1=$(now)
	report "put $name, $clients clients" "$files" "$bytes" "$t0" "$t1"
	t0=$(now)
	pool "$clients" down "${names[@]}" || die "download $name failed"
	t1=$(now)
	report "get $name, $clients clients" "$files" "$bytes" "$t0" "$t1"
}

log "writing the source files"
make_set 1MiB-x1 $((SMALL / 2)) 1
make_set 1MiB-x16 "$SMALL" 1
make_set 64MiB-x1 $((BIG / 4)) 64
make_set 64MiB-x16 "$BIG" 64

# The physical limits: one synced sequential write of 1 GiB, and sha256
# of 1 GiB from memory.
t0=$(now)
dd if=/dev/zero of="$WORK/raw/dd" bs=4M count=256 conv=fsync status=none
t1=$(now)
RAW=$(report "dd write, fsync (1 copy)" 1 $((1 << 30)) "$t0" "$t1")
rm -f "$WORK/raw/dd"
t0=$(now)
head -c $((1 << 30)) /dev/zero | sha256sum >/dev/null
t1=$(now)
SHA=$(report "sha256sum" 1 $((1 << 30)) "$t0" "$t1")

{
	echo "# shardnet $SN_COMMIT, $(nproc) cores, $(date -u +%FT%TZ); 3 nodes on 127.0.0.1, RF 3"
	echo "$RAW"
	echo "$SHA"
	phase 1MiB-x1 1
	phase 1MiB-x16 16
	phase 64MiB-x1 1
	phase 64MiB-x16 16
} | tee "$WORK/results.txt"
mkdir -p "$BENCH/results"
cp "$WORK/results.txt" "$BENCH/results/files-latest.txt"
log "results in bench/results/files-latest.txt"
