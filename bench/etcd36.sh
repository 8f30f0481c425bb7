#!/usr/bin/env bash
# bench/etcd36.sh — etcd 3.6 for bench/compare.sh, built from the Go module
# proxy once and cached outside the repository.
#
# Builds the module bench/etcd36 (its own go.mod and go.sum: the repository's
# go.mod never sees etcd) into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/shardnet-bench/etcd-vX.Y.Z/bin/
#     etcd       etcd's server (etcdmain.Main, as etcd's own server/main.go)
#     benchmark  etcd's gRPC load generator (tools/benchmark, etcd's root module)
# where vX.Y.Z is the version of go.etcd.io/etcd/server/v3 in bench/etcd36/go.mod.
# A later run finds the binaries there (a stamp holds the hash of the module's
# files: a change to them builds again) and downloads nothing.
#
# Sourced by bench/compare.sh (then etcd36_build sets ETCD_BIN and
# ETCD_BENCHMARK), or run on its own to build and print the two paths:
#   bash bench/etcd36.sh
# A build that fails stops the caller with the build's last lines and a
# non-zero exit: there is no silent fallback to another etcd.

ETCD36_MOD=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/etcd36

declare -F log >/dev/null || log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
declare -F die >/dev/null || die() {
	log "ERROR: $*"
	exit 1
}

# etcd36_version MODULE: the version bench/etcd36/go.mod requires of MODULE.
etcd36_version() {
	awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$ETCD36_MOD/go.mod"
}

# etcd36_build: builds (or finds built) the server and the benchmark tool and
# sets ETCD_BIN, ETCD_BENCHMARK, ETCD36_VERSION, ETCD36_BENCH_VERSION.
etcd36_build() {
	command -v go >/dev/null || die "etcd 3.6: no go command on PATH: it is needed to build etcd from the Go module proxy"
	ETCD36_VERSION=$(etcd36_version go.etcd.io/etcd/server/v3)
	ETCD36_BENCH_VERSION=$(etcd36_version go.etcd.io/etcd/v3)
	if [ -z "$ETCD36_VERSION" ] || [ -z "$ETCD36_BENCH_VERSION" ]; then
		die "etcd 3.6: cannot read the etcd versions from $ETCD36_MOD/go.mod"
	fi
	local dir=${XDG_CACHE_HOME:-$HOME/.cache}/shardnet-bench/etcd-$ETCD36_VERSION
	ETCD_BIN=$dir/bin/etcd
	ETCD_BENCHMARK=$dir/bin/benchmark
	local stamp
	stamp=$(cd "$ETCD36_MOD" && cat go.mod go.sum ./*/main.go | sha256sum | cut -c1-16)
	if [ -x "$ETCD_BIN" ] && [ -x "$ETCD_BENCHMARK" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]; then
		log "etcd $ETCD36_VERSION: using the cached build in $dir/bin (benchmark from go.etcd.io/etcd/v3 $ETCD36_BENCH_VERSION)"
		return 0
	fi
	mkdir -p "$dir/bin" || die "etcd 3.6: cannot create the cache directory $dir"
	rm -f "$dir/stamp"
	log "etcd $ETCD36_VERSION: not built yet: building it from the Go module proxy ($(go env GOPROXY)) into $dir/bin"
	log "  server:    go.etcd.io/etcd/server/v3 $ETCD36_VERSION (bench/etcd36/etcd: etcdmain.Main)"
	log "  benchmark: go.etcd.io/etcd/v3 $ETCD36_BENCH_VERSION tools/benchmark/cmd, linked with go.etcd.io/etcd/client/v3 $(etcd36_version go.etcd.io/etcd/client/v3)"
	log "  (every module and its checksum are pinned by bench/etcd36/go.sum; a first build downloads about 85 MB of modules and takes minutes)"
	# -mod=readonly: the pinned go.sum, never a silent upgrade; GOFLAGS from
	# the caller (e.g. -buildvcs=false) are kept.
	local flags="${GOFLAGS:-} -mod=readonly" out=$dir/download.log
	(cd "$ETCD36_MOD" && GOFLAGS=$flags go mod download -x) >"$out" 2>&1 || {
		tail -n 20 "$out" >&2
		die "etcd 3.6: downloading the modules of bench/etcd36 failed (full log: $out); bench-compare does not fall back to another etcd"
	}
	# go mod download -x logs each archive it fetches ("# get URL.zip: 200 OK").
	local got
	got=$(sed -n 's|^# get https\{0,1\}://.*/\([^ ]*\)/@v/\([^ ]*\)\.zip: 200 OK.*|\1 \2|p' "$out" | sort -u)
	if [ -n "$got" ]; then
		log "etcd $ETCD36_VERSION: downloaded $(wc -l <<<"$got") module archives:"
		printf '    %s\n' "${got//$'\n'/$'\n'    }" >&2
	else
		log "etcd $ETCD36_VERSION: every module was already in the Go module cache ($(go env GOMODCACHE))"
	fi
	out=$dir/build.log
	(cd "$ETCD36_MOD" && GOFLAGS=$flags go list -m all >"$dir/modules.txt" &&
		GOFLAGS=$flags go build -trimpath -o "$dir/bin/" ./etcd ./benchmark) >"$out" 2>&1 || {
		tail -n 20 "$out" >&2
		die "etcd 3.6: the build of etcd $ETCD36_VERSION failed (full log: $out); bench-compare does not fall back to another etcd"
	}
	"$ETCD_BIN" --version >/dev/null 2>&1 || die "etcd 3.6: $ETCD_BIN was built but does not run"
	echo "$stamp" >"$dir/stamp"
	log "etcd $ETCD36_VERSION: built $ETCD_BIN and $ETCD_BENCHMARK"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	etcd36_build
	echo "$ETCD_BIN"
	echo "$ETCD_BENCHMARK"
	"$ETCD_BIN" --version
fi
