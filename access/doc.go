// Package access owns who may call what: the operator token, channel
// tokens, signed links and public prefixes, checked the same way by the
// HTTP server (for a client's request) and by the node that serves a route
// call (for the client the call carries). It leaves reading credentials
// off the wire to its callers (server, cluster) and keeps no state of its
// own: tokens and settings come from the node's copy of the meta state.
package access
