// Command siskin runs Flagger-compatible canary releases for Kubernetes and Istio as stateless
// HTTP functions: `siskin serve` is the Knative-hosted server; the other verbs are a CLI that
// talks to it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "siskin:", err)
		os.Exit(1)
	}
}

const usage = `siskin: serverless progressive delivery for Kubernetes and Istio

usage:
  siskin serve [flags]                       run the HTTP functions (the default)
  siskin status [namespace[/name]] [--watch] show canaries like kubectl get canaries
  siskin events namespace/name [--from-history]  show a canary's Kubernetes events (or those its history kept)
  siskin history namespace/name              show a canary's last releases, step by step
  siskin dashboard [flags]                   the web dashboard on localhost (kubeconfig, REDIS_URL)
  siskin promote|abort|resume namespace/name manual gates
  siskin version

Run 'siskin <verb> -h' for a verb's flags.
`

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	verb, rest := "serve", args[1:]
	if len(rest) > 0 && len(rest[0]) > 0 && rest[0][0] != '-' {
		verb, rest = rest[0], rest[1:]
	}
	switch verb {
	case "serve":
		return serve(ctx, rest, getenv, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, getenv, stdout, stderr)
	case "events":
		return runEvents(ctx, rest, getenv, stdout, stderr)
	case "history":
		return runHistory(ctx, rest, getenv, stdout, stderr)
	case "dashboard":
		return dashboard(ctx, rest, getenv, stdout, stderr)
	case "promote", "abort", "resume":
		return runGate(ctx, verb, rest, getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "siskin", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown verb %q", verb)
}
