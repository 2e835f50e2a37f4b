package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// The decoders read webhook bodies through a small JSON tree rather than tagged structs:
// encoding/json names neither array indexes nor the field under a wrong type precisely enough
// for a 400 that tells the sender what to fix ("alerts[0].labels: expected object, got
// string"), and most senders need tolerant reading of a few fields out of large documents.

// fieldError is input that can never decode, and where: "alerts[0].labels: expected object,
// got string". It is a functions.ErrInvalid.
type fieldError struct{ path, msg string }

func (e *fieldError) Error() string { return e.path + ": " + e.msg }
func (e *fieldError) Unwrap() error { return functions.ErrInvalid }

func invalid(path, format string, args ...any) error {
	return &fieldError{path: path, msg: fmt.Sprintf(format, args...)}
}

// jsonDoc keeps the first error met while reading one document, so a decoder reads its fields
// in a straight line and checks once at the end.
type jsonDoc struct{ err error }

// jsonNode is one value of a decoded document and the path that leads to it. val is nil when
// the value is absent or null; otherwise it is a map[string]any, []any, string, json.Number or
// bool.
type jsonNode struct {
	doc  *jsonDoc
	path string
	val  any
}

// maxQuoted bounds how much of a sender's value an error message repeats.
const maxQuoted = 160

// parseJSON decodes body as one JSON value. root names the document in error messages
// ("data" for a CloudEvent's data); empty means the request body.
func parseJSON(body []byte, root string) (jsonNode, error) {
	name := root
	if name == "" {
		name = "body"
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return jsonNode{}, invalid(name, "empty, want a JSON object")
	}
	if err := checkShape(body, name); err != nil {
		return jsonNode{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return jsonNode{}, jsonSyntaxError(name, err, len(body))
	}
	end := dec.InputOffset()
	if rest := bytes.TrimLeft(body[end:], " \t\r\n"); len(rest) > 0 {
		return jsonNode{}, invalid(name, "invalid JSON at offset %d: data after the top-level value", len(body)-len(rest))
	}
	return jsonNode{doc: &jsonDoc{}, path: root, val: v}, nil
}

// A 1 MiB body of tiny objects and arrays ("[{},{},…]") decodes into hundreds of thousands of
// maps and slices, tens of times its size in memory. No webhook Siskin reads comes near these
// bounds (Alertmanager's largest groups hold a few hundred alerts of a dozen labels each).
const (
	maxJSONContainers = 50_000
	maxJSONDepth      = 64
)

// checkShape bounds the objects and arrays a body would decode into, before decoding it, in
// one pass that skips strings.
func checkShape(body []byte, name string) error {
	containers, depth, inString, escaped := 0, 0, false, false
	for _, b := range body {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
		case b == '"':
			inString = true
		case b == '{' || b == '[':
			containers++
			depth++
			if containers > maxJSONContainers {
				return invalid(name, "more than %d JSON objects and arrays", maxJSONContainers)
			}
			if depth > maxJSONDepth {
				return invalid(name, "JSON nested deeper than %d levels", maxJSONDepth)
			}
		case b == '}' || b == ']':
			depth--
		}
	}
	return nil
}

