package state

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
)

// The history of a canary, beside its state and in its slot:
//
//	siskin:{ns/name}:releases        the kept release ids, oldest first (list)
//	siskin:{ns/name}:release:<id>    that release's step records as JSON, oldest first (list)

var _ functions.History = (*Store)(nil)

// appendScript adds ARGV[2] to the release KEYS[2]; a release id ARGV[1] not yet last in
// KEYS[1] starts a release, and releases past ARGV[3] are dropped with their steps (their keys
// are ARGV[5]..id, in the same slot). A release keeps its last ARGV[4] steps.
var appendScript = redis.NewScript(`
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  while redis.call('LLEN', KEYS[1]) > tonumber(ARGV[3]) do
    local old = redis.call('LPOP', KEYS[1])
    redis.call('DEL', ARGV[5] .. old)
  end
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
return 1
`)

// deleteHistoryScript removes every release KEYS[1] lists, then the list.
var deleteHistoryScript = redis.NewScript(`
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
return 1
`)

func (s *Store) releaseKeyPrefix(k functions.Key) string { return s.canaryKey(k, "release:") }

// AppendStep records one step of a release.
func (s *Store) AppendStep(ctx context.Context, k functions.Key, release string, r functions.StepRecord) error {
	if err := validKey(k); err != nil {
		return err
	}
	if release == "" {
		return fmt.Errorf("%w: history of canary %s: empty release id", functions.ErrInvalid, k)
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("%w: encode step record of canary %s: %w", functions.ErrInvalid, k, err)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	keys := []string{s.canaryKey(k, "releases"), s.releaseKeyPrefix(k) + release}
	err = appendScript.Run(ctx, s.rdb, keys, release, raw, functions.MaxHistoryReleases, functions.MaxHistorySteps, s.releaseKeyPrefix(k)).Err()
	if err != nil {
		return redisErr("record history of canary "+k.String(), err)
	}
	return nil
}

// Releases returns the kept releases, newest first, each with its steps oldest first. A
// record that cannot be decoded is skipped (and logged).
func (s *Store) Releases(ctx context.Context, k functions.Key) ([]functions.Release, error) {
	if err := validKey(k); err != nil {
		return nil, err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	ids, err := s.rdb.LRange(ctx, s.canaryKey(k, "releases"), 0, -1).Result()
	if err != nil {
		return nil, redisErr("read history of canary "+k.String(), err)
	}
	if len(ids) == 0 {
		return []functions.Release{}, nil
	}
	cmds := make([]*redis.StringSliceCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.LRange(ctx, s.releaseKeyPrefix(k)+id, 0, -1)
		}
		return nil
	})
	if err != nil {
		return nil, redisErr("read history of canary "+k.String(), err)
	}
	out := make([]functions.Release, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		rel := functions.Release{ID: ids[i], Steps: []functions.StepRecord{}}
		for _, raw := range cmds[i].Val() {
			var r functions.StepRecord
			if err := json.Unmarshal([]byte(raw), &r); err != nil {
				s.log.WarnContext(ctx, "skipping an unreadable step record", "canary", k.String(), "release", ids[i], "err", err)
				continue
			}
			rel.Steps = append(rel.Steps, r)
		}
		out = append(out, rel)
	}
	return out, nil
}

// deleteHistory forgets every release of the canary.
func (s *Store) deleteHistory(ctx context.Context, k functions.Key) error {
	err := deleteHistoryScript.Run(ctx, s.rdb, []string{s.canaryKey(k, "releases")}, s.releaseKeyPrefix(k)).Err()
	if err != nil {
		return redisErr("delete history of canary "+k.String(), err)
	}
	return nil
}
