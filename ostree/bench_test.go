package ostree

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkCommitDir commits the directory named by $AOF_BENCH_DIR into a
// fresh repository per iteration; use it with -cpuprofile to profile the
// writer. The side-by-side comparison with ostree is `make bench`.
func BenchmarkCommitDir(b *testing.B) {
	dir := os.Getenv("AOF_BENCH_DIR")
	if dir == "" {
		b.Skip("set AOF_BENCH_DIR to a directory to commit")
	}
	for i := 0; i < b.N; i++ {
		r, err := Init(filepath.Join(b.TempDir(), "repo"))
		if err != nil {
			b.Fatal(err)
		}
		tree, err := ReadDir(dir, DirOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.CommitTree(context.Background(), tree, CommitOptions{Branch: "bench", Timestamp: ts2020}); err != nil {
			b.Fatal(err)
		}
	}
}
