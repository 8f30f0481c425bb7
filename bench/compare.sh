#!/usr/bin/env bash
# bench/compare.sh — shardnet against etcd 3.6 on one machine, on loopback
# (`make bench-compare`; docs/benchmarks.md "shardnet vs etcd 3.6 (make bench-compare)").
#
# Starts a 3-member etcd 3.6 (built from the Go module proxy and cached by
# bench/etcd36.sh; never Debian's 3.4) and a 3-node shardnet with fresh data
# directories, pre-fills 10,000 keys of 256 bytes in each, and measures three
# tables, each cell alternating the two systems:
#   leader    each system's own load generator, load to its leader: etcd's
#             gRPC `benchmark put` / `range` (--consistency l and s), shardnet's
#             `shardnet bench put` / `get` (-read linearizable and stale), at
#             each of CONNS connections (as many clients), 256-byte values,
#             10,000 keys; plus writes spread over 16 shardnet channels (each
#             to its own leader) against etcd's single group at 64.
#   follower  the same load sent to a follower of each system (it forwards
#             writes and linearizable reads to its leader; stale/serializable
#             reads it answers itself).
#   http      the same HTTP load for both under wrk (bench/wrk/*.lua, etcd's
#             JSON gateway), to member/node 1 (LEADER says which role it has).
# Both systems' leaders sit on the same member/node index: LEADER=follower
# (the default) makes node 1 a follower of both, LEADER=n1 its leader
# (etcd's leader is moved with MoveLeader; shardnet's channel is created
# again until the wanted node leads it); LEADER=any leaves shardnet's where
# it is. Then, unless FAILOVER_TRIALS=0, the leader-loss trials of
# bench/failover.sh on the same shardnet cluster.
#
# Prints the tables and writes them, with the machine, to bench/results/latest.md.
# Throughput counts successful answers only: a run with any error, or after
# which the leader had moved, is flagged in the errors column.
#
# Environment: DURATION (per run, default 5s; etcd's benchmark takes a count,
# so its --total is its measured rate times DURATION), CONNS (default
# "1 16 64 256"), REPEAT (runs per cell, the systems alternating; the
# median-throughput run is reported; default 1), TABLES (default
# "leader follower http"), FAILOVER_TRIALS (default 10), LEADER (follower,
# n1 or any), OUT (default bench/results/latest.md), KEEP_WORK=1 keeps the
# work directory (logs, data dirs, raw output), PORT_OFFSET (bench/lib.sh).
# Short form: CONNS="16 64" FAILOVER_TRIALS=0 make bench-compare.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/etcd36.sh
source "$BENCH/etcd36.sh"

DURATION=${DURATION:-5s}
CONNS=${CONNS:-1 16 64 256}
FAILOVER_TRIALS=${FAILOVER_TRIALS:-10}
LEADER=${LEADER:-follower}
REPEAT=${REPEAT:-1}
TABLES=${TABLES:-leader follower http}
OUT=${OUT:-$BENCH/results/latest.md}

case "$LEADER" in follower | n1 | any) ;; *) die "LEADER must be follower, n1 or any, not '$LEADER'" ;; esac
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive count, not '$REPEAT'"
[[ $DURATION =~ ^([0-9]+)(s|m)?$ ]] || die "DURATION must look like 10s or 1m, not '$DURATION'"
DUR_S=${BASH_REMATCH[1]}
[ "${BASH_REMATCH[2]}" != m ] || DUR_S=$((DUR_S * 60))
((DUR_S >= 1)) || die "DURATION must be at least 1s"
for c in $CONNS; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "CONNS must be positive counts, not '$CONNS'"; done
for t in $TABLES; do
	case $t in leader | follower | http) ;; *) die "TABLES takes leader, follower and http, not '$t'" ;; esac
done
CLK_TCK=$(getconf CLK_TCK)

# The key space and value size of every run. shardnet bench's keys are
# key-0000000 .. key-0009999 (11 bytes); etcd's benchmark writes keys of
# --key-size bytes (a varint of the key's number, zero-padded) and ranges
# over one key it is given: key-00042, which bench/prefill wrote.
KEYS=10000
VALUE_SIZE=256
ETCD_KEY_SIZE=11
ETCD_RANGE_KEY="key-00042"

