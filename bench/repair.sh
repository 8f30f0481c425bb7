#!/usr/bin/env bash
# bench/repair.sh — automatic repair after a kill -9, real agents on loopback.
#
# Starts three core nodes and RES resource nodes (default 3) of real
# `shardnet agent` processes on 127.0.0.1 with fresh data directories,
# creates CHANNELS channels of 3 replicas (default 20), then TRIALS times
# (default 3): kill -9 a resource node that holds replicas and measure,
# from the kill,
#   dead:      the registry shows the node dead (GET /v1/nodes),
#   placed:    no channel's placement names it (the meta leader's
#              SetPlacement decisions, docs/operations.md "Repair"),
#   converged: every channel it held reports 3 voters, exactly its
#              placement, and progress "converged" (GET /v1/channels/{ch});
# then restart the node and wait until it hosts exactly the replicas the
# meta state places on it (its stale ones deleted). Prints each trial and
# the medians.
#
#   CHANNELS=20 RES=3 TRIALS=3 DEAD_AFTER=5s bash bench/repair.sh
#
# DEAD_AFTER is passed as -dead-after when the binary has that flag (the
# registry declares a node dead only after it; default 5m in production).
# Needs curl and python3 (JSON).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHANNELS=${CHANNELS:-20}
RES=${RES:-3}
TRIALS=${TRIALS:-3}
DEAD_AFTER=${DEAD_AFTER:-5s}
# How long one repair may take before the trial fails.
REPAIR_DEADLINE=${REPAIR_DEADLINE:-120}

# Nodes n1..n3 (core) and n4.. (resource), all on 127.0.0.1.
SN_GOSSIP=() SN_CLUSTER=() SN_HTTP=() SN_IP=()
for ((i = 0; i < 3 + RES; i++)); do
	SN_GOSSIP+=($((17946 + PORT_OFFSET + 10 * i))) SN_CLUSTER+=($((17947 + PORT_OFFSET + 10 * i))) SN_HTTP+=($((18500 + PORT_OFFSET + 10 * i)))
	SN_IP+=(127.0.0.1)
done
SN_EXTRA_FLAGS="-leader-rebalance off ${SN_EXTRA_FLAGS:-}"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }
now_ms() { date +%s%3N; }

# start_node I: core nodes through lib.sh; resource nodes the same way, with
# the role and no bootstrap (the last flag given wins).
start_node() {
	local i=$1
	if ((i < 3)); then
		start_sn_node "$i" "${SN_IP[0]}:${SN_GOSSIP[0]}"
	else
		# A node certificate names the node's role: make a resource
		# one before lib.sh would make a core one (it keeps what exists).
		if [[ $("$BIN" agent -h 2>&1 || true) == *-tls-cert* ]]; then
			local pki=$WORK/pki n=$((i + 1))
			"$BIN" tls cert create -node "n$n" -role resource -ca-dir "$pki" -out "$pki/n$n" -if-missing >/dev/null ||
				die "cannot make a certificate for n$n"
		fi
		SN_EXTRA_FLAGS="$SN_EXTRA_FLAGS -role resource -bootstrap-expect 0" \
			start_sn_node "$i" "${SN_IP[0]}:${SN_GOSSIP[0]}"
	fi
}

# any_url: a node that is never killed (the victims are resource nodes).
any_url() { sn_url 0; }

nodes_alive() {
	local want=$1 n
	n=$(sn_curl "$(sn_url 0)/v1/nodes" | json 'print(sum(1 for n in d if n["state"]=="alive"))')
	((n == want))
}

node_state() {
	sn_curl "$(any_url)/v1/nodes" | json "print(next((n['state'] for n in d if n['id']=='$1'), 'gone'))"
}

# channels_on NODE: the channels whose placement names NODE, one a line.
channels_on() {
	sn_curl "$(any_url)/v1/channels" |
		json "[print(c['name']) for c in d if any(r['node_id']=='$1' for r in c['placement'])]"
}

# converged CH NODE: CH's placement does not name NODE, has 3 replicas, and
# its group's voters are exactly the placement.
converged() {
	sn_curl "$(any_url)/v1/channels/$1" | json "
p=sorted(r['node_id'] for r in d['placement'])
ok = '$2' not in p and len(p)==3 and sorted(d.get('voters') or [])==p and not d.get('non_voters') and d.get('progress','converged')=='converged'
sys.exit(0 if ok else 1)"
}

all_converged() {
	local ch
	for ch in "$@"; do converged "$ch" "$VICTIM" || return 1; done
}

