#!/usr/bin/env bash
# bench/failover.sh — leader loss on a 3-node shardnet on loopback.
#
# Starts three nodes with fresh data directories and the channel "bench"
# (3 replicas), then TRIALS times (default 10): while bench/failover writes
# through a surviving node (one write every 5 ms, open loop), kill -9 the
# channel leader's process (found with GET /v1/channels/bench), measure the
# time from the kill to the first acknowledged write sent after it, restart
# the killed node on its data directory and wait until the channel is healthy
# again. Prints each trial and the median. compare.sh runs the same trials
# after its throughput runs (FAILOVER_TRIALS).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TRIALS=${TRIALS:-10}

main() {
	install_trap
	((TRIALS >= 1)) || die "TRIALS must be at least 1"
	command -v curl >/dev/null || die "curl is needed"
	make_work
	build_all
	start_shardnet bench
	failover_trials "$TRIALS"
	echo
	printf '%s\n' "${FO_LINES[@]}"
	echo "failover median over $TRIALS trials: ${FO_MEDIAN} ms"
}

main "$@"
