package server

import (
	"bytes"
	"unicode/utf8"

	"github.com/shardnet/shardnet/fsm"
)

// checkJSONText refuses a JSON body whose strings are not valid UTF-8 or
// hold an escaped lone surrogate ("\ud800"). encoding/json decodes either
// to U+FFFD without a word, so two different transaction keys would become
// one key that the KV path, given the same bytes, refuses with 400
// invalid_key. JSON text must be UTF-8 (RFC 8259 §8.1), so nothing valid is
// refused. The value of a member named "key" is refused as invalid_key, as
// the KV path refuses it; anything else as invalid_request.
func checkJSONText(body []byte) error {
	if utf8.Valid(body) && !bytes.Contains(body, []byte(`\u`)) {
		return nil // the common case: nothing to decode wrongly
	}
	var (
		lastString []byte // the raw text of the last string read
		lastSig    byte   // the last byte outside strings that is not space
	)
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '"':
			isKey := lastSig == ':' && string(lastString) == "key"
			end, bad, ok := scanString(body, i+1)
			if !ok {
				if isKey {
					return refuse(fsm.ErrInvalidKey, "a key in the request body is not valid UTF-8 (byte %d): keys are UTF-8 text, as in the KV path", bad)
				}
				return invalid("the request body is not valid UTF-8 text (byte %d)", bad)
			}
			lastString = body[i+1 : end]
			i = end
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		case c >= utf8.RuneSelf:
			if r, size := utf8.DecodeRune(body[i:]); r == utf8.RuneError && size <= 1 {
				return invalid("the request body is not valid UTF-8 text (byte %d)", i)
			}
			lastSig = c
		default:
			lastSig = c
		}
	}
	return nil
}

// scanString reads a JSON string's contents from start, just after its
// opening quote. It returns the index of the closing quote, or ok false
// and the offset of the first byte (or escape) that is not UTF-8 text. An
// unterminated string or a malformed escape is left for the JSON decoder
// to report.
func scanString(b []byte, start int) (end, bad int, ok bool) {
	for i := start; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			return i, 0, true
		case c == '\\':
			if i+1 < len(b) && b[i+1] == 'u' {
				r, ok := hex4(b, i+2)
				switch {
				case !ok:
					return len(b), 0, true // the decoder reports it
				case r >= 0xD800 && r <= 0xDBFF:
					// A high surrogate needs a low one right after it.
					if i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
						if lo, ok := hex4(b, i+8); ok && lo >= 0xDC00 && lo <= 0xDFFF {
							i += 12
							continue
						}
					}
					return 0, i, false
				case r >= 0xDC00 && r <= 0xDFFF:
					return 0, i, false
				}
				i += 6
				continue
			}
			i += 2
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size <= 1 {
				return 0, i, false
			}
			i += size
		default:
			i++
		}
	}
	return len(b), 0, true
}

// hex4 reads the four hex digits of a \u escape at b[at:].
func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
