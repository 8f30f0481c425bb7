//go:build !unix

package loadgen

import "time"

// cpuTime is not measured here: client_cpu_us_per_req stays 0.
func cpuTime() (time.Duration, bool) { return 0, false }
