package state

import (
	"context"
	"sync"
	"time"
)

// clockRefresh is how often the Clock reads Redis's time again.
const clockRefresh = time.Minute

// Clock is the time every Siskin process agrees on: the local clock corrected by its offset
// from Redis's (TIME), read at start and then every clockRefresh. A due time saved by one
// process is compared by another; with each using its own clock, a skew of seconds would make
// steps early or late by as much.
type Clock struct {
	store *Store
	mu    sync.Mutex
	off   time.Duration
	next  time.Time
	busy  bool
}

// Clock returns the Store's Clock, having read Redis's time once (when Redis does not answer,
// the local clock is used until it does).
func (s *Store) Clock(ctx context.Context) *Clock {
	c := &Clock{store: s}
	c.refresh(ctx)
	return c
}

// Now is Redis's time, as well as the local clock can tell it. It never blocks: a refresh
// runs in the background.
func (c *Clock) Now() time.Time {
	local := time.Now()
	c.mu.Lock()
	off, due := c.off, !c.busy && local.After(c.next)
	if due {
		c.busy = true
	}
	c.mu.Unlock()
	if due {
		go c.refresh(context.Background())
	}
	return local.Add(off)
}

// Offset is the current correction of the local clock.
func (c *Clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.off
}

func (c *Clock) refresh(ctx context.Context) {
	ctx, cancel := c.store.call(ctx)
	defer cancel()
	before := time.Now()
	redisNow, err := c.store.rdb.Time(ctx).Result()
	after := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy = false
	c.next = after.Add(clockRefresh)
	if err != nil {
		c.next = after.Add(clockRefresh / 6) // try again sooner
		c.store.log.WarnContext(ctx, "read Redis's time; keeping the last offset", "offset", c.off, "err", err)
		return
	}
	c.off = offsetFrom(before, redisNow, after)
}

// offsetFrom is how far Redis's clock is ahead of ours, taking its reading as made halfway
// through the round trip.
func offsetFrom(before, redisNow, after time.Time) time.Duration {
	mid := before.Add(after.Sub(before) / 2)
	return redisNow.Sub(mid.Round(0))
}
