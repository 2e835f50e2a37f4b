package state

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
)

var prefixSeq atomic.Int64

// newStore returns a Store with a prefix of its own, so tests sharing a server never see each
// other's keys.
func newStore(rdb redis.UniversalClient) *Store {
	return New(rdb, Options{Prefix: fmt.Sprintf("test%d", prefixSeq.Add(1))})
}

func openTest(t testing.TB, url string) redis.UniversalClient {
	t.Helper()
	rdb, err := Open(url)
	if err != nil {
		t.Fatalf("Open(%q): %v", url, err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// suite is every behaviour of the Store, run against each topology. flush empties the
// whole deployment.
func suite(t *testing.T, rdb redis.UniversalClient, flush func(context.Context) error) {
	tests := []struct {
		name string
		run  func(t *testing.T, s *Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"SaveCompareAndSet", testSaveCompareAndSet},
		{"ConcurrentSaves", testConcurrentSaves},
		{"SaveReadsForeignEncoding", testSaveReadsForeignEncoding},
		{"LeaseExclusive", testLeaseExclusive},
		{"LeaseTokensGrow", testLeaseTokensGrow},
		{"StaleReleaseKeepsNewerLease", testStaleRelease},
		{"LeaseExpires", testLeaseExpires},
		{"SaveRefusesALostLease", testSaveRefusesALostLease},
		{"RenewKeepsOnlyAHeldLease", testRenew},
		{"SeizeDisplacesTheHolder", testSeize},
		{"Schedule", testSchedule},
		{"DispatchWakeups", testDispatchWakeups},
		{"Delete", testDelete},
		{"History", testHistory},
		{"HistoryCapped", testHistoryCapped},
		{"DeleteForgetsHistory", testDeleteForgetsHistory},
		{"FirstSeen", testFirstSeen},
		{"DependentsIndex", testDependents},
		{"WrongTypeIsNotTransient", testWrongType},
		{"InvalidInput", testInvalidInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newStore(rdb)) })
	}
	// Last: it empties the server under every other test's keys.
	t.Run("FlushAllLosesState", func(t *testing.T) { testFlushAll(t, newStore(rdb), flush) })
}

func TestStandalone(t *testing.T) {
	needRedis(t)
	rdb := openTest(t, "redis://"+standaloneAddr)
	suite(t, rdb, func(ctx context.Context) error { return rdb.FlushAll(ctx).Err() })
}

func TestCluster(t *testing.T) {
	needRedis(t)
	addrs, err := startCluster()
	if err != nil {
		t.Skipf("cannot start a 3-node Redis Cluster on loopback: %v", err)
	}
	rdb := openTest(t, "redis+cluster://"+addrs[0]+","+addrs[1])
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("Open(redis+cluster://...) returned %T, want *redis.ClusterClient", rdb)
	}
	t.Run("CanaryKeysShareASlot", func(t *testing.T) { testSlots(t, cc) })
	suite(t, rdb, func(ctx context.Context) error {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.FlushAll(ctx).Err()
		})
	})
}

// testSlots asks the cluster itself where keys live: a canary's keys must share a slot (Claim's
// script touches two), and so must the two schedule sets (Schedule's MULTI).
func testSlots(t *testing.T, cc *redis.ClusterClient) {
	ctx := context.Background()
	s := New(cc, Options{})
	slot := func(key string) int64 {
		n, err := cc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
		}
		return n
	}
	slots := map[int64]bool{}
	for i := range 50 {
		k := functions.Key{Namespace: fmt.Sprintf("ns%d", i), Name: "podinfo"}
		want := slot(s.canaryKey(k, "state"))
		slots[want] = true
		for _, what := range []string{"lease", "fence"} {
			if got := slot(s.canaryKey(k, what)); got != want {
				t.Errorf("slot of %s = %d, want %d (the state's)", s.canaryKey(k, what), got, want)
			}
		}
	}
	if len(slots) < 10 {
		t.Errorf("50 canaries use %d slots, want them spread over the cluster", len(slots))
	}
	if got, want := slot(s.releasingKey()), slot(s.dueKey()); got != want {
		t.Errorf("slot of %s = %d, want %d (the due set's)", s.releasingKey(), got, want)
	}
}