func jsonSyntaxError(name string, err error, size int) error {
	var syntax *json.SyntaxError
	switch {
	case errors.As(err, &syntax):
		return invalid(name, "invalid JSON at offset %d: %s", syntax.Offset, syntax.Error())
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid(name, "invalid JSON at offset %d: unexpected end of input", size)
	default:
		return invalid(name, "invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
}

// err is the first error met in the node's document.
func (n jsonNode) err() error {
	if n.doc == nil {
		return nil
	}
	return n.doc.err
}

// fail records a problem with this node, unless the document already has one.
func (n jsonNode) fail(format string, args ...any) {
	if n.doc == nil || n.doc.err != nil {
		return
	}
	path := n.path
	if path == "" {
		path = "body"
	}
	n.doc.err = invalid(path, format, args...)
}

func (n jsonNode) present() bool { return n.val != nil }

func (n jsonNode) isObject() bool {
	_, ok := n.val.(map[string]any)
	return ok
}

// has reports whether the node is an object with the key (null values included).
func (n jsonNode) has(key string) bool {
	m, ok := n.val.(map[string]any)
	if !ok {
		return false
	}
	_, ok = m[key]
	return ok
}

// get is the member key of an object; absent when the node is absent. A node that is there
// but is not an object is an error.
func (n jsonNode) get(key string) jsonNode {
	child := jsonNode{doc: n.doc, path: joinPath(n.path, key)}
	switch m := n.val.(type) {
	case nil:
	case map[string]any:
		child.val = m[key]
	default:
		n.fail("expected object, got %s", jsonKind(n.val))
	}
	return child
}

// object checks that a required node is an object.
func (n jsonNode) object() jsonNode {
	switch n.val.(type) {
	case map[string]any:
	case nil:
		n.fail("missing, want an object")
	default:
		n.fail("expected object, got %s", jsonKind(n.val))
	}
	return n
}

// items are the elements of an array; none when absent.
func (n jsonNode) items() []jsonNode {
	switch a := n.val.(type) {
	case nil:
		return nil
	case []any:
		out := make([]jsonNode, len(a))
		for i, v := range a {
			out[i] = jsonNode{doc: n.doc, path: n.path + "[" + strconv.Itoa(i) + "]", val: v}
		}
		return out
	default:
		n.fail("expected array, got %s", jsonKind(n.val))
		return nil
	}
}

// keys are an object's member names, sorted.
func (n jsonNode) keys() []string {
	m, ok := n.val.(map[string]any)
	if !ok {
		if n.val != nil {
			n.fail("expected object, got %s", jsonKind(n.val))
		}
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// str is a string member; "" when absent or null.
func (n jsonNode) str() string {
	switch s := n.val.(type) {
	case nil:
		return ""
	case string:
		return s
	default:
		n.fail("expected string, got %s", jsonKind(n.val))
		return ""
	}
}

// requiredStr is a string that must be there and not be empty.
func (n jsonNode) requiredStr() string {
	s := n.str()
	if s == "" && n.err() == nil {
		n.fail("missing, want a non-empty string")
	}
	return s
}

// oneOf is a required string from a closed set.
func (n jsonNode) oneOf(allowed ...string) string {
	s := n.requiredStr()
	if s != "" && !slices.Contains(allowed, s) {
		n.fail("got %s, want one of %s", quote(s), strings.Join(allowed, ", "))
	}
	return s
}

// stringMap is an object whose members are all strings (labels, annotations).
func (n jsonNode) stringMap() map[string]string {
	switch m := n.val.(type) {
	case nil:
		return nil
	case map[string]any:
		out := make(map[string]string, len(m))
		for _, k := range n.keys() {
			out[k] = n.get(k).str()
		}
		return out
	default:
		n.fail("expected object, got %s", jsonKind(n.val))
		return nil
	}
}

// time is an RFC 3339 string; zero when absent.
func (n jsonNode) time() time.Time {
	s := n.str()
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		n.fail("expected an RFC 3339 time, got %s", quote(s))
		return time.Time{}
	}
	return t
}

// latestUnix is 9999-12-31T23:59:59Z: later Unix times are garbage, not timestamps.
const latestUnix = 253402300799

// unixTime is a number of seconds since the epoch, integer or not; zero when absent.
func (n jsonNode) unixTime() time.Time {
	num, ok := n.number()
	if !ok {
		return time.Time{}
	}
	f, err := num.Float64()
	if err != nil || f < 0 || f > latestUnix {
		n.fail("expected Unix seconds, got %s", quote(num.String()))
		return time.Time{}
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}

// count is a non-negative integer.
func (n jsonNode) count() uint64 {
	num, ok := n.number()
	if !ok {
		return 0
	}
	c, err := strconv.ParseUint(num.String(), 10, 64)
	if err != nil {
		n.fail("expected a non-negative integer, got %s", quote(num.String()))
	}
	return c
}

func (n jsonNode) number() (json.Number, bool) {
	switch v := n.val.(type) {
	case nil:
		return "", false
	case json.Number:
		return v, true
	default:
		n.fail("expected number, got %s", jsonKind(n.val))
		return "", false
	}
}

// allowOnly rejects members outside allowed: strict decoding of Siskin's own schemas.
func (n jsonNode) allowOnly(allowed ...string) {
	for _, k := range n.keys() {
		if !slices.Contains(allowed, k) {
			n.get(k).fail("unknown field (want only %s)", strings.Join(allowed, ", "))
			return
		}
	}
}

func joinPath(path, key string) string {
	if !plainKey(key) {
		return path + "[" + quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// plainKey is a key that reads unambiguously after a dot.
func plainKey(k string) bool {
	if k == "" || len(k) > maxQuoted {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// quote repeats a sender's value in an error: quoted (no raw newlines in logs) and bounded.
func quote(s string) string {
	if len(s) > maxQuoted {
		cut := maxQuoted
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// plain repeats a sender's name (a CloudEvent type) as is when it is short and printable, and
// quoted otherwise.
func plain(s string) string {
	if len(s) > maxQuoted || strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		return quote(s)
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
