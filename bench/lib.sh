# shellcheck shell=bash
# bench/lib.sh — sourced by bench/compare.sh and bench/failover.sh.
#
# Starts and stops a 3-member etcd and a 3-node shardnet on loopback, with
# fresh data directories under one work directory, and keeps the id of every
# process it starts so that cleanup (run from the EXIT trap) stops them all
# and nothing else. Everything waits with a deadline; nothing sleeps "to let
# things settle".

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
BIN=$ROOT/bin/shardnet
TOKEN=${TOKEN:-bench-token}
# The nodes' cluster and gossip keys: agents do not start without them
# (docs/security.md). One pair per run, the same for every node and restart.
CLUSTER_KEY=${CLUSTER_KEY:-bench-cluster-key}
GOSSIP_KEY=${GOSSIP_KEY:-$(head -c 32 /dev/urandom | base64)}

# Loopback ports, index 0..2 = node/member 1..3. PORT_OFFSET (default 0)
# moves every port, so that two benchmarks can run side by side.
PORT_OFFSET=${PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]+$ ]] || { echo "PORT_OFFSET must be a number, not '$PORT_OFFSET'" >&2; exit 1; }
SN_GOSSIP=($((17946 + PORT_OFFSET)) $((17956 + PORT_OFFSET)) $((17966 + PORT_OFFSET)))
SN_CLUSTER=($((17947 + PORT_OFFSET)) $((17957 + PORT_OFFSET)) $((17967 + PORT_OFFSET)))
SN_HTTP=($((18500 + PORT_OFFSET)) $((18510 + PORT_OFFSET)) $((18520 + PORT_OFFSET)))
# The nodes' addresses: all 127.0.0.1 unless a script gives each node its
# own loopback address (failover.sh does, so that one node's traffic can be
# dropped by address).
SN_IP=(${SN_IP[@]:-127.0.0.1 127.0.0.1 127.0.0.1})
ETCD_CLIENT=($((12379 + PORT_OFFSET)) $((12389 + PORT_OFFSET)) $((12399 + PORT_OFFSET)))
ETCD_PEER=($((12380 + PORT_OFFSET)) $((12390 + PORT_OFFSET)) $((12400 + PORT_OFFSET)))