# shellcheck disable=SC2034 # NATIVE and WRK are read through namerefs (rows, run_table)
# Native workloads: label | etcd benchmark mode | shardnet bench mode | conns.
NATIVE=(
	"write|put|put|$CONNS"
	"read linearizable|range-l|get-linearizable|$CONNS"
	"read serializable (etcd) / stale (shardnet)|range-s|get-stale|$CONNS"
	"write, 16 channels (shardnet) / 1 group (etcd)|put|put16|64"
)
# shellcheck disable=SC2034 # read through namerefs
# wrk workloads: label | etcd mode | shardnet mode | conns (bench/wrk/*.lua).
WRK=(
	"write|put|put|$CONNS"
	"read linearizable|get|get|$CONNS"
	"read serializable (etcd) / stale (shardnet)|serializable|stale|$CONNS"
	"write, 16 channels (shardnet) / 1 group (etcd)|put|put16|64"
)

# proc_ticks PID...: user+system CPU ticks of the processes, threads included.
proc_ticks() {
	local t=0 p
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$t"
}

# machine_ticks: "busy total" ticks of all CPUs since boot.
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }

# sn_codes: "code count" of the KV route's answers on node 1, from /metrics.
sn_codes() {
	sn_curl "$(sn_url 0)/metrics" | awk '
		/^shardnet_http_requests_total\{/ && index($0, "route=\"/v1/channels/{ch}/kv/{key}\"") {
			match($0, /code="[0-9]+"/); code = substr($0, RSTART + 6, 3)
			sum[code] += $NF
		}
		END { for (c in sum) printf "%s %d\n", c, sum[c] }'
}

# child_ticks: CPU ticks of this shell's reaped children (wrk, via timeout).
child_ticks() { awk '{print $16 + $17}' "/proc/$$/stat"; }

declare -A RPS P50 P99 ERR CPU BUSY CPUREQ CLICPU CLIREQ OTHER ALLRPS SECS
declare -A WANT_LEADER # system -> the leader its runs expect
declare -A ETCD_RATE   # etcd cell -> its last measured req/s, to size --total

# Run state shared by start_run and finish_run.
R_PIDS=() R_P0=0 R_M0="" R_C0=0 R_T0=0 R_P1=0 R_M1="" R_C1=0 R_T1=0

# start_run SYSTEM: samples the CPU counters before a run.
start_run() {
	if [ "$1" = etcd ]; then R_PIDS=("${ETCD_PID[@]}"); else R_PIDS=("${SN_PID[@]}"); fi
	R_P0=$(proc_ticks "${R_PIDS[@]}") R_M0=$(machine_ticks) R_C0=$(child_ticks) R_T0=$EPOCHREALTIME
}

# stop_run: samples them after it.
stop_run() { R_T1=$EPOCHREALTIME R_C1=$(child_ticks) R_P1=$(proc_ticks "${R_PIDS[@]}") R_M1=$(machine_ticks); }

# finish_run SYSTEM KEY REQUESTS DESC: the CPU of the run under KEY (the
# servers' /proc ticks per request, the load generator's, the rest of the
# machine), the leader check, and the log line. RPS, P50, P99, ERR, SECS are
# set by the caller.
finish_run() {
	local sys=$1 key=$2 n=$3 desc=$4 now
	# A leader that moved during the run (an election under load) changes
	# what was measured: say so next to the numbers.
	if [ "$sys" = etcd ]; then now=$(etcd_leader); else now=$(sn_leader bench); fi
	if [ "$now" != "${WANT_LEADER[$sys]}" ]; then
		ERR[$key]+="${ERR[$key]:+, }leader of bench is $now after the run, not ${WANT_LEADER[$sys]}"
		WANT_LEADER[$sys]=$now # report each move once
	fi
	read -r "CPU[$key]" "BUSY[$key]" "CPUREQ[$key]" "CLICPU[$key]" "CLIREQ[$key]" "OTHER[$key]" < <(awk \
		-v p="$((R_P1 - R_P0))" -v w="$((R_C1 - R_C0))" -v hz="$CLK_TCK" -v ncpu="$(nproc)" \
		-v t0="$R_T0" -v t1="$R_T1" -v m0="$R_M0" -v m1="$R_M1" -v n="$n" 'BEGIN {
			split(m0, a, " "); split(m1, b, " ")
			secs = t1 - t0; cpu = p / hz; busy = (b[1] - a[1]) / (b[2] - a[2])
			printf "%.2f %.0f %.0f %.2f %.0f %.2f\n", cpu / secs, 100 * busy, n ? 1e6 * cpu / n : 0,
				w / hz / secs, n ? 1e6 * w / hz / n : 0, busy * ncpu - cpu / secs - w / hz / secs }')
	log "$(printf '%-8s %-30s %8s req/s  p50 %6s ms  p99 %7s ms  server CPU %s cores, %s µs/req  machine %s%% busy  %s' \
		"$sys" "$desc" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" "${CPU[$key]}" "${CPUREQ[$key]}" "${BUSY[$key]}" "${ERR[$key]:-}")"
}

