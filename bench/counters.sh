#!/usr/bin/env bash
# bench/counters.sh — what one write costs inside shardnet, counted.
#
# Starts a fresh 3-node shardnet on loopback (no etcd) with channels bench and
# bench-0..15, runs wrk against it for each RUN, and prints per run: req/s
# and latency, the servers' CPU per request, and every counter of the nodes'
# /metrics that moved, divided by the requests (Raft append batches, apply
# batches, proposal batches, AppendEntries, calls ... per write).
#
#   bash bench/counters.sh                         # RUNS="put:1 put16:1"
#   RUNS="put16:1 put16:2" DUR=15s bash bench/counters.sh
#   PROF=1 RUNS=put16:1 bash bench/counters.sh     # also a 6 s CPU profile of each node
#
# RUN is MODE:NODE: a bench/wrk/shardnet.lua mode (put, get, stale, put16)
# sent to node NODE (1..3) with 64 connections (CONNS). Profiles go to
# OUTDIR (default $TMPDIR/shardnet-counters), one per node and run, with the
# node's before/after /metrics; read them with
# go tool pprof -top -cum bin/shardnet FILE. Nothing is prefilled: put16's
# keys are new to their channels.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-put:1 put16:1}
DUR=${DUR:-10s}
CONNS=${CONNS:-64}
OUTDIR=${OUTDIR:-${TMPDIR:-/tmp}/shardnet-counters}

install_trap
make_work
ensure_tools
build_all
mkdir -p "$OUTDIR"
channels=(bench)
for i in $(seq 0 15); do channels+=("bench-$i"); done
start_shardnet "${channels[@]}"
log "leaders: bench $(sn_leader bench); bench-0..15: $(for ch in "${channels[@]:1}"; do sn_leader "$ch"; done | sort | uniq -c | awk '{printf "%s %s ", $2, $1}')"

snapshot() {
	local i
	for i in 0 1 2; do
		sn_curl "http://127.0.0.1:${SN_HTTP[i]}/metrics" | grep -v '^#' | sed "s/^/n$((i + 1)) /"
	done
}
server_ticks() {
	local t=0 p
	for p in "${SN_PID[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo "$t"
}

n=0
for run in $RUNS; do
	n=$((n + 1))
	mode=${run%%:*} node=${run#*:}
	[[ $node =~ ^[123]$ ]] || die "RUN $run: node must be 1, 2 or 3"
	tag="$n-$mode-n$node"
	snapshot >"$OUTDIR/$tag.before"
	t0=$(server_ticks)
	prof=""
	if [ -n "${PROF:-}" ]; then
		(
			sleep 2
			for i in 0 1 2; do
				sn_curl --max-time 20 -o "$OUTDIR/$tag.n$((i + 1)).prof" \
					"http://127.0.0.1:${SN_HTTP[i]}/debug/pprof/profile?seconds=6" &
			done
			wait
		) &
		prof=$!
	fi
	run_tracked "$WORK/raw/$tag.txt" timeout -k 5 120 wrk -t2 -c"$CONNS" -d"$DUR" --timeout 10s \
		-s "$BENCH/wrk/shardnet.lua" "http://127.0.0.1:${SN_HTTP[node - 1]}" -- "$mode" "$TOKEN" ||
		die "wrk $mode failed: $(tail -n 5 "$WORK/raw/$tag.txt")"
	t1=$(server_ticks)
	[ -z "$prof" ] || wait "$prof" || true
	snapshot >"$OUTDIR/$tag.after"
	line=$(grep '^BENCH ' "$WORK/raw/$tag.txt") || die "wrk printed no BENCH line"
	reqs=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$line")
	((reqs > 0)) || die "no requests in run $tag"
	echo "== $tag: $line"
	echo "server CPU per request: $(((t1 - t0) * 10000000 / reqs / 1000)) µs ($((t1 - t0)) ticks)"
	awk -v n="$reqs" 'NR == FNR { before[$1 " " $2] = $3; next }
		$2 ~ /(_total|_count)(\{|$)/ { d = $3 - before[$1 " " $2]; if (d > 0) sum[$2] += d }
		END { for (k in sum) printf "  %-100s %10.0f %9.3f per request\n", k, sum[k], sum[k] / n }' \
		"$OUTDIR/$tag.before" "$OUTDIR/$tag.after" | sort
done
log "metrics and profiles in $OUTDIR"
