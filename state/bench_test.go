package state

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
)

// The benchmarks run against the real redis-server of TestMain. ns/op is the operation alone.
// Two cores shared with other work make absolute figures noisy, so each benchmark also
// measures, after its timed loop, 2000 pairs of (operation, raw PING) interleaved on the same
// connection pool and reports their medians and ratio ("x-ping"): the Store's cost over the
// network's floor, measured under the same conditions.

func benchStore(b *testing.B) (*Store, redis.UniversalClient) {
	needRedis(b)
	rdb, err := Open("redis://" + standaloneAddr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rdb.Close() })
	return newStore(rdb), rdb
}

// reportRatio times op and PING alternately and reports the medians and their ratio.
func reportRatio(b *testing.B, rdb redis.UniversalClient, op func() error) {
	ctx := context.Background()
	const pairs = 2000
	ops := make([]time.Duration, 0, pairs)
	pings := make([]time.Duration, 0, pairs)
	for range pairs {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		ops = append(ops, t1.Sub(t0))
		pings = append(pings, time.Since(t1))
	}
	opMedian, pingMedian := median(ops), median(pings)
	b.ReportMetric(float64(opMedian.Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(pingMedian.Nanoseconds()), "ping-p50-ns")
	b.ReportMetric(float64(opMedian)/float64(pingMedian), "x-ping")
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

func BenchmarkPing(b *testing.B) {
	_, rdb := benchStore(b)
	ctx := context.Background()
	for b.Loop() {
		if err := rdb.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSave(b *testing.B) {
	s, rdb := benchStore(b)
	ctx := context.Background()
	st := populated()
	save := func() error {
		saved, err := s.Save(ctx, podinfo, st, nil)
		st = saved
		return err
	}
	for b.Loop() {
		if err := save(); err != nil {
			b.Fatal(err)
		}
	}
	reportRatio(b, rdb, save)
}

func BenchmarkLoad(b *testing.B) {
	s, rdb := benchStore(b)
	ctx := context.Background()
	if _, err := s.Save(ctx, podinfo, populated(), nil); err != nil {
		b.Fatal(err)
	}
	load := func() error {
		_, err := s.Load(ctx, podinfo)
		return err
	}
	for b.Loop() {
		if err := load(); err != nil {
			b.Fatal(err)
		}
	}
	reportRatio(b, rdb, load)
}

// BenchmarkClaim claims a different canary each time, as a tick claiming its due canaries does.
func BenchmarkClaim(b *testing.B) {
	s, rdb := benchStore(b)
	ctx := context.Background()
	i := 0
	claim := func() error {
		i++
		_, err := s.Claim(ctx, functions.Key{Namespace: "bench", Name: "c" + strconv.Itoa(i)}, time.Minute)
		return err
	}
	for b.Loop() {
		if err := claim(); err != nil {
			b.Fatal(err)
		}
	}
	reportRatio(b, rdb, claim)
}

// BenchmarkClaimRelease is a whole lease cycle on one canary: two round trips.
func BenchmarkClaimRelease(b *testing.B) {
	s, rdb := benchStore(b)
	ctx := context.Background()
	cycle := func() error {
		l, err := s.Claim(ctx, podinfo, time.Minute)
		if err != nil {
			return err
		}
		return l.Release(ctx)
	}
	for b.Loop() {
		if err := cycle(); err != nil {
			b.Fatal(err)
		}
	}
	reportRatio(b, rdb, cycle)
}
