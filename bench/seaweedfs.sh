# bench/seaweedfs.sh — sourced by bench/files.sh: SeaweedFS beside
# shardnet's files, on the same machine and with the same replication.
#
# One master, three volume servers and one filer on 127.0.0.1 (ports
# 27100-27141 + PORT_OFFSET), replication 002 (two more copies on other
# servers of the same rack: three copies, like a channel of three
# replicas). Files go up and down through the filer's HTTP API
# (PUT/GET /path), which cuts them into 4 MiB chunks (-maxMB, as
# shardnet's chunks) and writes each chunk to a volume server that
# forwards it to the two others before it answers: the filer plays the
# part of shardnet's entry node.
#
# Durability differs, and the phases say so: by default a volume server
# does not fsync a write at all; with fsync=true (set here for paths under
# /sync/ with `fs.configure -fsync`) the first volume server syncs its
# copy, but it forwards the chunk to the other two without the flag
# (weed/topology/store_replicate.go builds the replicas' query from
# type, ttl, ts and cm only), so one copy in three is synced. shardnet
# syncs all three before a manifest commits.
#
# weed is built once, from the Go module proxy, into
# ${SHARDNET_BENCH_CACHE:-~/.cache/shardnet-bench} (a module of its own
# there: nothing of it enters this repository).

