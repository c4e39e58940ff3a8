// Command apt-ostree-factory builds Debian OSTree commits, update
// repositories and disk images. This file wires subcommands to the
// packages that do the work; it holds no logic of its own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"build", "build a recipe into a bootable OSTree commit and its disk images (resolve, fetch, unpack, configure, commit, image)", runBuild},
	{"sign", "add OpenPGP signatures (ostree.gpgsigs) to a commit", runSign},
	{"delta", "generate a static delta (`delta generate`), or an offline update bundle", runDelta},
	{"publish", "make a repository's state visible: deltas, delta indexes, signed summary, pruning", runPublish},
	{"image", "write a recipe's disk images (raw, qcow2) from a commit already in a repository", runImage},
	{"commit", "commit a directory to an OSTree repository (like `ostree commit`)", runCommit},
	{"ls", "list a path of a commit", runLs},
	{"show", "show a commit's subject, date and metadata", runShow},
	{"refs", "list the refs of a repository", runRefs},
	{"log", "show a branch's history", runLog},
	{"checkout", "write a commit's tree to a new directory", runCheckout},
	{"fsck", "verify every object of a repository", runFsck},
	{"resolve", "resolve a recipe's packages against its archives and write a lock file", runResolve},
	{"fetch", "download a recipe's or lock file's .debs into the verified cache", runFetch},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: apt-ostree-factory COMMAND [OPTIONS] [ARGS]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'apt-ostree-factory COMMAND --help' for a command's options.\n")
}

// exitError carries a specific exit status (e.g. fsck found problems).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageError marks errors in the command line itself (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		if err == nil || errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "apt-ostree-factory %s: %v\n", c.name, err)
		var ee *exitError
		var ue *usageError
		switch {
		case errors.As(err, &ee):
			return ee.code
		case errors.As(err, &ue):
			return 2
		}
		return 1
	}
	fmt.Fprintf(stderr, "apt-ostree-factory: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// newFlags makes a FlagSet whose --help prints the command's synopsis.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: apt-ostree-factory %s %s\n\nOptions:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses flags anywhere on the command line (ostree-style),
// returning the positional arguments. Everything after "--" is positional.
func parseArgs(fs *flag.FlagSet, args []string, minPos, maxPos int) ([]string, error) {
	var pos []string
	for {
		var tail []string
		for i, a := range args {
			if a == "--" {
				tail = args[i+1:]
				args = args[:i]
				break
			}
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			pos = append(pos, tail...)
			break
		}
		pos = append(pos, rest[0])
		args = append(rest[1:], func() []string {
			if tail != nil {
				return append([]string{"--"}, tail...)
			}
			return nil
		}()...)
	}
	if len(pos) < minPos || (maxPos >= 0 && len(pos) > maxPos) {
		fs.Usage()
		return nil, &usageError{fmt.Sprintf("wrong number of arguments (%d)", len(pos))}
	}
	return pos, nil
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
