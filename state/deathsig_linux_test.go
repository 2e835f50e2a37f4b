package state

import (
	"os/exec"
	"syscall"
)

// dieWithTest kills a server the test started if the test binary dies first (a panic or a
// -timeout), so no redis-server outlives it.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