WEED_VERSION=${WEED_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
WEED_CACHE=${SHARDNET_BENCH_CACHE:-$HOME/.cache/shardnet-bench}
WEED_BIN=$WEED_CACHE/bin/weed-$WEED_VERSION
WEED_MASTER=$((27100 + PORT_OFFSET))
WEED_VOLUME=($((27110 + PORT_OFFSET)) $((27120 + PORT_OFFSET)) $((27130 + PORT_OFFSET)))
WEED_FILER=$((27140 + PORT_OFFSET))
WEED_PID=()
WEED_NAMES="master v1 v2 v3 filer"
WEED_DESC="1 master, 3 volume servers, 1 filer on 127.0.0.1, replication 002 (3 copies), 4 MiB chunks"

# weed_build builds weed unless the cache has it (bounded: 30 minutes).
weed_build() {
	[ -x "$WEED_BIN" ] && return 0
	log "building SeaweedFS $WEED_VERSION into $WEED_BIN (once)"
	local mod=$WEED_CACHE/seaweedfs-build
	mkdir -p "$mod" "$WEED_CACHE/bin"
	(
		cd "$mod" || exit 1
		[ -f go.mod ] || go mod init shardnet-bench/seaweedfs >/dev/null 2>&1
		# seaweedfs's own go.mod replaces a module deleted from GitHub;
		# a replace binds only the main module, so it is repeated here.
		go mod edit -replace github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0 &&
			timeout 1800 go get "github.com/seaweedfs/seaweedfs/weed@$WEED_VERSION" &&
			CGO_ENABLED=0 timeout 1800 go build -trimpath -o "$WEED_BIN.tmp" github.com/seaweedfs/seaweedfs/weed &&
			mv "$WEED_BIN.tmp" "$WEED_BIN"
	) >"$WORK/logs/weed-build.log" 2>&1 || {
		tail -n 20 "$WORK/logs/weed-build.log" >&2
		return 1
	}
}

weed_up() { curl -sf --max-time 2 "$1" >/dev/null; }
weed_volumes_ready() {
	# the master knows the three volume servers
	[ "$(curl -sf --max-time 2 "http://127.0.0.1:$WEED_MASTER/dir/status" | grep -o '"Url":"127.0.0.1:' | wc -l)" -ge 3 ]
}

# weed_start starts the master, the volume servers and the filer, waits
# until a write through the filer lands on three copies, and marks /sync/
# for fsync.
weed_start() {
	local i d=$WORK/weed
	check_ports "$WEED_MASTER" $((WEED_MASTER + 1)) "${WEED_VOLUME[@]}" "$WEED_FILER" $((WEED_FILER + 1))
	mkdir -p "$d/master" "$d/filer" "$d/v1" "$d/v2" "$d/v3"
	log "starting SeaweedFS (master $WEED_MASTER, volumes ${WEED_VOLUME[*]}, filer $WEED_FILER)"
	"$WEED_BIN" master -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$WEED_MASTER" -port.grpc=$((WEED_MASTER + 1)) \
		-mdir="$d/master" -defaultReplication=002 -volumeSizeLimitMB=1024 >>"$WORK/logs/weed-master.log" 2>&1 &
	WEED_PID+=($!)
	OTHER_PID+=($!)
	wait_for "SeaweedFS master" 60 weed_up "http://127.0.0.1:$WEED_MASTER/cluster/status"
	for i in 0 1 2; do
		"$WEED_BIN" volume -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="${WEED_VOLUME[i]}" -port.grpc=$((WEED_VOLUME[i] + 1)) \
			-dir="$d/v$((i + 1))" -max=16 -mserver="127.0.0.1:$WEED_MASTER.$((WEED_MASTER + 1))" \
			>>"$WORK/logs/weed-v$((i + 1)).log" 2>&1 &
		WEED_PID+=($!)
		OTHER_PID+=($!)
	done
	wait_for "3 SeaweedFS volume servers" 60 weed_volumes_ready
	"$WEED_BIN" filer -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$WEED_FILER" -port.grpc=$((WEED_FILER + 1)) \
		-master="127.0.0.1:$WEED_MASTER.$((WEED_MASTER + 1))" -defaultReplicaPlacement=002 -maxMB=4 \
		-defaultStoreDir="$d/filer" -localSocket="$d/filer.sock" >>"$WORK/logs/weed-filer.log" 2>&1 &
	WEED_PID+=($!)
	OTHER_PID+=($!)
	wait_for "SeaweedFS filer" 60 weed_up "http://127.0.0.1:$WEED_FILER/"
	printf 'fs.configure -locationPrefix=/sync/ -fsync=true -apply\n' |
		timeout 60 "$WEED_BIN" shell -master="127.0.0.1:$WEED_MASTER.$((WEED_MASTER + 1))" \
			-filer="127.0.0.1:$WEED_FILER.$((WEED_FILER + 1))" >>"$WORK/logs/weed-shell.log" 2>&1 ||
		die "weed shell fs.configure failed (logs/weed-shell.log)"
	grep -q '"fsync": *true' "$WORK/logs/weed-shell.log" || die "fs.configure did not set fsync: $(tail -n 5 "$WORK/logs/weed-shell.log")"
	# The first write waits for the master to grow volumes of three copies.
	head -c 1024 /dev/urandom >"$WORK/weed-probe"
	wait_for "a first SeaweedFS write" 120 weed_put "$WORK/weed-probe" probe
	weed_copies /nosync/probe
	weedsync_put "$WORK/weed-probe" probe
	weed_copies /sync/probe
}

# weed_copies PATH: checks that the file's first chunk is on three volume
# servers (the replication the phases claim).
weed_copies() {
	local meta fid vid n
	meta=$(curl -sf --max-time 5 "http://127.0.0.1:$WEED_FILER$1?metadata=true")
	fid=$(grep -o '"file_\?[iI]d": *"[^"]*"' <<<"$meta" | head -n 1 | cut -d'"' -f4)
	[ -n "$fid" ] || die "SeaweedFS: no chunk id in the metadata of $1: $meta"
	vid=${fid%%,*}
	n=$(curl -sf --max-time 5 "http://127.0.0.1:$WEED_MASTER/dir/lookup?volumeId=$vid" | grep -o '"url":' | wc -l)
	((n == 3)) || die "SeaweedFS: volume $vid of $1 has $n copies, not 3"
	log "SeaweedFS: $1 is on volume $vid, $n copies"
}

# The two systems under test (files.sh's phase): weed, no fsync anywhere
# (SeaweedFS's default); weedsync, fsync=true on the first copy.
weed_put() { curl -sS -f --max-time 900 -T "$1" "http://127.0.0.1:$WEED_FILER/nosync/$2" -o /dev/null; }
weed_get() { curl -sS -f --max-time 900 "http://127.0.0.1:$WEED_FILER/nosync/$1" -o /dev/null; }
weedsync_put() { curl -sS -f --max-time 900 -T "$1" "http://127.0.0.1:$WEED_FILER/sync/$2" -o /dev/null; }
weedsync_get() { curl -sS -f --max-time 900 "http://127.0.0.1:$WEED_FILER/sync/$1" -o /dev/null; }

# weed_stop stops every SeaweedFS process (TERM, KILL after 20 s) and
# removes its data.
weed_stop() {
	local pid deadline=$((SECONDS + 20))
	kill -TERM "${WEED_PID[@]}" 2>/dev/null || true
	for pid in "${WEED_PID[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	WEED_PID=()
	rm -rf "$WORK/weed"
}