func TestSentinel(t *testing.T) {
	needRedis(t)
	addr, err := startSentinel()
	if err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	// A second, dead sentinel first: the client must move on to the live one.
	dead, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	rdb := openTest(t, fmt.Sprintf("redis+sentinel://127.0.0.1:%d,%s/mymaster/0?dial_timeout=200ms", dead, addr))
	if _, ok := rdb.(*redis.Client); !ok {
		t.Fatalf("Open(redis+sentinel://...) returned %T, want a sentinel-backed *redis.Client", rdb)
	}
	s := newStore(rdb)
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping through sentinel: %v", err)
	}
	testRoundTrip(t, s)
	testLeaseTokensGrow(t, s)
}

var podinfo = functions.Key{Namespace: "default", Name: "podinfo"}

// populated has every field of State set, so a field the encoding drops shows in the diff.
func populated() functions.State {
	at := time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)
	return functions.State{
		Phase:                         functions.PhaseProgressing,
		Routing:                       functions.Routing{Primary: 70, Canary: 30, Mirrored: true},
		FailedChecks:                  2,
		Iterations:                    6,
		LastAppliedSpec:               "5f7d9c8b6",
		LastPromotedSpec:              "77c4d8f5b",
		TrackedConfigs:                map[string]string{"configmap/podinfo-config": "a1b2", "secret/podinfo-token": "c3d4"},
		LastTransitionTime:            at,
		SessionAffinityCookie:         "flagger-cookie-abc",
		PrimarySessionAffinityCookie:  "flagger-cookie-def",
		PreviousSessionAffinityCookie: "flagger-cookie-ghi",
		Message:                       "Advance podinfo.default canary weight 30",
		Trigger: &functions.Trigger{Kind: "push", EventID: "evt-1", Source: "registry",
			Detail: "ghcr.io/stefanprodan/podinfo:6.9.2", At: at.Add(-time.Minute)},
		CanaryNotReadySince: at.Add(-30 * time.Second).In(time.FixedZone("CEST", 2*3600)),
		ReportedFailure:     "podinfo-primary cannot become ready",
		PendingTrigger:      &functions.Trigger{Kind: "push", EventID: "evt-2", Detail: "ghcr.io/stefanprodan/podinfo:6.9.3", At: at},
		PromoteRequested:    true,
		Approved:            true,
		Steps:               11,
		LastStepAt:          at.Add(time.Second),
		NextStepAt:          at.Add(time.Minute),
		SpecError:           "service.canary.host does not match podinfo-canary",
		Release:             "1767323045000",
		AssertedAt:          at.Add(-time.Minute),
		AssertedGeneration:  4,
		RoutesVersion:       "4711",
	}
}

func testRoundTrip(t *testing.T, s *Store) {
	ctx := context.Background()
	in := populated()
	v := reflect.ValueOf(in)
	for i := range v.NumField() {
		if name := v.Type().Field(i).Name; name != "Version" && v.Field(i).IsZero() {
			t.Fatalf("populated() leaves State.%s zero: set it so the round trip covers it", name)
		}
	}
	saved, err := s.Save(ctx, podinfo, in, nil)
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	if saved.Version != 1 {
		t.Errorf("saved version = %d, want 1", saved.Version)
	}
	want := in
	want.Version = 1
	if diff := cmp.Diff(want, saved); diff != "" {
		t.Errorf("Save returned a different state (-want +got):\n%s", diff)
	}
	got, err := s.Load(ctx, podinfo)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load after Save (-want +got):\n%s", diff)
	}
	again, err := s.Save(ctx, podinfo, got, nil)
	if err != nil {
		t.Fatalf("second Save: %v", err)
	}
	if again.Version != 2 {
		t.Errorf("second saved version = %d, want 2", again.Version)
	}
}

