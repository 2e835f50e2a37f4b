package lab

import (
	"math"
	"slices"
	"time"
)

// Percentile is the nearest-rank percentile p (0-100) of ds, as the lab's benchmarks report
// their latencies and gaps; 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
