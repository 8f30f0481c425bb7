package api

import (
	"net/url"
	"strings"
)

// Keys in URLs (docs/design.md "D11"). A key is the rest of the path after
// /v1/channels/{ch}/kv/. The client escapes it segment by segment: each
// '/'-separated segment goes through url.PathEscape (so '%', '?', '#', space,
// non-ASCII and every other byte outside the path alphabet are
// percent-encoded, a literal "%2F" in a key travels as "%252F"), the '/'
// between segments stays literal, and a segment that is exactly "." or ".."
// is sent as "%2E" or "%2E%2E" so that no proxy or client library resolves
// it as a dot-segment. The server unescapes the escaped path as received
// (never a cleaned one), so "a//b", "a/../b", "/a" and "a/" are all distinct
// keys, and "%2F" in a path means the same key as "/".

// EscapeKey returns key as it goes into a URL path.
func EscapeKey(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		switch s {
		case ".":
			segs[i] = "%2E"
		case "..":
			segs[i] = "%2E%2E"
		default:
			segs[i] = url.PathEscape(s)
		}
	}
	return strings.Join(segs, "/")
}

// UnescapeKey returns the key an escaped path segment names. It undoes
// EscapeKey and accepts any other valid percent-encoding of the same bytes.
func UnescapeKey(escaped string) (string, error) {
	return url.PathUnescape(escaped)
}
