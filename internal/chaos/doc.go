// Package chaos owns shardnet's robustness suite: a porcupine model of a
// channel's KV API and file manifests (model.go), a recorder and checker of
// concurrent client histories (history.go), workloads of clients driving
// the real HTTP API (workload.go for keys, files.go for files), a nemesis that crashes, restarts, partitions and slows the
// nodes of an in-process cluster (nemesis.go), the replica convergence check
// (converge.go), and, in its tests, the crash-durability test of real
// `shardnet agent` processes killed with SIGKILL.
// It leaves starting nodes to internal/testcluster, the fault hook itself to
// transport (transport.Faults), and the behaviour under test to the
// packages that implement it.
//
// docs/testing.md says how to run the long version (`make chaos`), replay a
// seed (SHARDNET_CHAOS_SEED) and where a failing history's visualization is
// written (internal/chaos/testdata/output/).
package chaos
