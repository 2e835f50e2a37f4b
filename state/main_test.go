package state

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The tests run against real redis-server processes started here, never against a fake.
const (
	redisServerBin = "/usr/bin/redis-server"
	redisCLIBin    = "/usr/bin/redis-cli"
)

var (
	// standaloneAddr is the redis-server every standalone test shares; empty when
	// skipReason says why there is none.
	standaloneAddr string
	skipReason     string

	servers   []*exec.Cmd
	serversMu sync.Mutex
	tmpRoot   string
)

func TestMain(m *testing.M) {
	code := func() int {
		var err error
		tmpRoot, err = os.MkdirTemp("", "siskin-state-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "temp dir:", err)
			return 1
		}
		defer os.RemoveAll(tmpRoot)
		defer stopServers()
		if _, err := os.Stat(redisServerBin); err != nil {
			skipReason = fmt.Sprintf("%s not found (%v): install redis-server to run the state tests", redisServerBin, err)
		} else if standaloneAddr, err = startRedis(nil); err != nil {
			fmt.Fprintln(os.Stderr, "start redis-server:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func needRedis(tb testing.TB) {
	tb.Helper()
	if skipReason != "" {
		tb.Skip(skipReason)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRedis starts a redis-server on a free loopback port with no persistence, plus extra
// arguments, and waits until it answers PING.
func startRedis(extra []string, preArgs ...string) (string, error) {
	var lastErr error
	for range 5 { // a free port can be taken between probing and binding
		port, err := freePort()
		if err != nil {
			return "", err
		}
		dir := filepath.Join(tmpRoot, strconv.Itoa(port))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		args := append(append([]string{}, preArgs...), "--save", "", "--appendonly", "no",
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir)
		args = append(args, extra...)
		cmd := exec.Command(redisServerBin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		dieWithTest(cmd)
		if err := cmd.Start(); err != nil {
			return "", err
		}
		serversMu.Lock()
		servers = append(servers, cmd)
		serversMu.Unlock()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = waitPing(addr, 5*time.Second); lastErr == nil {
			return addr, nil
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		lastErr = fmt.Errorf("%w; server output: %s", lastErr, out.String())
	}
	return "", lastErr
}

func waitPing(addr string, within time.Duration) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis at %s did not answer within %s: %w", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stopServers() {
	serversMu.Lock()
	defer serversMu.Unlock()
	for _, cmd := range servers {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	servers = nil
}

var (
	clusterOnce  sync.Once
	clusterAddrs []string
	clusterErr   error
)

// startCluster starts (once) a three-master Redis Cluster on loopback.
func startCluster() ([]string, error) {
	clusterOnce.Do(func() {
		if _, err := os.Stat(redisCLIBin); err != nil {
			clusterErr = fmt.Errorf("%s not found (%v): it is needed to create the cluster", redisCLIBin, err)
			return
		}
		for range 3 {
			port, err := freePort() // only names the node's config file
			if err != nil {
				clusterErr = err
				return
			}
			addr, err := startRedis([]string{"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(tmpRoot, fmt.Sprintf("nodes-%d.conf", port)),
				"--cluster-node-timeout", "2000"})
			if err != nil {
				clusterErr = err
				return
			}
			clusterAddrs = append(clusterAddrs, addr)
		}
		args := append([]string{"--cluster", "create"}, clusterAddrs...)
		args = append(args, "--cluster-replicas", "0", "--cluster-yes")
		out, err := exec.Command(redisCLIBin, args...).CombinedOutput()
		if err != nil {
			clusterErr = fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
			return
		}
		clusterErr = waitClusterOK(clusterAddrs, 10*time.Second)
	})
	return clusterAddrs, clusterErr
}

func waitClusterOK(addrs []string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, addr := range addrs {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		for {
			info, err := rdb.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				rdb.Close()
				return fmt.Errorf("cluster node %s not ok within %s: %v %s", addr, within, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		rdb.Close()
	}
	return nil
}

var (
	sentinelOnce sync.Once
	sentinelAddr string
	sentinelErr  error
)

// startSentinel starts (once) a master and one Sentinel monitoring it as "mymaster".
func startSentinel() (string, error) {
	sentinelOnce.Do(func() {
		master, err := startRedis(nil)
		if err != nil {
			sentinelErr = err
			return
		}
		host, port, _ := net.SplitHostPort(master)
		conf := filepath.Join(tmpRoot, "sentinel.conf")
		body := fmt.Sprintf("sentinel monitor mymaster %s %s 1\nsentinel down-after-milliseconds mymaster 5000\n", host, port)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			sentinelErr = err
			return
		}
		// Sentinel rejects --save/--appendonly as sentinel directives only in its config; on
		// the command line they are plain server options and accepted.
		sentinelAddr, sentinelErr = startRedis(nil, conf, "--sentinel")
	})
	return sentinelAddr, sentinelErr
}

// listenBlackhole accepts connections and never answers, like a server that hangs.
func listenBlackhole(t *testing.T) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String(), nil
}
