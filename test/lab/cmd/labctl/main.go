// Command labctl runs a lab in the background for the shell (make lab-up / make lab-down).
//
//	labctl up     start a lab in the background (or reuse the running one) and print
//	              shell-evaluable export lines: eval "$(labctl up)"
//	labctl down   stop it, and check that none of its processes is left
//	labctl env    print the export lines of the running lab
//	labctl run    run a lab in the foreground until Ctrl-C (what up starts in the background)
//
// The state (supervisor pid, export lines, process list, supervisor log) lives in
// $SISKIN_LAB_STATE, default ${TMPDIR:-/tmp}/siskin-lab-current.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/siskin-dev/siskin/test/lab"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	state := os.Getenv("SISKIN_LAB_STATE")
	if state == "" {
		state = filepath.Join(os.TempDir(), "siskin-lab-current")
	}
	s := stateDir(state)
	var err error
	switch os.Args[1] {
	case "up":
		err = s.up()
	case "down":
		err = s.down()
	case "env":
		err = s.env()
	case "run":
		err = s.run()
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "labctl %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: labctl up|down|env|run")
	os.Exit(2)
}

type stateDir string

func (s stateDir) file(name string) string { return filepath.Join(string(s), name) }

// process is a recorded lab process: its pid and the command it ran, so that a reused pid is
// not mistaken for it.
type process struct {
	PID     int    `json:"pid"`
	Command string `json:"command"`
}

func (s stateDir) up() error {
	began := time.Now()
	if pid, ok := s.supervisor(); ok {
		if env, err := os.ReadFile(s.file("env.sh")); err == nil {
			fmt.Fprintf(os.Stderr, "lab: already running (supervisor pid %d)\n", pid)
			os.Stdout.Write(env)
			return nil
		}
		return fmt.Errorf("a lab is starting or stopping (supervisor pid %d); see %s", pid, s.file("supervisor.log"))
	}
	if err := os.MkdirAll(string(s), 0o755); err != nil {
		return err
	}
	for _, f := range []string{"env.sh", "processes.json", "timings", "supervisor.pid"} {
		_ = os.Remove(s.file(f))
	}
	logFile, err := os.Create(s.file("supervisor.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "run")
	cmd.Env = append(os.Environ(), "SISKIN_LAB_STATE="+string(s))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives this shell's session
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM)

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("the lab did not start (%v):\n%s", err, lastLines(s.file("supervisor.log"), 40))
		case <-interrupted:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
			return errors.New("interrupted; the lab was stopped")
		case <-tick.C:
		}
		env, err := os.ReadFile(s.file("env.sh"))
		if err != nil {
			continue
		}
		timings, _ := os.ReadFile(s.file("timings"))
		fmt.Fprintf(os.Stderr, "lab: up in %s (%s); stop it with make lab-down\n",
			time.Since(began).Round(10*time.Millisecond), strings.TrimSpace(string(timings)))
		os.Stdout.Write(env)
		return nil
	}
}

// run starts a lab in the foreground, publishes it in the state folder and stops it on a signal.
func (s stateDir) run() error {
	if pid, ok := s.supervisor(); ok && pid != os.Getpid() {
		return fmt.Errorf("a lab is already running (supervisor pid %d); run labctl down first", pid)
	}
	if err := os.MkdirAll(string(s), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(s.file("supervisor.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer s.clean()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	l, err := lab.Start(ctx, lab.Options{Logger: logger, KeepDir: os.Getenv("SISKIN_LAB_KEEP") != ""})
	if err != nil {
		return err
	}
	stopLab := func() error {
		if err := l.Stop(); err != nil {
			return err
		}
		logger.Info("lab stopped; no process left")
		return nil
	}
	procs := map[string]process{}
	for name, pid := range l.PIDs() {
		procs[name] = process{PID: pid, Command: command(pid)}
	}
	data, err := json.Marshal(procs)
	if err != nil {
		return errors.Join(err, stopLab())
	}
	var env strings.Builder
	for _, kv := range l.Env() {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&env, "export %s=%s\n", k, shellQuote(v))
	}
	for _, w := range l.Warnings() {
		fmt.Fprintf(&env, "# warning: %s\n", w)
	}
	for name, content := range map[string][]byte{
		"processes.json": data,
		"timings":        []byte(lab.FormatTimings(l.Timings())),
		"env.sh":         []byte(env.String()), // last: its presence means ready
	} {
		if err := writeAtomic(s.file(name), content); err != nil {
			return errors.Join(err, stopLab())
		}
	}
	fmt.Print(env.String())
	<-ctx.Done()
	logger.Info("stopping the lab")
	return stopLab()
}

func (s stateDir) down() error {
	defer s.clean()
	pid, ok := s.supervisor()
	if ok {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if !waitGone(pid, "labctl", 60*time.Second) {
			fmt.Fprintf(os.Stderr, "lab: supervisor %d did not stop in 60 s; killing it\n", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL) // its servers die with it (parent-death signal)
			waitGone(pid, "labctl", 5*time.Second)
		}
	}
	// Whatever happened to the supervisor, no server of the lab may survive it.
	var left []string
	for name, p := range s.processes() {
		if waitGone(p.PID, p.Command, 5*time.Second) {
			continue
		}
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		if !waitGone(p.PID, p.Command, 3*time.Second) {
			left = append(left, fmt.Sprintf("%s (pid %d)", name, p.PID))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("processes left: %s", strings.Join(left, ", "))
	}
	if ok {
		fmt.Fprintln(os.Stderr, "lab: stopped; no process left")
	} else {
		fmt.Fprintln(os.Stderr, "lab: none running")
	}
	return nil
}

func (s stateDir) env() error {
	if _, ok := s.supervisor(); !ok {
		return errors.New("no lab running; start one with make lab-up")
	}
	env, err := os.ReadFile(s.file("env.sh"))
	if err != nil {
		return fmt.Errorf("lab not ready yet: %w", err)
	}
	_, err = os.Stdout.Write(env)
	return err
}

// supervisor is the pid of a live supervisor recorded in the state folder.
func (s stateDir) supervisor() (int, bool) {
	b, err := os.ReadFile(s.file("supervisor.pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, alive(pid, "labctl")
}

func (s stateDir) processes() map[string]process {
	procs := map[string]process{}
	if b, err := os.ReadFile(s.file("processes.json")); err == nil {
		_ = json.Unmarshal(b, &procs)
	}
	return procs
}

func (s stateDir) clean() {
	for _, f := range []string{"env.sh", "processes.json", "timings", "supervisor.pid"} {
		_ = os.Remove(s.file(f))
	}
}

// alive reports whether pid runs a command containing want; a zombie is not alive.
func alive(pid int, want string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return want == "" || strings.Contains(command(pid), want)
}

func command(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	first, _, _ := strings.Cut(string(b), "\x00")
	return filepath.Base(first)
}

func waitGone(pid int, want string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(pid, want) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func writeAtomic(path string, data []byte) error {
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
