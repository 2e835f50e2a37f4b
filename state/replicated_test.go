package state

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
)

// An abort's save must be on a replica when it is acknowledged, if there is one: a failover
// right after would otherwise promote a replica without it.
func TestSaveReplicatedWaitsForAReplica(t *testing.T) {
	needRedis(t)
	master, err := startRedis(nil)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(master, ":")
	replica, err := startRedis([]string{"--replicaof", host, port, "--enable-debug-command", "yes"})
	if err != nil {
		t.Fatal(err)
	}
	rep := redis.NewClient(&redis.Options{Addr: replica})
	defer rep.Close()
	ctx := context.Background()
	waitUntilTrue(t, 10*time.Second, "the replica in sync", func() bool {
		info, err := rep.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	s := New(openTest(t, "redis://"+master), Options{Prefix: "replicated"})
	mk := redis.NewClient(&redis.Options{Addr: master})
	defer mk.Close()
	waitUntilTrue(t, 10*time.Second, "the master to see its replica", func() bool { return s.replicas(ctx, mk) == 1 })

	st := functions.State{Phase: functions.PhaseFailed, Message: "Canary aborted"}
	for i := range 20 {
		saved, err := s.SaveReplicated(ctx, podinfo, st, nil)
		if err != nil {
			t.Fatalf("SaveReplicated %d: %v", i, err)
		}
		// Read the replica at once: WAIT returned, so it has the write.
		raw, err := rep.Get(ctx, s.canaryKey(podinfo, "state")).Bytes()
		if err != nil || !strings.Contains(string(raw), `"version":`+itoa(saved.Version)) {
			t.Fatalf("save %d: the replica has %s (%v), want version %d", i, raw, err, saved.Version)
		}
		st = saved
	}

	// A replica that is slow to take the write holds the save until it has it (or the wait
	// ends), where a plain save returns at once.
	for _, tc := range []struct {
		name  string
		save  func(context.Context, functions.Key, functions.State, functions.Lease) (functions.State, error)
		waits bool
	}{{"Save", s.Save, false}, {"SaveReplicated", s.SaveReplicated, true}} {
		slept := make(chan error, 1)
		go func() { slept <- rep.Do(ctx, "DEBUG", "SLEEP", "0.3").Err() }()
		time.Sleep(50 * time.Millisecond) // the replica is asleep now
		start := time.Now()
		saved, err := tc.save(ctx, podinfo, st, nil)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		st = saved
		if waited := took > 150*time.Millisecond; waited != tc.waits {
			t.Errorf("%s with a replica asleep for 300 ms took %s; want it to wait for the replica: %v", tc.name, took, tc.waits)
		}
		if err := <-slept; err != nil {
			t.Fatalf("DEBUG SLEEP: %v", err)
		}
	}

	// Without a replica it is a plain save.
	alone := New(openTest(t, "redis://"+standaloneAddr), Options{Prefix: "replicated-alone"})
	start := time.Now()
	if _, err := alone.SaveReplicated(ctx, podinfo, functions.State{Phase: functions.PhaseFailed}, nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > replicaWait {
		t.Errorf("SaveReplicated without replicas took %s, want no wait", took)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func waitUntilTrue(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
