// Package state keeps Siskin's release state in Redis: one JSON document per canary written
// with compare-and-set, the due schedule as sorted sets, per-canary leases whose tokens
// every save checks, and event dedupe. It talks to Redis through redis.UniversalClient, so standalone,
// Sentinel and Cluster deployments behave the same (see Open).
//
// Keys, with the default prefix "siskin":
//
//	siskin:{ns/name}:state    the canary's State as JSON (string)
//	siskin:{ns/name}:lease    the lease holder's token (string, PX ttl), checked by Save
//	siskin:{ns/name}:fence    the token counter (INCR)
//	siskin:{ns/name}:releases the kept release ids (list; see history.go)
//	siskin:{ns/name}:release:<id>  one release's step records (list)
//	{siskin}:due              every scheduled canary, score = next step in unix ms (zset)
//	{siskin}:due:releasing    the same, for canaries with a release in flight (zset)
//	siskin:event:<id>         an event id seen by FirstSeen (string, EX ttl)
//	{siskin}:deps:<ns>        the dependents index: object -> canaries (hash; dependents.go)
//	{siskin}:deps-epoch:<ns>  its epoch, incremented by every invalidation (counter)
//	{siskin}:deps-current:<ns> the epoch it was built at (string, PX the index's ttl)
//
// The braces are Redis Cluster hash tags: a canary's keys share one slot, so the Lua scripts
// that touch two of them (Claim) run on one node, and the two schedule sets share another, so
// Schedule updates both in one MULTI. Kubernetes names cannot contain braces, and the tag always
// contains "/", so it is never empty. The prefix must not contain braces.
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
)

// Options tune a Store. The zero value is usable.
type Options struct {
	// Prefix starts every key; default "siskin". Two Siskin installations sharing one Redis
	// need different prefixes.
	Prefix string
	// Timeout bounds every call unless the caller's context ends sooner; default 2 s. The
	// client must honour context deadlines (Open sets ContextTimeoutEnabled).
	Timeout time.Duration
	// Logger receives what the Store skips (default: discarded).
	Logger *slog.Logger
}

const (
	defaultPrefix  = "siskin"
	defaultTimeout = 2 * time.Second
	// fenceRetention keeps a deleted canary's token counter this long, far beyond any lease,
	// so a canary re-created soon after never hands out a token a stale holder still has.
	fenceRetention = 24 * time.Hour
)

// Store implements functions.Store on Redis.
type Store struct {
	rdb         redis.UniversalClient
	prefix      string
	timeout     time.Duration
	log         *slog.Logger
	replicaInfo replicaCount
}

var _ functions.Store = (*Store)(nil)

// New returns a Store on rdb. The caller owns rdb and closes it.
func New(rdb redis.UniversalClient, opts Options) *Store {
	s := &Store{rdb: rdb, prefix: opts.Prefix, timeout: opts.Timeout, log: opts.Logger}
	if s.prefix == "" {
		s.prefix = defaultPrefix
	}
	if s.timeout <= 0 {
		s.timeout = defaultTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

func (s *Store) canaryKey(k functions.Key, what string) string {
	return s.prefix + ":{" + k.String() + "}:" + what
}

func (s *Store) dueKey() string       { return "{" + s.prefix + "}:due" }
func (s *Store) releasingKey() string { return "{" + s.prefix + "}:due:releasing" }
func (s *Store) eventKey(id string) string {
	return s.prefix + ":event:" + id
}

// call bounds one operation by the Store's timeout, or the caller's deadline if sooner.
func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// validKey rejects keys that could not be read back from the schedule ("namespace/name").
func validKey(k functions.Key) error {
	parsed, err := functions.ParseKey(k.String())
	if err != nil || parsed != k {
		return fmt.Errorf("%w: canary key %q is not namespace/name", functions.ErrInvalid, k.String())
	}
	return nil
}

// Ping checks that Redis answers, for /readyz.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return redisErr("ping redis", err)
	}
	return nil
}