# run_wrk SYSTEM MODE CONNS KEY: one wrk run against member/node 1.
run_wrk() {
	local sys=$1 mode=$2 c=$3 key=$4 threads=2 url script args out line
	((c >= 2)) || threads=1 # wrk needs at least one connection per thread
	if [ "$sys" = etcd ]; then
		url="http://127.0.0.1:${ETCD_CLIENT[0]}" script="$BENCH/wrk/etcd.lua" args=("$mode")
	else
		url="$(sn_url 0)" script="$BENCH/wrk/shardnet.lua" args=("$mode" "$TOKEN")
		sn_codes >"$WORK/codes.before"
	fi
	out="$WORK/raw/${key//|/-}-$mode.txt"
	start_run "$sys"
	run_tracked "$out" timeout -k 5 $((DUR_S + 60)) \
		wrk -t"$threads" -c"$c" -d"$DURATION" --timeout 10s -s "$script" "$url" -- "${args[@]}" ||
		die "wrk $sys $mode -c$c failed: $(tail -n 5 "$out")"
	stop_run
	line=$(grep '^BENCH ' "$out") || die "wrk $sys $mode -c$c printed no BENCH line: $(cat "$out")"

	local -A v=()
	local kv
	for kv in ${line#BENCH }; do v[${kv%%=*}]=${kv#*=}; done
	local sock=$((v[connect] + v[read] + v[write] + v[timeout]))
	local good=$((v[requests] - v[non2xx]))
	RPS[$key]=$(awk -v g="$good" -v d="${v[duration_us]}" 'BEGIN {printf "%.0f", g / (d / 1e6)}')
	P50[$key]=$(awk -v u="${v[p50_us]}" 'BEGIN {printf "%.2f", u / 1000}')
	P99[$key]=$(awk -v u="${v[p99_us]}" 'BEGIN {printf "%.2f", u / 1000}')
	SECS[$key]=$(awk -v d="${v[duration_us]}" 'BEGIN {printf "%.1f", d / 1e6}')
	ERR[$key]=""
	if ((v[non2xx] + sock > 0)); then
		ERR[$key]="${v[non2xx]} non-2xx"
		if [ "$sys" = shardnet ]; then
			sn_codes >"$WORK/codes.after"
			local codes
			codes=$(awk 'NR == FNR {b[$1] = $2; next} $1 !~ /^2/ && $2 - b[$1] > 0 {printf "%s%s×%d", sep, $1, $2 - b[$1]; sep = " "}' \
				"$WORK/codes.before" "$WORK/codes.after")
			[ -z "$codes" ] || ERR[$key]+=" ($codes)"
		fi
		((sock == 0)) || ERR[$key]+=", $sock socket errors/timeouts"
	fi
	finish_run "$sys" "$key" "${v[requests]}" "wrk $mode c=$c"
}

# etcd_bench OUT ARGS...: one run of etcd's benchmark (its progress bar's
# carriage returns turned into line ends, for parsing).
etcd_bench() {
	local out=$1
	shift
	run_tracked "$out.tmp" timeout -k 5 $((DUR_S * 3 + 120)) "$ETCD_BENCHMARK" --precise "$@" ||
		die "etcd benchmark $* failed: $(tail -n 5 "$out.tmp")"
	tr '\r' '\n' <"$out.tmp" >"$out"
	rm -f "$out.tmp"
}

# etcd_parse OUT: "good errors total_s p50_s p99_s" of a benchmark report
# (good: the histogram's counts, every successful request).
etcd_parse() {
	awk '
		/^ *Total:/ {total = $2}
		/^ *[0-9.e+-]+ \[[0-9]+\]/ {match($0, /\[[0-9]+\]/); good += substr($0, RSTART + 1, RLENGTH - 2)}
		/^ *50% in / {p50 = $3}
		/^ *99% in / {p99 = $3}
		/^Error distribution:/ {inerr = 1; next}
		inerr && /^ *\[[0-9]+\]/ {match($0, /\[[0-9]+\]/); errs += substr($0, RSTART + 1, RLENGTH - 2)}
		END {printf "%d %d %s %s %s\n", good, errs, total + 0, p50 + 0, p99 + 0}' "$1"
}

# etcd_errors OUT: the benchmark's error distribution on one line.
etcd_errors() {
	awk '/^Error distribution:/ {on = 1; next} on && /^ *\[[0-9]+\]/ {sub(/^ */, ""); printf "%s%s", sep, substr($0, 1, 120); sep = "; "}' "$1"
}

# etcd_args MODE CONNS IDX TOTAL: the benchmark's arguments for a run.
etcd_args() {
	local mode=$1 c=$2 idx=$3 total=$4
	local args=(--endpoints "http://127.0.0.1:${ETCD_CLIENT[idx]}" --conns "$c" --clients "$c")
	case $mode in
	put) args+=(put --key-size "$ETCD_KEY_SIZE" --val-size "$VALUE_SIZE" --key-space-size "$KEYS" --total "$total") ;;
	range-l) args+=(range "$ETCD_RANGE_KEY" --consistency l --total "$total") ;;
	range-s) args+=(range "$ETCD_RANGE_KEY" --consistency s --total "$total") ;;
	*) die "unknown etcd benchmark mode $mode" ;;
	esac
	printf '%s\n' "${args[@]}"
}