func testSaveCompareAndSet(t *testing.T, s *Store) {
	ctx := context.Background()
	if _, err := s.Load(ctx, podinfo); !errors.Is(err, functions.ErrNotFound) {
		t.Fatalf("Load of nothing: got %v, want ErrNotFound", err)
	}
	steps := []struct {
		from    int64
		wantErr error
		wantVer int64 // stored version afterwards
	}{
		{from: 3, wantErr: functions.ErrConflict, wantVer: 0}, // nothing stored is version 0
		{from: 0, wantVer: 1},
		{from: 0, wantErr: functions.ErrConflict, wantVer: 1}, // a second creator loses
		{from: 1, wantVer: 2},
		{from: 1, wantErr: functions.ErrConflict, wantVer: 2}, // a stale writer loses
		{from: 3, wantErr: functions.ErrConflict, wantVer: 2}, // so does one from the future
		{from: 2, wantVer: 3},
	}
	for i, st := range steps {
		next := functions.State{Version: st.from, Phase: functions.PhaseProgressing, Steps: int64(i)}
		saved, err := s.Save(ctx, podinfo, next, nil)
		if !errors.Is(err, st.wantErr) {
			t.Fatalf("step %d: Save from version %d: got error %v, want %v", i, st.from, err, st.wantErr)
		}
		if err == nil && saved.Version != st.from+1 {
			t.Errorf("step %d: saved version = %d, want %d", i, saved.Version, st.from+1)
		}
		got, err := s.Load(ctx, podinfo)
		switch {
		case st.wantVer == 0 && !errors.Is(err, functions.ErrNotFound):
			t.Fatalf("step %d: Load: got %v, want ErrNotFound", i, err)
		case st.wantVer != 0 && err != nil:
			t.Fatalf("step %d: Load: %v", i, err)
		case got.Version != st.wantVer:
			t.Errorf("step %d: stored version = %d, want %d", i, got.Version, st.wantVer)
		}
	}
}

func testConcurrentSaves(t *testing.T, s *Store) {
	ctx := context.Background()
	const writers, rounds = 50, 5
	for round := range rounds {
		from := int64(round)
		var won, conflicts atomic.Int64
		var winner atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				_, err := s.Save(ctx, podinfo, functions.State{Version: from, Steps: int64(w)}, nil)
				switch {
				case err == nil:
					won.Add(1)
					winner.Store(int64(w))
				case errors.Is(err, functions.ErrConflict):
					conflicts.Add(1)
				default:
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: unexpected error: %v", round, err)
		}
		if won.Load() != 1 || conflicts.Load() != writers-1 {
			t.Fatalf("round %d: %d saves won and %d conflicted, want 1 and %d", round, won.Load(), conflicts.Load(), writers-1)
		}
		got, err := s.Load(ctx, podinfo)
		if err != nil {
			t.Fatalf("round %d: Load: %v", round, err)
		}
		if got.Version != from+1 || got.Steps != winner.Load() {
			t.Errorf("round %d: stored version %d from writer %d, want version %d from the winner %d",
				round, got.Version, got.Steps, from+1, winner.Load())
		}
	}
}

