package server

import (
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"slices"
	"strings"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// Route templates: the metrics' route label and the docs' names.
const (
	routeHealth   = "/v1/health"
	routeStatus   = "/v1/status"
	routeNodes    = "/v1/nodes"
	routeNode     = "/v1/nodes/{id}"
	routeDrain    = "/v1/nodes/{id}/drain"
	routeLeave    = "/v1/nodes/{id}/leave"
	routeChannels = "/v1/channels"
	routeChannel  = "/v1/channels/{ch}"
	routeKVList   = "/v1/channels/{ch}/kv/"
	routeKV       = "/v1/channels/{ch}/kv/{key}"
	routeTxn      = "/v1/channels/{ch}/txn"
	routeRepair   = "/v1/channels/{ch}/repair"
	routeSnapshot = "/v1/channels/{ch}/snapshot"
	routeRestore  = "/v1/channels/{ch}/restore"
	routeRecover  = "/v1/channels/{ch}/recover"
	routeTokens   = "/v1/channels/{ch}/tokens"
	routeToken    = "/v1/channels/{ch}/tokens/{id}"
	routeSign     = "/v1/channels/{ch}/sign"
	routeSettings = "/v1/channels/{ch}/settings"
	routeFileList = "/v1/channels/{ch}/files/"
	routeFile     = "/v1/channels/{ch}/files/{path}"
	routeUploads  = "/v1/channels/{ch}/uploads"
	routeUpload   = "/v1/channels/{ch}/uploads/{id}"
	routeKeyring  = "/v1/operator/keyring"
	routeMetrics  = "/metrics"
	routePprof    = "/debug/pprof/{profile}"
)

// route is one path template and what each method does there.
type route struct {
	template string
	methods  map[string]endpoint // GET also answers HEAD
}

// endpoint is one method of a route: a handler, or a raw http.Handler
// (/metrics), with the limit of its body.
type endpoint struct {
	h        handlerFunc
	raw      http.Handler
	maxBody  int64
	tooLarge error // what a body over maxBody is
	// params are the query parameters the endpoint takes; any other is
	// refused (parseQuery).
	params []string
	// access says who may call it (auth.go).
	access access.Rule
	// stream: the handler reads the body itself (req.stream), at most
	// maxBody bytes, rather than taking it buffered (file uploads).
	stream bool
}

func (rt *route) allow() string {
	ms := make([]string, 0, len(rt.methods)+1)
	for m := range rt.methods {
		ms = append(ms, m)
		if m == http.MethodGet {
			ms = append(ms, http.MethodHead)
		}
	}
	slices.Sort(ms)
	return strings.Join(ms, ", ")
}

func (s *Server) routeTable() map[string]*route {
	small := func(a access.Rule, h handlerFunc, params ...string) endpoint {
		return endpoint{h: h, maxBody: MaxJSONBodyBytes, tooLarge: errBodyTooLarge, params: params, access: a}
	}
	put := endpoint{h: s.kvPut, maxBody: fsm.MaxValueBytes, tooLarge: fsm.ErrValueLarge, params: []string{"cas"}, access: accessWrite}
	pprofH := endpoint{raw: http.HandlerFunc(servePprof), params: []string{"debug", "gc", "seconds"}, access: accessOperator}
	routes := []*route{
		{routeHealth, map[string]endpoint{http.MethodGet: small(accessPublic, s.health, "ready")}},
		{routeStatus, map[string]endpoint{http.MethodGet: small(accessOperator, s.status)}},
		{routeNodes, map[string]endpoint{http.MethodGet: small(accessOperator, s.nodes)}},
		{routeNode, map[string]endpoint{
			http.MethodGet:    small(accessOperator, s.getNode),
			http.MethodDelete: small(accessOperator, s.removeNode),
		}},
		{routeDrain, map[string]endpoint{
			http.MethodPost:   small(accessOperator, s.drainNode(true)),
			http.MethodDelete: small(accessOperator, s.drainNode(false)),
		}},
		{routeLeave, map[string]endpoint{http.MethodPost: small(accessOperator, s.leaveNode)}},
		{routeChannels, map[string]endpoint{
			http.MethodGet:  small(accessOperator, s.listChannels),
			http.MethodPost: small(accessOperator, s.createChannel),
		}},
		{routeChannel, map[string]endpoint{
			http.MethodGet:    small(accessRead, s.getChannel),
			http.MethodDelete: small(accessOperator, s.deleteChannel),
			http.MethodPatch:  small(accessOperator, s.changeChannel),
		}},
		// PUT and DELETE on kv/ reach the key handlers, which refuse the
		// empty key with 400 invalid_key rather than a puzzling 405.
		{routeKVList, map[string]endpoint{
			// index and wait are known here so that the handler can say
			// why a listing does not block.
			http.MethodGet:    small(accessRead, s.kvList, "prefix", "after", "limit", "consistency", "index", "wait"),
			http.MethodPut:    put,
			http.MethodDelete: small(accessWrite, s.kvDelete, "cas"),
		}},
		{routeKV, map[string]endpoint{
			// exp, sig and tok are a signed link's (auth.go).
			http.MethodGet:    small(accessRead, s.kvGet, "consistency", "index", "wait", "exp", "sig", "tok"),
			http.MethodPut:    put,
			http.MethodDelete: small(accessWrite, s.kvDelete, "cas"),
		}},
		{routeTxn, map[string]endpoint{
			http.MethodPost: {h: s.txn, maxBody: MaxTxnBodyBytes, tooLarge: errBodyTooLarge, access: accessWrite},
		}},
		{routeRepair, map[string]endpoint{http.MethodPost: small(accessOperator, s.repairReplica)}},
		{routeSnapshot, map[string]endpoint{http.MethodGet: small(accessOperator, s.backupChannel)}},
		{routeRestore, map[string]endpoint{http.MethodPost: {raw: http.HandlerFunc(s.restoreChannel),
			maxBody: maxBackupBytes, params: []string{"replicas"}, access: accessOperator}}},
		{routeRecover, map[string]endpoint{http.MethodPost: small(accessOperator, s.recoverChannel)}},
		{routeTokens, map[string]endpoint{
			http.MethodGet:  small(accessWrite, s.listTokens),
			http.MethodPost: small(accessWrite, s.createToken),
		}},
		{routeToken, map[string]endpoint{http.MethodDelete: small(accessWrite, s.revokeToken)}},
		{routeSign, map[string]endpoint{http.MethodPost: small(accessRead, s.sign)}},
		{routeSettings, map[string]endpoint{http.MethodPut: small(accessWrite, s.putSettings)}},
		{routeFileList, map[string]endpoint{
			http.MethodGet: small(accessRead, s.fileList, "prefix", "after", "limit", "consistency"),
		}},
		{routeFile, map[string]endpoint{
			// exp, sig and tok are a signed link's (auth.go).
			http.MethodGet:    small(accessRead, s.fileGet, "consistency", "exp", "sig", "tok"),
			http.MethodPut:    {h: s.filePut, maxBody: MaxFileBytes, tooLarge: errBodyTooLarge, access: accessWrite, stream: true},
			http.MethodDelete: small(accessWrite, s.fileDelete),
		}},
		{routeUploads, map[string]endpoint{http.MethodPost: small(accessWrite, s.uploadCreate)}},
		{routeUpload, map[string]endpoint{
			http.MethodGet:    small(accessWrite, s.uploadStatus),
			http.MethodPatch:  {h: s.uploadAppend, maxBody: MaxFileBytes, tooLarge: errBodyTooLarge, access: accessWrite, stream: true},
			http.MethodDelete: small(accessWrite, s.uploadAbort),
		}},
		{routeKeyring, map[string]endpoint{
			http.MethodGet:    small(accessOperator, s.gossipKeyring),
			http.MethodPost:   small(accessOperator, s.changeKeyring(api.KeyringInstall)),
			http.MethodPut:    small(accessOperator, s.changeKeyring(api.KeyringUse)),
			http.MethodDelete: small(accessOperator, s.changeKeyring(api.KeyringRemove)),
		}},
		{routeMetrics, map[string]endpoint{http.MethodGet: {raw: s.promH, access: accessOperator}}},
		{routePprof, map[string]endpoint{http.MethodGet: pprofH, http.MethodPost: pprofH}},
	}
	byName := make(map[string]*route, len(routes))
	for _, r := range routes {
		byName[r.template] = r
	}
	return byName
}

// match finds the route of an escaped path (r.URL.EscapedPath(), never a
// cleaned one: docs/design.md "D11") and returns the escaped channel segment
// and key. The key is everything after "/kv/", so it may hold "/", "//",
// ".." or escapes.
func (s *Server) match(path string) (rt *route, ch, rawKey string) {
	byName := func(name string) *route { return s.routes[name] }
	if path == routeMetrics {
		return byName(routeMetrics), "", ""
	}
	if strings.HasPrefix(path, "/debug/pprof/") {
		return byName(routePprof), "", ""
	}
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return nil, "", ""
	}
	switch rest {
	case "health":
		return byName(routeHealth), "", ""
	case "status":
		return byName(routeStatus), "", ""
	case "nodes":
		return byName(routeNodes), "", ""
	case "channels":
		return byName(routeChannels), "", ""
	case "operator/keyring":
		return byName(routeKeyring), "", ""
	}
	if node, ok := strings.CutPrefix(rest, "nodes/"); ok {
		// The node id travels in the key's place (nodes.go).
		id, sub, _ := strings.Cut(node, "/")
		switch {
		case id == "":
			return nil, "", ""
		case node == id:
			return byName(routeNode), "", id
		case sub == "drain":
			return byName(routeDrain), "", id
		case sub == "leave":
			return byName(routeLeave), "", id
		}
		return nil, "", ""
	}
	rest, ok = strings.CutPrefix(rest, "channels/")
	if !ok {
		return nil, "", ""
	}
	ch, rest, more := strings.Cut(rest, "/")
	if ch == "" {
		return nil, "", ""
	}
	switch {
	case !more:
		return byName(routeChannel), ch, ""
	case rest == "txn":
		return byName(routeTxn), ch, ""
	case rest == "repair":
		return byName(routeRepair), ch, ""
	case rest == "snapshot":
		return byName(routeSnapshot), ch, ""
	case rest == "restore":
		return byName(routeRestore), ch, ""
	case rest == "recover":
		return byName(routeRecover), ch, ""
	case rest == "tokens":
		return byName(routeTokens), ch, ""
	case strings.HasPrefix(rest, "tokens/") && len(rest) > len("tokens/") && !strings.Contains(rest[len("tokens/"):], "/"):
		return byName(routeToken), ch, rest[len("tokens/"):]
	case rest == "sign":
		return byName(routeSign), ch, ""
	case rest == "settings":
		return byName(routeSettings), ch, ""
	case rest == "uploads":
		return byName(routeUploads), ch, ""
	case strings.HasPrefix(rest, "uploads/") && len(rest) > len("uploads/") && !strings.Contains(rest[len("uploads/"):], "/"):
		return byName(routeUpload), ch, rest[len("uploads/"):]
	case rest == "files" || rest == "files/":
		return byName(routeFileList), ch, ""
	case strings.HasPrefix(rest, "files/"):
		return byName(routeFile), ch, rest[len("files/"):]
	case rest == "kv" || rest == "kv/":
		return byName(routeKVList), ch, ""
	case strings.HasPrefix(rest, "kv/"):
		return byName(routeKV), ch, rest[len("kv/"):]
	}
	return nil, "", ""
}

// secretFlags are the command-line flags whose values are secrets.
var secretFlags = []string{"token", "cluster-key", "encrypt"}

// RedactArgs returns a command line with the values of secretFlags
// replaced by "<redacted>", in every form the flag package accepts
// (-token x, --token x, -token=x, --token=x).
func RedactArgs(args []string) []string {
	out := slices.Clone(args)
	for i := 0; i < len(out); i++ {
		a := out[i]
		if a == "--" {
			break
		}
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if !slices.Contains(secretFlags, name) {
			continue
		}
		if hasValue {
			out[i] = a[:strings.Index(a, "=")+1] + "<redacted>"
		} else if i+1 < len(out) {
			out[i+1] = "<redacted>"
			i++
		}
	}
	return out
}

// servePprof serves Go's profiles (net/http/pprof) for operators chasing a
// performance question; like /metrics it needs the operator token.
func servePprof(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, "/debug/pprof/") {
	case "cmdline":
		// Not pprof.Cmdline: the command line may hold secrets.
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, strings.Join(RedactArgs(os.Args), "\x00"))
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		pprof.Index(w, r)
	}
}
