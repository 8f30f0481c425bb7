#!/usr/bin/env bash
# bench/failover.sh — leader loss on a 3-node shardnet on loopback.
#
# Starts three nodes (each on its own loopback address, 127.0.0.11-13) with
# fresh data directories and the channel "bench" (3 replicas), then for each
# GROUPS_ (channel, meta) and FAULTS (kill, stop, blackhole) TRIALS times
# (default 10): while bench/failover writes and reads through a surviving
# node (a request every 5 ms, open loop), make the leader's node fail (the
# channel's, found with GET /v1/channels/bench, or the meta group's, from
# GET /v1/status), measure the time from the fault to the first
# acknowledged write and the first linearizable read sent after it, undo the
# fault (restart, SIGCONT, or remove the iptables rules) and wait until the
# channel is healthy again. Prints each trial, then a table of medians.
#
#   FAULTS="kill stop blackhole" GROUPS_="channel meta" TRIALS=5 bash bench/failover.sh
#
# blackhole needs root and iptables. compare.sh runs the kill trials after
# its throughput runs (FAILOVER_TRIALS).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TRIALS=${TRIALS:-10}
# FAULTS: which failures to measure (kill, stop, blackhole); GROUPS_: whose
# leader fails (channel, meta). Each pair gets TRIALS trials.
FAULTS=${FAULTS:-kill}
GROUPS_=${GROUPS_:-channel}
# Each node on its own loopback address, so that a blackhole can drop one
# node's packets by address.
SN_IP=(127.0.0.11 127.0.0.12 127.0.0.13)
# Leadership stays where the elections put it: the rebalancer moving it
# between finding the leader and failing its node would measure nothing.
SN_EXTRA_FLAGS="-leader-rebalance off ${SN_EXTRA_FLAGS:-}"

main() {
	install_trap
	((TRIALS >= 1)) || die "TRIALS must be at least 1"
	command -v curl >/dev/null || die "curl is needed"
	make_work
	build_all
	start_shardnet bench
	local fault group summary=()
	for group in $GROUPS_; do
		for fault in $FAULTS; do
			[ "$fault" != blackhole ] || command -v iptables >/dev/null || die "FAULTS=blackhole needs iptables (apt-get install iptables) and root"
			FO_MS=() FO_READ_MS=() FO_LINES=()
			failover_trials "$TRIALS" "$fault" "$group"
			echo
			printf '%s\n' "${FO_LINES[@]}"
			if [ "$group" = meta ]; then
				summary+=("| $group | $fault | $TRIALS | ${FO_MEDIAN} ms (channel creation) | — | $(printf '%s ' "${FO_MS[@]}") |")
			else
				summary+=("| $group | $fault | $TRIALS | ${FO_MEDIAN} ms | ${FO_READ_MEDIAN} ms | $(paste -d/ <(printf '%s\n' "${FO_MS[@]}") <(printf '%s\n' "${FO_READ_MS[@]}") | tr '\n' ' ') |")
			fi
		done
	done
	echo
	echo "| leader of | fault | trials | median to the next acknowledged write | median to the next linearizable read | each trial (ms, write/read) |"
	echo "|---|---|---|---|---|---|"
	printf '%s\n' "${summary[@]}"
}

main "$@"
