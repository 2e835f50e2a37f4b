package handlers

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The dashboard's session: the operator's bearer token is given once, on the login form, and
// exchanged for a cookie that holds no token. The cookie is signed with a key derived from
// the token that opened it, so every replica verifies it without shared state, and a token
// removed from --api-token closes its sessions. A CSRF token, derived from the session, goes
// with every gate call.

const (
	sessionCookie     = "siskin_session"
	sessionPath       = "/ui/"
	defaultSessionTTL = 8 * time.Hour
	csrfHeader        = "X-CSRF-Token"
)

var errNoSession = errors.New("no valid session")

// session is a verified session cookie.
type session struct {
	payload string // "v1|<expiry unix>|<random>"
	key     []byte
}

// csrf is the token a page of this session sends with its gate calls.
func (s session) csrf() string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("csrf|" + s.payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s session) csrfOK(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.csrf())) == 1
}

// sessionKey is the signing key of sessions opened with token.
func sessionKey(token string) []byte {
	sum := sha256.Sum256([]byte("siskin-ui-session\x00" + token))
	return sum[:]
}

func signSession(key []byte, payload string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// newSession opens a session with the key of the token that logged in.
func newSession(key []byte, now time.Time, ttl time.Duration) (session, string) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	payload := "v1|" + strconv.FormatInt(now.Add(ttl).Unix(), 10) + "|" + hex.EncodeToString(b)
	return session{payload: payload, key: key}, signSession(key, payload)
}

// verifySession checks a cookie value against the keys of every valid token.
func verifySession(value string, keys [][]byte, now time.Time) (session, error) {
	enc, mac, ok := strings.Cut(value, ".")
	if !ok {
		return session{}, errNoSession
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return session{}, errNoSession
	}
	payload := string(raw)
	var found []byte
	for _, k := range keys {
		if subtle.ConstantTimeCompare([]byte(signSession(k, payload)), []byte(enc+"."+mac)) == 1 {
			found = k
		}
	}
	if found == nil {
		return session{}, errNoSession
	}
	parts := strings.Split(payload, "|")
	if len(parts) != 3 || parts[0] != "v1" {
		return session{}, errNoSession
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || now.Unix() >= exp {
		return session{}, errNoSession
	}
	return session{payload: payload, key: found}, nil
}

func setSessionCookie(w http.ResponseWriter, value string, ttl time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: value, Path: sessionPath, MaxAge: int(ttl.Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func clearSessionCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: sessionPath, MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}
