package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// apiClient talks to a running Siskin's JSON API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func (c apiClient) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.base, "/")+path, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read reply: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

func cliFlags(name string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet("siskin "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", envOr(getenv, "SISKIN_URL", "http://127.0.0.1:8080"), "Siskin's URL (env SISKIN_URL)")
	token := fs.String("token", getenv("SISKIN_API_TOKEN"), "operator's bearer token (env SISKIN_API_TOKEN)")
	return fs, server, token
}

// parseInterspersed parses flags wherever they are among the arguments and returns the others
// in order: flag.Parse alone stops at the first argument, so `siskin status ns/name --watch`
// would ignore --watch.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// runGate is `siskin promote|abort|resume namespace/name`.
func runGate(ctx context.Context, gate string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, server, token := cliFlags(gate, getenv, stderr)
	reason := fs.String("reason", "", "why (abort only)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: siskin %s [flags] namespace/name", gate)
	}
	k, err := functions.ParseKey(pos[0])
	if err != nil {
		return err
	}
	c := apiClient{base: *server, token: *token, http: &http.Client{Timeout: 60 * time.Second}}
	path := fmt.Sprintf("/api/v1/canaries/%s/%s/%s", url.PathEscape(k.Namespace), url.PathEscape(k.Name), gate)
	if *reason != "" {
		path += "?reason=" + url.QueryEscape(*reason)
	}
	var rep functions.StepReport
	if err := c.do(ctx, http.MethodPost, path, &rep); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s: %s -> %s (weight %d)", gate, k, rep.From, rep.To, rep.Routing.Canary)
	if rep.Message != "" {
		fmt.Fprintf(stdout, ": %s", rep.Message)
	}
	fmt.Fprintln(stdout)
	return nil
}

// runStatus is `siskin status [namespace[/name]] [--watch]`.
func runStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, server, token := cliFlags("status", getenv, stderr)
	watch := fs.Bool("watch", false, "redraw every second until interrupted")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("usage: siskin status [flags] [namespace[/name]]")
	}
	c := apiClient{base: *server, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	path, one := "/api/v1/canaries", false
	if len(pos) == 1 {
		path += "/" + pos[0]
		one = strings.Contains(pos[0], "/")
	}
	for {
		var views []functions.CanaryView
		var err error
		if one {
			var v functions.CanaryView
			err = c.do(ctx, http.MethodGet, path, &v)
			views = []functions.CanaryView{v}
		} else {
			err = c.do(ctx, http.MethodGet, path, &views)
		}
		if err != nil {
			if *watch && ctx.Err() != nil {
				return nil // interrupted mid-request: the normal end of --watch
			}
			return err
		}
		if *watch {
			fmt.Fprint(stdout, "\033[H\033[2J")
		}
		printStatus(stdout, views, time.Now())
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// printStatus renders `kubectl get canaries` columns, a weight bar and the last message.
func printStatus(w io.Writer, views []functions.CanaryView, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tSTATUS\tWEIGHT\t\tFAILEDCHECKS\tINTERVAL\tSTEPWEIGHT\tMAXWEIGHT\tLASTTRANSITIONTIME\tNEXT STEP")
	for _, v := range views {
		step := fmt.Sprint(v.StepWeight)
		if len(v.StepWeights) > 0 {
			step = fmt.Sprint(v.StepWeights)
		}
		next := "-"
		if !v.NextStepAt.IsZero() {
			next = "in " + v.NextStepAt.Sub(now).Round(time.Second).String()
			if v.NextStepAt.Before(now) {
				next = "due"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d/%d\t%s\t%s\t%d\t%s\t%s\n", v.Namespace, v.Name, v.Phase, v.Weight,
			weightBar(v.Weight, v.MaxWeight, 20), v.FailedChecks, v.Threshold, v.Interval, step, v.MaxWeight,
			v.LastTransitionTime.UTC().Format(time.RFC3339), next)
	}
	tw.Flush()
	for _, v := range views {
		if v.Message != "" {
			fmt.Fprintf(w, "%s/%s: %s\n", v.Namespace, v.Name, v.Message)
		}
		if v.SpecError != "" {
			fmt.Fprintf(w, "%s/%s: invalid spec: %s\n", v.Namespace, v.Name, v.SpecError)
		}
	}
}

// weightBar draws the canary's share of traffic; '|' marks maxWeight.
func weightBar(weight, maxWeight, width int) string {
	if width <= 0 {
		return ""
	}
	filled := weight * width / 100
	mark := maxWeight * width / 100
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < width; i++ {
		switch {
		case i < filled:
			b.WriteByte('#')
		case i == mark && maxWeight < 100:
			b.WriteByte('|')
		default:
			b.WriteByte('.')
		}
	}
	b.WriteByte(']')
	return b.String()
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// runEvents is `siskin events namespace/name`.
func runEvents(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, server, token := cliFlags("events", getenv, stderr)
	fromHistory := fs.Bool("from-history", false, "the Events the history recorded with each step (kept past Kubernetes' Event TTL), instead of the Kubernetes Events")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: siskin events [flags] namespace/name")
	}
	k, err := functions.ParseKey(pos[0])
	if err != nil {
		return err
	}
	c := apiClient{base: *server, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	if *fromHistory {
		var rs []functions.Release
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/canaries/%s/%s/history", url.PathEscape(k.Namespace), url.PathEscape(k.Name)), &rs); err != nil {
			return err
		}
		printEvents(stdout, historyEvents(rs))
		return nil
	}
	var events []functions.EventRecord
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/canaries/%s/%s/events", url.PathEscape(k.Namespace), url.PathEscape(k.Name)), &events); err != nil {
		return err
	}
	printEvents(stdout, events)
	return nil
}

func printEvents(w io.Writer, events []functions.EventRecord) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tCOUNT\tMESSAGE")
	for _, e := range events {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Type, e.Count, e.Message)
	}
	tw.Flush()
}

