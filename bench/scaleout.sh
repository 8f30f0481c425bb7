#!/usr/bin/env bash
# bench/scaleout.sh — scale out from 3 to 6 nodes, simulated on one machine
# (`make bench-scaleout`; issue 26 item 5; docs/benchmarks.md "Scale out").
#
# Do aggregate writes over 12 channels grow when the nodes double? Each node
# is a container of the FROM scratch image (make docker) with its CPU capped
# (--cpus CPUS, default 0.15 of a core) and pinned to NODE_CPUS (default
# core 0), so that six nodes fit in one core; the load generator (wrk) runs
# on the host pinned to LOAD_CPUS (default core 1) and reaches the nodes only
# at their addresses on a private docker network made for the run.
#
# One round:
#   1. three core nodes (-serve-data, -bootstrap-expect 3, zones a b c) with
#      node certificates (mutual TLS on the cluster port) made by a one-shot
#      container of the same image, as deploy/docker-compose.yml does;
#   2. CHANNELS channels (default 12) of 3 replicas, placed by the
#      allocator (replicas and first leaders spread over the nodes);
#   3. DURATION (default 20s) of 256-byte writes: one wrk per node that
#      leads channels, sending that node only the channels it leads (what a
#      client that knows the leaders does: no forwarding hop), CONNS
#      connections in all (default 64) split by the channels each leads;
#   4. three resource nodes join (zones a b c); the channels are deleted and
#      CHANNELS new ones created, which the allocator spreads over the six;
#   5. the same writes again;
#   6. every container removed.
# ROUNDS rounds (default 3) give the alternation 3,6,3,6,3,6; the medians of
# each size and their ratio are printed and written to OUT.
#
# Why the channels are created again rather than moved: placements do not
# move onto new nodes by themselves in this release, and the APIs that move
# replicas cannot spread them either: `channel scale` from 3 to 4 adds the
# replica on the least-loaded node (a new one), but from 4 back to 3 drops
# the newest replica first (cluster/scale.go), which returns the channel to
# its old nodes; a drain moves every replica off a node. Channels created on
# six nodes are what a placement that spreads them gives.
#
# Measured beside the writes, over each measurement's DURATION:
#   - CPU of each node (its container's cgroup cpu.stat: usage, and the
#     share of CFS periods in which the quota throttled it);
#   - fsyncs per second: the synced Raft log batches of all nodes
#     (shardnet_logstore_append_batches_total: each one pebble batch
#     committed with Sync, which pebble may merge with a concurrent one),
#     and beside them the writes and flushes the disk holding docker's
#     data completed (/proc/diskstats; the disk is shared with everything
#     else on the machine).
#
#   ROUNDS=3 DURATION=20s CONNS=64 CPUS=0.15 bash bench/scaleout.sh
#
# DATA_TMPFS=1 puts each node's data directory on a tmpfs instead of the
# shared disk: a control that tells the disk's share of the result from the
# nodes' (an fsync on tmpfs costs next to nothing).
# With PROFILE_DIR set, each measurement also takes a CPU profile of node 1
# (cpu-r<round>-n<nodes>-n1.prof; go tool pprof reads it).
#
# Needs docker, wrk, taskset, curl, jq.
# Every container, network and volume is named sn-scaleout-<pid>-... and
# removed on exit (KEEP=1 keeps them, and the work directory, for a look).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-3s}
CONNS=${CONNS:-64}
CHANNELS=${CHANNELS:-12}
CPUS=${CPUS:-0.15}
NODE_CPUS=${NODE_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
OUT=${OUT:-$BENCH/results/scaleout-latest.md}
RUN=sn-scaleout-$$
IMAGE=${IMAGE:-shardnet:$RUN}
KEEP=${KEEP:-}
# PRIORITY=1 (the default) puts the nodes' containers in a cgroup of the
# run (/sn-scaleout-<pid>, --cgroup-parent) and wrk in another, both with
# cpu.shares SHARES (default 262,144, the most cgroup v1 takes, the weight
# of 256 busy processes): on a machine where other work runs, the nodes
# would otherwise get what is left (one weight for all of docker's containers
# against each busy process), far below their quota, and the run would
# measure the other work, not the quota. What they take stays bounded: the
# nodes by their --cpus, wrk by LOAD_QUOTA of a core. cgroup v1 only (this
# machine's docker); PRIORITY=0, or cgroup v2, runs without.
PRIORITY=${PRIORITY:-1}
SHARES=${SHARES:-262144}
LOAD_QUOTA=${LOAD_QUOTA:-0.5}
CG_CPU=/sys/fs/cgroup/cpu
CG_PARENT="" # the containers' --cgroup-parent, when PRIORITY applies
CG_LOAD=""   # wrk's cpu cgroup directory, when PRIORITY applies

# The nodes: names, roles, zones and the last octet of their addresses.
NAMES=(n1 n2 n3 r1 r2 r3)
ROLES=(core core core resource resource resource)
ZONES=(a b c a b c)
OCTETS=(11 12 13 21 22 23)
NET_PREFIX="" # the network's first three octets, chosen by make_network
CID=()        # container id per node index, "" while not running
WRK_PIDS=()

# The nodes' secrets reach the containers through `docker run -e NAME`,
# which copies them from this environment (not from the command line).
export SHARDNET_TOKEN=$TOKEN SHARDNET_CLUSTER_KEY=$CLUSTER_KEY SHARDNET_GOSSIP_KEY=$GOSSIP_KEY

# -------------------------------------------------------------- cleanup

# scaleout_cleanup stops the run's wrk processes and removes its
# containers, network, volume and image, and the work directory unless the
# run failed (then the nodes' last log lines are kept there and printed).
# Not lib.sh's cleanup: that one also removes iptables rules that
# another benchmark's blackhole trials may be using.
scaleout_cleanup() {
	local rc=$? pid ids i f d
	trap - EXIT INT TERM
	set +e
	for pid in "${WRK_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	if ((rc != 0)) && [ -n "$WORK" ]; then
		for i in "${!CID[@]}"; do
			[ -z "${CID[i]}" ] || docker logs --tail 30 "${CID[i]}" >"$WORK/logs/${NAMES[i]}.log" 2>&1
		done
		for f in "$WORK"/logs/*.log; do
			[ -s "$f" ] || continue
			log "--- last lines of $f"
			tail -n 15 "$f" >&2
		done
	fi
	if [ -z "$KEEP" ]; then
		ids=$(docker ps -aq --filter "label=sn-scaleout.run=$RUN" 2>/dev/null)
		# shellcheck disable=SC2086 # container ids, one a word
		[ -z "$ids" ] || docker rm -f -v $ids >/dev/null
		docker network rm "$RUN" >/dev/null 2>&1
		docker volume rm "$RUN-pki" >/dev/null 2>&1
		docker image rm "$IMAGE" >/dev/null 2>&1
		# The cgroups the run made (docker made one per controller
		# under the parent); empty once their processes are gone.
		[ -z "$CG_LOAD" ] || rmdir "$CG_LOAD" 2>/dev/null
		[ -z "$CG_PARENT" ] || for d in /sys/fs/cgroup/*/"$CG_PARENT"; do rmdir "$d" 2>/dev/null; done
	else
		log "kept containers, network $RUN and volume $RUN-pki (KEEP=1): docker rm -f -v \$(docker ps -aq --filter label=sn-scaleout.run=$RUN)"
	fi
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if ((rc != 0)) || [ -n "$KEEP" ]; then
			log "kept $WORK (logs, raw wrk output)"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}

exec 9>&2
trap 'scaleout_cleanup 2>&9' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -------------------------------------------------------------- setup

check_tools() {
	local t
	for t in docker wrk taskset curl jq; do
		command -v "$t" >/dev/null || die "$t is needed"
	done
	docker info >/dev/null 2>&1 || die "the docker daemon does not answer"
}

build_image() {
	log "building the image $IMAGE (make docker)"
	SN_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
	make -s -C "$ROOT" docker DOCKER_IMAGE="$IMAGE" >"$WORK/logs/build.log" 2>&1 ||
		die "make docker failed: $(tail -n 5 "$WORK/logs/build.log")"
}

# make_cgroups: the run's two cpu cgroups (PRIORITY, above).
make_cgroups() {
	[ "$PRIORITY" = 1 ] || return 0
	if [ ! -f "$CG_CPU/cpu.shares" ] || [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		log "no cgroup v1 cpu hierarchy: running without PRIORITY"
		return 0
	fi
	CG_PARENT=$RUN
	mkdir -p "$CG_CPU/$CG_PARENT" "$CG_CPU/$RUN-load"
	CG_LOAD=$CG_CPU/$RUN-load
	echo "$SHARES" >"$CG_CPU/$CG_PARENT/cpu.shares"
	echo "$SHARES" >"$CG_LOAD/cpu.shares"
	awk -v q="$LOAD_QUOTA" 'BEGIN { printf "%d\n", q * 100000 }' >"$CG_LOAD/cpu.cfs_quota_us"
	log "cgroups: nodes under $CG_CPU/$CG_PARENT, wrk in $CG_LOAD (cpu.shares $SHARES, wrk quota $LOAD_QUOTA core)"
}

# make_network creates the run's bridge network on a free 172.31.x.0/24.
make_network() {
	local attempt out
	for ((attempt = 0; attempt < 8; attempt++)); do
		NET_PREFIX=172.31.$((16 + RANDOM % 224))
		if out=$(docker network create --driver bridge --subnet "$NET_PREFIX.0/24" \
			--label "sn-scaleout.run=$RUN" "$RUN" 2>&1); then
			log "network $RUN: $NET_PREFIX.0/24"
			return 0
		fi
		[[ $out == *overlap* ]] || die "docker network create: $out"
	done
	die "no free 172.31.x.0/24 for the network"
}

# make_certs: a CA and a certificate per node in the volume $RUN-pki, made
# by the image itself (as deploy/docker-compose.yml's pki services), so
# that the files belong to the nodes' user. A bench on one host: the CA key
# lies in the same volume; in a deployment it stays off the nodes.
make_certs() {
	log "making the CA and the node certificates"
	docker volume create --label "sn-scaleout.run=$RUN" "$RUN-pki" >/dev/null
	docker run --rm --network none --label "sn-scaleout.run=$RUN" -v "$RUN-pki:/pki" "$IMAGE" \
		tls cert create -if-missing -ca-dir /pki/ca -out /pki -role core -node n1 -node n2 -node n3 >/dev/null
	docker run --rm --network none --label "sn-scaleout.run=$RUN" -v "$RUN-pki:/pki" "$IMAGE" \
		tls cert create -if-missing -ca-dir /pki/ca -out /pki -role resource -node r1 -node r2 -node r3 >/dev/null
}

# ip I: node I's address on the network.
ip() { printf '%s.%s' "$NET_PREFIX" "${OCTETS[$1]}"; }

# start_node I: node I's container, capped and pinned.
start_node() {
	local i=$1 name=${NAMES[$1]} args
	args=(agent -name "$name" -role "${ROLES[i]}" -zone "${ZONES[i]}" -data-dir /data
		-bind 0.0.0.0 -advertise "$(ip "$i")" -http-addr 0.0.0.0:8500
		-join "$(ip 0):7946" -join "$(ip 1):7946" -join "$(ip 2):7946"
		-tls-cert "/pki/$name.pem" -tls-key "/pki/$name-key.pem" -tls-ca /pki/ca.pem
		-log-level warn -rate-limit=0)
	[ "${ROLES[i]}" != core ] || args+=(-serve-data -bootstrap-expect 3)
	local cgp=() data=()
	[ -z "$CG_PARENT" ] || cgp=(--cgroup-parent "/$CG_PARENT")
	[ -z "${DATA_TMPFS:-}" ] || data=(--tmpfs "/data:uid=65532,gid=65532,mode=0700,size=1g")
	CID[i]=$(docker run -d --name "$RUN-$name" --hostname "$name" --label "sn-scaleout.run=$RUN" \
		"${cgp[@]}" "${data[@]}" \
		--network "$RUN" --ip "$(ip "$i")" --cpus "$CPUS" --cpuset-cpus "$NODE_CPUS" \
		-e SHARDNET_TOKEN -e SHARDNET_CLUSTER_KEY -e SHARDNET_GOSSIP_KEY \
		-v "$RUN-pki:/pki:ro" "$IMAGE" "${args[@]}") || die "docker run $name failed"
}

# remove_nodes: every node container of the run (and its data volume).
remove_nodes() {
	local i
	for i in "${!CID[@]}"; do
		[ -z "${CID[i]}" ] || docker rm -f -v "${CID[i]}" >/dev/null
		CID[i]=""
	done
}

# use_nodes N: lib.sh's sn_url and friends address nodes 0..N-1.
use_nodes() {
	local i
	SN_IP=() SN_HTTP=()
	for ((i = 0; i < $1; i++)); do
		SN_IP+=("$(ip "$i")") SN_HTTP+=(8500)
	done
}

nodes_alive() {
	local n
	n=$(sn_curl "$(sn_url 0)/v1/nodes" | jq '[.[] | select(.state == "alive")] | length')
	((n == $1))
}

# start_cluster N: nodes 0..N-1 (those not running yet), ready and alive.
start_cluster() {
	local n=$1 i
	for ((i = 0; i < n; i++)); do
		[ -n "${CID[i]:-}" ] || start_node "$i"
	done
	use_nodes "$n"
	for ((i = 0; i < n; i++)); do wait_for "${NAMES[i]} ready" 120 sn_ready "$i"; done
	wait_for "$n alive nodes" 120 nodes_alive "$n"
}

# make_channels PREFIX: CHANNELS channels PREFIX0.., each healthy.
make_channels() {
	local k
	for ((k = 0; k < CHANNELS; k++)); do wait_for "channel $1$k created" 60 sn_create_channel "$1$k"; done
	for ((k = 0; k < CHANNELS; k++)); do wait_for "channel $1$k healthy" 120 sn_healthy "$1$k"; done
}

drop_channels() {
	local k
	for ((k = 0; k < CHANNELS; k++)); do sn_curl -o /dev/null -X DELETE "$(sn_url 0)/v1/channels/$1$k"; done
	for ((k = 0; k < CHANNELS; k++)); do wait_for "channel $1$k deleted" 60 sn_channel_gone "$1$k"; done
}

# -------------------------------------------------------------- counters

# cpu_stat I: "usage_usec nr_periods nr_throttled" of node I's container
# (cgroup v2 with the systemd or cgroupfs driver, or cgroup v1's cpu and
# cpuacct hierarchies); "0 0 0" when none is found.
cpu_stat() {
	local id=${CID[$1]} d
	for d in "/sys/fs/cgroup/system.slice/docker-$id.scope" "/sys/fs/cgroup/${CG_PARENT:-docker}/$id"; do
		[ -f "$d/cpu.stat" ] || continue
		awk '$1=="usage_usec"{u=$2} $1=="nr_periods"{p=$2} $1=="nr_throttled"{t=$2} END{print u+0, p+0, t+0}' "$d/cpu.stat"
		return 0
	done
	d=/sys/fs/cgroup/cpuacct/${CG_PARENT:-docker}/$id
	if [ -f "$d/cpuacct.usage" ] && [ -f "$CG_CPU/${CG_PARENT:-docker}/$id/cpu.stat" ]; then
		awk -v ns="$(cat "$d/cpuacct.usage")" '$1=="nr_periods"{p=$2} $1=="nr_throttled"{t=$2} END{printf "%.0f %d %d\n", ns / 1000, p, t}' \
			"$CG_CPU/${CG_PARENT:-docker}/$id/cpu.stat"
		return 0
	fi
	echo "0 0 0"
}

# disk_name: the disk under docker's data (DISK overrides it).
disk_name() {
	local dir src parent
	dir=$(docker info -f '{{.DockerRootDir}}' 2>/dev/null) || dir=/var/lib/docker
	src=$(df --output=source "$dir" 2>/dev/null | tail -n 1)
	parent=$(lsblk -no pkname "$src" 2>/dev/null | head -n 1)
	basename "${parent:-$src}"
}
# disk_ops: "writes flushes" the disk completed (/proc/diskstats: the
# 5th and the 16th field after the name). The block layer merges flushes
# that wait at the same time, so a flush can stand for several fsyncs.
disk_ops() { awk -v d="$DISK" '$3 == d { print $8 + 0, $19 + 0; f = 1 } END { if (!f) print "0 0" }' /proc/diskstats; }

# node_counters: three counters of the nodes 0..N-1 in use, each summed
# over the nodes and its series: "synced Raft log batches, transport
# socket writes, Raft RPCs sent" (shardnet_logstore_append_batches_total,
# shardnet_transport_conn_writes_total, shardnet_transport_rpcs_sent_total).
node_counters() {
	local i
	for i in "${!SN_IP[@]}"; do sn_curl "$(sn_url "$i")/metrics"; done | awk '
		/^shardnet_logstore_append_batches_total / { s += $NF }
		/^shardnet_transport_conn_writes_total / { w += $NF }
		/^shardnet_transport_rpcs_sent_total[{ ]/ { r += $NF }
		END { printf "%.0f %.0f %.0f\n", s, w, r }'
}

# core_ticks N: "busy total" jiffies of CPU core N (/proc/stat).
core_ticks() {
	awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# busy_pct "B0 T0" "B1 T1": the core's busy share between two core_ticks.
busy_pct() {
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
		printf "%.0f", (y[2] > x[2] ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0) }'
}

# -------------------------------------------------------------- measuring

# leaders_of PREFIX: "node channel" lines, one per channel.
leaders_of() {
	local k leader
	for ((k = 0; k < CHANNELS; k++)); do
		leader=$(sn_leader "$1$k")
		[ -n "$leader" ] || die "channel $1$k has no leader"
		echo "$leader $1$k"
	done
}

# drive PREFIX SECS TAG: one wrk per leading node, all at once; each gets
# CONNS × (channels it leads) / CHANNELS connections (at least one).
drive() {
	local prefix=$1 secs=$2 tag=$3 node ch chans c i k n lines
	local -A led=()
	lines=$(leaders_of "$prefix")
	while read -r node ch; do led[$node]+="${led[$node]:+,}$ch"; done <<<"$lines"
	WRK_PIDS=()
	LEADS=""
	for node in $(printf '%s\n' "${!led[@]}" | sort); do
		chans=${led[$node]}
		i=-1
		for k in "${!NAMES[@]}"; do [ "${NAMES[k]}" != "$node" ] || i=$k; done
		((i >= 0)) || die "unknown leader $node"
		n=$(($(tr -cd , <<<"$chans" | wc -c) + 1))
		c=$(((CONNS * n + CHANNELS / 2) / CHANNELS))
		((c >= 1)) || c=1
		LEADS+="${LEADS:+ }$node:$n"
		# wrk enters its cgroup (PRIORITY) before it execs.
		bash -c '[ -z "$1" ] || echo $$ >"$1/cgroup.procs"; shift; exec "$@"' _ "$CG_LOAD" \
			taskset -c "$LOAD_CPUS" wrk -t1 -c"$c" -d"$secs" --timeout 10s -s "$BENCH/wrk/shardnet.lua" \
			"http://$(ip "$i"):8500" -- puts "$TOKEN" "$chans" >"$WORK/raw/$tag-$node.txt" 2>&1 &
		WRK_PIDS+=($!)
	done
	local rc=0 pid
	for pid in "${WRK_PIDS[@]}"; do wait "$pid" || rc=1; done
	WRK_PIDS=()
	((rc == 0)) || die "wrk failed: $(cat "$WORK/raw/$tag"-*.txt | tail -n 5)"
}

# duration_secs D: whole seconds of a wrk duration such as 20s or 2m.
duration_secs() {
	case $1 in
	*m) echo $((${1%m} * 60)) ;;
	*s) echo "${1%s}" ;;
	*) echo "$1" ;;
	esac
}

