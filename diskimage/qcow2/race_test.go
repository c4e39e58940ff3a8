//go:build race

package qcow2

// The race detector slows deflate down about tenfold; the big fixture is
// smaller under it (see bigFixture).
const raceEnabled = true
