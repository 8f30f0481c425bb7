#!/usr/bin/env bash
# bench/metascale.sh [N] — what the meta group costs its leader with N
# nodes (default 50). From cluster version 5 the meta group is the 3 core
# nodes, and the N-3 resource nodes follow the meta state through a watch
# on a core node (cluster/metafollow.go); a binary of an earlier version
# (BIN=...) makes every node a member of the meta group (core nodes voters,
# the others non-voters), so its leader replicates every meta entry, and
# heartbeats, to all N.
#
# Starts 3 core nodes (-serve-data) and N-3 resource nodes as real
# `shardnet agent` processes on 127.0.0.1 (ports from $BASE_PORT, default
# 21000, three per node), waits until the registry shows all N alive and
# every node knows the meta leader (and, with a binary that serves meta
# watches, until the core nodes serve N-3 watches: the meta leader removes
# the resource nodes from the meta group one a step once the cluster
# version is 5), then measures on the meta leader's process:
#   - CPU (utime+stime from /proc/PID/stat) over $IDLE seconds idle (30)
#   - bytes through read/write system calls (/proc/PID/io rchar/wchar:
#     sockets, and the small meta log writes) over the same seconds
#   - the latency of $K (20) channel creations through the leader (each
#     commits a placement in one meta entry) and the leader's CPU and bytes
#     during them; a resource node's figures beside the leader's.
# Each agent needs its share of a core while the cluster forms: on 2
# shared cores 50 agents work, 100 saturate the machine (cluster/DESIGN.md).
# It stops every process it started (TERM, then KILL) and removes its work
# directory (kept, with the logs, when the run fails). Writes the figures to stdout; cluster/DESIGN.md "Scale of the
# control plane" keeps them.
set -euo pipefail

