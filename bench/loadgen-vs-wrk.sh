#!/usr/bin/env bash
# bench/loadgen-vs-wrk.sh — `shardnet bench` beside wrk against the same
# 3-node shardnet, run after run in turn, so that the built-in load
# generator's numbers can be read against the wrk numbers of
# bench/compare.sh (docs/benchmarks.md "shardnet bench").
#
# Starts 3 agents with bench/lib.sh, pre-fills wrk's keys (bench/prefill)
# and shardnet bench's own (-prefill), then for each OP and connection count
# alternates: wrk (bench/wrk/shardnet.lua, -t2) and `shardnet bench OP -conns
# C -target TARGET`, REPEAT times each. wrk sends to node 1; so does shardnet
# bench with TARGET=any (the default), the same work for the nodes.
# Prints one row per run: req/s, p50, p99, errors, the load generator's CPU
# per request (its process's ticks, read the same way for both) and the
# nodes' CPU per request.
#
# Environment: DURATION (default 10s), CONNS (default "16 64"), REPEAT
# (default 3), OPS (put and/or get; default "put get"), TARGET (any, leader
# or follower; default any), PORT_OFFSET (bench/lib.sh), KEEP_WORK=1.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10s}
CONNS=${CONNS:-16 64}
REPEAT=${REPEAT:-3}
OPS=${OPS:-put get}
TARGET=${TARGET:-any}
CLK_TCK=$(getconf CLK_TCK)

[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive count, not '$REPEAT'"

proc_ticks() {
	local t=0 p
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$t"
}

# child_ticks: CPU ticks of this shell's reaped children (the load generator).
child_ticks() { awk '{print $16 + $17}' "/proc/$$/stat"; }

# jfield FILE NAME: the first value of "NAME": in shardnet bench's indented JSON.
jfield() { sed -n "s/^ *\"$2\": \([^,]*\),\{0,1\}\$/\1/p" "$1" | head -n1 | tr -d '"'; }

ROWS=()

# one TOOL OP C REP: one run; appends a row.
one() {
	local tool=$1 op=$2 c=$3 rep=$4 out rps p50 p99 errs n
	out="$WORK/raw/$tool-$op-$c-$rep.txt"
	local s0 s1 k0 k1
	s0=$(proc_ticks "${SN_PID[@]}") k0=$(child_ticks)
	if [ "$tool" = wrk ]; then
		local threads=2
		((c >= 2)) || threads=1
		run_tracked "$out" timeout -k 5 120 wrk -t"$threads" -c"$c" -d"$DURATION" --timeout 10s \
			-s "$BENCH/wrk/shardnet.lua" "$(sn_url 0)" -- "$op" "$TOKEN" || die "wrk failed: $(tail -n 3 "$out")"
	else
		run_tracked "$out" timeout -k 5 120 "$BIN" bench "$op" -addr "$(sn_url 0)" -token "$TOKEN" \
			-conns "$c" -duration "$DURATION" -target "$TARGET" -json || die "shardnet bench failed: $(tail -n 3 "$out")"
	fi
	s1=$(proc_ticks "${SN_PID[@]}") k1=$(child_ticks)
	if [ "$tool" = wrk ]; then
		local line
		line=$(grep '^BENCH ' "$out") || die "wrk printed no BENCH line"
		local -A v=()
		local kv
		for kv in ${line#BENCH }; do v[${kv%%=*}]=${kv#*=}; done
		n=${v[requests]}
		errs=$((v[non2xx] + v[connect] + v[read] + v[write] + v[timeout]))
		rps=$(awk -v g="$((n - v[non2xx]))" -v d="${v[duration_us]}" 'BEGIN {printf "%.0f", g / (d / 1e6)}')
		p50=$(awk -v u="${v[p50_us]}" 'BEGIN {printf "%.2f", u / 1000}')
		p99=$(awk -v u="${v[p99_us]}" 'BEGIN {printf "%.2f", u / 1000}')
	else
		n=$(jfield "$out" requests) errs=$(jfield "$out" errors)
		rps=$(awk -v t="$(jfield "$out" throughput)" 'BEGIN {printf "%.0f", t}')
		p50=$(awk -v t="$(jfield "$out" p50)" 'BEGIN {printf "%.2f", t}')
		p99=$(awk -v t="$(jfield "$out" p99)" 'BEGIN {printf "%.2f", t}')
	fi
	local gen srv
	gen=$(awk -v t="$((k1 - k0))" -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.0f", n ? 1e6 * t / hz / n : 0}')
	srv=$(awk -v t="$((s1 - s0))" -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.0f", n ? 1e6 * t / hz / n : 0}')
	ROWS+=("| $op | $c | $rep | $tool | $rps | $p50 | $p99 | $errs | $gen | $srv |")
	log "${ROWS[-1]}"
}

main() {
	install_trap
	make_work
	build_all
	start_shardnet bench
	run_tracked "$WORK/raw/prefill.txt" timeout 300 "$WORK/bin/prefill" -system shardnet \
		-url "$(sn_url 0)" -channel bench -token "$TOKEN" || die "prefill: $(cat "$WORK/raw/prefill.txt")"
	run_tracked "$WORK/raw/prefill-bench.txt" timeout 300 "$BIN" bench put -addr "$(sn_url 0)" -token "$TOKEN" \
		-prefill -count 1 -json || die "shardnet bench -prefill: $(cat "$WORK/raw/prefill-bench.txt")"
	local leader load0 load1 op c rep
	leader=$(sn_leader bench)
	log "channel bench led by $leader; wrk to n1, shardnet bench -target $TARGET"
	load0=$(cut -d' ' -f1-3 /proc/loadavg)
	for op in $OPS; do
		for c in $CONNS; do
			for ((rep = 1; rep <= REPEAT; rep++)); do
				one wrk "$op" "$c" "$rep"
				one shardnet-bench "$op" "$c" "$rep"
			done
		done
	done
	load1=$(cut -d' ' -f1-3 /proc/loadavg)
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; load average before: $load0, after: $load1"
	echo "- shardnet: $SN_COMMIT; channel bench led by $leader (after: $(sn_leader bench)); wrk to n1; shardnet bench -target $TARGET"
	echo "- DURATION=$DURATION, wrk -t2 --timeout 10s; generator and node CPU are µs of CPU per request (/proc ticks)"
	echo
	echo "| op | conns | run | tool | req/s | p50 (ms) | p99 (ms) | errors | generator CPU µs/req | nodes CPU µs/req |"
	echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"
	printf '%s\n' "${ROWS[@]}"
}

main "$@"
