package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
)

// Schedule sets when the canary's next step is due (millisecond precision). releasing keeps
// it in the releasing set too; false takes it out.
func (s *Store) Schedule(ctx context.Context, k functions.Key, at time.Time, releasing bool) error {
	if err := validKey(k); err != nil {
		return err
	}
	member := redis.Z{Score: float64(at.UnixMilli()), Member: k.String()}
	ctx, cancel := s.call(ctx)
	defer cancel()
	// Both sets share a hash tag, so MULTI is atomic in Cluster too: a tick never sees a
	// canary in one set at one time and in the other at another.
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, s.dueKey(), member)
		if releasing {
			p.ZAdd(ctx, s.releasingKey(), member)
		} else {
			p.ZRem(ctx, s.releasingKey(), k.String())
		}
		return nil
	})
	if err != nil {
		return redisErr("schedule canary "+k.String(), err)
	}
	return nil
}

// Due lists up to limit canaries whose step is due at now, earliest first.
func (s *Store) Due(ctx context.Context, now time.Time, limit int) ([]functions.Key, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: list due canaries: limit %d is not positive", functions.ErrInvalid, limit)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key:     s.dueKey(),
		Start:   "-inf",
		Stop:    strconv.FormatInt(now.UnixMilli(), 10),
		ByScore: true,
		Count:   int64(limit),
	}).Result()
	if err != nil {
		return nil, redisErr("list due canaries", err)
	}
	keys := make([]functions.Key, 0, len(members))
	for _, m := range members {
		k, err := functions.ParseKey(m)
		if err != nil {
			// Only Schedule writes here, with validated keys; skip rather than block the tick.
			s.log.WarnContext(ctx, "skipping unreadable schedule entry", "member", m, "err", err)
			continue
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// NextDue is the earliest scheduled step (of releasing canaries only, if releasingOnly); ok is
// false when nothing is scheduled.
func (s *Store) NextDue(ctx context.Context, releasingOnly bool) (functions.Key, time.Time, bool, error) {
	key := s.dueKey()
	if releasingOnly {
		key = s.releasingKey()
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	zs, err := s.rdb.ZRangeWithScores(ctx, key, 0, 0).Result()
	if err != nil {
		return functions.Key{}, time.Time{}, false, redisErr("read next due canary", err)
	}
	if len(zs) == 0 {
		return functions.Key{}, time.Time{}, false, nil
	}
	member, _ := zs[0].Member.(string)
	k, err := functions.ParseKey(member)
	if err != nil {
		return functions.Key{}, time.Time{}, false, fmt.Errorf("read next due canary: schedule entry %q: %w", member, err)
	}
	return k, time.UnixMilli(int64(zs[0].Score)), true, nil
}

// DueAt is when the canary's next step is scheduled; ok is false when it is not.
func (s *Store) DueAt(ctx context.Context, k functions.Key) (time.Time, bool, error) {
	if err := validKey(k); err != nil {
		return time.Time{}, false, err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	score, err := s.rdb.ZScore(ctx, s.dueKey(), k.String()).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, redisErr("read schedule of canary "+k.String(), err)
	}
	return time.UnixMilli(int64(score)), true, nil
}

// FirstSeen records an event id for ttl (millisecond precision) and reports whether this is
// its first sighting.
func (s *Store) FirstSeen(ctx context.Context, id string, ttl time.Duration) (bool, error) {
	if id == "" {
		return false, fmt.Errorf("%w: record event: empty id", functions.ErrInvalid)
	}
	if ttl < time.Millisecond {
		return false, fmt.Errorf("%w: record event %q: ttl %s is below 1ms", functions.ErrInvalid, id, ttl)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	first, err := s.rdb.SetNX(ctx, s.eventKey(id), 1, ttl).Result()
	if err != nil {
		return false, redisErr(fmt.Sprintf("record event %q", id), err)
	}
	return first, nil
}

// Seen reports whether FirstSeen recorded id and its ttl has not run out.
func (s *Store) Seen(ctx context.Context, id string) (bool, error) {
	if id == "" {
		return false, fmt.Errorf("%w: look up event: empty id", functions.ErrInvalid)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	n, err := s.rdb.Exists(ctx, s.eventKey(id)).Result()
	if err != nil {
		return false, redisErr(fmt.Sprintf("look up event %q", id), err)
	}
	return n > 0, nil
}

// Forget removes an event id recorded by FirstSeen, so a failed delivery can be retried.
func (s *Store) Forget(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("%w: forget event: empty id", functions.ErrInvalid)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.rdb.Del(ctx, s.eventKey(id)).Err(); err != nil {
		return redisErr(fmt.Sprintf("forget event %q", id), err)
	}
	return nil
}

func (s *Store) dispatcherKey(scope string) string { return "{" + s.prefix + "}:dispatcher:" + scope }

// dispatchingKey holds, in Unix milliseconds, until when the newest dispatcher for the scope
// keeps dispatching: 0 once it stopped early, a time past once its window ended.
func (s *Store) dispatchingKey(scope string) string {
	return "{" + s.prefix + "}:dispatching-until:" + scope
}

var beginDispatchScript = redis.NewScript(`
local gen = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1])
return gen
`)

// BeginDispatch records that a new dispatcher started for scope (a namespace, or "*") and
// dispatches until until, and returns its generation: an older dispatcher still running sees
// a larger one and stops.
func (s *Store) BeginDispatch(ctx context.Context, scope string, until time.Time) (int64, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	gen, err := beginDispatchScript.Run(ctx, s.rdb, []string{s.dispatcherKey(scope), s.dispatchingKey(scope)}, until.UnixMilli()).Int64()
	if err != nil {
		return 0, redisErr("begin dispatch", err)
	}
	return gen, nil
}

// DispatchGeneration is the generation of the newest dispatcher for scope.
func (s *Store) DispatchGeneration(ctx context.Context, scope string) (int64, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	gen, err := s.rdb.Get(ctx, s.dispatcherKey(scope)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, redisErr("read dispatch generation", err)
	}
	return gen, nil
}

var endDispatchScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], 0)
  return 1
end
return 0
`)

// EndDispatch records that dispatcher gen stopped before its window ended (nothing was
// releasing), unless a newer one has started since.
func (s *Store) EndDispatch(ctx context.Context, scope string, gen int64) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	keys := []string{s.dispatcherKey(scope), s.dispatchingKey(scope)}
	if err := endDispatchScript.Run(ctx, s.rdb, keys, strconv.FormatInt(gen, 10)).Err(); err != nil {
		return redisErr("end dispatch", err)
	}
	return nil
}

var reserveDispatchScript = redis.NewScript(`
local running = tonumber(redis.call('GET', KEYS[1]) or '0')
if running > tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`)

// ReserveDispatch reports whether a dispatcher must be woken for a step due at dueAt: none is
// dispatching past it. When one must, the reservation says that one is dispatching until
// until, so the other steps of a fleet released at once wake it only once.
func (s *Store) ReserveDispatch(ctx context.Context, scope string, dueAt, until time.Time) (bool, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	n, err := reserveDispatchScript.Run(ctx, s.rdb, []string{s.dispatchingKey(scope)}, dueAt.UnixMilli(), until.UnixMilli()).Int()
	if err != nil {
		return false, redisErr("reserve dispatch", err)
	}
	return n == 1, nil
}

// Postpone moves a scheduled canary's next step to at, leaving it in or out of the releasing
// set as it is; a canary not scheduled stays unscheduled. The dispatcher postpones a step it
// has sent, so that it is sent again only if it was lost.
func (s *Store) Postpone(ctx context.Context, k functions.Key, at time.Time) error {
	if err := validKey(k); err != nil {
		return err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	member := redis.Z{Score: float64(at.UnixMilli()), Member: k.String()}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAddXX(ctx, s.dueKey(), member)
		p.ZAddXX(ctx, s.releasingKey(), member)
		return nil
	})
	if err != nil {
		return redisErr("postpone canary "+k.String(), err)
	}
	return nil
}