N=${1:-50}
IDLE=${IDLE:-30}
K=${K:-20}
BASE_PORT=${BASE_PORT:-21000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/bin/shardnet}
TOKEN=metascale-token
WORK=$(mktemp -d)
PIDS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local pid alive deadline
	if ((${#PIDS[@]})); then
		kill -TERM "${PIDS[@]}" 2>/dev/null || true
		deadline=$((SECONDS + 15))
		while ((SECONDS < deadline)); do
			alive=0
			for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
			((alive)) || break
			sleep 0.5
		done
		for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	fi
	if ((rc)); then
		log "failed: logs kept in $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT INT TERM

[ -x "$BIN" ] || (cd "$ROOT" && go build -o "$BIN" ./cmd/shardnet)

port() { echo $((BASE_PORT + 3 * $1 + $2)); } # node index, 0 gossip / 1 cluster / 2 http
url() { echo "http://127.0.0.1:$(port "$1" 2)"; }
api() { curl -fsS -H "Authorization: Bearer $TOKEN" "$@"; }

export SHARDNET_TOKEN=$TOKEN SHARDNET_CLUSTER_KEY=metascale-cluster-key
SHARDNET_GOSSIP_KEY=$(head -c 32 /dev/urandom | base64)
export SHARDNET_GOSSIP_KEY
join=(-join "127.0.0.1:$(port 0 0)" -join "127.0.0.1:$(port 1 0)" -join "127.0.0.1:$(port 2 0)")
for ((i = 0; i < N; i++)); do
	if ((i < 3)); then
		role=(-role core -serve-data -bootstrap-expect 3)
		name=core$((i + 1))
	else
		role=(-role resource)
		name=res$((i - 2))
	fi
	"$BIN" agent -name "$name" "${role[@]}" -zone "z$((i % 3))" -data-dir "$WORK/$name" -bind 127.0.0.1 \
		-gossip-port "$(port "$i" 0)" -cluster-port "$(port "$i" 1)" -http-addr "127.0.0.1:$(port "$i" 2)" \
		-insecure -log-level warn -rate-limit 0 "${join[@]}" >>"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
done
log "started $N agents"

deadline=$((SECONDS + 300))
while :; do
	alive=$(api "$(url 0)/v1/nodes" 2>/dev/null | jq '[.[] | select(.state == "alive")] | length' 2>/dev/null || echo 0)
	((alive >= N)) && break
	((SECONDS < deadline)) || { log "only $alive of $N alive after 300 s"; tail -5 "$WORK"/core1.log >&2; exit 1; }
	sleep 2
done
log "all $N registered alive"

# The meta leader as core1 sees it; none for a moment while the busy
# meta group elects: ask again.
until leader=$(api "$(url 0)/v1/status" 2>/dev/null | jq -r .meta_leader) && [ -n "$leader" ] && [ "$leader" != null ]; do
	((SECONDS < deadline)) || { log "no meta leader after 300 s"; exit 1; }
	sleep 1
done
case $leader in
core*) li=$((${leader#core} - 1)) ;;
*) log "meta leader $leader is not a core node"; exit 1 ;;
esac
lpid=${PIDS[$li]}
ri=$((N - 1))
((ri != li)) || ri=$((N - 2))
rpid=${PIDS[$ri]}
log "meta leader $leader (pid $lpid); resource node pid $rpid"
# The meta group's membership settles (one AddNonvoter per leader step): a
# node knows the meta leader once the leader replicates to it.
deadline=$((SECONDS + 300))
for ((i = 0; i < N; i++)); do
	until [ "$(api "$(url "$i")/v1/status" 2>/dev/null | jq -r .meta_leader)" = "$leader" ]; do
		((SECONDS < deadline)) || { log "node $i does not follow the meta group after 300 s"; exit 1; }
		sleep 1
	done
done
# A binary that serves meta watches: wait until every resource node
# follows by watch (the resource nodes were meta non-voters until the
# cluster version became 5; the leader removes them one a step).
watchers() {
	local i s=0 v
	for ((i = 0; i < 3; i++)); do
		v=$(api "$(url "$i")/metrics" 2>/dev/null | awk '$1 == "shardnet_cluster_meta_watchers" { print $2 }')
		[ -n "$v" ] || { echo none; return; }
		s=$((s + ${v%.*}))
	done
	echo "$s"
}
members() { api "$(url "$li")/metrics" 2>/dev/null | awk '$1 == "shardnet_cluster_meta_members" { print $2 }'; }
if [ "$(watchers)" != none ]; then
	until [ "$(watchers)" -ge $((N - 3)) ] && [ "$(members)" = 3 ]; do
		((SECONDS < deadline)) || { log "$(watchers) of $((N - 3)) resource nodes follow by watch, $(members) meta members, after 300 s"; exit 1; }
		sleep 1
	done
	log "all $((N - 3)) resource nodes follow the meta state by watch; the meta group is the 3 core nodes"
fi
log "all $N follow the meta group; idle ${IDLE} s"
sleep 5

ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }
io() { awk '/^rchar|^wchar/ { s += $2 } END { print s }' "/proc/$1/io"; }
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

c0=$(cpu "$lpid") b0=$(io "$lpid") rc0=$(cpu "$rpid") rb0=$(io "$rpid")
sleep "$IDLE"
c1=$(cpu "$lpid") b1=$(io "$lpid") rc1=$(cpu "$rpid") rb1=$(io "$rpid")

lat=()
refused=0
t0=$(date +%s.%N)
for ((k = 0; k < K; k++)); do
	for ((try = 1; ; try++)); do
		t=$(curl -sS -o "$WORK/create.out" -w '%{time_total}' -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
			-d "{\"name\":\"m$k\",\"replicas\":3}" "$(url "$li")/v1/channels")
		grep -q '"name"' "$WORK/create.out" && break
		# A refusal (the meta group changing its membership: 503) is
		# counted and the create sent again; its time is not counted. A
		# create whose outcome was unknown (the leadership lost while it
		# committed, on a saturated machine) may have been done: its
		# "exists" ends the retries.
		((try > 1)) && grep -q channel_exists "$WORK/create.out" && break
		log "create m$k, try $try: $(cat "$WORK/create.out")"
		((try < 10)) || exit 1
		refused=$((refused + 1))
		sleep 1
	done
	lat+=("$t")
done
t1=$(date +%s.%N)
c2=$(cpu "$lpid") b2=$(io "$lpid") rc2=$(cpu "$rpid") rb2=$(io "$rpid")

# A meta write alone (IssueToken: one entry, no replica to start).
tlat=()
for ((k = 0; k < K; k++)); do
	t=$(curl -fsS -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
		-d '{"scope":"read-only"}' "$(url "$li")/v1/channels/m0/tokens")
	tlat+=("$t")
done
tsorted=$(printf '%s\n' "${tlat[@]}" | sort -n)
tmedian=$(echo "$tsorted" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
tworst=$(echo "$tsorted" | tail -1)

sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
median=$(echo "$sorted" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
worst=$(echo "$sorted" | tail -1)
awk -v n="$N" -v idle="$IDLE" -v k="$K" -v c0="$c0" -v c1="$c1" -v c2="$c2" -v b0="$b0" -v b1="$b1" -v b2="$b2" \
	-v rc0="$rc0" -v rc1="$rc1" -v rc2="$rc2" -v rb0="$rb0" -v rb1="$rb1" -v rb2="$rb2" \
	-v t0="$t0" -v t1="$t1" -v med="$median" -v worst="$worst" -v refused="$refused" -v tmed="$tmedian" -v tworst="$tworst" -v lrss="$(rss "$lpid")" -v rrss="$(rss "$rpid")" 'BEGIN {
	burst = t1 - t0
	printf "nodes %d (3 core + %d resource), measured on the meta leader and on the last node started that is not the leader\n", n, n - 3
	printf "idle %d s: leader CPU %.1f %% of a core, %.1f KB/s through read/write; last node %.1f %%, %.1f KB/s\n",
		idle, 100 * (c1 - c0) / idle, (b1 - b0) / idle / 1000, 100 * (rc1 - rc0) / idle, (rb1 - rb0) / idle / 1000
	printf "%d channel creations in %.2f s: median %.0f ms, worst %.0f ms; leader CPU %.1f %%, %.1f KB/s; last node %.1f %%\n",
		k, burst, 1000 * med, 1000 * worst, 100 * (c2 - c1) / burst, (b2 - b1) / burst / 1000, 100 * (rc2 - rc1) / burst
	printf "%d token issues (a meta entry alone): median %.0f ms, worst %.0f ms\n", k, 1000 * tmed, 1000 * tworst
	printf "refused and sent again: %d\n", refused
	printf "RSS: leader %d MB, last node %d MB\n", lrss / 1024, rrss / 1024
}'
