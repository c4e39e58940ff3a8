package apt

import (
	"bytes"
	"testing"
)

// BenchmarkSolveMinbase resolves mmdebstrap's minbase plus a bootable
// OSTree system against a full Debian main index (see realPackagesIndex),
// the request of the live acceptance test.
func BenchmarkSolveMinbase(b *testing.B) {
	data := realPackagesIndex(b)
	idx := &Index{Source: &Source{URI: "http://deb.debian.org/debian", Suite: "bookworm"}, Component: "main", Architecture: "amd64"}
	universe, err := ParsePackages(bytes.NewReader(data), idx)
	if err != nil {
		b.Fatal(err)
	}
	req := Request{Architecture: "amd64", Variant: "minbase", Packages: []string{"systemd-sysv", "udev", "linux-image-amd64", "ostree", "ostree-boot"}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sol, err := Solve(universe, req)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(sol.Packages)), "packages")
	}
}
