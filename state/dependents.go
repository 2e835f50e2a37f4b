package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The dependents index of a namespace (functions.DependentIndex) is three keys in the schedule's
// slot: the entries (a hash, object -> canaries), the epoch (a counter that every invalidation
// increments) and the current mark (the epoch the entries were built at, with the index's
// time to live). The index is current while the mark exists and equals the epoch.

func (s *Store) dependentsKey(ns string) string { return "{" + s.prefix + "}:deps:" + ns }
func (s *Store) dependentsEpochKey(ns string) string {
	return "{" + s.prefix + "}:deps-epoch:" + ns
}
func (s *Store) dependentsMarkKey(ns string) string {
	return "{" + s.prefix + "}:deps-current:" + ns
}

// Dependents returns the entry of object in the index of ns, and whether the index is current.
func (s *Store) Dependents(ctx context.Context, ns, object string) (string, bool, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	var entry, epoch, mark *redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		entry = p.HGet(ctx, s.dependentsKey(ns), object)
		epoch = p.Get(ctx, s.dependentsEpochKey(ns))
		mark = p.Get(ctx, s.dependentsMarkKey(ns))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", false, redisErr("read dependents of "+ns+" "+object, err)
	}
	m, merr := mark.Result()
	if errors.Is(merr, redis.Nil) {
		return "", false, nil
	}
	e, eerr := epoch.Result()
	if errors.Is(eerr, redis.Nil) {
		e = "0"
	}
	if m != e {
		return "", false, nil
	}
	v, verr := entry.Result()
	if errors.Is(verr, redis.Nil) {
		return "", true, nil
	}
	return v, true, nil
}

// DependentsEpoch is the epoch of the index of ns (0 when never invalidated).
func (s *Store) DependentsEpoch(ctx context.Context, ns string) (int64, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	n, err := s.rdb.Get(ctx, s.dependentsEpochKey(ns)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, redisErr("read dependents epoch of "+ns, err)
	}
	return n, nil
}

// replaceDependentsScript: KEYS entries, epoch, mark; ARGV epoch, ttl ms, then field, value
// pairs. It replaces the entries only if no invalidation came since the epoch was read.
var replaceDependentsScript = redis.NewScript(`
local epoch = redis.call('GET', KEYS[2]) or '0'
if epoch ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return 1
`)

// ReplaceDependents writes the whole index of ns, current for ttl, if its epoch is still epoch.
func (s *Store) ReplaceDependents(ctx context.Context, ns string, epoch int64, entries map[string]string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, fmt.Errorf("replace dependents of %s: ttl %s is below 1ms", ns, ttl)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	args := make([]any, 0, 2+2*len(entries))
	args = append(args, strconv.FormatInt(epoch, 10), ttl.Milliseconds())
	for obj, v := range entries {
		args = append(args, obj, v)
	}
	keys := []string{s.dependentsKey(ns), s.dependentsEpochKey(ns), s.dependentsMarkKey(ns)}
	n, err := replaceDependentsScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return false, redisErr("replace dependents of "+ns, err)
	}
	return n == 1, nil
}

// InvalidateDependents makes the index of ns stale until it is rebuilt.
func (s *Store) InvalidateDependents(ctx context.Context, ns string) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.rdb.Incr(ctx, s.dependentsEpochKey(ns)).Err(); err != nil {
		return redisErr("invalidate dependents of "+ns, err)
	}
	return nil
}
