// Command benchmark is etcd's own gRPC load generator (tools/benchmark in
// etcd's repository), built as its main.go builds it: bench/compare.sh drives
// etcd with it, the way etcd measures itself.
package main

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/v3/tools/benchmark/cmd"
)

func main() {
	if err := cmd.RootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