// Load returns the canary's state, or ErrNotFound.
func (s *Store) Load(ctx context.Context, k functions.Key) (functions.State, error) {
	if err := validKey(k); err != nil {
		return functions.State{}, err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	raw, err := s.rdb.Get(ctx, s.canaryKey(k, "state")).Bytes()
	if errors.Is(err, redis.Nil) {
		return functions.State{}, fmt.Errorf("load state of canary %s: %w", k, functions.ErrNotFound)
	}
	if err != nil {
		return functions.State{}, redisErr("load state of canary "+k.String(), err)
	}
	var st functions.State
	if err := json.Unmarshal(raw, &st); err != nil {
		// Not retryable and not ErrNotFound: overwriting what we cannot read is a human's call.
		return functions.State{}, fmt.Errorf("decode state of canary %s: %w", k, err)
	}
	return st, nil
}

// saveScript writes ARGV[2] to KEYS[1] if the stored version equals ARGV[1] (0: nothing
// stored) and, when ARGV[3] is not empty, the lease KEYS[2] still holds that token, in one
// round trip. Save encodes Version first, so an anchored match reads it without decoding the
// whole document; cjson covers anything written otherwise.
// Returns {1, new version}, {0, stored version} or {2, 0} for a lost lease.
var saveScript = redis.NewScript(`
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return {2, 0}
end
local cur = redis.call('GET', KEYS[1])
local v = 0
if cur then
  v = tonumber(string.match(cur, '^{"version":(%d+)[,}]'))
  if not v then
    v = tonumber(cjson.decode(cur)['version']) or 0
  end
end
if v ~= tonumber(ARGV[1]) then
  return {0, v}
end
redis.call('SET', KEYS[1], ARGV[2])
return {1, v + 1}
`)

// Save writes next if the stored version still equals next.Version and, with a lease, the
// lease is still held; it returns the saved state (Version bumped). A stale writer gets
// ErrConflict, a writer whose lease was lost ErrLeaseLost.
//
// A save can succeed while its reply is lost (a timeout, a dropped connection, or the
// client's own retry finding its first attempt's write). Reporting that as a failure would
// have the caller step again from the old state, early. So when the outcome is unknown, the
// stored document is read back: if it is the one this call wrote, the save succeeded.
func (s *Store) Save(ctx context.Context, k functions.Key, next functions.State, lease functions.Lease) (functions.State, error) {
	return s.save(ctx, s.rdb, k, next, lease)
}

func (s *Store) save(ctx context.Context, on redis.Scripter, k functions.Key, next functions.State, lease functions.Lease) (functions.State, error) {
	if err := validKey(k); err != nil {
		return functions.State{}, err
	}
	if next.Version < 0 {
		return functions.State{}, fmt.Errorf("%w: save state of canary %s: negative version %d", functions.ErrInvalid, k, next.Version)
	}
	saved := next
	saved.Version = next.Version + 1
	raw, err := json.Marshal(saved)
	if err != nil {
		return functions.State{}, fmt.Errorf("%w: encode state of canary %s: %w", functions.ErrInvalid, k, err)
	}
	token := ""
	if lease != nil {
		token = strconv.FormatInt(lease.Token(), 10)
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	keys := []string{s.canaryKey(k, "state"), s.canaryKey(k, "lease")}
	res, err := saveScript.Run(cctx, on, keys, next.Version, raw, token).Int64Slice()
	if err != nil {
		if s.wrote(ctx, k, raw) {
			return saved, nil
		}
		return functions.State{}, redisErr("save state of canary "+k.String(), err)
	}
	switch {
	case len(res) != 2:
		return functions.State{}, fmt.Errorf("save state of canary %s: unexpected script reply %v", k, res)
	case res[0] == 1:
		return saved, nil
	case res[0] == 2:
		return functions.State{}, fmt.Errorf("save state of canary %s: lease %s is no longer held: %w", k, token, functions.ErrLeaseLost)
	case res[1] == saved.Version && s.wrote(ctx, k, raw):
		// The client retried a save whose first attempt wrote.
		return saved, nil
	}
	return functions.State{}, fmt.Errorf("save state of canary %s: stored version %d, writer started from %d: %w",
		k, res[1], next.Version, functions.ErrConflict)
}

// wrote reports whether the stored state is exactly raw, on a context of its own: the
// caller's may be the one that just expired.
func (s *Store) wrote(ctx context.Context, k functions.Key, raw []byte) bool {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	cur, err := s.rdb.Get(rctx, s.canaryKey(k, "state")).Bytes()
	return err == nil && bytes.Equal(cur, raw)
}

// Delete forgets the canary's state, schedule, lease and history. The token counter expires later
// (fenceRetention) instead of at once, so tokens keep growing if the canary comes back.
func (s *Store) Delete(ctx context.Context, k functions.Key) error {
	if err := validKey(k); err != nil {
		return err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	// Two slots in Cluster (the canary's and the schedule's): a plain pipeline, one round trip
	// per node. Each command is idempotent, so a partial failure is repaired by a retry.
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, s.dueKey(), k.String())
		p.ZRem(ctx, s.releasingKey(), k.String())
		p.Del(ctx, s.canaryKey(k, "state"), s.canaryKey(k, "lease"))
		p.PExpire(ctx, s.canaryKey(k, "fence"), fenceRetention)
		return nil
	})
	if err != nil {
		return redisErr("delete state of canary "+k.String(), err)
	}
	return s.deleteHistory(ctx, k)
}

// redisErr names the operation and classifies err: transient failures (network, timeouts,
// failover, cluster resharding, a busy or loading server) wrap ErrUnavailable; an error the
// server will repeat (wrong type, bad auth, unknown command) does not, so it is not retried
// forever.
func redisErr(op string, err error) error {
	if transient(err) {
		return fmt.Errorf("%s: %w: %w", op, functions.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func transient(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true // network, timeout, pool exhausted, closed connection
	}
	if _, moved := redis.IsMovedError(err); moved {
		return true
	}
	if _, ask := redis.IsAskError(err); ask {
		return true
	}
	return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) || redis.IsOOMError(err) || redis.HasErrorPrefix(err, "BUSY")
}