# run_etcd MODE CONNS IDX KEY CELL: one run of etcd's benchmark against
# member IDX+1. The benchmark stops after --total requests, not after a
# time: the total is the rate this cell last measured (a short calibration
# run of its own the first time) times DURATION.
run_etcd() {
	local mode=$1 c=$2 idx=$3 key=$4 cell=$5 out args total good errs secs p50 p99
	out="$WORK/raw/${key//|/-}.txt"
	if [ -z "${ETCD_RATE[$cell]:-}" ]; then
		total=$((c * 4 > 300 ? c * 4 : 300))
		mapfile -t args < <(etcd_args "$mode" "$c" "$idx" "$total")
		etcd_bench "$out.calibration" "${args[@]}"
		read -r good errs secs p50 p99 < <(etcd_parse "$out.calibration")
		((good > 0)) || die "etcd benchmark $mode c=$c: no request succeeded in its calibration run: $(etcd_errors "$out.calibration")"
		ETCD_RATE[$cell]=$(awk -v g="$good" -v s="$secs" 'BEGIN {printf "%.0f", g / s}')
	fi
	# A rate measured while the machine was busier sizes a run too short:
	# one that lasted under half of DURATION runs again, sized by its own rate.
	local attempt
	for attempt in 1 2; do
		total=$(awk -v r="${ETCD_RATE[$cell]}" -v d="$DUR_S" -v c="$c" 'BEGIN {t = r * d; if (t < 4 * c) t = 4 * c; printf "%.0f", t}')
		mapfile -t args < <(etcd_args "$mode" "$c" "$idx" "$total")
		start_run etcd
		etcd_bench "$out" "${args[@]}"
		stop_run
		read -r good errs secs p50 p99 < <(etcd_parse "$out")
		awk -v s="$secs" 'BEGIN {exit !(s > 0)}' || die "etcd benchmark $mode c=$c printed no summary: $(tail -n 5 "$out")"
		RPS[$key]=$(awk -v g="$good" -v s="$secs" 'BEGIN {printf "%.0f", g / s}')
		ETCD_RATE[$cell]=${RPS[$key]}
		if ((attempt == 2)) || ! awk -v s="$secs" -v d="$DUR_S" 'BEGIN {exit !(s < d / 2)}'; then break; fi
		log "etcd benchmark $mode c=$c: --total $total lasted ${secs}s, under half of $DURATION: running it again sized by ${RPS[$key]} req/s"
	done
	P50[$key]=$(awk -v s="$p50" 'BEGIN {printf "%.2f", s * 1000}')
	P99[$key]=$(awk -v s="$p99" 'BEGIN {printf "%.2f", s * 1000}')
	SECS[$key]=$(awk -v s="$secs" 'BEGIN {printf "%.1f", s}')
	ERR[$key]=""
	((errs == 0)) || ERR[$key]="$errs errors ($(etcd_errors "$out"))"
	finish_run etcd "$key" $((good + errs)) "benchmark $mode c=$c to e$((idx + 1))"
}


