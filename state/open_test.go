package state

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

// summary is what parseURL decided, in comparable form.
type summary struct {
	Kind                       string // single, sentinel, cluster
	Addrs                      []string
	Master                     string
	DB                         int
	Username, Password         string
	SentinelUser, SentinelPass string
	TLS                        bool
	TLSServerName              string
	DialTimeout, ReadTimeout   time.Duration
	ContextTimeouts            bool
}

func summarize(o clientOptions) summary {
	switch {
	case o.single != nil:
		s := o.single
		return summary{Kind: "single", Addrs: []string{s.Addr}, DB: s.DB, Username: s.Username,
			Password: s.Password, TLS: s.TLSConfig != nil, TLSServerName: serverName(s.TLSConfig),
			DialTimeout: s.DialTimeout, ReadTimeout: s.ReadTimeout, ContextTimeouts: s.ContextTimeoutEnabled}
	case o.failover != nil:
		f := o.failover
		return summary{Kind: "sentinel", Addrs: f.SentinelAddrs, Master: f.MasterName, DB: f.DB,
			Username: f.Username, Password: f.Password, SentinelUser: f.SentinelUsername,
			SentinelPass: f.SentinelPassword, TLS: f.TLSConfig != nil,
			TLSServerName: serverName(f.TLSConfig), DialTimeout: f.DialTimeout,
			ReadTimeout: f.ReadTimeout, ContextTimeouts: f.ContextTimeoutEnabled}
	default:
		c := o.cluster
		return summary{Kind: "cluster", Addrs: c.Addrs, Username: c.Username, Password: c.Password,
			TLS: c.TLSConfig != nil, TLSServerName: serverName(c.TLSConfig),
			DialTimeout: c.DialTimeout, ReadTimeout: c.ReadTimeout, ContextTimeouts: c.ContextTimeoutEnabled}
	}
}

func serverName(cfg *tls.Config) string {
	if cfg == nil {
		return ""
	}
	return cfg.ServerName
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url  string
		want summary
	}{
		{"redis://localhost:6379/2", summary{Kind: "single", Addrs: []string{"localhost:6379"}, DB: 2, ContextTimeouts: true}},
		{"redis://:pw@cache", summary{Kind: "single", Addrs: []string{"cache:6379"}, Password: "pw", ContextTimeouts: true}},
		{"rediss://u:pw@cache:6380?dial_timeout=1s", summary{Kind: "single", Addrs: []string{"cache:6380"},
			Username: "u", Password: "pw", TLS: true, TLSServerName: "cache", DialTimeout: time.Second, ContextTimeouts: true}},
		{"redis+sentinel://:s3cret@s1:26379,s2,[::1]:26380/mymaster/3?dial_timeout=1s",
			summary{Kind: "sentinel", Addrs: []string{"s1:26379", "s2:26379", "[::1]:26380"}, Master: "mymaster",
				DB: 3, Password: "s3cret", DialTimeout: time.Second, ContextTimeouts: true}},
		{"redis+sentinel://s1?master_name=m&db=1&sentinel_password=x&read_timeout=3s",
			summary{Kind: "sentinel", Addrs: []string{"s1:26379"}, Master: "m", DB: 1, SentinelPass: "x",
				ReadTimeout: 3 * time.Second, ContextTimeouts: true}},
		{"rediss+sentinel://app:p%40ss@s1,s2/m?sentinel_username=sen&sentinel_password=sp",
			summary{Kind: "sentinel", Addrs: []string{"s1:26379", "s2:26379"}, Master: "m", Username: "app",
				Password: "p@ss", SentinelUser: "sen", SentinelPass: "sp", TLS: true, ContextTimeouts: true}},
		{"redis+cluster://u:p@n1:7000,n2:7001,n3?read_timeout=2s",
			summary{Kind: "cluster", Addrs: []string{"n1:7000", "n2:7001", "n3:6379"}, Username: "u", Password: "p",
				ReadTimeout: 2 * time.Second, ContextTimeouts: true}},
		{"redis+cluster://n1/", summary{Kind: "cluster", Addrs: []string{"n1:6379"}, ContextTimeouts: true}},
		{"rediss+cluster://n1,n2", summary{Kind: "cluster", Addrs: []string{"n1:6379", "n2:6379"}, TLS: true, ContextTimeouts: true}},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			o, err := parseURL(tc.url)
			if err != nil {
				t.Fatalf("parseURL: %v", err)
			}
			if diff := cmp.Diff(tc.want, summarize(o)); diff != "" {
				t.Errorf("parseURL (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	tests := []struct {
		url, want string // want: a part of the message
	}{
		{"localhost:6379", "missing scheme"},
		{"http://:hunter2@h", "unknown scheme"},
		{"redis://:hunter2@h:notaport", "port"},
		{"redis://:hunter2@h?bogus=1", "bogus"},
		{"redis+sentinel://:hunter2@s1", "names no master"},
		{"redis+sentinel://:hunter2@s1/m/x", "invalid database"},
		{"redis+sentinel://:hunter2@s1/m/1/extra", "path must be"},
		{"redis+sentinel://:hunter2@s1/m?master_name=n", "both"},
		{"redis+sentinel://:hunter2@s1/m/1?db=2", "both"},
		{"redis+sentinel://s1/m?password=hunter2", "in the URL"},
		{"redis+sentinel://:hunter2@s1/m?bogus=1", "bogus"},
		{"redis+cluster://:hunter2@n1,n2/0", "no path"},
		{"redis+cluster://:hunter2@n1,,n2", "empty host"},
		{"redis+cluster://:hunter2@n1:,n2", "lacks"},
		{"redis+cluster://:hunter2@n1?bogus=1", "bogus"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			_, err := parseURL(tc.url)
			if !errors.Is(err, functions.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q repeats the password", err)
			}
		})
	}
}