# hosts_exactly I: node I+1 runs as many replicas as the meta state places
# on it (its stale replicas are gone).
hosts_exactly() {
	local running placed
	running=$(sn_curl "$(sn_url "$1")/v1/status" | json 'print(d["replicas"])')
	placed=$(sn_curl "$(sn_url 0)/v1/nodes" | json "print(next(n['usage']['replicas'] for n in d if n['id']=='n$(($1 + 1))'))")
	[ "$running" = "$placed" ]
}

# wait_until_ms DEADLINE_S CMD...: polls CMD every 0.1 s; prints the time
# in ms from T0 when it first succeeds; fails after DEADLINE_S.
wait_until_ms() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@" 2>/dev/null; do
		(($(date +%s) < deadline)) || return 1
		sleep 0.1
	done
	echo $(($(now_ms) - T0))
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

main() {
	install_trap
	command -v curl >/dev/null || die "curl is needed"
	command -v python3 >/dev/null || die "python3 is needed"
	((RES >= 1 && TRIALS >= 1)) || die "RES and TRIALS must be at least 1"
	make_work
	build_all
	local help
	help=$("$BIN" agent -h 2>&1 || true)
	[[ $help != *-dead-after* ]] || SN_EXTRA_FLAGS="$SN_EXTRA_FLAGS -dead-after $DEAD_AFTER"
	[[ $help == *-repair-max* ]] || die "this binary has no automatic repair (-repair-max)"
	check_ports "${SN_GOSSIP[@]}" "${SN_CLUSTER[@]}" "${SN_HTTP[@]}"
	log "starting shardnet: 3 core nodes and $RES resource nodes"
	start_sn_node 0
	for ((i = 1; i < 3 + RES; i++)); do start_node "$i"; done
	for ((i = 0; i < 3 + RES; i++)); do wait_for "shardnet n$((i + 1)) ready" 60 sn_ready "$i"; done
	wait_for "$((3 + RES)) alive nodes" 60 nodes_alive $((3 + RES))
	local ch
	for ((c = 0; c < CHANNELS; c++)); do
		ch=$(printf 'r%02d' "$c")
		wait_for "channel $ch created" 60 sn_create_channel "$ch"
	done
	for ((c = 0; c < CHANNELS; c++)); do wait_for "channel r$(printf %02d "$c") healthy" 60 sn_healthy "$(printf 'r%02d' "$c")"; done
	log "$CHANNELS channels healthy"

	local trial dead placed conv lines=() deads=() placeds=() convs=()
	for ((trial = 1; trial <= TRIALS; trial++)); do
		# The victim: a resource node, in turn, that holds replicas.
		VICTIM_I=$((3 + (trial - 1) % RES))
		VICTIM=n$((VICTIM_I + 1))
		mapfile -t held < <(channels_on "$VICTIM")
		((${#held[@]} > 0)) || die "$VICTIM holds no replica"
		log "trial $trial: kill -9 $VICTIM, which holds ${#held[@]} replicas"
		T0=$(now_ms)
		kill -KILL "${SN_PID[VICTIM_I]}"
		wait "${SN_PID[VICTIM_I]}" 2>/dev/null || true
		dead=$(wait_until_ms "$REPAIR_DEADLINE" eval '[ "$(node_state "$VICTIM")" = dead ]') || die "$VICTIM not dead after ${REPAIR_DEADLINE}s"
		placed=$(wait_until_ms "$REPAIR_DEADLINE" eval '[ -z "$(channels_on "$VICTIM")" ]') || die "placements still name $VICTIM after ${REPAIR_DEADLINE}s"
		conv=$(wait_until_ms "$REPAIR_DEADLINE" all_converged "${held[@]}") || die "channels of $VICTIM not converged after ${REPAIR_DEADLINE}s"
		lines+=("trial $trial: $VICTIM (${#held[@]} replicas): dead ${dead} ms, placed elsewhere ${placed} ms, converged ${conv} ms")
		log "${lines[-1]}"
		deads+=("$dead") placeds+=("$placed") convs+=("$conv")
		start_node "$VICTIM_I"
		wait_for "$VICTIM ready again" 60 sn_ready "$VICTIM_I"
		wait_for "$VICTIM holds only its placed replicas" 60 hosts_exactly "$VICTIM_I"
		wait_for "$((3 + RES)) alive nodes" 60 nodes_alive $((3 + RES))
	done
	echo
	printf '%s\n' "${lines[@]}"
	echo
	echo "| nodes | channels | trials | median to dead | median to placed elsewhere | median to converged |"
	echo "|---|---|---|---|---|---|"
	echo "| 3 core + $RES resource | $CHANNELS × 3 | $TRIALS | $(median "${deads[@]}") ms | $(median "${placeds[@]}") ms | $(median "${convs[@]}") ms |"
}

main "$@"