# run_sn MODE CONNS IDX KEY: one run of shardnet bench; IDX is the node the
# load goes to (-target any with that node alone), or "leader" for the
# 16-channel writes (each channel's load to its own leader).
run_sn() {
	local mode=$1 c=$2 idx=$3 key=$4 out op args
	out="$WORK/raw/${key//|/-}.json"
	args=(-json -token "$TOKEN" -channel bench -conns "$c" -clients "$c" -value-size "$VALUE_SIZE"
		-keys "$KEYS" -duration "$DURATION")
	if [ "$idx" = leader ]; then
		args+=(-addr "$(sn_url 0),$(sn_url 1),$(sn_url 2)" -target leader)
	else
		args+=(-addr "$(sn_url "$idx")" -target any)
	fi
	case $mode in
	put) op=put ;;
	put16) op="put" && args+=(-channels 16) ;;
	get-linearizable) op="get" && args+=(-read linearizable) ;;
	get-stale) op="get" && args+=(-read stale) ;;
	*) die "unknown shardnet bench mode $mode" ;;
	esac
	start_run shardnet
	run_tracked "$out" timeout -k 5 $((DUR_S + 120)) "$BIN" bench "${args[@]}" "$op" ||
		die "shardnet bench $mode c=$c failed: $(tail -n 5 "$out")"
	stop_run
	# Its JSON: requests (successful or not), errors, errors_by_status,
	# duration_s, latency_ms of the successful ones, leader_moved.
	local requests errs secs p50 p99 bystatus moved
	read -r requests errs secs p50 p99 < <(jq -r '[.requests, .errors, .duration_s, .latency_ms.p50, .latency_ms.p99] | @tsv' "$out" 2>/dev/null) ||
		die "shardnet bench $mode c=$c printed no JSON result: $(tail -n 5 "$out")"
	RPS[$key]=$(awk -v n="$requests" -v e="$errs" -v s="$secs" 'BEGIN {printf "%.0f", (n - e) / s}')
	P50[$key]=$(awk -v v="$p50" 'BEGIN {printf "%.2f", v}')
	P99[$key]=$(awk -v v="$p99" 'BEGIN {printf "%.2f", v}')
	SECS[$key]=$(awk -v s="$secs" 'BEGIN {printf "%.1f", s}')
	ERR[$key]=""
	if [ "$errs" != 0 ]; then
		bystatus=$(jq -r '.errors_by_status // {} | to_entries | map("\(.key)×\(.value)") | join(" ")' "$out")
		ERR[$key]="$errs errors ($bystatus)"
	fi
	moved=$(jq -r '.leader_moved // [] | join(" ")' "$out")
	[ -z "$moved" ] || ERR[$key]+="${ERR[$key]:+, }leader moved during the run: $moved"
	local where="each channel's leader"
	[ "$idx" = leader ] || where="n$((idx + 1))"
	finish_run shardnet "$key" "$requests" "bench $mode c=$c to $where"
}

# pick_median KEY: of the REPEAT runs KEY|1..KEY|REPEAT, the one with the
# median throughput stands for KEY (its latencies and CPU with it); errors of
# any run are kept, and ALLRPS lists every run's throughput.
pick_median() {
	local key=$1 rep mid errs=""
	mid=$(for ((rep = 1; rep <= REPEAT; rep++)); do echo "${RPS[$key|$rep]} $rep"; done |
		sort -n | awk -v n="$REPEAT" 'NR == int((n + 1) / 2) {print $2}')
	local -n arr
	for arr in RPS P50 P99 CPU BUSY CPUREQ CLICPU CLIREQ OTHER SECS; do
		# shellcheck disable=SC2004 # associative: the key is a string
		arr[$key]=${arr[$key|$mid]}
	done
	ALLRPS[$key]=""
	for ((rep = 1; rep <= REPEAT; rep++)); do
		ALLRPS[$key]+="${ALLRPS[$key]:+, }${RPS[$key|$rep]}"
		[ -z "${ERR[$key|$rep]}" ] || errs+="${errs:+; }run $rep: ${ERR[$key|$rep]}"
	done
	ERR[$key]=$errs
}

# idle_cpu: what each system and the machine use over 3 s without load: the
# other system stays up while one is measured, and so do other users.
idle_cpu() {
	local e0 s0 m0 e1 s1 m1
	e0=$(proc_ticks "${ETCD_PID[@]}") s0=$(proc_ticks "${SN_PID[@]}") m0=$(machine_ticks)
	sleep 3
	e1=$(proc_ticks "${ETCD_PID[@]}") s1=$(proc_ticks "${SN_PID[@]}") m1=$(machine_ticks)
	awk -v e="$((e1 - e0))" -v s="$((s1 - s0))" -v hz="$CLK_TCK" -v m0="$m0" -v m1="$m1" -v ncpu="$(nproc)" 'BEGIN {
		split(m0, a, " "); split(m1, b, " ")
		printf "etcd %.2f cores, shardnet %.2f cores (17 channels), whole machine %.2f of %d cores busy\n",
			e / hz / 3, s / hz / 3, ncpu * (b[1] - a[1]) / (b[2] - a[2]), ncpu }'
}

# rows TABLE: the workload rows of a table ("row|label|conns" lines).
rows() {
	local name=NATIVE
	[ "$1" != http ] || name=WRK
	local -n wl=$name
	local row label em sm conns
	for row in "${!wl[@]}"; do
		IFS='|' read -r label em sm conns <<<"${wl[row]}"
		# The 16-channel row needs each channel's leader: no follower table.
		[ "$1:$sm" != follower:put16 ] || continue
		echo "$row|$label|$conns"
	done
}

