// Package testenv holds what the project's tests need to know about the
// machine they run on, so that each test package does not find it anew.
package testenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ModuleRoot returns the directory holding the project's go.mod, searching
// upward from the test's working directory.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// DebianMirror returns the Debian archive that apt on this machine is
// configured with ($AOF_DEBIAN_MIRROR overrides), read at run time by
// scripts/debian-mirror.sh so that no host is written into a test.
func DebianMirror(tb testing.TB) string {
	tb.Helper()
	if m := os.Getenv("AOF_DEBIAN_MIRROR"); m != "" {
		return strings.TrimSuffix(m, "/")
	}
	script := filepath.Join(ModuleRoot(tb), "scripts", "debian-mirror.sh")
	out, err := exec.Command("bash", script).Output()
	if err != nil {
		var stderr string
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		tb.Fatalf("%s: %v %s", script, err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// Tool returns the path of a command the test uses as an oracle. Without
// it the test is skipped, or fails when AOF_REQUIRE_TOOLS=1 (make test),
// so that CI never passes by skipping.
func Tool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("AOF_REQUIRE_TOOLS") == "1" {
			tb.Fatalf("%s is required (AOF_REQUIRE_TOOLS=1; scripts/install-test-deps.sh installs it): %v", name, err)
		}
		tb.Skipf("%s not installed", name)
	}
	return p
}
