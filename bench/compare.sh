#!/usr/bin/env bash
# bench/compare.sh — shardnet against etcd under the same wrk load, on one
# machine, on loopback (`make bench-compare`; docs/benchmarks.md).
#
# Starts a 3-member etcd (Debian's etcd-server, 3.4) and a 3-node shardnet
# with fresh data directories, pre-fills 10,000 keys of 256 bytes in each,
# then drives both with wrk (bench/wrk/*.lua; -t2, or -t1 at one connection)
# against member/node 1. By default (LEADER=follower) node 1 is a follower in
# both systems and forwards to its leader, on the same member/node index in
# both: etcd's leader is moved with MoveLeader, shardnet's channel is created
# again until another node leads it. LEADER=n1 makes node 1 the leader of
# both instead; LEADER=any leaves shardnet's leader where it is.
#   writes; linearizable reads; stale (shardnet) / serializable (etcd) reads,
#   at each of CONNS connections; and writes spread over 16 shardnet channels
#   against etcd's single cluster at 64 connections.
# Then, unless FAILOVER_TRIALS=0, the leader-loss trials of bench/failover.sh
# on the same shardnet cluster.
#
# Prints one table and writes it, with the machine, to bench/results/latest.md.
# Throughput counts 2xx answers only: a run with any non-2xx answer or socket
# error, or after which the leader had moved, is flagged in the errors column.
#
# Environment: DURATION (wrk -d, default 10s), CONNS (default "1 16 64"),
# REPEAT (runs per cell, default 1; the median-throughput run is reported),
# FAILOVER_TRIALS (default 10), LEADER (follower, n1 or any),
# OUT (default bench/results/latest.md), KEEP_WORK=1 keeps the work directory
# (logs, data dirs, raw wrk output).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10s}
CONNS=${CONNS:-1 16 64}
FAILOVER_TRIALS=${FAILOVER_TRIALS:-10}
LEADER=${LEADER:-follower}
REPEAT=${REPEAT:-1}
OUT=${OUT:-$BENCH/results/latest.md}

case "$LEADER" in follower | n1 | any) ;; *) die "LEADER must be follower, n1 or any, not '$LEADER'" ;; esac
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive count, not '$REPEAT'"
[[ $DURATION =~ ^([0-9]+)(s|m)?$ ]] || die "DURATION must look like 10s or 1m, not '$DURATION'"
DUR_S=${BASH_REMATCH[1]}
[ "${BASH_REMATCH[2]}" != m ] || DUR_S=$((DUR_S * 60))
((DUR_S >= 1)) || die "DURATION must be at least 1s"
CLK_TCK=$(getconf CLK_TCK)