SN_PID=()
ETCD_PID=()
OTHER_PID=() # processes of other systems a script starts (SeaweedFS)
BG_PID="" # the one helper (wrk, prefill, failover) running, if any
WORK=""

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# cleanup stops every process this script started (TERM, then KILL after
# 10 s) and removes the work directory, unless the run failed: then its logs
# are kept and their tails printed.
cleanup() {
	local rc=$? pid deadline alive
	trap - EXIT INT TERM
	unblackhole_all
	local pids=()
	for pid in "$BG_PID" "${SN_PID[@]}" "${ETCD_PID[@]}" "${OTHER_PID[@]}"; do
		[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && pids+=("$pid")
	done
	# A node left stopped (SIGSTOP) would not see the TERM below.
	((${#pids[@]} == 0)) || kill -CONT "${pids[@]}" 2>/dev/null || true
	if ((${#pids[@]})); then
		log "stopping ${#pids[@]} processes: ${pids[*]}"
		kill -TERM "${pids[@]}" 2>/dev/null || true
		deadline=$((SECONDS + 10))
		while ((SECONDS < deadline)); do
			alive=0
			for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
			((alive)) || break
			sleep 0.1
		done
		kill -KILL "${pids[@]}" 2>/dev/null || true
		for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	fi
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if ((rc != 0)) || [ -n "${KEEP_WORK:-}" ]; then
			local f
			for f in "$WORK"/logs/*.log; do
				[ -s "$f" ] || continue
				log "--- last lines of $f"
				tail -n 15 "$f" >&2
			done
			log "kept $WORK (logs, data dirs, raw wrk output)"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}

install_trap() {
	# fd 9 keeps the script's stderr for cleanup: a signal that arrives
	# inside run_tracked's wait (stderr to /dev/null) runs the trap there.
	exec 9>&2
	trap 'cleanup 2>&9' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

make_work() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/shardnet-bench.XXXXXX")
	mkdir -p "$WORK/logs" "$WORK/bin" "$WORK/raw"
}

# ensure_tools installs wrk, curl and jq when missing (with apt-get). etcd is
# not among them: bench/compare.sh builds etcd 3.6 itself (bench/etcd36.sh).
ensure_tools() {
	local need=() sudo=""
	command -v wrk >/dev/null || need+=(wrk)
	command -v curl >/dev/null || need+=(curl)
	command -v jq >/dev/null || need+=(jq)
	((${#need[@]})) || return 0
	[ "$(id -u)" = 0 ] || sudo=sudo
	log "installing ${need[*]} with apt-get"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}

# build_all builds bin/shardnet and the helpers of bench/ (their own module,
# standard library only) into the work directory.
build_all() {
	log "building bin/shardnet and the bench helpers"
	# The tree other people commit to moves during a long run: name the one built.
	SN_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
	make -s -C "$ROOT" build
	(cd "$BENCH" && go build -o "$WORK/bin/" ./prefill ./failover)
}

# run_tracked OUT CMD... runs CMD in the background with its output in OUT
# and waits for it: a signal to the script then interrupts the wait at once
# and cleanup stops CMD, instead of waiting for it as for a foreground job.
run_tracked() {
	local out=$1 rc=0
	shift
	"$@" >"$out" 2>&1 &
	BG_PID=$!
	# 2>/dev/null: the shell's "Killed" notice for a node that a failover
	# trial killed would otherwise show up here.
	{ wait "$BG_PID" || rc=$?; } 2>/dev/null
	BG_PID=""
	return "$rc"
}

# wait_for DESC SECONDS CMD... polls CMD every 0.2 s until it succeeds.
wait_for() {
	local desc=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $desc"
		sleep 0.2
	done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() {
	local p
	for p in "$@"; do
		! port_in_use "$p" || die "port 127.0.0.1:$p is in use: is another benchmark running?"
	done
}

sn_curl() { curl -sS --max-time 5 -H "Authorization: Bearer $TOKEN" "$@"; }

# sn_url I: the base URL of node I+1's HTTP API.
sn_url() { printf 'http://%s:%s' "${SN_IP[$1]}" "${SN_HTTP[$1]}"; }

# ---------------------------------------------------------------- shardnet

# start_sn_node I [JOIN]: node n(I+1), in the background, logs appended.
start_sn_node() {
	local i=$1 join=${2:-} n=$(($1 + 1))
	local args=(agent -name "n$n" -role core -data-dir "$WORK/shardnet/n$n" -bind "${SN_IP[i]}"
		-gossip-port "${SN_GOSSIP[i]}" -cluster-port "${SN_CLUSTER[i]}"
		-http-addr "${SN_IP[i]}:${SN_HTTP[i]}" -bootstrap-expect 3 -log-level warn)
	[ -z "$join" ] || args+=(-join "$join")
	# The per-client-IP rate limit (default 20,000 req/s) would cap wrk, one
	# client IP, below what the node serves; etcd has no such limit.
	if [ -z "${SN_RATE_FLAG+x}" ]; then
		SN_RATE_FLAG=""
		local help
		help=$("$BIN" agent -h 2>&1 || true)
		[[ $help != *-rate-limit* ]] || SN_RATE_FLAG="-rate-limit=0"
	fi
	[ -z "$SN_RATE_FLAG" ] || args+=("$SN_RATE_FLAG")
	# Core nodes host channel replicas only with -serve-data (older
	# binaries take no such flag: their core nodes always do).
	if [ -z "${SN_DATA_FLAG+x}" ]; then
		SN_DATA_FLAG=""
		local help
		help=$("$BIN" agent -h 2>&1 || true)
		[[ $help != *-serve-data* ]] || SN_DATA_FLAG="-serve-data"
	fi
	[ -z "$SN_DATA_FLAG" ] || args+=("$SN_DATA_FLAG")
	# Releases with node certificates refuse to start without them: give
	# each node one of a CA made for this run (older binaries take none).
	if [ -z "${SN_TLS+x}" ]; then
		SN_TLS=""
		local help
		help=$("$BIN" agent -h 2>&1 || true)
		[[ $help != *-tls-cert* ]] || SN_TLS=1
	fi
	if [ -n "$SN_TLS" ]; then
		local pki=$WORK/pki
		# Releases that bind the role into the certificate need -role.
		local role=()
		[[ $("$BIN" tls cert create -h 2>&1 || true) != *-role* ]] || role=(-role core)
		"$BIN" tls cert create -node "n$n" "${role[@]}" -ca-dir "$pki" -out "$pki/n$n" -if-missing >/dev/null ||
			die "cannot make a certificate for n$n"
		args+=(-tls-cert "$pki/n$n/n$n.pem" -tls-key "$pki/n$n/n$n-key.pem" -tls-ca "$pki/n$n/ca.pem")
	fi
	# shellcheck disable=SC2206 # extra flags, split on spaces
	args+=(${SN_EXTRA_FLAGS:-})
	# Secrets through the environment, not the command line (ps shows that).
	SHARDNET_TOKEN="$TOKEN" SHARDNET_CLUSTER_KEY="$CLUSTER_KEY" SHARDNET_GOSSIP_KEY="$GOSSIP_KEY" \
		"$BIN" "${args[@]}" >>"$WORK/logs/n$n.log" 2>&1 &
	SN_PID[i]=$!
}

sn_ready() { curl -sf --max-time 2 "$(sn_url "$1")/v1/health?ready=1"; }

sn_all_alive() {
	local n
	n=$(sn_curl "$(sn_url 0)/v1/nodes" | grep -o '"state":"alive"' | wc -l)
	((n == 3))
}

# sn_create_channel CH [NODES]: NODES, a JSON list of node ids, pins the
# placement; its first node stands first for the group's first election.
sn_create_channel() {
	local code body="{\"name\":\"$1\",\"replicas\":3}"
	[ -z "${2:-}" ] || body="{\"name\":\"$1\",\"nodes\":$2}"
	code=$(sn_curl -o "$WORK/create.json" -w '%{http_code}' -X POST \
		-d "$body" "$(sn_url 0)/v1/channels")
	[ "$code" = 201 ] || { [ "$code" = 409 ] && grep -q channel_exists "$WORK/create.json"; }
}

# sn_leader CH [I]: the node id leading channel CH, asked of node I+1.
sn_leader() {
	sn_curl "$(sn_url "${2:-0}")/v1/channels/$1" |
		sed -n 's/.*"leader":"\([^"]*\)".*/\1/p'
}

# sn_healthy CH [I]: CH has a leader and every replica follows it.
sn_healthy() {
	sn_curl "$(sn_url "${2:-0}")/v1/channels/$1" | grep -q '"health":"healthy"'
}

sn_channel_gone() {
	[ "$(sn_curl -o /dev/null -w '%{http_code}' "$(sn_url 0)/v1/channels/$1")" = 404 ]
}

# sn_place_leader CH WANT: WANT is "n1" (node 1 leads CH) or "follower"
# (another node does). shardnet has no leadership-transfer API, so the
# channel is deleted and created again (a new group, a new election) with a
# pinned placement whose first node (the one that stands first) is where
# the leader should be, until its first leader is there; CH must hold no
# data yet.
sn_place_leader() {
	local ch=$1 want=$2 attempt leader nodes='["n2","n1","n3"]'
	[ "$want" = follower ] || nodes='["n1","n2","n3"]'
	for ((attempt = 1; attempt <= 20; attempt++)); do
		leader=$(sn_leader "$ch")
		case "$want:$leader" in
		n1:n1 | follower:n2 | follower:n3) return 0 ;;
		esac
		log "channel $ch is led by '$leader', want $want: creating it again"
		sn_curl -o /dev/null -X DELETE "$(sn_url 0)/v1/channels/$ch"
		wait_for "channel $ch deleted" 30 sn_channel_gone "$ch"
		wait_for "channel $ch created" 60 sn_create_channel "$ch" "$nodes"
		wait_for "channel $ch healthy" 60 sn_healthy "$ch"
	done
	die "channel $ch: no leader placement '$want' after 20 attempts"
}

# start_shardnet CHANNEL...: three nodes, then each channel (3 replicas),
# each waited for until healthy.
start_shardnet() {
	local i ch
	check_ports "${SN_GOSSIP[@]}" "${SN_CLUSTER[@]}" "${SN_HTTP[@]}"
	log "starting shardnet n1..n3 (HTTP ${SN_HTTP[*]})"
	start_sn_node 0
	start_sn_node 1 "${SN_IP[0]}:${SN_GOSSIP[0]}"
	start_sn_node 2 "${SN_IP[0]}:${SN_GOSSIP[0]}"
	for i in 0 1 2; do wait_for "shardnet n$((i + 1)) ready" 60 sn_ready "$i"; done
	wait_for "3 alive shardnet nodes" 60 sn_all_alive
	for ch in "$@"; do wait_for "channel $ch created" 60 sn_create_channel "$ch"; done
	for ch in "$@"; do wait_for "channel $ch healthy" 60 sn_healthy "$ch"; done
	log "shardnet ready: channels $*"
}

# ---------------------------------------------------------------- etcd

# start_etcd: three members of the etcd at ETCD_BIN (bench/etcd36.sh's
# etcd36_build sets it: etcd 3.6 built from the Go module proxy).
start_etcd() {
	local i n cluster=""
	[ -x "${ETCD_BIN:-}" ] || die "ETCD_BIN ('${ETCD_BIN:-}') is no etcd binary: run etcd36_build (bench/etcd36.sh) first"
	check_ports "${ETCD_CLIENT[@]}" "${ETCD_PEER[@]}"
	for i in 0 1 2; do cluster+="${cluster:+,}e$((i + 1))=http://127.0.0.1:${ETCD_PEER[i]}"; done
	log "starting etcd e1..e3 ($("$ETCD_BIN" --version | head -n1), client ${ETCD_CLIENT[*]})"
	for i in 0 1 2; do
		n=$((i + 1))
		"$ETCD_BIN" --name "e$n" --data-dir "$WORK/etcd/e$n" \
			--listen-client-urls "http://127.0.0.1:${ETCD_CLIENT[i]}" \
			--advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT[i]}" \
			--listen-peer-urls "http://127.0.0.1:${ETCD_PEER[i]}" \
			--initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER[i]}" \
			--initial-cluster "$cluster" --initial-cluster-state new \
			--initial-cluster-token shardnet-bench \
			--logger zap --log-level warn --log-outputs stderr >>"$WORK/logs/e$n.log" 2>&1 &
		ETCD_PID[i]=$!
	done
	for i in 0 1 2; do wait_for "etcd e$((i + 1)) healthy" 60 etcd_healthy "$i"; done
	log "etcd ready"
}

etcd_healthy() { curl -sf --max-time 2 "http://127.0.0.1:${ETCD_CLIENT[$1]}/health" | grep -q '"health":"true"'; }

# etcd_leader: the name (e1..e3) of the member that leads.
etcd_leader() {
	local i out id leader
	for i in 0 1 2; do
		out=$(curl -sS --max-time 5 -X POST -d '{}' "http://127.0.0.1:${ETCD_CLIENT[i]}/v3/maintenance/status")
		id=$(sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p' <<<"$out")
		leader=$(sed -n 's/.*"leader":"\([0-9]*\)".*/\1/p' <<<"$out")
		if [ -n "$id" ] && [ "$id" = "$leader" ]; then
			echo "e$((i + 1))"
			return 0
		fi
	done
	echo "?"
}

etcd_member_id() {
	curl -sS --max-time 5 -X POST -d '{}' "http://127.0.0.1:${ETCD_CLIENT[$1]}/v3/maintenance/status" |
		sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p'
}

etcd_leader_is() { [ "$(etcd_leader)" = "e$(($1 + 1))" ]; }

# etcd_move_leader I: make member e(I+1) the leader (etcd's MoveLeader, asked
# of the current leader), so that both systems' leaders sit on the same
# member/node index and forwarding costs the same on both sides.
etcd_move_leader() {
	local target=$1 cur id
	etcd_leader_is "$target" && return 0
	cur=$(etcd_leader)
	[[ $cur =~ ^e[123]$ ]] || die "etcd has no leader to move"
	id=$(etcd_member_id "$target")
	curl -sS --max-time 10 -X POST -d "{\"targetID\":\"$id\"}" \
		"http://127.0.0.1:${ETCD_CLIENT[$((${cur#e} - 1))]}/v3/maintenance/transfer-leadership" >/dev/null
	wait_for "etcd leadership on e$((target + 1))" 30 etcd_leader_is "$target"
}

# ---------------------------------------------------------------- failover

# failover_trials N [FAULT] [GROUP]: N times, make the leader of channel
# "bench" (GROUP channel, the default) or of the meta group (GROUP meta)
# fail while bench/failover writes (and reads) through a surviving node,
# undo the fault and wait until the cluster is healthy again. FAULT is kill
# (SIGKILL, then a restart; the default), stop (SIGSTOP, then SIGCONT) or
# blackhole (every packet to or from the node's address dropped, then
# allowed again; needs iptables, root, and distinct node addresses, see
# SN_IP). Sets FO_MS and FO_READ_MS (one value per trial), FO_LINES (a line
# per trial) and FO_MEDIAN, FO_READ_MEDIAN.
FO_MS=()
FO_READ_MS=()
FO_LINES=()
FO_MEDIAN=""
FO_READ_MEDIAN=""
failover_trials() {
	local trials=$1 fault=${2:-kill} group=${3:-channel}
	local t leader idx j pid out ms rms t0 back args
	for ((t = 1; t <= trials; t++)); do
		wait_for "channel bench healthy" 60 sn_healthy bench
		if [ "$group" = meta ]; then
			leader=$(sn_meta_leader)
		else
			leader=$(sn_leader bench)
		fi
		[[ $leader =~ ^n[123]$ ]] || die "no $group leader to fail (got '$leader')"
		idx=$((${leader#n} - 1))
		j=$(((idx + 1) % 3))
		pid=${SN_PID[idx]}
		out="$WORK/raw/failover-$group-$fault-$t.txt"
		args=(-group "$group" -url "$(sn_url "$j")" -channel bench -token "$TOKEN")
		case $fault in
		kill | stop) args+=(-fault "$fault" -pid "$pid") ;;
		blackhole) args+=(-fault cmd -fault-cmd "$(blackhole_cmd -I "$idx")") ;;
		*) die "unknown fault $fault" ;;
		esac
		run_tracked "$out" timeout -k 5 90 "$WORK/bin/failover" "${args[@]}" ||
			die "failover trial $t failed: $(tail -n 3 "$out")"
		ms=$(sed -n 's/^FAILOVER ms=\([^ ]*\).*/\1/p' "$out")
		rms=$(sed -n 's/^FAILOVER .*read_ms=//p' "$out")
		[ -n "$ms" ] || die "failover trial $t printed no result: $(cat "$out")"
		t0=$SECONDS
		case $fault in
		kill)
			wait "$pid" 2>/dev/null || true
			SN_PID[idx]=""
			start_sn_node "$idx" "${SN_IP[j]}:${SN_GOSSIP[j]}"
			;;
		stop) kill -CONT "$pid" ;;
		blackhole) eval "$(blackhole_cmd -D "$idx")" ;;
		esac
		wait_for "n$((idx + 1)) ready again" 120 sn_ready "$idx"
		wait_for "channel bench healthy after the $fault of n$((idx + 1))" 120 sn_healthy bench "$j"
		[ "$group" != meta ] || sn_delete_channels "fo-"
		back=$((SECONDS - t0))
		FO_MS+=("$ms")
		FO_READ_MS+=("${rms:-0}")
		FO_LINES+=("trial $t: $fault of the $group leader $leader (pid $pid), through n$((j + 1)): $(sed -n 's/^first acknowledged //p' "$out" | sed 's/; failed requests meanwhile.*//') — healthy again ~${back}s after the fault was undone — failed meanwhile: $(sed -n 's/.*failed requests meanwhile: //p' "$out")")
		log "${FO_LINES[-1]}"
	done
	FO_MEDIAN=$(median "${FO_MS[@]}")
	FO_READ_MEDIAN=$(median "${FO_READ_MS[@]}")
}

median() {
	printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
		if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# sn_meta_leader: the node id leading the meta group.
sn_meta_leader() {
	sn_curl "$(sn_url 0)/v1/status" | sed -n 's/.*"meta_leader":"\([^"]*\)".*/\1/p'
}

# sn_delete_channels PREFIX: deletes the channels whose names start with it.
sn_delete_channels() {
	local ch
	for ch in $(sn_curl "$(sn_url 0)/v1/channels" | grep -o '"name":"'"$1"'[^"]*"' | cut -d'"' -f4); do
		sn_curl -o /dev/null -X DELETE "$(sn_url 0)/v1/channels/$ch" || true
	done
}

# blackhole_cmd -I|-D I: the iptables commands that insert (-I) or delete
# (-D) the rules dropping every packet to and from node I+1's address (on
# loopback: its peers, its gossip, its clients), with no reset: a node cut
# off by a broken switch. The rules carry a comment so that cleanup can
# find any left behind.
blackhole_cmd() {
	local op=$1 ip=${SN_IP[$2]}
	[ "$ip" != 127.0.0.1 ] || die "blackhole needs distinct node addresses (SN_IP)"
	printf 'iptables %s INPUT -s %s -m comment --comment shardnet-bench -j DROP && iptables %s INPUT -d %s -m comment --comment shardnet-bench -j DROP' \
		"$op" "$ip" "$op" "$ip"
}

# unblackhole_all removes every rule blackhole_cmd inserted.
unblackhole_all() {
	command -v iptables >/dev/null || return 0
	local rule
	while rule=$(iptables -S INPUT 2>/dev/null | grep -m1 -- '--comment shardnet-bench'); do
		# shellcheck disable=SC2086 # the rule's words, as iptables -S prints them
		iptables ${rule/-A/-D} || break
	done
}
