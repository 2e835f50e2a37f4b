package state

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
)

// claimScript takes the lease KEYS[1] for ARGV[1] ms with a fresh token from the counter
// KEYS[2], in one round trip; a held lease costs no token. PERSIST undoes the retention expiry
// Delete puts on the counter, should the canary come back. The token is formatted as an
// integer: Lua numbers are doubles and would print large ones in exponent form.
// Returns {1, token} or {0, holder's token, holder's remaining ms}.
var claimScript = redis.NewScript(`
local held = redis.call('GET', KEYS[1])
if held then
  return {0, tonumber(held), redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d', token), 'PX', ARGV[1])
return {1, token}
`)

// seizeScript takes the lease KEYS[1] for ARGV[1] ms with a fresh token, whoever holds it.
var seizeScript = redis.NewScript(`
local token = redis.call('INCR', KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('SET', KEYS[1], string.format('%d', token), 'PX', ARGV[1])
return token
`)

// renewScript extends the lease KEYS[1] to ARGV[2] ms if it still holds token ARGV[1].
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes the lease KEYS[1] only if it still holds token ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Claim takes the canary's lease for ttl (millisecond precision). ErrBusy when another holder
// has it.
func (s *Store) Claim(ctx context.Context, k functions.Key, ttl time.Duration) (functions.Lease, error) {
	if err := validKey(k); err != nil {
		return nil, err
	}
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%w: claim canary %s: lease ttl %s is below 1ms", functions.ErrInvalid, k, ttl)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	keys := []string{s.canaryKey(k, "lease"), s.canaryKey(k, "fence")}
	res, err := claimScript.Run(ctx, s.rdb, keys, ttl.Milliseconds()).Int64Slice()
	if err != nil {
		return nil, redisErr("claim canary "+k.String(), err)
	}
	switch {
	case len(res) == 2 && res[0] == 1:
		return &Lease{store: s, key: k, token: res[1]}, nil
	case len(res) == 3 && res[0] == 0:
		return nil, fmt.Errorf("claim canary %s: held with token %d for another %s: %w",
			k, res[1], time.Duration(res[2])*time.Millisecond, functions.ErrBusy)
	default:
		return nil, fmt.Errorf("claim canary %s: unexpected script reply %v", k, res)
	}
}

// Seize takes the canary's lease for ttl whoever holds it. The holder it displaces finds out
// at its next Renew or Save.
func (s *Store) Seize(ctx context.Context, k functions.Key, ttl time.Duration) (functions.Lease, error) {
	if err := validKey(k); err != nil {
		return nil, err
	}
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%w: seize canary %s: lease ttl %s is below 1ms", functions.ErrInvalid, k, ttl)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	keys := []string{s.canaryKey(k, "lease"), s.canaryKey(k, "fence")}
	token, err := seizeScript.Run(ctx, s.rdb, keys, ttl.Milliseconds()).Int64()
	if err != nil {
		return nil, redisErr("seize canary "+k.String(), err)
	}
	return &Lease{store: s, key: k, token: token}, nil
}

// Lease is a claim on one canary, from Store.Claim or Store.Seize.
type Lease struct {
	store *Store
	key   functions.Key
	token int64
}

var _ functions.Lease = (*Lease)(nil)

// Token identifies this claim: every claim of a canary gets a larger one.
func (l *Lease) Token() int64 { return l.token }

// Renew extends the lease to ttl from now if this holder still has it; ErrLeaseLost if it
// expired or was seized.
func (l *Lease) Renew(ctx context.Context, ttl time.Duration) error {
	s := l.store
	if ttl < time.Millisecond {
		return fmt.Errorf("%w: renew lease of canary %s: ttl %s is below 1ms", functions.ErrInvalid, l.key, ttl)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	n, err := renewScript.Run(ctx, s.rdb, []string{s.canaryKey(l.key, "lease")}, l.token, ttl.Milliseconds()).Int64()
	if err != nil {
		return redisErr(fmt.Sprintf("renew lease %d of canary %s", l.token, l.key), err)
	}
	if n == 0 {
		return fmt.Errorf("renew lease %d of canary %s: %w", l.token, l.key, functions.ErrLeaseLost)
	}
	return nil
}

// Release gives the lease back if this holder still has it. A lease that expired, and perhaps
// went to someone else, is left alone.
func (l *Lease) Release(ctx context.Context) error {
	s := l.store
	ctx, cancel := s.call(ctx)
	defer cancel()
	n, err := releaseScript.Run(ctx, s.rdb, []string{s.canaryKey(l.key, "lease")}, l.token).Int64()
	if err != nil {
		return redisErr(fmt.Sprintf("release lease %d of canary %s", l.token, l.key), err)
	}
	if n == 0 {
		s.log.DebugContext(ctx, "lease already gone at release", "canary", l.key.String(), "token", l.token)
	}
	return nil
}