# cell KEY: throughput, marked when the run had errors.
cell() { if [ -n "${ERR[$1]}" ]; then echo "${RPS[$1]} ⚠"; else echo "${RPS[$1]}"; fi; }

render_table() {
	local table=$1 row label conns c ke ks ratio errs
	echo "| workload | conns | etcd req/s | etcd p50 / p99 (ms) | etcd CPU µs/req | shardnet req/s | shardnet p50 / p99 (ms) | shardnet CPU µs/req | ratio | errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
	while IFS='|' read -r row label conns; do
		for c in $conns; do
			ke="$table|etcd|$row|$c" ks="$table|shardnet|$row|$c"
			ratio=$(awk -v s="${RPS[$ks]}" -v e="${RPS[$ke]}" 'BEGIN {if (e > 0) printf "%.2f", s / e; else print "-"}')
			errs=""
			[ -z "${ERR[$ke]}" ] || errs="etcd: ${ERR[$ke]}"
			[ -z "${ERR[$ks]}" ] || errs+="${errs:+; }shardnet: ${ERR[$ks]}"
			echo "| $label | $c | $(cell "$ke") | ${P50[$ke]} / ${P99[$ke]} | ${CPUREQ[$ke]} | $(cell "$ks") | ${P50[$ks]} / ${P99[$ks]} | ${CPUREQ[$ks]} | $ratio | ${errs:-none} |"
		done
	done < <(rows "$table")
}

render_all_runs() {
	local table=$1 row label conns c
	echo "| workload | conns | etcd req/s, each run | shardnet req/s, each run |"
	echo "|---|---:|---|---|"
	while IFS='|' read -r row label conns; do
		for c in $conns; do
			echo "| $label | $c | ${ALLRPS[$table|etcd|$row|$c]} | ${ALLRPS[$table|shardnet|$row|$c]} |"
		done
	done < <(rows "$table")
}

render_cpu_table() {
	local table=$1 row label conns c ke ks
	echo "| workload | conns | etcd CPU (cores) | shardnet CPU (cores) | load generator CPU (cores), etcd / shardnet | load generator CPU µs/req, etcd / shardnet | machine busy, etcd / shardnet run | other CPU (cores), etcd / shardnet run | run length (s), etcd / shardnet |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	while IFS='|' read -r row label conns; do
		for c in $conns; do
			ke="$table|etcd|$row|$c" ks="$table|shardnet|$row|$c"
			echo "| $label | $c | ${CPU[$ke]} | ${CPU[$ks]} | ${CLICPU[$ke]} / ${CLICPU[$ks]} | ${CLIREQ[$ke]} / ${CLIREQ[$ks]} | ${BUSY[$ke]} / ${BUSY[$ks]} % | ${OTHER[$ke]} / ${OTHER[$ks]} | ${SECS[$ke]} / ${SECS[$ks]} |"
		done
	done < <(rows "$table")
}

# run_table TABLE: every cell of TABLE, REPEAT times, the two systems
# alternating (the first to run swaps each repetition).
run_table() {
	local table=$1 row label conns c rep sys em sm
	local name=NATIVE
	[ "$table" != http ] || name=WRK
	local -n wl=$name
	while IFS='|' read -r row label conns; do
		IFS='|' read -r label em sm conns <<<"${wl[row]}"
		for c in $conns; do
			for ((rep = 1; rep <= REPEAT; rep++)); do
				local order=(etcd shardnet)
				((rep % 2)) || order=(shardnet etcd)
				for sys in "${order[@]}"; do
					local key="$table|$sys|$row|$c|$rep"
					case $table:$sys in
					http:*) if [ "$sys" = etcd ]; then run_wrk etcd "$em" "$c" "$key"; else run_wrk shardnet "$sm" "$c" "$key"; fi ;;
					leader:etcd) run_etcd "$em" "$c" "$LEAD_IDX" "$key" "$table|$row|$c" ;;
					follower:etcd) run_etcd "$em" "$c" "$FOLLOW_IDX" "$key" "$table|$row|$c" ;;
					leader:shardnet) if [ "$sm" = put16 ]; then run_sn "$sm" "$c" leader "$key"; else run_sn "$sm" "$c" "$LEAD_IDX" "$key"; fi ;;
					follower:shardnet) run_sn "$sm" "$c" "$FOLLOW_IDX" "$key" ;;
					esac
				done
			done
			pick_median "$table|etcd|$row|$c"
			pick_median "$table|shardnet|$row|$c"
		done
	done < <(rows "$table")
}

