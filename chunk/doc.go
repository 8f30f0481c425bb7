// Package chunk owns the node's content-addressed chunk store: the ids of
// chunks (a SHA-256 Merkle root over 64 KiB blocks with the length bound
// in), proofs of single blocks against an id, and one directory of chunk
// files per node, shared by all its channels and deduplicating equal
// chunks, with pins that hold chunks against deletion. It leaves files and
// their manifests, replication between nodes, HTTP, anti-entropy and the
// garbage collector's policy to the layers above; it imports nothing of
// shardnet.
//
// # Ids
//
// A chunk of n bytes is cut into blocks of BlockSize (64 KiB; the last may
// be shorter, the empty chunk has none). Its tree is RFC 6962's Merkle tree
// hash over the blocks: leaf = H(0x00 || block), inner = H(0x01 || left ||
// right), a tree of k > 1 leaves split at the largest power of two smaller
// than k, and the empty tree's root H(). The id is H(0x02 || uint64
// big-endian n || root). Hasher computes it while streaming in constant
// memory; Prove and VerifyBlock prove one block against the id and length
// alone. chunk/DESIGN.md beside this file gives the construction's
// reasons and test vectors.
//
// # Durability
//
// Put streams a chunk into a temp file while hashing it, syncs the file,
// renames it to its id's name and syncs the directory before it returns,
// so a chunk under its id is always whole and an acknowledged chunk
// survives a crash. Open removes what interrupted Puts left. Get serves
// Range reads from the file; Reader.Verified checks every block before
// delivering it (against its CRC-32C, taken from bytes that hashed to the
// id: chunk/DESIGN.md "Verified reads"), and Verify re-hashes a chunk against
// its id and removes it if corrupt.
//
// # Pins and garbage collection
//
// A pin (Pin, with its release) holds a chunk against Delete and Collect.
// The rule the garbage collector must follow (issue "Files in channels",
// item 7): a chunk is deleted only when no pin holds it and no manifest
// references it at an applied index at least a read index taken after its
// last pin was released. The store keeps a pin clock for that: Mark returns
// its current value; Collect(id, mark) deletes id only if no pin holds it
// and it was neither released nor put after mark. A collection round is:
//
//  1. mark := store.Mark()
//  2. for every channel with replicas here: take a read index (after
//     Mark), wait until the replica has applied it, and gather the chunk
//     ids its manifests reference;
//  3. for every stored id that no gathered manifest references (and older
//     than the grace period, Info.ModTime): store.Collect(id, mark);
//     ErrPinned means the chunk was in use after the round began, and it
//     stays.
//
// Whoever needs a chunk beyond the moment it was put (the uploading node
// until its manifest commits, a replica receiving an upload's chunks, a
// running download) pins it before it checks Has or puts it, and releases
// the pin when the manifest is applied or the transfer is over.
package chunk
