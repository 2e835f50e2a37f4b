//go:build !linux

package state

import "os/exec"

// dieWithTest has no portable equivalent off Linux; TestMain still stops the servers.
func dieWithTest(*exec.Cmd) {}
