#!/usr/bin/env bash
# bench/recover-meta.sh — quorum-loss recovery of the meta group with real
# agents (docs/operations.md "Recovering the meta group"): three core
# `shardnet agent` processes on 127.0.0.1 and a channel with a key, then
#
#   1. n2 and n3 are killed for good (kill -9); the meta group has no leader;
#   2. recover-meta refuses while n1 runs; n1 is stopped; recover-meta
#      prints its plan, then recovers with -i-understand-data-loss;
#   3. n1 starts and serves: a new channel is created, the old channel
#      (which lost 2 of 3 replicas too) is recovered and read;
#   4. n3 starts with its old data: it reports that it was fenced and
#      answers no read; n2 starts wiped and rejoins as a new incarnation.
#
# It prints the time from n1's start to its first channel creation. Bounded:
# every wait has a deadline.
#
#   bench/recover-meta.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_trap
make_work
command -v curl >/dev/null || die "curl is required"
log "building bin/shardnet"
make -s -C "$ROOT" build
start_shardnet rm

export SHARDNET_ADDR=$(sn_url 0) SHARDNET_TOKEN=$TOKEN
"$BIN" kv put rm k before >/dev/null || die "write to rm failed"

log "killing n2 and n3 for good"
kill -KILL "${SN_PID[1]}" "${SN_PID[2]}"
wait "${SN_PID[1]}" "${SN_PID[2]}" 2>/dev/null || true
SN_PID[1]="" SN_PID[2]=""

out=$("$BIN" recover-meta -data-dir "$WORK/shardnet/n1" -i-understand-data-loss 2>&1) &&
	die "recover-meta ran on a running node: $out"
[[ $out == *running* ]] || die "recover-meta on a running node: $out"
log "recover-meta refuses while n1 runs: ok"

kill -TERM "${SN_PID[0]}"
wait "${SN_PID[0]}" 2>/dev/null || true
SN_PID[0]=""
"$BIN" recover-meta -data-dir "$WORK/shardnet/n1" >"$WORK/logs/plan.log" 2>&1 &&
	die "recover-meta without -i-understand-data-loss succeeded"
grep -q "Nothing changed" "$WORK/logs/plan.log" || die "no plan: $(cat "$WORK/logs/plan.log")"
"$BIN" recover-meta -data-dir "$WORK/shardnet/n1" -i-understand-data-loss >"$WORK/logs/recover.log" 2>&1 ||
	die "recover-meta failed: $(cat "$WORK/logs/recover.log")"
cat "$WORK/logs/recover.log" >&2

t0=$(date +%s.%N)
start_sn_node 0
wait_for "n1 ready" 60 sn_ready 0
create_after() { "$BIN" channel create after -replicas 1 >/dev/null 2>&1; }
wait_for "a channel created after the recovery" 60 create_after
t1=$(date +%s.%N)
"$BIN" kv put after k v >/dev/null || die "write to the new channel failed"
"$BIN" channel recover rm -i-understand-data-loss >"$WORK/logs/recover-rm.log" 2>&1 ||
	die "channel recover failed: $(cat "$WORK/logs/recover-rm.log")"
[ "$("$BIN" kv get rm k)" = before ] || die "rm/k lost"
log "the meta group serves: channel created, channel rm recovered and read"

start_sn_node 2 "${SN_IP[0]}:${SN_GOSSIP[0]}"
n3_fenced() { sn_curl "$(sn_url 2)/v1/status" | grep -q '"fenced"'; }
wait_for "n3 (old data) reports its fence" 60 n3_fenced
if sn_curl -f "$(sn_url 2)/v1/channels/rm/kv/k" >/dev/null 2>&1; then die "the fenced n3 answered a read"; fi
grep -q "removed by a meta recovery" "$WORK/logs/n3.log" || die "n3 did not log its fence"
"$BIN" status -addr "$(sn_url 2)" | grep -q '^FENCED:' || die "shardnet status of n3 does not say FENCED"
log "n3, back with its old data, is fenced"

rm -rf "$WORK/shardnet/n2"
start_sn_node 1 "${SN_IP[0]}:${SN_GOSSIP[0]}"
wait_for "n2 (wiped) ready" 60 sn_ready 1
[ "$("$BIN" kv get after k -addr "$(sn_url 1)")" = v ] || die "read through n2 failed"
leaders=$(for i in 0 1 2; do sn_curl "$(sn_url "$i")/v1/status" | sed -n 's/.*"meta_leader":"\([^"]*\)".*/\1/p'; done | sort -u | grep -c . || true)
((leaders == 1)) || die "the nodes name $leaders meta leaders"
awk -v s="$t0" -v e="$t1" 'BEGIN { printf "recover-meta: n1 start to first channel created: %.2f s\n", e - s }'
log "done (shardnet $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown))"
