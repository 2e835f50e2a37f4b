//go:build testhooks

package main

import (
	"fmt"
	"os"

	"github.com/siskin-dev/siskin/functions"
)

// afterActHook is built only with -tags testhooks (the end-to-end tests' binary):
// SISKIN_TEST_CRASH_FILE names a file whose existence kills the process once, between act and
// save.
func afterActHook(getenv func(string) string) func(functions.Key) error {
	if f := getenv("SISKIN_TEST_CRASH_FILE"); f != "" {
		return crashBetweenActAndSave(f)
	}
	return nil
}

// crashBetweenActAndSave kills the process, once, right after a step acted and before it saved,
// whenever the file exists: the end-to-end tests use it to prove the next step repairs it.
func crashBetweenActAndSave(file string) func(functions.Key) error {
	return func(k functions.Key) error {
		if _, err := os.Stat(file); err == nil {
			_ = os.Remove(file)
			fmt.Fprintf(os.Stderr, "siskin: SISKIN_TEST_CRASH_FILE: exiting between act and save of %s\n", k)
			os.Exit(3)
		}
		return nil
	}
}