# prefill: 10,000 keys of 256 bytes in each system, for each load
# generator's key names: bench/prefill's key-00000.. (wrk, and etcd's range
# key), etcd benchmark's sequential keys, shardnet bench's -prefill keys.
prefill() {
	log "pre-filling 10,000 keys of 256 bytes in each, for each load generator"
	run_tracked "$WORK/raw/prefill-etcd.txt" timeout 300 "$WORK/bin/prefill" -system etcd \
		-url "http://127.0.0.1:${ETCD_CLIENT[0]}" || die "prefill etcd: $(cat "$WORK/raw/prefill-etcd.txt")"
	run_tracked "$WORK/raw/prefill-shardnet.txt" timeout 300 "$WORK/bin/prefill" -system shardnet \
		-url "$(sn_url 0)" -channel bench -token "$TOKEN" ||
		die "prefill shardnet: $(cat "$WORK/raw/prefill-shardnet.txt")"
	log "$(cat "$WORK/raw/prefill-etcd.txt")"
	log "$(cat "$WORK/raw/prefill-shardnet.txt")"
	if [[ " $TABLES " == *" leader "* ]] || [[ " $TABLES " == *" follower "* ]]; then
		etcd_bench "$WORK/raw/prefill-etcd-benchmark.txt" --endpoints "http://127.0.0.1:${ETCD_CLIENT[LEAD_IDX]}" \
			--conns 16 --clients 64 put --sequential-keys --key-size "$ETCD_KEY_SIZE" --val-size "$VALUE_SIZE" \
			--key-space-size "$KEYS" --total "$KEYS"
		local good errs secs rest
		read -r good errs secs rest < <(etcd_parse "$WORK/raw/prefill-etcd-benchmark.txt")
		((good == KEYS)) || die "prefill etcd (benchmark put --sequential-keys): $good of $KEYS keys written: $(etcd_errors "$WORK/raw/prefill-etcd-benchmark.txt")"
		log "prefill etcd (benchmark put --sequential-keys): $good keys in ${secs}s"
		run_tracked "$WORK/raw/prefill-shardnet-bench.json" timeout 300 "$BIN" bench -json -prefill -count 1 \
			-addr "$(sn_url "$LEAD_IDX")" -token "$TOKEN" -channel bench -conns 16 -clients 64 \
			-value-size "$VALUE_SIZE" -keys "$KEYS" put ||
			die "prefill shardnet (shardnet bench -prefill): $(tail -n 5 "$WORK/raw/prefill-shardnet-bench.json")"
		log "prefill shardnet (shardnet bench -prefill): done"
	fi
}