# Workloads: label | etcd mode | shardnet mode | connection counts.
WORKLOADS=(
	"write|put|put|$CONNS"
	"read linearizable|get|get|$CONNS"
	"read stale (shardnet) / serializable (etcd)|serializable|stale|$CONNS"
	"write, 16 channels (shardnet) / 1 cluster (etcd)|put|put16|64"
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

declare -A RPS P50 P99 ERR CPU BUSY CPUREQ WRKCPU OTHER ALLRPS
declare -A WANT_LEADER # system -> the leader its runs expect

# run_one SYSTEM MODE CONNS KEY: one wrk run; results under KEY.
run_one() {
	local sys=$1 mode=$2 c=$3 key=$4 threads=2 url script pids args out line
	((c >= 2)) || threads=1 # wrk needs at least one connection per thread
	if [ "$sys" = etcd ]; then
		url="http://127.0.0.1:${ETCD_CLIENT[0]}" script="$BENCH/wrk/etcd.lua" args=("$mode")
		pids=("${ETCD_PID[@]}")
	else
		url="$(sn_url 0)" script="$BENCH/wrk/shardnet.lua" args=("$mode" "$TOKEN")
		pids=("${SN_PID[@]}")
		sn_codes >"$WORK/codes.before"
	fi
	out="$WORK/raw/${key//|/-}-$mode.txt"
	local t0 t1 p0 p1 m0 m1 c0 c1
	p0=$(proc_ticks "${pids[@]}") m0=$(machine_ticks) c0=$(child_ticks) t0=$EPOCHREALTIME
	run_tracked "$out" timeout -k 5 $((DUR_S + 60)) \
		wrk -t"$threads" -c"$c" -d"$DURATION" --timeout 10s -s "$script" "$url" -- "${args[@]}" ||
		die "wrk $sys $mode -c$c failed: $(tail -n 5 "$out")"
	t1=$EPOCHREALTIME c1=$(child_ticks) p1=$(proc_ticks "${pids[@]}") m1=$(machine_ticks)
	line=$(grep '^BENCH ' "$out") || die "wrk $sys $mode -c$c printed no BENCH line: $(cat "$out")"

	local -A v=()
	local kv
	for kv in ${line#BENCH }; do v[${kv%%=*}]=${kv#*=}; done
	local sock=$((v[connect] + v[read] + v[write] + v[timeout]))
	local good=$((v[requests] - v[non2xx]))
	RPS[$key]=$(awk -v g="$good" -v d="${v[duration_us]}" 'BEGIN {printf "%.0f", g / (d / 1e6)}')
	P50[$key]=$(awk -v u="${v[p50_us]}" 'BEGIN {printf "%.2f", u / 1000}')
	P99[$key]=$(awk -v u="${v[p99_us]}" 'BEGIN {printf "%.2f", u / 1000}')
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
	# A leader that moved during the run (an election under load) changes
	# what was measured: say so next to the numbers.
	local now
	if [ "$sys" = etcd ]; then now=$(etcd_leader); else now=$(sn_leader bench); fi
	if [ "$now" != "${WANT_LEADER[$sys]}" ]; then
		ERR[$key]+="${ERR[$key]:+, }leader of bench is $now after the run, not ${WANT_LEADER[$sys]}"
		WANT_LEADER[$sys]=$now # report each move once
	fi
	read -r CPU[$key] BUSY[$key] CPUREQ[$key] WRKCPU[$key] OTHER[$key] < <(awk -v p="$((p1 - p0))" \
		-v w="$((c1 - c0))" -v hz="$CLK_TCK" -v ncpu="$(nproc)" -v t0="$t0" -v t1="$t1" \
		-v m0="$m0" -v m1="$m1" -v n="${v[requests]}" 'BEGIN {
			split(m0, a, " "); split(m1, b, " ")
			secs = t1 - t0; cpu = p / hz; busy = (b[1] - a[1]) / (b[2] - a[2])
			printf "%.2f %.0f %.0f %.2f %.2f\n", cpu / secs, 100 * busy, n ? 1e6 * cpu / n : 0,
				w / hz / secs, busy * ncpu - cpu / secs - w / hz / secs }')
	log "$(printf '%-8s %-12s c=%-3s %8s req/s  p50 %6s ms  p99 %7s ms  server CPU %s cores  machine %s%% busy  %s' \
		"$sys" "$mode" "$c" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" "${CPU[$key]}" "${BUSY[$key]}" "${ERR[$key]:-}")"
}

# pick_median KEY: of the REPEAT runs KEY|1..KEY|REPEAT, the one with the
# median throughput stands for KEY (its latencies and CPU with it); errors of
# any run are kept, and ALLRPS lists every run's throughput.
pick_median() {
	local key=$1 rep mid errs=""
	mid=$(for ((rep = 1; rep <= REPEAT; rep++)); do echo "${RPS[$key|$rep]} $rep"; done |
		sort -n | awk -v n="$REPEAT" 'NR == int((n + 1) / 2) {print $2}')
	local -n arr
	for arr in RPS P50 P99 CPU BUSY CPUREQ WRKCPU OTHER; do
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

# cell KEY: throughput, marked when the run had errors.
cell() { if [ -n "${ERR[$1]}" ]; then echo "${RPS[$1]} ⚠"; else echo "${RPS[$1]}"; fi; }

render_table() {
	local row label em sm conns c ke ks ratio errs
	echo "| workload | conns | etcd req/s | etcd p50 (ms) | etcd p99 (ms) | shardnet req/s | p50 (ms) | p99 (ms) | ratio | errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
	for row in "${!WORKLOADS[@]}"; do
		IFS='|' read -r label em sm conns <<<"${WORKLOADS[row]}"
		for c in $conns; do
			ke="etcd|$row|$c" ks="shardnet|$row|$c"
			ratio=$(awk -v s="${RPS[$ks]}" -v e="${RPS[$ke]}" 'BEGIN {if (e > 0) printf "%.2f", s / e; else print "-"}')
			errs=""
			[ -z "${ERR[$ke]}" ] || errs="etcd: ${ERR[$ke]}"
			[ -z "${ERR[$ks]}" ] || errs+="${errs:+; }shardnet: ${ERR[$ks]}"
			echo "| $label | $c | $(cell "$ke") | ${P50[$ke]} | ${P99[$ke]} | $(cell "$ks") | ${P50[$ks]} | ${P99[$ks]} | $ratio | ${errs:-none} |"
		done
	done
}

render_all_runs() {
	local row label em sm conns c
	echo "| workload | conns | etcd req/s, each run | shardnet req/s, each run |"
	echo "|---|---:|---|---|"
	for row in "${!WORKLOADS[@]}"; do
		IFS='|' read -r label em sm conns <<<"${WORKLOADS[row]}"
		for c in $conns; do
			echo "| $label | $c | ${ALLRPS[etcd|$row|$c]} | ${ALLRPS[shardnet|$row|$c]} |"
		done
	done
}

render_cpu_table() {
	local row label em sm conns c ke ks
	echo "| workload | conns | etcd CPU (cores) | etcd CPU µs/req | shardnet CPU (cores) | shardnet CPU µs/req | machine busy, etcd run | machine busy, shardnet run | wrk CPU (cores), etcd / shardnet run | other CPU (cores), etcd / shardnet run |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for row in "${!WORKLOADS[@]}"; do
		IFS='|' read -r label em sm conns <<<"${WORKLOADS[row]}"
		for c in $conns; do
			ke="etcd|$row|$c" ks="shardnet|$row|$c"
			echo "| $label | $c | ${CPU[$ke]} | ${CPUREQ[$ke]} | ${CPU[$ks]} | ${CPUREQ[$ks]} | ${BUSY[$ke]} % | ${BUSY[$ks]} % | ${WRKCPU[$ke]} / ${WRKCPU[$ks]} | ${OTHER[$ke]} / ${OTHER[$ks]} |"
		done
	done
}

main() {
	install_trap
	ensure_tools
	make_work
	build_all
	local load_start
	load_start=$(cut -d' ' -f1-3 /proc/loadavg)

	local channels=(bench) i
	for i in $(seq 0 15); do channels+=("bench-$i"); done
	start_etcd
	start_shardnet "${channels[@]}"

	local etcd_leader sn_leader spread ch
	[ "$LEADER" = any ] || sn_place_leader bench "$LEADER"
	sn_leader=$(sn_leader bench)
	[[ $sn_leader =~ ^n[123]$ ]] || die "channel bench has no leader (got '$sn_leader')"
	etcd_move_leader $((${sn_leader#n} - 1))
	etcd_leader=$(etcd_leader)
	WANT_LEADER[etcd]=$etcd_leader WANT_LEADER[shardnet]=$sn_leader
	spread=$(for ch in "${channels[@]:1}"; do sn_leader "$ch"; done | sort | uniq -c | awk '{printf "%s%s %s", sep, $2, $1; sep = ", "}')

	log "pre-filling 10,000 keys of 256 bytes in each"
	run_tracked "$WORK/raw/prefill-etcd.txt" timeout 300 "$WORK/bin/prefill" -system etcd \
		-url "http://127.0.0.1:${ETCD_CLIENT[0]}" || die "prefill etcd: $(cat "$WORK/raw/prefill-etcd.txt")"
	run_tracked "$WORK/raw/prefill-shardnet.txt" timeout 300 "$WORK/bin/prefill" -system shardnet \
		-url "$(sn_url 0)" -channel bench -token "$TOKEN" ||
		die "prefill shardnet: $(cat "$WORK/raw/prefill-shardnet.txt")"
	log "$(cat "$WORK/raw/prefill-etcd.txt")"
	log "$(cat "$WORK/raw/prefill-shardnet.txt")"
	log "leaders: etcd $etcd_leader; shardnet channel bench $sn_leader; bench-0..15 led by $spread"

	local idle
	idle=$(idle_cpu)
	log "idle for 3 s: $idle"

	local row label em sm conns c rep
	for row in "${!WORKLOADS[@]}"; do
		IFS='|' read -r label em sm conns <<<"${WORKLOADS[row]}"
		for c in $conns; do
			for ((rep = 1; rep <= REPEAT; rep++)); do
				run_one etcd "$em" "$c" "etcd|$row|$c|$rep"
				run_one shardnet "$sm" "$c" "shardnet|$row|$c|$rep"
			done
			pick_median "etcd|$row|$c"
			pick_median "shardnet|$row|$c"
		done
	done
	local table cpu_table load_end
	table=$(render_table)
	cpu_table=$(render_cpu_table)
	load_end=$(cut -d' ' -f1-3 /proc/loadavg)
	local leaders_after
	leaders_after="etcd $(etcd_leader), shardnet channel bench $(sn_leader bench)"

	if ((FAILOVER_TRIALS > 0)); then
		log "leader-loss trials: $FAILOVER_TRIALS"
		failover_trials "$FAILOVER_TRIALS"
	fi

	local report
	report=$(
		echo "# shardnet vs etcd — latest run"
		echo
		echo "Written by \`bench/compare.sh\` (\`make bench-compare\`); see docs/benchmarks.md for how to read it."
		echo
		echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM"
		echo "- data dirs: $(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}')"
		echo "- load average (1/5/15 min) before: $load_start; after the throughput runs: $load_end"
		echo "- $(go version | sed 's/^go version //;s/^/go /'); $(etcd --version | head -n1); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
		echo "- shardnet: $SN_COMMIT (built at the start of the run)"
		echo "- runs per cell: $REPEAT (the median by req/s is shown)"
		echo "- wrk: -d $DURATION, -t2 (-t1 at 1 connection), --timeout 10s, load to member/node 1 of each (LEADER=$LEADER)"
		echo "- idle for 3 s before the runs: $idle"
		echo "- leaders: etcd $etcd_leader (moved to match), shardnet channel bench $sn_leader; bench-0..15: $spread; after the runs: $leaders_after"
		echo
		echo "## Throughput and latency"
		echo
		echo "$table"
		echo
		echo "req/s counts 2xx answers only; ⚠ marks a run that had errors or after which the leader had moved (see the errors column)."
		((REPEAT == 1)) || echo "Each cell is the run with the median req/s of $REPEAT (its latencies with it); every run is listed below."
		echo "ratio = shardnet req/s / etcd req/s."
		echo
		if ((REPEAT > 1)); then
			echo "## Every run's req/s"
			echo
			render_all_runs
			echo
		fi
		echo "## CPU during each run"
		echo
		echo "Server CPU is the user+system time of the system's three processes over the run."
		echo "Machine busy is all CPUs ($(nproc) = 100 %); wrk CPU is the load generator's own; other CPU is"
		echo "the rest: the idle system, other users of the machine, the kernel's share not charged to a process."
		echo
		echo "$cpu_table"
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
	echo "$table"
	echo
	echo "$cpu_table"
	if ((FAILOVER_TRIALS > 0)); then
		echo
		printf '%s\n' "${FO_LINES[@]}"
		echo "failover median: ${FO_MEDIAN} ms"
	fi
	echo
	log "wrote $OUT"
}

main "$@"
