package service

import "time"

// SetReadinessTimeout shortens the readiness timeout for a test and
// returns a function that restores it.
func SetReadinessTimeout(d time.Duration) (restore func()) {
	old := readinessTimeout
	readinessTimeout = d
	return func() { readinessTimeout = old }
}
