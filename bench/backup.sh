#!/usr/bin/env bash
# bench/backup.sh — backup and restore throughput of one channel with real
# agents: three `shardnet agent` processes on 127.0.0.1, a channel filled
# with KEYS keys of VALUE_SIZE bytes (bench/prefill) and two files of
# FILES_MIB MiB each (random bytes, the second a copy of the first: its
# chunks are stored, and backed up, once), then
#
#   1. shardnet channel backup, idle;
#   2. shardnet channel backup while prefill overwrites the same keys;
#   3. shardnet channel restore of the first file into a new channel, timed
#      until the new channel serves (the restore answers only then);
#
# and a check that the restored channel holds the keys and the files
# (byte-identical through every node), and a `shardnet
# backup -o DIR` of the whole cluster. It prints one line
# per step: bytes, seconds, MiB/s. Bounded: every wait has a deadline.
#
#   bench/backup.sh                 # 100,000 keys of 1 KiB (~100 MiB)
#   KEYS=20000 VALUE_SIZE=256 FILES_MIB=16 bench/backup.sh   # FILES_MIB=0: no files
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-1024}
FILES_MIB=${FILES_MIB:-64}

install_trap
make_work
command -v curl >/dev/null || die "curl is required"
log "building bin/shardnet and bench/prefill"
SN_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
make -s -C "$ROOT" build
(cd "$BENCH" && go build -o "$WORK/bin/" ./prefill)
start_shardnet bk

export SHARDNET_ADDR=$(sn_url 0) SHARDNET_TOKEN=$TOKEN
prefill() {
	"$WORK/bin/prefill" -system shardnet -url "$(sn_url 0)" -channel bk -token "$TOKEN" \
		-keys "$KEYS" -value-size "$VALUE_SIZE" -conns 16 -timeout 10m
}
log "writing $KEYS keys of $VALUE_SIZE bytes"
run_tracked "$WORK/logs/prefill.log" prefill || die "prefill failed: $(tail -n 3 "$WORK/logs/prefill.log")"
if ((FILES_MIB > 0)); then
	log "uploading two files of $FILES_MIB MiB (one content)"
	head -c $((FILES_MIB << 20)) /dev/urandom >"$WORK/file.bin"
	file_sum=$(sha256sum <"$WORK/file.bin" | cut -d' ' -f1)
	for p in media/a.bin media/copy.bin; do
		"$BIN" file put bk "$p" "$WORK/file.bin" >"$WORK/logs/file-put.log" 2>&1 ||
			die "file put failed: $(cat "$WORK/logs/file-put.log")"
	done
fi

now() { date +%s.%N; }
# report WHAT BYTES START END
report() {
	awk -v what="$1" -v b="$2" -v s="$3" -v e="$4" 'BEGIN {
		t = e - s; printf "%-32s %12d bytes %7.2f s %8.1f MiB/s\n", what, b, t, b / t / 1048576 }'
}

t0=$(now)
"$BIN" channel backup bk -o "$WORK/idle.shnbak" >"$WORK/logs/backup-idle.log" 2>&1 ||
	die "backup failed: $(cat "$WORK/logs/backup-idle.log")"
t1=$(now)
idle_bytes=$(stat -c %s "$WORK/idle.shnbak")
R1=$(report "backup, idle" "$idle_bytes" "$t0" "$t1")

# The same keys overwritten during the second backup.
prefill >"$WORK/logs/prefill-load.log" 2>&1 &
BG_PID=$!
t0=$(now)
"$BIN" channel backup bk -o "$WORK/load.shnbak" >"$WORK/logs/backup-load.log" 2>&1 ||
	die "backup under load failed: $(cat "$WORK/logs/backup-load.log")"
t1=$(now)
load_writes_running=0
kill -0 "$BG_PID" 2>/dev/null && load_writes_running=1
wait "$BG_PID" || die "the writes during the backup failed: $(tail -n 3 "$WORK/logs/prefill-load.log")"
BG_PID=""
R2=$(report "backup, under writes" "$(stat -c %s "$WORK/load.shnbak")" "$t0" "$t1")
((load_writes_running)) || log "note: the writes ended before the backup did"

t0=$(now)
"$BIN" channel restore "$WORK/idle.shnbak" -name bk2 -json >"$WORK/restore.json" 2>"$WORK/logs/restore.log" ||
	die "restore failed: $(cat "$WORK/logs/restore.log")"
t1=$(now)
R3=$(report "restore (until it serves)" "$idle_bytes" "$t0" "$t1")

# The restored channel answers the keys, from each node.
for i in 0 1 2; do
	for k in key-00000 "key-$(printf %05d $((KEYS - 1)))"; do
		n=$(sn_curl "$(sn_url "$i")/v1/channels/bk2/kv/$k" | wc -c)
		((n == VALUE_SIZE)) || die "bk2/$k through n$((i + 1)): $n bytes, want $VALUE_SIZE"
	done
done
# The restored channel's files, from each node.
if ((FILES_MIB > 0)); then
	for i in 0 1 2; do
		for p in media/a.bin media/copy.bin; do
			got=$(SHARDNET_ADDR=$(sn_url "$i") "$BIN" file get bk2 "$p" 2>"$WORK/logs/file-get.log" | sha256sum | cut -d' ' -f1)
			[ "$got" = "$file_sum" ] || die "bk2/$p through n$((i + 1)): sha256 $got, want $file_sum ($(cat "$WORK/logs/file-get.log"))"
		done
	done
fi
# The whole cluster: meta.json and one file per channel.
"$BIN" backup -o "$WORK/all" >"$WORK/logs/backup-all.log" 2>&1 || die "shardnet backup failed: $(cat "$WORK/logs/backup-all.log")"
for f in meta.json bk.shnbak bk2.shnbak; do [ -s "$WORK/all/$f" ] || die "shardnet backup wrote no $f"; done
grep -q '"name": "bk2"' "$WORK/all/meta.json" || die "meta.json lacks channel bk2"

count=$(sn_curl "$(sn_url 0)/v1/channels/bk2" | sed -n 's/.*"keys":\([0-9]*\).*/\1/p')
idx=$(sed -n 's/.*"index": *\([0-9]*\).*/\1/p' "$WORK/restore.json" | head -n 1)

echo
echo "shardnet $SN_COMMIT, $KEYS keys of $VALUE_SIZE bytes, 2 files of $FILES_MIB MiB (one content), 3 agents on 127.0.0.1, $(nproc) cores"
echo "$R1"
echo "$R2"
echo "$R3"
echo "restored channel bk2: backup index $idx, ${count:-?} keys reported"
