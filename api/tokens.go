package api

import "strings"

// TokenPrefix starts every channel token: "snc_<id>_<secret>", where id is
// lower-case hex and secret is 256 random bits in unpadded base64url (which
// may itself hold '_'). The id names the token in listings, revocations and
// signed links; only the secret's SHA-256 hash is kept by the cluster.
const TokenPrefix = "snc_"

// FormatToken joins a token's id and secret.
func FormatToken(id, secret string) string { return TokenPrefix + id + "_" + secret }

// ParseToken splits a channel token into its id and secret; ok is false
// for anything else (the operator token, say).
func ParseToken(tok string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, TokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || id == "" || secret == "" || strings.Trim(id, "0123456789abcdef") != "" {
		return "", "", false
	}
	return id, secret, true
}
