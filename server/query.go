package server

import (
	"net/url"
	"slices"
	"strings"
)

// parseQuery parses a raw query string strictly, for an endpoint that knows
// the parameters in known. url.ParseQuery (and so r.URL.Query()) drops a
// pair it cannot parse and keeps going, which once turned "?cas=1;x=2" into
// a write with no cas at all: an unconditional overwrite. Here every pair
// must be name=value (or a bare name) with valid escapes and no ';', name a
// parameter the endpoint takes, and come at most once; anything else is a
// 400 invalid_request naming the parameter, before the request goes on.
// Empty pairs ("a=1&&b=2", a trailing '&') carry nothing and are skipped.
func parseQuery(raw string, known []string) (url.Values, error) {
	q := url.Values{}
	if raw == "" {
		return q, nil
	}
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		if strings.Contains(pair, ";") {
			return nil, invalid("query parameter %q is malformed: ';' does not separate parameters here (use '&', or escape it as %%3B)", shorten(pair))
		}
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return nil, invalid("query parameter %q is malformed: %v", shorten(rawName), err)
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return nil, invalid("query parameter %q has a malformed value: %v", shorten(name), err)
		}
		if !slices.Contains(known, name) {
			if len(known) == 0 {
				return nil, invalid("unknown query parameter %q: this endpoint takes none", shorten(name))
			}
			return nil, invalid("unknown query parameter %q: this endpoint takes %s", shorten(name), strings.Join(known, ", "))
		}
		if q.Has(name) {
			return nil, invalid("query parameter %q is given more than once", name)
		}
		q.Set(name, value)
	}
	return q, nil
}

// shorten keeps an echoed piece of the client's input readable.
func shorten(s string) string {
	const most = 64
	if len(s) <= most {
		return s
	}
	return s[:most] + "..."
}
