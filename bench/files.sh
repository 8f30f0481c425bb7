#!/usr/bin/env bash
# bench/files.sh — file upload and download throughput with real agents:
# three `shardnet agent` processes on 127.0.0.1, one channel of three
# replicas, files put through n1 and got through n3 with curl, 1 MiB files
# at 1 and 16 clients, 64 MiB at 1 and 16, 256 MiB at 4 and 1 GiB at 1
# (distinct contents in every phase: equal chunks are stored once), beside
# the machine's physical limits: dd's synced sequential write, its
# sequential read from the disk (O_DIRECT) and from the page cache, and
# sha256sum. The agents' resident memory (VmRSS, read from /proc from
# outside) and the CPU of the agents and of the clients are sampled through
# the 1 GiB phases. Then the same phases
# against SeaweedFS (bench/seaweedfs.sh: a master, three volume servers
# with replication 002, three copies like RF 3, and a filer, on 127.0.0.1).
# It prints one line per phase: files, bytes, seconds, MiB/s. Bounded:
# every wait and transfer has a deadline.
#
#   bench/files.sh                        # everything (about 10 GiB of disk at the peak)
#   SMALL=16 BIG=4 LARGE=0 HUGE=0 bench/files.sh   # fewer and smaller files
#   SEAWEED=0 bench/files.sh              # shardnet alone
#   HUGE16=16 bench/files.sh              # and 16 × 1 GiB at 16 clients (48 GiB more disk)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Ports of its own, so that it can run beside the other benchmarks.
SN_GOSSIP=($((27946 + PORT_OFFSET)) $((27956 + PORT_OFFSET)) $((27966 + PORT_OFFSET)))
SN_CLUSTER=($((27947 + PORT_OFFSET)) $((27957 + PORT_OFFSET)) $((27967 + PORT_OFFSET)))
SN_HTTP=($((28500 + PORT_OFFSET)) $((28510 + PORT_OFFSET)) $((28520 + PORT_OFFSET)))

SMALL=${SMALL:-64}    # 1 MiB files at 16 clients (half as many at 1)
BIG=${BIG:-16}        # 64 MiB files at 16 clients (a quarter at 1); 0: none
LARGE=${LARGE:-4}     # 256 MiB files at 4 clients; 0: none
HUGE=${HUGE:-1}       # 1 GiB files at 1 client, memory sampled; 0: none
HUGE16=${HUGE16:-0}   # 1 GiB files at 16 clients, generated as they are sent (16: the issue's phase; 3 copies need 3 GiB of disk each)
SEAWEED=${SEAWEED:-1} # 0: shardnet alone
LIMITS=${LIMITS:-1}   # 0: skip the physical limits (dd, sha256sum), for A/B runs
SN_BIN=${SN_BIN:-}    # a shardnet binary to measure instead of building this tree's (A/B runs)
PROF=${PROF:-}        # a directory: CPU profiles of n1 and n2 (10 s) during the 1 GiB upload go there
[[ "$SMALL$BIG$LARGE$HUGE$HUGE16" =~ ^[0-9]+$ ]] || die "SMALL, BIG, LARGE, HUGE and HUGE16 are numbers of files"
# 16 × 1 GiB at 16 clients (HUGE16=16) needs 48 GiB of chunks (three
# copies) on the one disk: off by default. Its files are not written to
# disk first (16 GiB more) but generated as curl sends them (AES-CTR
# keystream, distinct per file; about 2 s of CPU per GiB, which the phase's
# CPU line counts among the clients').

install_trap
make_work
command -v curl >/dev/null || die "curl is required"
if [ -n "$SN_BIN" ]; then
	BIN=$SN_BIN
	SN_COMMIT="$SN_BIN ($("$BIN" version 2>/dev/null | head -n 1 || true))"
else
	log "building bin/shardnet"
	SN_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
	make -s -C "$ROOT" build
fi
if ((SEAWEED)); then
	source "$BENCH/seaweedfs.sh"
	weed_build || die "SeaweedFS did not build: run with SEAWEED=0 for shardnet alone"
fi

now() { date +%s.%N; }
# report WHAT FILES BYTES START END
report() {
	awk -v what="$1" -v f="$2" -v b="$3" -v s="$4" -v e="$5" 'BEGIN {
		t = e - s; printf "%-34s %4d files %11.0f bytes %7.2f s %8.1f MiB/s\n", what, f, b, t, b / t / 1048576 }'
}

