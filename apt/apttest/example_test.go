package apttest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/apt/apttest"
)

// A signed archive with two packages, loaded through the real verification
// path.
func Example() {
	dir, _ := os.MkdirTemp("", "apttest")
	defer os.RemoveAll(dir)

	repo, keyring, err := apttest.NewSigned(dir)
	if err != nil {
		panic(err)
	}
	for _, d := range []apttest.Deb{
		{Package: "libhello1", Version: "1.0-1", Fields: map[string]string{"Multi-Arch": "same"}},
		{Package: "hello", Version: "1.0-1", Fields: map[string]string{"Depends": "libhello1 (>= 1.0)"},
			Files: map[string]string{"usr/bin/hello": "#!/bin/sh\necho hello\n"}},
	} {
		if _, err := repo.AddDeb("main", d); err != nil {
			panic(err)
		}
	}
	if err := repo.Publish(); err != nil {
		panic(err)
	}

	src := repo.Source([]string{keyring})
	pkgs, _, err := apt.LoadSources(context.Background(), &apttest.FileOpener{}, []*apt.Source{src},
		"amd64", filepath.Join(dir, "cache"), time.Now())
	if err != nil {
		panic(err)
	}
	for _, p := range pkgs {
		fmt.Println(p.ID(), p.Filename)
	}
	// Output:
	// libhello1:amd64=1.0-1 pool/main/l/libhello1/libhello1_1.0-1_amd64.deb
	// hello:amd64=1.0-1 pool/main/h/hello/hello_1.0-1_amd64.deb
}