// A document written by something other than Save (fields in another order) still has its
// version read by the script's JSON fallback.
func testSaveReadsForeignEncoding(t *testing.T, s *Store) {
	ctx := context.Background()
	raw := `{"phase":"Succeeded","routing":{"primary":100,"canary":0},"version":7,"steps":3}`
	if err := s.rdb.Set(ctx, s.canaryKey(podinfo, "state"), raw, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(ctx, podinfo, functions.State{Version: 6}, nil); !errors.Is(err, functions.ErrConflict) {
		t.Errorf("Save from 6 over version 7: got %v, want ErrConflict", err)
	}
	saved, err := s.Save(ctx, podinfo, functions.State{Version: 7, Phase: functions.PhaseWaiting}, nil)
	if err != nil {
		t.Fatalf("Save from 7 over version 7: %v", err)
	}
	if saved.Version != 8 {
		t.Errorf("saved version = %d, want 8", saved.Version)
	}
}

func testFlushAll(t *testing.T, s *Store, flush func(context.Context) error) {
	ctx := context.Background()
	saved, err := s.Save(ctx, podinfo, populated(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := flush(ctx); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
	if _, err := s.Load(ctx, podinfo); !errors.Is(err, functions.ErrNotFound) {
		t.Fatalf("Load after FLUSHALL: got %v, want ErrNotFound", err)
	}
	if _, err := s.Save(ctx, podinfo, saved, nil); !errors.Is(err, functions.ErrConflict) {
		t.Errorf("Save from version %d after FLUSHALL: got %v, want ErrConflict", saved.Version, err)
	}
	rebuilt := saved
	rebuilt.Version = 0
	if got, err := s.Save(ctx, podinfo, rebuilt, nil); err != nil || got.Version != 1 {
		t.Errorf("Save of rebuilt state from 0: got version %d, err %v; want version 1", got.Version, err)
	}
}

func testLeaseExclusive(t *testing.T, s *Store) {
	ctx := context.Background()
	const claimers = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []functions.Lease
	busy := 0
	for range claimers {
		wg.Go(func() {
			l, err := s.Claim(ctx, podinfo, 10*time.Second)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				held = append(held, l)
			case errors.Is(err, functions.ErrBusy):
				busy++
			default:
				t.Errorf("Claim: unexpected error %v", err)
			}
		})
	}
	wg.Wait()
	if len(held) != 1 || busy != claimers-1 {
		t.Fatalf("%d claims held and %d busy, want 1 and %d", len(held), busy, claimers-1)
	}
	if err := held[0].Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	l, err := s.Claim(ctx, podinfo, 10*time.Second)
	if err != nil {
		t.Fatalf("Claim after Release: %v", err)
	}
	if l.Token() <= held[0].Token() {
		t.Errorf("token after release = %d, want more than %d", l.Token(), held[0].Token())
	}
}

// A holder that stalled past its lease, or whose lease an abort seized, must not save.
func testSaveRefusesALostLease(t *testing.T, s *Store) {
	ctx := context.Background()
	stale, err := s.Claim(ctx, podinfo, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(80 * time.Millisecond)
	fresh, err := s.Claim(ctx, podinfo, 10*time.Second)
	if err != nil {
		t.Fatalf("Claim after expiry: %v", err)
	}
	if _, err := s.Save(ctx, podinfo, functions.State{Phase: functions.PhaseProgressing}, stale); !errors.Is(err, functions.ErrLeaseLost) {
		t.Fatalf("Save by the stale holder: got %v, want ErrLeaseLost", err)
	}
	if _, err := s.Load(ctx, podinfo); !errors.Is(err, functions.ErrNotFound) {
		t.Fatalf("after the refused save: got %v, want nothing stored", err)
	}
	saved, err := s.Save(ctx, podinfo, functions.State{Phase: functions.PhaseProgressing}, fresh)
	if err != nil || saved.Version != 1 {
		t.Fatalf("Save by the holder: got version %d, %v; want 1, nil", saved.Version, err)
	}
	if err := fresh.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(ctx, podinfo, saved, fresh); !errors.Is(err, functions.ErrLeaseLost) {
		t.Errorf("Save after Release: got %v, want ErrLeaseLost", err)
	}
	if _, err := s.Save(ctx, podinfo, saved, nil); err != nil {
		t.Errorf("Save without a lease: got %v, want the compare-and-set alone", err)
	}
}

func testRenew(t *testing.T, s *Store) {
	ctx := context.Background()
	// The ttl leaves half of itself for each renewal's round trip: a loaded machine (the CI's
	// two cores running labs) takes tens of milliseconds for one.
	const ttl = 500 * time.Millisecond
	l, err := s.Claim(ctx, podinfo, ttl)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // held longer than its ttl
		time.Sleep(ttl / 2)
		if err := l.Renew(ctx, ttl); err != nil {
			t.Fatalf("Renew of a held lease: %v", err)
		}
	}
	if _, err := s.Claim(ctx, podinfo, time.Second); !errors.Is(err, functions.ErrBusy) {
		t.Fatalf("Claim of a renewed lease: got %v, want ErrBusy", err)
	}
	time.Sleep(ttl + ttl/2)
	if err := l.Renew(ctx, time.Second); !errors.Is(err, functions.ErrLeaseLost) {
		t.Errorf("Renew after expiry: got %v, want ErrLeaseLost", err)
	}
	other, err := s.Claim(ctx, podinfo, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(ctx, time.Second); !errors.Is(err, functions.ErrLeaseLost) {
		t.Errorf("Renew of a lease another holder has: got %v, want ErrLeaseLost", err)
	}
	if err := other.Renew(ctx, time.Second); err != nil {
		t.Errorf("Renew by the new holder: %v", err)
	}
}

func testSeize(t *testing.T, s *Store) {
	ctx := context.Background()
	step, err := s.Claim(ctx, podinfo, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	abort, err := s.Seize(ctx, podinfo, 10*time.Second)
	if err != nil {
		t.Fatalf("Seize of a held lease: %v", err)
	}
	if abort.Token() <= step.Token() {
		t.Errorf("seized token %d, want more than the holder's %d", abort.Token(), step.Token())
	}
	if err := step.Renew(ctx, time.Second); !errors.Is(err, functions.ErrLeaseLost) {
		t.Errorf("Renew by the displaced holder: got %v, want ErrLeaseLost", err)
	}
	if _, err := s.Save(ctx, podinfo, functions.State{}, step); !errors.Is(err, functions.ErrLeaseLost) {
		t.Errorf("Save by the displaced holder: got %v, want ErrLeaseLost", err)
	}
	if err := step.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(ctx, podinfo, functions.State{}, abort); err != nil {
		t.Errorf("Save by the seizer after the displaced holder's Release: %v", err)
	}
}

func testLeaseTokensGrow(t *testing.T, s *Store) {
	ctx := context.Background()
	var last int64
	for i := range 20 {
		l, err := s.Claim(ctx, podinfo, time.Minute)
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		if l.Token() <= last {
			t.Fatalf("claim %d: token %d, want more than %d", i, l.Token(), last)
		}
		last = l.Token()
		if err := l.Release(ctx); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
}

func testStaleRelease(t *testing.T, s *Store) {
	ctx := context.Background()
	stale, err := s.Claim(ctx, podinfo, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(120 * time.Millisecond)
	fresh, err := s.Claim(ctx, podinfo, 10*time.Second)
	if err != nil {
		t.Fatalf("Claim after expiry: %v", err)
	}
	if err := stale.Release(ctx); err != nil {
		t.Fatalf("stale Release: %v", err)
	}
	if _, err := s.Claim(ctx, podinfo, time.Second); !errors.Is(err, functions.ErrBusy) {
		t.Fatalf("Claim after a stale holder's Release: got %v, want ErrBusy (the newer lease must survive)", err)
	}
	if err := fresh.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, podinfo, time.Second); err != nil {
		t.Errorf("Claim after the holder's Release: %v", err)
	}
}

func testLeaseExpires(t *testing.T, s *Store) {
	ctx := context.Background()
	first, err := s.Claim(ctx, podinfo, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, podinfo, time.Second); !errors.Is(err, functions.ErrBusy) {
		t.Fatalf("Claim while held: got %v, want ErrBusy", err)
	}
	time.Sleep(200 * time.Millisecond)
	second, err := s.Claim(ctx, podinfo, time.Second)
	if err != nil {
		t.Fatalf("Claim after the ttl: %v", err)
	}
	if second.Token() <= first.Token() {
		t.Errorf("token after expiry = %d, want more than %d", second.Token(), first.Token())
	}
}

func testSchedule(t *testing.T, s *Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	a := functions.Key{Namespace: "default", Name: "a"}
	b := functions.Key{Namespace: "default", Name: "b"}
	c := functions.Key{Namespace: "prod", Name: "c"}

	if _, _, ok, err := s.NextDue(ctx, false); err != nil || ok {
		t.Fatalf("NextDue of an empty schedule: ok %v, err %v; want false, nil", ok, err)
	}
	for _, sc := range []struct {
		k         functions.Key
		at        time.Duration
		releasing bool
	}{{a, 3 * time.Second, true}, {b, time.Second, false}, {c, 2 * time.Second, true}} {
		if err := s.Schedule(ctx, sc.k, t0.Add(sc.at), sc.releasing); err != nil {
			t.Fatalf("Schedule %s: %v", sc.k, err)
		}
	}
	due := func(now time.Time, limit int) []functions.Key {
		t.Helper()
		keys, err := s.Due(ctx, now, limit)
		if err != nil {
			t.Fatalf("Due: %v", err)
		}
		return keys
	}
	for _, tc := range []struct {
		name  string
		now   time.Duration
		limit int
		want  []functions.Key
	}{
		{"none yet", 999 * time.Millisecond, 10, []functions.Key{}},
		{"due exactly at its time", time.Second, 10, []functions.Key{b}},
		{"earliest first", 2 * time.Second, 10, []functions.Key{b, c}},
		{"all", time.Hour, 10, []functions.Key{b, c, a}},
		{"limited", time.Hour, 2, []functions.Key{b, c}},
	} {
		if diff := cmp.Diff(tc.want, due(t0.Add(tc.now), tc.limit)); diff != "" {
			t.Errorf("Due %s (-want +got):\n%s", tc.name, diff)
		}
	}

	next := func(releasingOnly bool, wantKey functions.Key, wantAt time.Duration, wantOK bool) {
		t.Helper()
		k, at, ok, err := s.NextDue(ctx, releasingOnly)
		if err != nil {
			t.Fatalf("NextDue(%v): %v", releasingOnly, err)
		}
		if ok != wantOK || k != wantKey || (ok && !at.Equal(t0.Add(wantAt))) {
			t.Errorf("NextDue(%v) = %s at %s (ok %v), want %s at %s (ok %v)",
				releasingOnly, k, at, ok, wantKey, t0.Add(wantAt), wantOK)
		}
	}
	next(false, b, time.Second, true)
	next(true, c, 2*time.Second, true)

	// c's release ends: it leaves the releasing set but stays scheduled.
	if err := s.Schedule(ctx, c, t0.Add(5*time.Second), false); err != nil {
		t.Fatal(err)
	}
	next(true, a, 3*time.Second, true)
	at, ok, err := s.DueAt(ctx, c)
	if err != nil || !ok || !at.Equal(t0.Add(5*time.Second)) {
		t.Errorf("DueAt(c) = %s, %v, %v; want %s, true, nil", at, ok, err, t0.Add(5*time.Second))
	}
	if at.UnixMilli() != t0.Add(5*time.Second).UnixMilli() {
		t.Errorf("DueAt(c) lost precision: %s", at)
	}

	// Rescheduling moves, never duplicates.
	if err := s.Schedule(ctx, b, t0.Add(10*time.Second), false); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]functions.Key{a, c, b}, due(t0.Add(time.Hour), 10)); diff != "" {
		t.Errorf("Due after rescheduling b (-want +got):\n%s", diff)
	}
	if err := s.Schedule(ctx, a, t0.Add(20*time.Second), false); err != nil {
		t.Fatal(err)
	}
	next(true, functions.Key{}, 0, false)

	if _, ok, err := s.DueAt(ctx, functions.Key{Namespace: "default", Name: "unknown"}); err != nil || ok {
		t.Errorf("DueAt of an unscheduled canary: ok %v, err %v; want false, nil", ok, err)
	}
}

func testDelete(t *testing.T, s *Store) {
	ctx := context.Background()
	if _, err := s.Save(ctx, podinfo, populated(), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Schedule(ctx, podinfo, time.Now(), true); err != nil {
		t.Fatal(err)
	}
	before, err := s.Claim(ctx, podinfo, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, podinfo); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Load(ctx, podinfo); !errors.Is(err, functions.ErrNotFound) {
		t.Errorf("Load after Delete: got %v, want ErrNotFound", err)
	}
	if _, ok, err := s.DueAt(ctx, podinfo); err != nil || ok {
		t.Errorf("DueAt after Delete: ok %v, err %v; want false, nil", ok, err)
	}
	if _, _, ok, err := s.NextDue(ctx, true); err != nil || ok {
		t.Errorf("NextDue(releasing) after Delete: ok %v, err %v; want false, nil", ok, err)
	}
	ttl, err := s.rdb.PTTL(ctx, s.canaryKey(podinfo, "fence")).Result()
	if err != nil || ttl <= 0 || ttl > fenceRetention {
		t.Errorf("token counter ttl after Delete = %s, %v; want within (0, %s]", ttl, err, fenceRetention)
	}
	after, err := s.Claim(ctx, podinfo, time.Minute)
	if err != nil {
		t.Fatalf("Claim after Delete (the lease must be gone): %v", err)
	}
	if after.Token() <= before.Token() {
		t.Errorf("token after Delete = %d, want more than %d", after.Token(), before.Token())
	}
	if ttl, err := s.rdb.PTTL(ctx, s.canaryKey(podinfo, "fence")).Result(); err != nil || ttl != -1 {
		t.Errorf("token counter ttl after a new claim = %s, %v; want none (-1)", ttl, err)
	}
	if err := s.Delete(ctx, functions.Key{Namespace: "default", Name: "never-seen"}); err != nil {
		t.Errorf("Delete of an unknown canary: %v", err)
	}
}

func testFirstSeen(t *testing.T, s *Store) {
	ctx := context.Background()
	seen := func(id string, ttl time.Duration, want bool) {
		t.Helper()
		got, err := s.FirstSeen(ctx, id, ttl)
		if err != nil {
			t.Fatalf("FirstSeen(%q): %v", id, err)
		}
		if got != want {
			t.Errorf("FirstSeen(%q) = %v, want %v", id, got, want)
		}
	}
	seen("evt-1", time.Minute, true)
	seen("evt-1", time.Minute, false)
	seen("evt-2", time.Minute, true)
	if err := s.Forget(ctx, "evt-1"); err != nil {
		t.Fatalf("Forget: %v", err)
	}
	seen("evt-1", time.Minute, true)
	seen("evt-2", time.Minute, false)
	if err := s.Forget(ctx, "never-seen"); err != nil {
		t.Errorf("Forget of an unknown id: %v", err)
	}
	seen("short", 80*time.Millisecond, true)
	time.Sleep(150 * time.Millisecond)
	seen("short", 80*time.Millisecond, true)
}

// A key of the wrong type is a fault the server repeats: not ErrUnavailable, which would be
// retried forever, and not ErrNotFound, which would rebuild over it.
func testWrongType(t *testing.T, s *Store) {
	ctx := context.Background()
	if err := s.rdb.LPush(ctx, s.canaryKey(podinfo, "state"), "x").Err(); err != nil {
		t.Fatal(err)
	}
	_, loadErr := s.Load(ctx, podinfo)
	_, saveErr := s.Save(ctx, podinfo, functions.State{}, nil)
	for op, err := range map[string]error{"Load": loadErr, "Save": saveErr} {
		if err == nil || errors.Is(err, functions.ErrUnavailable) || errors.Is(err, functions.ErrNotFound) {
			t.Errorf("%s over a list: got %v, want a plain error", op, err)
		}
	}
	if err := s.rdb.Set(ctx, s.canaryKey(podinfo, "state"), "{not json", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, podinfo); err == nil || errors.Is(err, functions.ErrNotFound) || errors.Is(err, functions.ErrUnavailable) {
		t.Errorf("Load of corrupt JSON: got %v, want a plain decode error", err)
	}
}

func testInvalidInput(t *testing.T, s *Store) {
	ctx := context.Background()
	bad := []functions.Key{{}, {Namespace: "default"}, {Name: "podinfo"}, {Namespace: "a/b", Name: "c"}, {Namespace: "a", Name: "b/c"}}
	for _, k := range bad {
		calls := map[string]error{}
		_, calls["Load"] = s.Load(ctx, k)
		_, calls["Save"] = s.Save(ctx, k, functions.State{}, nil)
		calls["Delete"] = s.Delete(ctx, k)
		_, calls["Claim"] = s.Claim(ctx, k, time.Second)
		calls["Schedule"] = s.Schedule(ctx, k, time.Now(), false)
		_, _, calls["DueAt"] = s.DueAt(ctx, k)
		for op, err := range calls {
			if !errors.Is(err, functions.ErrInvalid) {
				t.Errorf("%s(%q): got %v, want ErrInvalid", op, k.String(), err)
			}
		}
	}
	others := map[string]error{}
	_, others["Claim ttl 0"] = s.Claim(ctx, podinfo, 0)
	_, others["Due limit 0"] = s.Due(ctx, time.Now(), 0)
	_, others["FirstSeen empty id"] = s.FirstSeen(ctx, "", time.Minute)
	_, others["FirstSeen ttl 0"] = s.FirstSeen(ctx, "evt", 0)
	others["Forget empty id"] = s.Forget(ctx, "")
	_, others["Save negative version"] = s.Save(ctx, podinfo, functions.State{Version: -1}, nil)
	for op, err := range others {
		if !errors.Is(err, functions.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", op, err)
		}
	}
}

// TestTimeout: a server that accepts connections and never answers must not hang a call past
// the Store's timeout, nor past an earlier deadline of the caller; both are ErrUnavailable.
func TestTimeout(t *testing.T) {
	l, err := listenBlackhole(t)
	if err != nil {
		t.Fatal(err)
	}
	rdb := openTest(t, "redis://"+l+"?max_retries=-1")
	for _, tc := range []struct {
		name     string
		timeout  time.Duration
		callerIn time.Duration // 0: no caller deadline
		want     time.Duration
	}{
		{"store timeout", 300 * time.Millisecond, 0, 300 * time.Millisecond},
		{"earlier caller deadline", 5 * time.Second, 200 * time.Millisecond, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(rdb, Options{Timeout: tc.timeout})
			ctx := context.Background()
			if tc.callerIn > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.callerIn)
				defer cancel()
			}
			start := time.Now()
			_, err := s.Load(ctx, podinfo)
			took := time.Since(start)
			if !errors.Is(err, functions.ErrUnavailable) {
				t.Errorf("Load from a silent server: got %v, want ErrUnavailable", err)
			}
			if took < tc.want-50*time.Millisecond || took > tc.want+time.Second {
				t.Errorf("Load gave up after %s, want about %s", took, tc.want)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	port, err := freePort() // closed again: nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	s := New(openTest(t, fmt.Sprintf("redis://127.0.0.1:%d?max_retries=-1", port)), Options{Timeout: time.Second})
	ctx := context.Background()
	if err := s.Ping(ctx); !errors.Is(err, functions.ErrUnavailable) {
		t.Errorf("Ping: got %v, want ErrUnavailable", err)
	}
	if _, err := s.Claim(ctx, podinfo, time.Second); !errors.Is(err, functions.ErrUnavailable) {
		t.Errorf("Claim: got %v, want ErrUnavailable", err)
	}
	if err := s.Schedule(ctx, podinfo, time.Now(), true); !errors.Is(err, functions.ErrUnavailable) {
		t.Errorf("Schedule: got %v, want ErrUnavailable", err)
	}
}

func TestPing(t *testing.T) {
	needRedis(t)
	s := New(openTest(t, "redis://"+standaloneAddr), Options{})
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// A step wakes a dispatcher only when none dispatches past its due time; a reservation counts
// as one; a dispatcher that ended early leaves room, unless a newer one began since.
func testDispatchWakeups(t *testing.T, s *Store) {
	ctx := context.Background()
	at := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	reserve := func(due time.Duration) bool {
		t.Helper()
		ok, err := s.ReserveDispatch(ctx, "*", at.Add(due), at.Add(75*time.Second))
		if err != nil {
			t.Fatalf("ReserveDispatch: %v", err)
		}
		return ok
	}
	if !reserve(10 * time.Second) {
		t.Fatal("with no dispatcher ever, a step due in 10 s reserved none")
	}
	if reserve(20 * time.Second) {
		t.Error("inside a reserved window, a second step reserved another dispatcher")
	}
	if !reserve(80 * time.Second) {
		t.Error("a step due past the reserved window reserved none")
	}
	old, err := s.BeginDispatch(ctx, "*", at.Add(time.Hour))
	if err != nil {
		t.Fatalf("BeginDispatch: %v", err)
	}
	newer, err := s.BeginDispatch(ctx, "*", at.Add(time.Hour))
	if err != nil {
		t.Fatalf("BeginDispatch: %v", err)
	}
	if err := s.EndDispatch(ctx, "*", old); err != nil {
		t.Fatalf("EndDispatch: %v", err)
	}
	if reserve(30 * time.Minute) {
		t.Error("an older dispatcher ending cleared a newer one's window")
	}
	if gen, err := s.DispatchGeneration(ctx, "*"); err != nil || gen != newer {
		t.Errorf("DispatchGeneration = %d, %v; want %d", gen, err, newer)
	}
	if err := s.EndDispatch(ctx, "*", newer); err != nil {
		t.Fatalf("EndDispatch: %v", err)
	}
	if !reserve(10 * time.Second) {
		t.Error("after the newest dispatcher ended early, a release reserved none")
	}
	if other, err := s.ReserveDispatch(ctx, "team-a", at.Add(100*time.Second), at.Add(175*time.Second)); err != nil || !other {
		t.Errorf("another scope's first reservation = %v, %v; want true: scopes are apart", other, err)
	}
}