# make_set NAME COUNT MIB: COUNT files of MIB MiB of random bytes.
make_set() {
	(($2 > 0)) || return 0
	mkdir -p "$WORK/src/$1"
	local k
	for ((k = 0; k < $2; k++)); do
		head -c "$(($3 << 20))" /dev/urandom >"$WORK/src/$1/f$k"
	done
}

# The system under test: put_one FILE PATH and get_one PATH for it.
sn_put() {
	curl -sS -f --max-time 900 -H "Authorization: Bearer $TOKEN" -T "$1" \
		"$(sn_url 0)/v1/channels/media/files/$2" -o /dev/null
}
sn_get() {
	curl -sS -f --max-time 900 -H "Authorization: Bearer $TOKEN" \
		"$(sn_url 2)/v1/channels/media/files/$1" -o /dev/null
}

# stop_shardnet stops the nodes (TERM, KILL after 20 s) and removes their
# data.
stop_shardnet() {
	local pid deadline=$((SECONDS + 20))
	kill -TERM "${SN_PID[@]}" 2>/dev/null || true
	for pid in "${SN_PID[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	SN_PID=()
	rm -rf "$WORK/shardnet"
}

# pool CLIENTS CMD ARGS...: runs CMD ARG for every ARG, CLIENTS at once;
# fails if any does. It waits for its own jobs only (wait -n on their
# ids), not for the memory sampler or the profiles running beside them.
pool() {
	local clients=$1 cmd=$2 arg failed=0 done_pid
	local -A jobs=()
	shift 2
	for arg in "$@"; do
		if ((${#jobs[@]} >= clients)); then
			wait -n -p done_pid "${!jobs[@]}" || failed=1
			unset "jobs[$done_pid]"
		fi
		"$cmd" "$arg" &
		jobs[$!]=1
	done
	while ((${#jobs[@]} > 0)); do
		wait -n -p done_pid "${!jobs[@]}" || failed=1
		unset "jobs[$done_pid]"
	done
	return "$failed"
}

# The processes whose memory is sampled, and their names.
RSS_PIDS=()
RSS_NAMES=""
RSS_PID=""
# rss_start OUT: samples the VmRSS (KiB) of every process of RSS_PIDS into
# OUT, one line every 0.2 s, until rss_stop, the script's end, or 30 min.
rss_start() {
	rm -f "$WORK/rss.stop"
	(
		local i=0 pid k v line
		while ((i < 9000)) && [ ! -e "$WORK/rss.stop" ] && kill -0 $$ 2>/dev/null; do
			line=""
			for pid in "${RSS_PIDS[@]}"; do
				v=0
				while read -r k rest; do
					if [ "$k" = VmRSS: ]; then
						v=${rest%% *}
						break
					fi
				done 2>/dev/null <"/proc/$pid/status" || true
				line+=" $v"
			done
			echo "${line# }"
			i=$((i + 1))
			sleep 0.2
		done
	) >"$1" &
	RSS_PID=$!
}
rss_stop() {
	touch "$WORK/rss.stop"
	wait "$RSS_PID" 2>/dev/null || true
}
# rss_report WHAT OUT: each process's first sample, its highest, and the
# growth between them, in MiB.
rss_report() {
	awk -v what="rss $1" -v names="$RSS_NAMES" '
		NR == 1 { for (i = 1; i <= NF; i++) { base[i] = $i; max[i] = $i } }
		{ for (i = 1; i <= NF; i++) if ($i > max[i]) max[i] = $i; n = NR }
		END {
			split(names, nm, " "); printf "%-34s %4d samples:", what, n
			for (i = 1; i in base; i++) printf "  %s %d -> %d MiB (+%d)", nm[i], base[i] / 1024, max[i] / 1024, (max[i] - base[i]) / 1024
			print "" }' "$2"
}

# cpu_now SHELL_PID: the CPU seconds used so far by every process of RSS_PIDS, then
# by the waited-for children (the curls) of the shell SHELL_PID, space-
# separated. Fields 14-17 of /proc/PID/stat are user and system time, then
# those of the children it waited for, in clock ticks.
cpu_now() {
	local pid
	for pid in "${RSS_PIDS[@]}" "$1"; do
		sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null || echo
	done | awk -v t="$(getconf CLK_TCK)" -v n="${#RSS_PIDS[@]}" '
		NR <= n { printf "%.2f ", ($12 + $13) / t; next }
		{ printf "%.2f\n", ($14 + $15) / t }'
}
# cpu_report WHAT BEFORE AFTER SECONDS: the CPU each process and the
# clients used during a transfer, as seconds and as a share of one core.
cpu_report() {
	awk -v what="cpu $1" -v names="$RSS_NAMES clients" -v b="$2" -v a="$3" -v t="$4" 'BEGIN {
		split(names, nm, " "); nb = split(b, bb, " "); split(a, aa, " ")
		printf "%-34s %.2f s:", what, t
		for (i = 1; i <= nb; i++) printf "  %s %.2f s (%.0f %%)", nm[i], aa[i] - bb[i], (aa[i] - bb[i]) / t * 100
		print "" }'
}

# profile_upload takes 10 s CPU profiles of n1 (the entry node) and n2 (a
# replica) in the background, into $PROF.
profile_upload() {
	mkdir -p "$PROF"
	local i
	for i in 0 1; do
		curl -sS -f --max-time 30 -H "Authorization: Bearer $TOKEN" -o "$PROF/cpu-n$((i + 1)).pb.gz" \
			"$(sn_url "$i")/debug/pprof/profile?seconds=10" &
	done
}

# gen_set NAME COUNT MIB: a set of COUNT files of MIB MiB generated as they
# are sent (gen_stream), not stored: its directory holds only GEN.
gen_set() {
	(($2 > 0)) || return 0
	mkdir -p "$WORK/src/$1"
	echo "$2 $3" >"$WORK/src/$1/GEN"
}
# gen_stream MIB SEED: MIB MiB of AES-CTR keystream, the same for a SEED.
# openssl ends on SIGPIPE when head has had enough: not a failure.
gen_stream() {
	{ openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:$2" -in /dev/zero 2>/dev/null || true; } | head -c "$(($1 << 20))"
}

# phase SYSTEM NAME CLIENTS [rss]: uploads every file of set NAME with
# CLIENTS curls at once (SYSTEM_put), then downloads them likewise
# (SYSTEM_get); with rss, samples the memory of RSS_PIDS through each.
phase() {
	local sys=$1 name=$2 clients=$3 rss=${4:-} files bytes t0 t1 names cpu0 cpu1 me=$BASHPID
	[ -d "$WORK/src/$name" ] || return 0
	if [ -e "$WORK/src/$name/GEN" ]; then
		local count mib
		read -r count mib <"$WORK/src/$name/GEN"
		mapfile -t names < <(seq -f 'f%g' 0 $((count - 1)))
		bytes=$((count * mib << 20))
		up() { gen_stream "$mib" "$name/$1" | "${sys}_put" - "$name/$1"; }
	else
		mapfile -t names < <(cd "$WORK/src/$name" && ls)
		bytes=$(du -cb "$WORK/src/$name"/* | tail -n 1 | cut -f1)
		up() { "${sys}_put" "$WORK/src/$name/$1" "$name/$1"; }
	fi
	files=${#names[@]}
	down() { "${sys}_get" "$name/$1"; }
	[ -z "$rss" ] || rss_start "$WORK/rss-put-$sys-$name"
	[ -z "$rss" ] || [ -z "$PROF" ] || [ "$sys" != sn ] || profile_upload
	[ -z "$rss" ] || cpu0=$(cpu_now "$me")
	t0=$(now)
	pool "$clients" up "${names[@]}" || die "$sys: upload $name failed"
	t1=$(now)
	[ -z "$rss" ] || cpu1=$(cpu_now "$me")
	[ -z "$rss" ] || rss_stop
	report "$sys put $name, $clients clients" "$files" "$bytes" "$t0" "$t1"
	[ -z "$rss" ] || rss_report "$sys put $name" "$WORK/rss-put-$sys-$name"
	[ -z "$rss" ] || cpu_report "$sys put $name" "$cpu0" "$cpu1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
	[ -z "$rss" ] || rss_start "$WORK/rss-get-$sys-$name"
	[ -z "$rss" ] || cpu0=$(cpu_now "$me")
	t0=$(now)
	pool "$clients" down "${names[@]}" || die "$sys: download $name failed"
	t1=$(now)
	[ -z "$rss" ] || cpu1=$(cpu_now "$me")
	[ -z "$rss" ] || rss_stop
	report "$sys get $name, $clients clients" "$files" "$bytes" "$t0" "$t1"
	[ -z "$rss" ] || rss_report "$sys get $name" "$WORK/rss-get-$sys-$name"
	[ -z "$rss" ] || cpu_report "$sys get $name" "$cpu0" "$cpu1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
}

# phases SYSTEM: every set, at its number of clients.
phases() {
	phase "$1" 1MiB-x1 1
	phase "$1" 1MiB-x16 16
	phase "$1" 64MiB-x1 1
	phase "$1" 64MiB-x16 16
	phase "$1" 256MiB-x4 4
	phase "$1" 1GiB-x1 1 rss
	phase "$1" 1GiB-x16 16 rss
}

log "writing the source files"
make_set 1MiB-x1 $((SMALL / 2)) 1
make_set 1MiB-x16 "$SMALL" 1
make_set 64MiB-x1 $((BIG / 4)) 64
make_set 64MiB-x16 "$BIG" 64
make_set 256MiB-x4 "$LARGE" 256
make_set 1GiB-x1 "$HUGE" 1024
gen_set 1GiB-x16 "$HUGE16" 1024
if ((HUGE16)); then
	# Three copies of every file, and the other phases' chunks beside
	# them (they leave only when the cluster stops), and 8 GiB to spare.
	need=$((3 * HUGE16 + 3 * (SMALL + SMALL / 2) / 1024 + 3 * (BIG + BIG / 4) * 64 / 1024 + 3 * LARGE / 4 + 3 * HUGE + 8))
	free=$(df --output=avail -BG "$WORK" | tail -n 1 | tr -dc 0-9)
	((free >= need)) || die "HUGE16=$HUGE16 needs about $need GiB free beside $WORK, $free GiB are"
fi

# The physical limits, on 1 GiB of random bytes: one synced sequential
# write; a sequential read from the disk itself (O_DIRECT: the page cache,
# 24 GiB here, would otherwise serve it, and dropping it needs root and
# disturbs every other process); the same read from the page cache (where
# the downloads of files just uploaded come from); sha256sum.
RAW_LINES=""
if ((LIMITS)); then
	head -c $((1 << 30)) /dev/urandom >"$WORK/raw/src"
	t0=$(now)
	dd if="$WORK/raw/src" of="$WORK/raw/dd" bs=4M conv=fsync status=none
	t1=$(now)
	RAW=$(report "dd write, fsync (1 copy)" 1 $((1 << 30)) "$t0" "$t1")
	t0=$(now)
	dd if="$WORK/raw/dd" of=/dev/null bs=4M iflag=direct status=none
	t1=$(now)
	RAWREAD=$(report "dd read, O_DIRECT (disk)" 1 $((1 << 30)) "$t0" "$t1")
	cat "$WORK/raw/dd" >/dev/null
	t0=$(now)
	dd if="$WORK/raw/dd" of=/dev/null bs=4M status=none
	t1=$(now)
	CACHEREAD=$(report "dd read, page cache" 1 $((1 << 30)) "$t0" "$t1")
	t0=$(now)
	sha256sum <"$WORK/raw/src" >/dev/null
	t1=$(now)
	SHA=$(report "sha256sum" 1 $((1 << 30)) "$t0" "$t1")
	rm -f "$WORK/raw/dd" "$WORK/raw/src"
	RAW_LINES=$(printf '%s\n' "$RAW" "$RAWREAD" "$CACHEREAD" "$SHA")
fi

mkdir -p "$BENCH/results"
{
	echo "# shardnet $SN_COMMIT, $(nproc) cores, $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg); 3 nodes on 127.0.0.1, RF 3"
	[ -z "$RAW_LINES" ] || echo "$RAW_LINES"
} | tee "$WORK/results.txt"

start_shardnet media
RSS_PIDS=("${SN_PID[@]}")
RSS_NAMES="n1 n2 n3"
phases sn | tee -a "$WORK/results.txt"
log "stopping shardnet: its chunks leave the disk before SeaweedFS fills it"
stop_shardnet
if ((SEAWEED)); then
	# A fresh SeaweedFS for each mode, so that neither runs on the
	# other's volumes.
	for sys in weed weedsync; do
		weed_start
		RSS_PIDS=("${WEED_PID[@]}")
		RSS_NAMES="$WEED_NAMES"
		{
			echo "# SeaweedFS $WEED_VERSION: $WEED_DESC; $sys: $([ $sys = weed ] && echo "no fsync (its default)" || echo "fsync=true: the first copy of each chunk synced, the other two not"), $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
			phases "$sys"
		} | tee -a "$WORK/results.txt"
		weed_stop
	done
fi
echo "# done $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$WORK/results.txt"
cp "$WORK/results.txt" "$BENCH/results/files-latest.txt"
log "results in bench/results/files-latest.txt"