RES_LINES=()
declare -A WRITES=() DWRITES=() FLUSHES=() SYNCS=() UPW=()

# measure ROUND N PREFIX: warm-up, then the measured DURATION, with the
# counters read around it.
measure() {
	local round=$1 n=$2 prefix=$3 tag="r$1-n$2" i t0 t1
	drive "$prefix" "$WARMUP" "w$round-n$n"
	local -a c0=() c1=()
	for ((i = 0; i < n; i++)); do c0[i]=$(cpu_stat "$i"); done
	local f0 s0 f1 s1
	f0=$(disk_ops)
	s0=$(node_counters)
	local k0 k1 l0 l1
	k0=$(core_ticks "$NODE_CPUS") l0=$(core_ticks "$LOAD_CPUS")
	local prof=""
	if [ -n "${PROFILE_DIR:-}" ]; then
		# A CPU profile of node 1 over the measurement (less a second),
		# to compare where a write's CPU goes at 3 and at 6 nodes.
		mkdir -p "$PROFILE_DIR"
		local ps=$(($(duration_secs "$DURATION") - 1))
		sn_curl --max-time $((ps + 15)) -o "$PROFILE_DIR/cpu-$tag-n1.prof" "$(sn_url 0)/debug/pprof/profile?seconds=$ps" &
		prof=$!
	fi
	t0=$(date +%s%N)
	drive "$prefix" "$DURATION" "$tag"
	t1=$(date +%s%N)
	[ -z "$prof" ] || wait "$prof" || log "the profile of node 1 failed"
	k1=$(core_ticks "$NODE_CPUS") l1=$(core_ticks "$LOAD_CPUS")
	for ((i = 0; i < n; i++)); do c1[i]=$(cpu_stat "$i"); done
	f1=$(disk_ops)
	s1=$(node_counters)
	local secs writes errs cpu
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
	read -r writes errs < <(cat "$WORK/raw/$tag"-*.txt | awk '/^BENCH/ {
		for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		ok += (v["requests"] - v["non2xx"]) / (v["duration_us"] / 1e6)
		bad += v["non2xx"] + v["connect"] + v["read"] + v["write"] + v["timeout"]
	} END { printf "%.0f %d\n", ok, bad }')
	cpu=""
	local used=0
	for ((i = 0; i < n; i++)); do
		used=$(awk -v u="$used" -v a="${c0[i]}" -v b="${c1[i]}" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", u + y[1] - x[1] }')
		cpu+=$(awk -v a="${c0[i]}" -v b="${c1[i]}" -v s="$secs" -v name="${NAMES[i]}" 'BEGIN {
			split(a, x, " "); split(b, y, " ")
			p = y[2] - x[2]
			printf "%s %.0f%% (thr %.0f%%) ", name, (y[1] - x[1]) / 1e4 / s, (p > 0 ? 100 * (y[3] - x[3]) / p : 0) }')
	done
	local dw fl sy
	dw=$(awk -v a="$f0" -v b="$f1" -v s="$secs" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", (y[1] - x[1]) / s }')
	fl=$(awk -v a="$f0" -v b="$f1" -v s="$secs" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", (y[2] - x[2]) / s }')
	sy=$(awk -v a="$s0" -v b="$s1" -v s="$secs" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", (y[1] - x[1]) / s }')
	# Per write answered: what the nodes' transports wrote to their
	# sockets and the Raft RPCs they sent (how well a pair's stream
	# batches the groups it carries).
	local tw
	tw=$(awk -v a="$s0" -v b="$s1" -v s="$secs" -v w="$writes" 'BEGIN { split(a, x, " "); split(b, y, " "); n = w * s
		printf "%.2f / %.2f", (n > 0 ? (y[2] - x[2]) / n : 0), (n > 0 ? (y[3] - x[3]) / n : 0) }')
	WRITES[$n]+="$writes " DWRITES[$n]+="$dw " FLUSHES[$n]+="$fl " SYNCS[$n]+="$sy "
	local kb lb upw
	# CPU per write: all nodes' CPU (µs) over the writes answered.
	upw=$(awk -v u="$used" -v w="$writes" -v s="$secs" 'BEGIN { printf "%.0f", (w > 0 ? u / (w * s) : 0) }')
	UPW[$n]+="$upw "
	kb=$(busy_pct "$k0" "$k1") lb=$(busy_pct "$l0" "$l1")
	RES_LINES+=("| $round | $n | $writes | $errs | $upw | $dw | $fl | $sy | $tw | $LEADS | ${cpu% } | $kb% / $lb% |")
	log "round $round, $n nodes: $writes writes/s ($errs errors), leaders $LEADS; CPU $cpu; cores busy: nodes' $kb%, wrk's $lb%"
}

# -------------------------------------------------------------- main

check_tools
make_work
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
build_image
make_cgroups
make_network
make_certs
DISK=${DISK:-$(disk_name)}
log "disk writes and flushes counted on /dev/$DISK (/proc/diskstats)"

for ((round = 1; round <= ROUNDS; round++)); do
	log "round $round: 3 nodes"
	start_cluster 3
	make_channels "a$round-"
	measure "$round" 3 "a$round-"
	log "round $round: 3 more nodes, the channels created again over 6"
	start_cluster 6
	drop_channels "a$round-"
	make_channels "b$round-"
	measure "$round" 6 "b$round-"
	remove_nodes
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086 # the lists are space-separated numbers
{
	m3=$(median ${WRITES[3]})
	m6=$(median ${WRITES[6]})
	ratio=$(awk -v a="$m3" -v b="$m6" 'BEGIN { printf "%.2f", b / a }')
	echo "# Scale out: 3 → 6 nodes, $CHANNELS channels of 3 replicas (bench/scaleout.sh)"
	echo
	echo "$STARTED, commit $SN_COMMIT; $ROUNDS rounds alternating 3,6; each node a container (--cpus $CPUS --cpuset-cpus $NODE_CPUS),"
	echo "wrk on the host (taskset -c $LOAD_CPUS), $CONNS connections in all, $DURATION per measurement after $WARMUP of warm-up;"
	echo "load average $LOAD_START at the start, $LOAD_END at the end; disk: /dev/$DISK (/proc/diskstats; shared with every other process); Raft log syncs: the nodes' shardnet_logstore_append_batches_total."
	echo
	echo "| nodes | writes/s (median) | runs | CPU µs per write | Raft log syncs/s | disk writes/s | disk flushes/s (medians) |"
	echo "|---|---|---|---|---|---|---|"
	echo "| 3 | $m3 | ${WRITES[3]% } | $(median ${UPW[3]}) | $(median ${SYNCS[3]}) | $(median ${DWRITES[3]}) | $(median ${FLUSHES[3]}) |"
	echo "| 6 | $m6 | ${WRITES[6]% } | $(median ${UPW[6]}) | $(median ${SYNCS[6]}) | $(median ${DWRITES[6]}) | $(median ${FLUSHES[6]}) |"
	echo
	echo "ratio 6/3 of the medians: **$ratio×**"
	echo
	echo "| round | nodes | writes/s | errors | CPU µs/write | disk writes/s | disk flushes/s | Raft syncs/s | socket writes / RPCs per write | channels led | CPU per node (share of one core; throttled periods) | core $NODE_CPUS / core $LOAD_CPUS busy (all processes) |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
	printf '%s\n' "${RES_LINES[@]}"
} | tee "$WORK/result.md"
mkdir -p "$(dirname "$OUT")"
cp "$WORK/result.md" "$OUT"
log "written to $OUT"
