// Command etcd is etcd's server, exactly as etcd's own server/main.go builds
// it: bench/etcd36.sh builds it from the Go module proxy for the side-by-side
// of bench/compare.sh (docs/benchmarks.md "shardnet vs etcd 3.6 (make bench-compare)").
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
