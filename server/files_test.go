package server

import (
	"errors"
	"testing"

	"github.com/shardnet/shardnet/fsm"
)

// Types a browser would run or render with script are served as
// attachments; media, images and plain data play inline.
func TestRunnableTypes(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/html":                true,
		"text/html; charset=utf-8": true,
		"application/xhtml+xml":    true,
		"image/svg+xml":            true,
		"application/xml":          true,
		"text/xml":                 true,
		"application/atom+xml":     true,
		"text/javascript":          true,
		"application/javascript":   true,
		"application/ecmascript":   true,
		"application/pdf":          true,
		"application/wasm":         true,
		"not a type":               true,
		"video/mp4":                false,
		"video/webm":               false,
		"image/png":                false,
		"image/jpeg":               false,
		"audio/mpeg":               false,
		"application/octet-stream": false,
		"text/plain":               false,
		"application/json":         false,
	} {
		if got := runnable(ct); got != want {
			t.Errorf("runnable(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestParseFilePath(t *testing.T) {
	for raw, ok := range map[string]bool{
		"a.png":          true,
		"img/2024/a.png": true,
		"sp%20ace.txt":   true,
		"%C3%A9t%C3%A9":  true,
		"a/%2E%2E/b":     false, // ".." escaped is still ".."
		"a/../b":         false,
		"./a":            false,
		"a//b":           false,
		"a/":             false,
		"%2Fa":           false, // a leading slash
		"a%00b":          false,
		"a%0Ab":          false,
		"%ZZ":            false,
		"":               false,
	} {
		_, err := parseFilePath(raw)
		if (err == nil) != ok {
			t.Errorf("parseFilePath(%q) = %v, want ok=%v", raw, err, ok)
		}
		if err != nil && !errors.Is(err, fsm.ErrInvalidPath) {
			t.Errorf("parseFilePath(%q): %v is not ErrInvalidPath", raw, err)
		}
	}
}

func TestParseETag(t *testing.T) {
	for v, ok := range map[string]bool{
		`"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"`:   true,
		`0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef`:     true,
		`W/"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"`: true,
		`"ab"`: false,
		`"*"`:  false,
		``:     false,
	} {
		if _, err := parseETag(v); (err == nil) != ok {
			t.Errorf("parseETag(%q) = %v, want ok=%v", v, err, ok)
		}
	}
}
