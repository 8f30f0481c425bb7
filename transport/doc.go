// Package transport owns a node's cluster port: one hashicorp/raft transport
// that carries every Raft group hosted on the node, multiplexed over one
// authenticated yamux session per peer, plus opaque app streams for one-hop
// request forwarding and call streams for the application's own compact
// node-to-node calls.
// It leaves to others which groups exist and where their replicas live
// (shard, cluster), each group's Raft configuration and timers, and the
// protocol spoken on app streams (server).
//
// # Why one node-level transport
//
// A stock raft.NetworkTransport per group costs about 25 goroutines and
// 3.2 MB of heap per group (two unconfigurable 256 KiB bufio buffers per
// pooled connection), reflection msgpack, and about 4 TCP connections per
// group: about 1 GB of heap and thousands of file descriptors at 1000 replicas
// per node (docs/raft-notes.md "R4"). Here a Node has one listener,
// one outbound session per peer address (dialed lazily, re-dialed after a
// break) and serves the sessions peers dial to it, so a node pair shares two
// TCP connections whatever the number of groups. Node.Group(gid) returns the
// group's raft.Transport (also raft.WithPreVote and raft.WithClose); an idle
// group costs its consumer channel and a map entry, ~300 bytes and no
// goroutine (TestPerGroupCost). Raft addresses are node addresses; the group
// id in each frame routes.
//
// Measured on the project's 2-vCPU machine kind, 333 groups × 3 replicas in
// one process (about one node of a 1000-replica cluster; TestIdleCost), side
// by side with stock TCP NetworkTransports: with 3 s timers, 15% of a core,
// 6,800 goroutines and 27 MB of heap, against 16-19%, 8,400 and 720-770 MB;
// with default timers 63% of a core and 34 MB. The idle CPU left is Raft's
// own timer traffic (docs/raft-notes.md "R7"), not the transport's. Committed writes
// (BenchmarkRaftApply against BenchmarkRaftApplyStock, 16 groups, paired
// runs): 19-26 µs per Apply against 28-35 µs for stock TCP.
//
// # Wire format
//
// A new TCP connection first runs the TLS handshake (tls.go), or without
// TLS the cluster-key handshake (handshake.go), then carries a yamux
// session. Every stream starts with a kind byte (frame.go): RPC,
// snapshot, app or call. On an RPC stream, requests are
// [gid u64][rpc type u8][len u32][body] and responses
// [status u8][len u32][body or error text]; bodies use the hand-written
// varint encoding drawn in codec.go, which starts with a version byte and is
// fuzzed (FuzzDecode).
//
// # Heartbeats are never queued behind other work
//
// Every RPC in flight has a stream of its own (taken from a small per-peer
// pool of idle streams, or opened: opening costs one frame and no round
// trip), served by its own goroutine on the receiver, so a heartbeat is never
// read or answered after an AppendEntries or a snapshot. On the receiver a
// heartbeat (NetworkTransport's condition) goes straight to the group's
// heartbeat handler, bypassing the group's main loop, which may be busy on
// disk or blocked for a whole InstallSnapshot. yamux flow control is per
// stream, so a stalled snapshot reader fills only its own window (1 MiB),
// and writes go out in chunks of at most 64 KiB, so in yamux's send queue a
// heartbeat waits behind at most one chunk per busy stream, plus the bytes
// already handed to the TCP connection (at most 512 KiB in conn.go's buffer,
// and the kernel's socket buffer): milliseconds on a LAN, far below any
// heartbeat timeout (TestHeartbeatsNotBlockedBySnapshot).
//
// AppendEntriesPipeline uses a dedicated stream per pipeline with up to
// pipelineDepth requests in flight and one goroutine reading the responses
// in order. InstallSnapshot uses a snapshot stream: the request, the peer's
// go-ahead (an unknown group is refused before any data moves), exactly Size
// bytes streamed without buffering the snapshot, then the response; every
// chunk must move within the RPC timeout and the final answer may take
// RPCTimeout per 256 KiB.
//
// yamux writes each frame header and body with separate syscalls; a small
// write-coalescing layer under it (conn.go) sends whatever queued up during
// the previous syscall in one write, which cut the CPU of many groups'
// small RPCs by more than half.
//
// # Heartbeats of many groups travel together
//
// With Config.HeartbeatBatch set (the cluster uses 20 ms), a heartbeat waits
// that long for the others going to the same peer, and they go as one
// typeHeartbeats frame; the peer runs each group's heartbeat handler in turn
// and answers them all in one frame (heartbeat.go). A group about to
// confirm its leadership for a read calls GroupTransport.Urgent and its
// heartbeats skip the wait (and go on the wire: see quiet heartbeats
// below). Measured with TestIdleCost, 1,000 channels × 3 replicas in one
// process: 82 % of a core with batching against ~160-190 % (extrapolated
// from 100 channels) without.
//
// # Quiet heartbeats
//
// A group given a quiet interval (GroupTransport.SetQuietHeartbeats; the
// channel groups, 1.25 s of their 5 s heartbeat timeout) sends a follower a
// real heartbeat only when the last real one is that old, and answers
// raft's heartbeats in between itself, as the follower last answered,
// while the follower's node answers the probes below and the term has run
// 10 s (quiet.go). Its heartbeats that do go out wait up to an eighth of
// that interval (156 ms) for
// others to the same peer (a quiet group's follower needs one within its
// heartbeat timeout, not within the lease). An idle node's cost is counted
// in frames more than in heartbeats: each frame is a write and wake-ups on
// both sides. Measured with 3 agents × 1,000 idle replicas: frames written
// per node 334 → 112 a second, CPU 37.0 % of a core → 25.8 % (medians of
// three alternating runs, docs/benchmarks.md "Quiet heartbeats"). A read's confirmation (Urgent)
// always crosses the wire, and only answers that did count for it.
//
// # Appends that say nothing new are not sent
//
// Raft's leader sends each follower an empty AppendEntries every
// CommitTimeout so that it learns the commit index; in an idle group each
// repeats what the follower already knows. A pipeline answers such an
// append itself (quiet.go) when the follower's last real answer of the
// term showed its log matching through the same entry and it was already
// sent that commit index, and a real answer of the term came within the
// last second (with quiet heartbeats: within twice the quiet interval, the
// follower's node answering probes); an append with news (entries, a
// higher commit index) always goes out, and one every 30 s at the least.
// The local answer counts as contact for the leader lease (by at most that
// second) and never for a read's confirmation (AckedSince). Measured with
// 3 agents × 1,000 replicas: 94 % of a core → 58 %.
//
// A pipeline costs three goroutines (its reader, raft's decoder, the
// follower's stream server) whether or not its group writes. One that sent
// no entries for 10 s is parked (quiet.go): the quiet append that finds it
// so is answered "not appended", on which raft closes the pipeline and
// replicates by plain AppendEntries (answered locally the same way), and
// AppendEntriesPipeline refuses that follower until an append with entries
// succeeds. The first write after a pause goes as one plain append; the
// pipeline opens again after it. With 1,000 idle replicas per node that
// took a third of the goroutines and 18 KiB of memory per replica.
//
// # Failures
//
// After a failed dial, heartbeats, RequestVote, RequestPreVote and
// TimeoutNow to that peer fail at once for 300 ms instead of each waiting
// out a dial: elections and leadership checks need fast failures, and Raft
// retries heartbeats on a backoff capped at half a heartbeat timeout. A
// stream that fails mid-exchange is aborted, never pooled.
// GroupTransport.Close unregisters the group and fails its RPCs in flight
// in both directions; sessions other groups use stay open, and the same
// group id can be registered again (a replica restart). A request for a
// group that is not registered is answered "transport: unknown group N".
//
// Node.PeerHealthy and Config.OnPeerDown expose a per-peer probe (a yamux
// ping every 250 ms to each peer used in the last two minutes, and to each
// node whose heartbeats this one answered in that time: a node that only
// follows sends its leaders nothing), so the layer above can shorten the
// timers of just the groups led from a peer that went quiet (docs/design.md
// "D13").
//
// # Replication waits for an unreachable peer
//
// The RPCs that carry replication (AppendEntries other than heartbeats,
// InstallSnapshot, and opening a pipeline) do not fail on an unreachable
// peer (its dial fails or failed in the last 300 ms, or its session broke;
// a peer blocked by Faults too): they wait for it to answer again, joining
// or starting a dial every 300 ms (the prober's dials wake them too), for
// up to Config.ReplicationWait (default RPCTimeout, 10 s), and only then
// fail. Raft's replication goroutine sleeps after each failed RPC,
// 10 ms·2^(failures−2) up to 10.24 s, and nothing wakes it
// (replication.go:replicateTo). Failing fast, a peer down for 10 s ran up
// 12 failures; when it came back it heard heartbeats (another goroutine)
// but got no entry and no commit index for up to 10 s, so a group left
// with the leader and that follower took no write: 8.5 s after a 12 s
// outage in TestRaftFollowerBackAfterLongOutage, against 1 ms with the wait
// (its RPCs resume within ~300 ms of the peer's return).
//
// Each wait that runs out still counts as a failure. With the default
// 10 s, the backoff stays under 1.3 s for outages up to about 90 s; past
// about two minutes it reaches its 10.24 s cap again, and a peer that
// returns then finds the goroutine asleep about half the time. A longer
// ReplicationWait covers longer outages, at the costs below.
//
// A waiting RPC holds Raft's replication goroutine, which checks for a
// stop (leadership lost, peer removed) only between RPCs: after a step-down
// it stays blocked for up to ReplicationWait, which is harmless (its
// request carries the old term). raft.Shutdown waits for that goroutine
// before it calls GroupTransport.Close, so close the group's transport
// first, which ends its waits at once (Shutdown's own Close is then a
// no-op); otherwise Shutdown can take up to ReplicationWait. Node.Close
// ends every wait. At most 4096 RPCs wait for one peer; more fail at once.
//
// # Security
//
// With Config.TLS (the default of every agent; docs/operations.md
// "Certificates") the cluster port speaks mutual TLS 1.3 only (tls.go):
// both sides present a certificate of the cluster CA and verify the
// other's, and the certificate's "shardnet-node:<id>" URI names the peer.
// An outbound RPC goes only to the node its target server id names
// (expectPeer): a node of the CA answering at another node's address is
// refused at dial, or at the next RPC if a session to it is open.
// PeerOf gives the application the authenticated node behind an app or
// call stream, and the role its certificate names ("shardnet-role:" URI
// SAN: core or resource), so that the node serving a route call can tell
// a core node from a resource node on the CA's word.
// Every record is authenticated, so a byte changed in flight closes the
// connection and reaches no group (TestByteFlippedInFlight). Certs.Reload
// (SIGHUP) swaps certificate, key and CA pool for new connections.
//
// Each inbound Raft RPC is then checked (auth.go): the server id it claims
// must be the sending node's, and the sender must pass the group's voter
// check (GroupTransport.SetVoterCheck: a voter of the group's current
// configuration), so a member that is not a voter cannot depose a leader
// with a higher term. Refusals are answered with an error, counted in
// shardnet_transport_rpcs_refused_total{type} and logged at WARN (at most
// every 30 s).
//
// Without TLS (-insecure) the port accepts only peers that prove the
// cluster key: a mutual HMAC-SHA256 challenge-response over fresh nonces
// from both sides, before any Raft traffic (handshake.go). The key never
// crosses the wire, but the connection is NOT encrypted and its frames
// carry no MAC: anyone who can read the traffic sees all Raft data, anyone
// who can modify it can inject RPCs, and any holder of the key can claim
// any server id (the voter check then guards against mistakes only). With
// an empty cluster key the handshake authenticates nothing; New logs a
// warning.
//
// Failed handshakes, TLS or HMAC, are closed, counted in
// shardnet_transport_handshake_failures_total and logged at WARN (at most
// every 30 s; the rest at DEBUG).
//
// # Metrics
//
// With Config.Registerer set: shardnet_transport_rpcs_sent_total{type},
// shardnet_transport_rpc_errors_total{type},
// shardnet_transport_rpcs_refused_total{type},
// shardnet_transport_handshake_failures_total and shardnet_transport_sessions.
// No per-group label.
package transport