main() {
	install_trap
	etcd36_build
	ensure_tools
	make_work
	build_all
	if [[ " $TABLES " == *" leader "* ]] || [[ " $TABLES " == *" follower "* ]]; then
		# grep reads all of the help: with -q it would stop at the first
		# match, and pipefail would take shardnet's SIGPIPE for a failure.
		"$BIN" bench -h 2>&1 | grep -- -target >/dev/null ||
			die "$BIN has no 'bench' command with -target: this tree lacks shardnet bench, which the leader and follower tables need (TABLES=http runs without it)"
	fi
	local load_start
	load_start=$(cut -d' ' -f1-3 /proc/loadavg)
	local run_start
	run_start=$(date -u '+%Y-%m-%d %H:%M UTC')

	local channels=(bench) i
	for i in $(seq 0 15); do channels+=("bench-$i"); done
	start_etcd
	start_shardnet "${channels[@]}"

	local etcd_leader sn_leader spread ch
	[ "$LEADER" = any ] || sn_place_leader bench "$LEADER"
	sn_leader=$(sn_leader bench)
	[[ $sn_leader =~ ^n[123]$ ]] || die "channel bench has no leader (got '$sn_leader')"
	LEAD_IDX=$((${sn_leader#n} - 1))
	# The follower the follower table loads: node 1 when it follows, else the
	# leader's next; the same index in both systems.
	FOLLOW_IDX=0
	((LEAD_IDX != 0)) || FOLLOW_IDX=1
	etcd_move_leader "$LEAD_IDX"
	etcd_leader=$(etcd_leader)
	WANT_LEADER[etcd]=$etcd_leader WANT_LEADER[shardnet]=$sn_leader
	spread=$(for ch in "${channels[@]:1}"; do sn_leader "$ch"; done | sort | uniq -c | awk '{printf "%s%s %s", sep, $2, $1; sep = ", "}')

	prefill
	log "leaders: etcd $etcd_leader; shardnet channel bench $sn_leader; bench-0..15 led by $spread; follower table loads e$((FOLLOW_IDX + 1)) / n$((FOLLOW_IDX + 1))"

	local idle
	idle=$(idle_cpu)
	log "idle for 3 s: $idle"

	local table
	for table in $TABLES; do
		log "table $table: $(rows "$table" | wc -l) workloads, $REPEAT run(s) per cell and system, $DURATION each"
		run_table "$table"
	done
	local load_end
	load_end=$(cut -d' ' -f1-3 /proc/loadavg)
	local leaders_after
	leaders_after="etcd $(etcd_leader), shardnet channel bench $(sn_leader bench)"

	if ((FAILOVER_TRIALS > 0)); then
		log "leader-loss trials: $FAILOVER_TRIALS"
		failover_trials "$FAILOVER_TRIALS"
	fi

	local -A title=(
		[leader]="Each system's own load generator, load to its leader"
		[follower]="Each system's own load generator, load to a follower (e$((FOLLOW_IDX + 1)) / n$((FOLLOW_IDX + 1)))"
		[http]="The same HTTP load under wrk, to member/node 1 (LEADER=$LEADER)"
	)
	local report tables=""
	for table in $TABLES; do
		tables+="## ${title[$table]}"$'\n\n'"$(render_table "$table")"$'\n\n'
	done
	report=$(
		echo "# shardnet vs etcd 3.6 — latest run"
		echo
		echo "Written by \`bench/compare.sh\` (\`make bench-compare\`); see docs/benchmarks.md \"shardnet vs etcd 3.6 (make bench-compare)\" for how to read it."
		echo
		echo "- date: $run_start"
		echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM"
		echo "- data dirs: $(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}')"
		echo "- load average (1/5/15 min) before: $load_start; after the throughput runs: $load_end"
		echo "- $(go version | sed 's/^go version //;s/^/go /'); $("$ETCD_BIN" --version | head -n1) (go.etcd.io/etcd/server/v3 $ETCD36_VERSION, built from the Go module proxy); etcd benchmark from go.etcd.io/etcd/v3 $ETCD36_BENCH_VERSION tools/benchmark; $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
		echo "- shardnet: $SN_COMMIT (built at the start of the run)"
		echo "- runs per cell: $REPEAT, the two systems alternating (the median by req/s is shown); $DURATION per run (etcd: --total = its measured rate × $DURATION)"
		echo "- etcd benchmark: --conns C --clients C --precise; put --key-size $ETCD_KEY_SIZE --val-size $VALUE_SIZE --key-space-size $KEYS; range $ETCD_RANGE_KEY --consistency l|s"
		echo "- shardnet bench: -conns C -clients C -value-size $VALUE_SIZE -keys $KEYS -duration $DURATION; get -read linearizable|stale; put -channels 16 -target leader for the 16-channel row"
		echo "- wrk: -t2 (-t1 at 1 connection), --timeout 10s, load to member/node 1 (LEADER=$LEADER)"
		echo "- idle for 3 s before the runs: $idle"
		echo "- leaders: etcd $etcd_leader (moved to match), shardnet channel bench $sn_leader; bench-0..15: $spread; after the runs: $leaders_after"
		echo
		printf '%s' "$tables"
		echo "req/s counts successful answers only; ⚠ marks a run that had errors or after which the leader had moved (see the errors column)."
		((REPEAT == 1)) || echo "Each cell is the run with the median req/s of $REPEAT (its latencies and CPU with it); every run is listed below."
		echo "ratio = shardnet req/s / etcd req/s. CPU µs/req: user+system CPU of the system's three server processes over the run, per request."
		echo
		if ((REPEAT > 1)); then
			for table in $TABLES; do
				echo "## Every run's req/s: $table"
				echo
				render_all_runs "$table"
				echo
			done
		fi
		for table in $TABLES; do
			echo "## CPU during each run: $table"
			echo
			render_cpu_table "$table"
			echo
		done
		echo "Server CPU is the user+system time of the system's three processes over the run. The load"
		echo "generator's is its own (etcd's benchmark, shardnet bench or wrk). Machine busy is all CPUs"
		echo "($(nproc) = 100 %); other CPU is the rest: the idle system, other users of the machine, the"
		echo "kernel's share not charged to a process."
		if ((FAILOVER_TRIALS > 0)); then
			echo
			echo "## Leader loss (channel bench, kill -9 of its leader)"
			echo
			local l
			for l in "${FO_LINES[@]}"; do echo "- $l"; done
			echo
			echo "Median time from the kill to the next acknowledged write: **${FO_MEDIAN} ms** over ${#FO_MS[@]} trials."
		fi
	)
	mkdir -p "$(dirname "$OUT")"
	printf '%s\n' "$report" >"$OUT"
	echo
	printf '%s' "$tables"
	if ((FAILOVER_TRIALS > 0)); then
		printf '%s\n' "${FO_LINES[@]}"
		echo "failover median: ${FO_MEDIAN} ms"
	fi
	echo
	log "wrote $OUT"
}

main "$@"
