package functions

import (
	"errors"
	"fmt"
	"runtime/debug"

	"golang.org/x/sync/errgroup"
)

// ErrPanic marks a task that panicked; the panic is turned into an error so one canary's bug
// never kills the process, and the other canaries of a tick, an alert or a push carry on.
var ErrPanic = errors.New("panic")

// forEach runs f for every item, at most limit at once (no limit when limit <= 0), and returns
// once all have run. f reports its own outcome; forEach only catches panics, and returns the
// first one as its error.
func forEach[T any](items []T, limit int, f func(T)) error {
	var g errgroup.Group
	if limit > 0 {
		g.SetLimit(limit)
	}
	for _, it := range items {
		g.Go(func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("%w: %v\n%s", ErrPanic, r, debug.Stack())
				}
			}()
			f(it)
			return nil
		})
	}
	return g.Wait()
}
