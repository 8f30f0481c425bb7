#!/usr/bin/env bash
# bench/idle.sh [N] — what N idle channels (default 1000, 3 replicas each)
# cost three real `shardnet agent` processes, and how long one of them
# takes to serve its N replicas again after a restart (issue 26, items 3
# and 4; docs/benchmarks.md "Idle channels, real agents").
#
# Starts 3 core nodes (-serve-data) on 127.0.0.1 with bench/lib.sh (ports
# moved by PORT_OFFSET, default 6100: 24046-24620), creates the N channels
# with CONC (8) creations at once and writes key "k" of each, waits until
# every node serves a stale read of every channel, waits SETTLE seconds
# (30), then measures over IDLE seconds (60):
#   - the CPU of the three processes together (utime+stime, /proc/PID/stat)
#   - their resident memory (VmRSS) per replica (3N replicas)
# With PROFILE_DIR set it then takes a 20 s CPU profile and a heap profile
# of each node (/debug/pprof, operator token) into that directory.
# Then, for each fault in RESTARTS ("term kill"): stops n2 (SIGTERM, or
# SIGKILL), starts it again and times, from the moment it was started,
#   - serving: until it answers a stale read of every channel itself
#   - led: until it leads again every channel whose placement puts it
#     first (its preferred leader).
# SN_BIN runs another binary (an A/B comparison) instead of building the
# tree's. It stops every process it started. Prints one table.
set -euo pipefail

N=${1:-1000}
CONC=${CONC:-8}
SETTLE=${SETTLE:-30}
IDLE=${IDLE:-60}
RESTARTS=${RESTARTS:-term kill}
PORT_OFFSET=${PORT_OFFSET:-6100}
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_trap
make_work
if [ -n "${SN_BIN:-}" ]; then
	BIN=$SN_BIN
	SN_COMMIT="$BIN"
else
	log "building bin/shardnet"
	SN_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
	make -s -C "$ROOT" build
fi
(cd "$BENCH" && go build -o "$WORK/bin/" ./idlewatch)
W=$WORK/bin/idlewatch
export SHARDNET_TOKEN=$TOKEN

start_shardnet
urls="$(sn_url 0),$(sn_url 1),$(sn_url 2)"
log "creating $N channels, $CONC at once"
created=$("$W" create -url "$urls" -n "$N" -c "$CONC" -timeout 20m)
log "$created"
for i in 0 1 2; do
	"$W" serving -url "$(sn_url "$i")" -n "$N" -timeout 5m >/dev/null ||
		die "n$((i + 1)) does not serve every channel"
done
log "every node serves all $N channels; settling ${SETTLE}s, then ${IDLE}s idle"
sleep "$SETTLE"

ticks=$(getconf CLK_TCK)
cpu_all() {
	local pid s=0 t
	for pid in "${SN_PID[@]}"; do
		t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
		s=$((s + t))
	done
	echo "$s"
}
rss_all() {
	local pid s=0 r
	for pid in "${SN_PID[@]}"; do
		r=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
		s=$((s + r))
	done
	echo "$s"
}
load0=$(cut -d' ' -f1 /proc/loadavg)
c0=$(cpu_all)
t0=$(date +%s.%N)
sleep "$IDLE"
c1=$(cpu_all)
t1=$(date +%s.%N)
load1=$(cut -d' ' -f1 /proc/loadavg)
rss=$(rss_all)
idle_cpu=$(awk -v c="$((c1 - c0))" -v hz="$ticks" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", 100 * c / hz / (t1 - t0) }')
per_rep=$(awk -v r="$rss" -v n="$N" 'BEGIN { printf "%.0f", r / (3 * n) }')
log "idle: ${idle_cpu} % of one core for the three processes; RSS $((rss / 1024)) MiB, ${per_rep} KiB per replica"

if [ -n "${PROFILE_DIR:-}" ]; then
	mkdir -p "$PROFILE_DIR"
	log "profiling each node for 20 s into $PROFILE_DIR"
	prof=()
	for i in 0 1 2; do
		sn_curl --max-time 40 -o "$PROFILE_DIR/cpu-n$((i + 1)).prof" "$(sn_url "$i")/debug/pprof/profile?seconds=20" &
		prof+=($!)
	done
	wait "${prof[@]}" # not a bare wait: the agents are children too
	for i in 0 1 2; do
		sn_curl --max-time 40 -o "$PROFILE_DIR/heap-n$((i + 1)).prof" "$(sn_url "$i")/debug/pprof/heap"
	done
fi

restart_lines=()
for fault in $RESTARTS; do
	idx=1
	pid=${SN_PID[idx]}
	case $fault in
	term) kill -TERM "$pid" ;;
	kill) kill -KILL "$pid" ;;
	*) die "unknown fault $fault (term or kill)" ;;
	esac
	stopped=$SECONDS
	wait "$pid" 2>/dev/null || true
	SN_PID[idx]=""
	stop_s=$((SECONDS - stopped))
	since=$(date +%s%N)
	start_sn_node "$idx" "${SN_IP[0]}:${SN_GOSSIP[0]}"
	serving=$("$W" serving -url "$(sn_url "$idx")" -n "$N" -c 32 -since "$since" -timeout 5m) ||
		die "n2 did not serve every channel again after the $fault"
	led=$("$W" led -url "$(sn_url 0)" -node "n$((idx + 1))" -since "$since" -timeout 5m) ||
		die "n2 did not lead its preferred channels again after the $fault"
	line=$(printf '%s: stopped in %s s; %s; %s' "$fault" "$stop_s" "$serving" "$led")
	# What the node says of its start (binaries that log it, at -log-level info).
	grep -E "started the replicas found on disk|meta copy caught up" "$WORK/logs/n$((idx + 1)).log" | tail -n 2 >&2 || true
	log "$line"
	restart_lines+=("$line")
	wait_for "n2 ready" 60 sn_ready "$idx"
done

echo
echo "bench/idle.sh $N — $SN_COMMIT — $(date -u '+%Y-%m-%d %H:%M UTC') — load average $load0 → $load1 (1 min, before/after the idle window), $(nproc) CPUs"
echo "$created"
printf '| channels (replicas) | idle CPU, 3 processes (%s s, %s s after serving) | RSS per replica |\n' "$IDLE" "$SETTLE"
printf '|---|---:|---:|\n'
printf '| %d (%d) | %s %% of one core | %s KiB |\n' "$N" "$((3 * N))" "$idle_cpu" "$per_rep"
for line in "${restart_lines[@]}"; do echo "restart of n2, $line"; done
