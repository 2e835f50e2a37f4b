//go:build !testhooks

package main

import "github.com/siskin-dev/siskin/functions"

// afterActHook: a production binary has no test hook between act and save (see
// testhooks_on.go).
func afterActHook(func(string) string) func(functions.Key) error { return nil }
