package state

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
)

const (
	// replicaWait bounds how long SaveReplicated waits for a replica's acknowledgement.
	replicaWait = 500 * time.Millisecond
	// replicasRecheck is how often the number of replicas is asked again.
	replicasRecheck = 30 * time.Second
)

// replicaCount caches, per node, how many replicas are connected.
type replicaCount struct {
	mu    sync.Mutex
	count map[string]int
	at    map[string]time.Time
}

// SaveReplicated is Save on a connection of its own, followed by WAIT for one replica when the
// node that holds the canary has any: replication is asynchronous, and a failover right after
// a save would otherwise lose it. Without replicas it is Save. A replica that does not
// acknowledge in time is logged, not an error: the write is on the master, and the caller
// (an abort) also records it in the Canary's status.
func (s *Store) SaveReplicated(ctx context.Context, k functions.Key, next functions.State, lease functions.Lease) (functions.State, error) {
	if err := validKey(k); err != nil {
		return functions.State{}, err
	}
	node, err := s.nodeFor(ctx, k)
	if err != nil {
		return functions.State{}, redisErr("find the node of canary "+k.String(), err)
	}
	if s.replicas(ctx, node) == 0 {
		return s.save(ctx, node, k, next, lease)
	}
	conn := node.Conn()
	defer conn.Close()
	saved, err := s.save(ctx, conn, k, next, lease)
	if err != nil {
		return saved, err
	}
	wctx, cancel := context.WithTimeout(ctx, replicaWait+s.timeout)
	defer cancel()
	acked, err := conn.Do(wctx, "WAIT", 1, replicaWait.Milliseconds()).Int()
	if err != nil || acked < 1 {
		s.log.WarnContext(ctx, "saved on the master, no replica acknowledged it in time", "canary", k.String(),
			"replicas", acked, "err", err, "waited", replicaWait)
	}
	return saved, nil
}

// nodeFor is the client of the node that holds the canary's keys: the client itself, or in
// Cluster the master of the canary's slot.
func (s *Store) nodeFor(ctx context.Context, k functions.Key) (*redis.Client, error) {
	switch c := s.rdb.(type) {
	case *redis.Client:
		return c, nil
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, s.canaryKey(k, "state"))
	}
	return nil, errNoNode
}

var errNoNode = errors.New("SaveReplicated needs a *redis.Client or *redis.ClusterClient")

// replicas is how many replicas the node has, asked at most every replicasRecheck; 0 when it
// cannot tell.
func (s *Store) replicas(ctx context.Context, node *redis.Client) int {
	addr := node.Options().Addr
	s.replicaInfo.mu.Lock()
	if at, ok := s.replicaInfo.at[addr]; ok && time.Since(at) < replicasRecheck {
		n := s.replicaInfo.count[addr]
		s.replicaInfo.mu.Unlock()
		return n
	}
	s.replicaInfo.mu.Unlock()
	ictx, cancel := s.call(ctx)
	defer cancel()
	info, err := node.Info(ictx, "replication").Result()
	n := 0
	if err == nil {
		n = connectedReplicas(info)
	}
	s.replicaInfo.mu.Lock()
	defer s.replicaInfo.mu.Unlock()
	if s.replicaInfo.count == nil {
		s.replicaInfo.count, s.replicaInfo.at = map[string]int{}, map[string]time.Time{}
	}
	s.replicaInfo.count[addr], s.replicaInfo.at[addr] = n, time.Now()
	return n
}

func connectedReplicas(info string) int {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}
