package state

import (
	"context"
	"testing"
	"time"
)

func TestOffsetFrom(t *testing.T) {
	base := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name                 string
		before, redis, after time.Time
		want                 time.Duration
	}{
		{"in step", base, base.Add(5 * time.Millisecond), base.Add(10 * time.Millisecond), 0},
		{"Redis 3 s ahead", base, base.Add(3*time.Second + 5*time.Millisecond), base.Add(10 * time.Millisecond), 3 * time.Second},
		{"Redis 2 s behind", base, base.Add(-2*time.Second + 5*time.Millisecond), base.Add(10 * time.Millisecond), -2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := offsetFrom(tt.before, tt.redis, tt.after); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// Against a real Redis on this machine, the offset is the round trip's error at most.
func TestClockFollowsRedis(t *testing.T) {
	needRedis(t)
	s := New(openTest(t, "redis://"+standaloneAddr), Options{})
	c := s.Clock(context.Background())
	if off := c.Offset(); off > 50*time.Millisecond || off < -50*time.Millisecond {
		t.Errorf("offset from a Redis on this host: got %s, want within 50ms", off)
	}
	if d := time.Until(c.Now()); d > 100*time.Millisecond || d < -100*time.Millisecond {
		t.Errorf("Now is %s from the local clock, want within 100ms", d)
	}
}
