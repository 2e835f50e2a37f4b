package state

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
)

// Open returns a client for the Redis deployment the URL names, so an operator picks
// standalone, Sentinel or Cluster by URL alone. It does not connect; Store.Ping does.
//
//	redis://[[user]:password@]host[:6379][/db][?option=value&...]
//	rediss://...   (TLS)
//
// Standalone Redis, as go-redis's ParseURL reads it (which also takes unix:///path/to.sock).
//
//	redis+sentinel://[[user]:password@]sentinel1[:26379][,sentinel2[:26379]...]/master[/db][?option=value&...]
//	rediss+sentinel://...   (TLS to the sentinels and to the master)
//
// Sentinel: the master's name is the first path segment (or the master_name option) and the
// database the second (or the db option). The credentials in the URL are the master's (the
// data's); sentinels that require their own take the sentinel_username and sentinel_password
// options. Example: redis+sentinel://:s3cret@sen-0:26379,sen-1:26379,sen-2:26379/mymaster/0
//
//	redis+cluster://[[user]:password@]node1[:6379][,node2[:6379]...][?option=value&...]
//	rediss+cluster://...   (TLS)
//
// Cluster: the nodes are seeds; the client discovers the others. Cluster has no databases,
// so a path is refused.
//
// Options are go-redis's, in snake case (dial_timeout=1s, read_timeout=2s, pool_size=20,
// max_retries=2, ...); an unknown option is an error. Hosts may be IPv6 literals in brackets.
// With TLS to several hosts, each certificate is checked against the host dialled.
// Open always enables ContextTimeoutEnabled, which the Store's per-call timeouts need.
// Errors wrap ErrInvalid and never repeat the password.
func Open(rawURL string) (redis.UniversalClient, error) {
	o, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	switch {
	case o.cluster != nil:
		return redis.NewClusterClient(o.cluster), nil
	case o.failover != nil:
		return redis.NewFailoverClient(o.failover), nil
	default:
		return redis.NewClient(o.single), nil
	}
}

// clientOptions is what a URL asks for: exactly one field is set.
type clientOptions struct {
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

func parseURL(rawURL string) (clientOptions, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return clientOptions{}, fmt.Errorf("%w: redis url: missing scheme (redis://, rediss://, redis+sentinel://, redis+cluster://)", functions.ErrInvalid)
	}
	var o clientOptions
	var err error
	switch scheme {
	case "redis", "rediss", "unix":
		o.single, err = redis.ParseURL(rawURL)
		if err == nil {
			o.single.ContextTimeoutEnabled = true
		}
	case "redis+sentinel", "rediss+sentinel":
		o.failover, err = parseSentinel(strings.TrimSuffix(scheme, "+sentinel"), rest)
	case "redis+cluster", "rediss+cluster":
		o.cluster, err = parseCluster(strings.TrimSuffix(scheme, "+cluster"), rest)
	default:
		return clientOptions{}, fmt.Errorf("%w: redis url: unknown scheme %q (redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster, rediss+cluster)", functions.ErrInvalid, scheme)
	}
	if err != nil {
		return clientOptions{}, fmt.Errorf("%w: redis url: %w", functions.ErrInvalid, withoutURL(err))
	}
	return o, nil
}

// withoutURL drops the URL that net/url repeats in its errors, password included; what is
// left names the part at fault. go-redis's own messages name options, never the password.
func withoutURL(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

// multiHostURL is a URL whose authority lists several hosts, which net/url does not read.
type multiHostURL struct {
	user  *url.Userinfo
	hosts []string // host:port, default port added
	path  []string // non-empty segments
	query url.Values
}

func parseMultiHost(rest, defaultPort string) (multiHostURL, error) {
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	var m multiHostURL
	hostList := authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		// Let net/url decode the userinfo's percent escapes.
		u, err := url.Parse("x://" + authority[:i+1] + "h")
		if err != nil {
			return m, fmt.Errorf("credentials are malformed")
		}
		m.user = u.User
		hostList = authority[i+1:]
	}
	for _, h := range strings.Split(hostList, ",") {
		addr, err := withPort(h, defaultPort)
		if err != nil {
			return m, err
		}
		m.hosts = append(m.hosts, addr)
	}
	u, err := url.Parse("x://h" + tail)
	if err != nil {
		return m, fmt.Errorf("path or query is malformed: %w", err)
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg != "" {
			m.path = append(m.path, seg)
		}
	}
	m.query = u.Query()
	return m, nil
}

func withPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("empty host in host list")
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		if host == "" || port == "" {
			return "", fmt.Errorf("host %q lacks a name or port", h)
		}
		return h, nil
	}
	bare := strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.ContainsAny(bare, "[]") {
		return "", fmt.Errorf("host %q is malformed", h)
	}
	return net.JoinHostPort(bare, defaultPort), nil
}

// goRedisURL rebuilds the single-host URL with addr= options that go-redis's failover and
// cluster parsers read, so every option they know works here too.
func goRedisURL(scheme string, user *url.Userinfo, hosts []string, path string, q url.Values) string {
	for _, h := range hosts[1:] {
		q.Add("addr", h)
	}
	u := url.URL{Scheme: scheme, User: user, Host: hosts[0], Path: path, RawQuery: q.Encode()}
	return u.String()
}

func parseSentinel(scheme, rest string) (*redis.FailoverOptions, error) {
	m, err := parseMultiHost(rest, "26379")
	if err != nil {
		return nil, err
	}
	q := m.query
	if len(m.path) > 2 {
		return nil, fmt.Errorf("path must be /master[/db]")
	}
	if len(m.path) >= 1 {
		if q.Has("master_name") {
			return nil, fmt.Errorf("master name given both in the path and as master_name")
		}
		q.Set("master_name", m.path[0])
	}
	if q.Get("master_name") == "" {
		return nil, fmt.Errorf("sentinel url names no master (redis+sentinel://host:26379/mymaster)")
	}
	if len(m.path) == 2 {
		if q.Has("db") {
			return nil, fmt.Errorf("database given both in the path and as db")
		}
		if _, err := strconv.Atoi(m.path[1]); err != nil {
			return nil, fmt.Errorf("invalid database number %q", m.path[1])
		}
		q.Set("db", m.path[1])
	}
	// go-redis reads the URL's credentials as the sentinels' and the master's from options;
	// ours read the other way round, which is what most operators mean by a password.
	if q.Has("username") || q.Has("password") {
		return nil, fmt.Errorf("give the master's credentials in the URL, not as username/password options")
	}
	if m.user != nil {
		if name := m.user.Username(); name != "" {
			q.Set("username", name)
		}
		if pw, ok := m.user.Password(); ok {
			q.Set("password", pw)
		}
	}
	var sentinelUser *url.Userinfo
	if q.Has("sentinel_username") || q.Has("sentinel_password") {
		pw := q.Get("sentinel_password")
		sentinelUser = url.UserPassword(q.Get("sentinel_username"), pw)
		q.Del("sentinel_username")
		q.Del("sentinel_password")
	}
	o, err := redis.ParseFailoverURL(goRedisURL(scheme, sentinelUser, m.hosts, "", q))
	if err != nil {
		return nil, err
	}
	o.ContextTimeoutEnabled = true
	if o.TLSConfig != nil {
		// go-redis pins the first sentinel's name; empty lets each dial check its own host.
		o.TLSConfig.ServerName = ""
	}
	return o, nil
}

func parseCluster(scheme, rest string) (*redis.ClusterOptions, error) {
	m, err := parseMultiHost(rest, "6379")
	if err != nil {
		return nil, err
	}
	if len(m.path) > 0 {
		return nil, fmt.Errorf("cluster url takes no path: Redis Cluster has no databases")
	}
	o, err := redis.ParseClusterURL(goRedisURL(scheme, m.user, m.hosts, "", m.query))
	if err != nil {
		return nil, err
	}
	o.ContextTimeoutEnabled = true
	if o.TLSConfig != nil {
		o.TLSConfig.ServerName = ""
	}
	return o, nil
}