// runHistory is `siskin history namespace/name`: the kept releases, newest first, each step
// with its weight, metrics against their thresholds, and the decision with its reason.
func runHistory(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, server, token := cliFlags("history", getenv, stderr)
	last := fs.Int("releases", 3, "how many releases to show, newest first (0: all kept)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: siskin history [flags] namespace/name")
	}
	k, err := functions.ParseKey(pos[0])
	if err != nil {
		return err
	}
	c := apiClient{base: *server, token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	var rs []functions.Release
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/canaries/%s/%s/history", url.PathEscape(k.Namespace), url.PathEscape(k.Name)), &rs); err != nil {
		return err
	}
	if *last > 0 && len(rs) > *last {
		rs = rs[:*last]
	}
	printHistory(stdout, rs)
	return nil
}

func printHistory(w io.Writer, rs []functions.Release) {
	if len(rs) == 0 {
		fmt.Fprintln(w, "no history")
		return
	}
	for i, r := range rs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		end := "in flight"
		if !r.End.IsZero() {
			end = r.End.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "release %s: %s, %s → %s (%s)", r.ID, r.Outcome, r.Start.UTC().Format(time.RFC3339), end, r.Duration.Round(time.Second))
		if r.Trigger != nil {
			fmt.Fprintf(w, ", trigger %s %s", r.Trigger.Kind, r.Trigger.Detail)
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tPHASE\tWEIGHT\tFAILED\tMETRICS\tDECISION\tREASON")
		for _, s := range r.Steps {
			var ms []string
			for _, m := range s.Metrics {
				v := strconv.FormatFloat(m.Value, 'f', 2, 64)
				switch {
				case m.Err != "":
					v = "error"
				case m.NoData:
					v = "no data"
				}
				mark := ""
				if !m.OK {
					mark = "!"
				}
				ms = append(ms, m.Name+"="+v+mark)
			}
			metrics := strings.Join(ms, " ")
			if metrics == "" {
				metrics = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d/%d\t%s\t%s\t%s\n", s.At.UTC().Format(time.TimeOnly), s.To, s.Weight,
				s.FailedChecks, s.Threshold, metrics, s.Decision, s.Reason)
		}
		tw.Flush()
	}
}

// historyEvents are the Events the kept releases recorded, oldest first.
func historyEvents(rs []functions.Release) []functions.EventRecord {
	var out []functions.EventRecord
	for i := len(rs) - 1; i >= 0; i-- {
		for _, s := range rs[i].Steps {
			for _, e := range s.Events {
				typ := "Normal"
				if e.Warning {
					typ = "Warning"
				}
				out = append(out, functions.EventRecord{Time: s.At, Type: typ, Reason: "Synced", Message: e.Message, Count: 1})
			}
		}
	}
	return out
}
