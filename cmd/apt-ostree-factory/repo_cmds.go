package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

func requireRepo(repo string) error {
	if repo == "" {
		return &usageError{"--repo is required"}
	}
	return nil
}

func openRepo(repo string) (*ostree.Repo, error) {
	if err := requireRepo(repo); err != nil {
		return nil, err
	}
	return ostree.Open(repo)
}

// openRev opens a repository and resolves a revision in it.
func openRev(repoPath, rev string) (*ostree.Repo, ostree.Checksum, error) {
	repo, err := openRepo(repoPath)
	if err != nil {
		return nil, ostree.Checksum{}, err
	}
	c, err := repo.ResolveRev(rev)
	return repo, c, err
}

func runCommit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("commit", "--repo=REPO --branch=BRANCH [OPTIONS] DIR", stderr)
	repoPath := fs.String("repo", "", "repository path; created in archive-z2 mode if missing")
	branch := fs.String("branch", "", "branch (ref) to commit on; its current commit becomes the parent")
	fs.StringVar(branch, "b", "", "short for --branch")
	subject := fs.String("subject", "", "commit subject")
	fs.StringVar(subject, "s", "", "short for --subject")
	body := fs.String("body", "", "commit body")
	fs.StringVar(body, "m", "", "short for --body")
	tsFlag := fs.String("timestamp", "", "commit time, RFC 3339 (default: $SOURCE_DATE_EPOCH if set, else now)")
	var meta multiFlag
	fs.Var(&meta, "add-metadata-string", "add metadata KEY=VALUE (string); repeatable, order kept")
	ownerUID := fs.Int("owner-uid", -1, "set the owner uid of every file")
	ownerGID := fs.Int("owner-gid", -1, "set the owner gid of every file")
	noXattrs := fs.Bool("no-xattrs", false, "do not commit extended attributes")
	parent := fs.String("parent", "", "parent commit checksum, or \"none\" (default: the branch's current commit)")
	orphan := fs.Bool("orphan", false, "commit without a parent and without moving a branch")
	noBindings := fs.Bool("no-bindings", false, "do not add the ostree.ref-binding metadata")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if err := requireRepo(*repoPath); err != nil {
		return err
	}
	if *branch == "" && !*orphan {
		return &usageError{"--branch is required (or --orphan)"}
	}
	opts := ostree.CommitOptions{Branch: *branch, Subject: *subject, Body: *body, NoBindings: *noBindings}
	if *orphan {
		opts.Branch = ""
		opts.Orphan = true
	}
	if opts.Timestamp, err = commitTime(*tsFlag); err != nil {
		return err
	}
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return &usageError{fmt.Sprintf("--add-metadata-string %q: expected KEY=VALUE", kv)}
		}
		opts.Metadata = append(opts.Metadata, ostree.MetadataEntry{Key: k, Value: gvariant.NewVariant("s", v)})
	}
	switch *parent {
	case "":
	case "none":
		opts.Orphan = true
	default:
		c, err := ostree.ParseChecksum(*parent)
		if err != nil {
			return &usageError{"--parent: " + err.Error()}
		}
		opts.Parent = &c
	}
	var dopts ostree.DirOptions
	if *ownerUID >= 0 {
		u := uint32(*ownerUID)
		dopts.OwnerUID = &u
	}
	if *ownerGID >= 0 {
		g := uint32(*ownerGID)
		dopts.OwnerGID = &g
	}
	dopts.NoXattrs = *noXattrs
	dir := pos[0]
	if st, err := os.Stat(dir); err != nil {
		return err
	} else if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	tree, err := ostree.ReadDir(dir, dopts)
	if err != nil {
		return err
	}
	repo, err := ostree.Init(*repoPath)
	if err != nil {
		return err
	}
	res, err := repo.CommitTree(ctx, tree, opts)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res.Checksum)
	return nil
}

// commitTime parses --timestamp, falling back to SOURCE_DATE_EPOCH, then now.
func commitTime(s string) (time.Time, error) {
	if s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return time.Time{}, &usageError{fmt.Sprintf("--timestamp %q: expected RFC 3339, e.g. 2024-05-01T12:00:00Z", s)}
		}
		return t, nil
	}
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		n, err := strconv.ParseInt(e, 10, 64)
		if err != nil || n < 0 {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative integer", e)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Now(), nil
}

func modeChar(m uint32) byte {
	switch m & ostree.ModeTypeMask {
	case ostree.ModeDir:
		return 'd'
	case ostree.ModeSymlink:
		return 'l'
	}
	return '-'
}

func runLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ls", "--repo=REPO [-R] [-X] [-C] REV [PATH...]", stderr)
	repoPath := fs.String("repo", "", "repository path")
	recursive := fs.Bool("R", false, "list recursively")
	xattrs := fs.Bool("X", false, "show extended attributes")
	checksums := fs.Bool("C", false, "show object checksums")
	pos, err := parseArgs(fs, args, 1, -1)
	if err != nil {
		return err
	}
	repo, c, err := openRev(*repoPath, pos[0])
	if err != nil {
		return err
	}
	paths := pos[1:]
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	for _, p := range paths {
		err := repo.Walk(c, p, *recursive, func(e *ostree.TreeEntry) error {
			line := fmt.Sprintf("%c0%04o %d %d %6d ", modeChar(e.Meta.Mode), e.Meta.Mode&ostree.ModePermMask, e.Meta.UID, e.Meta.GID, e.Size)
			if *checksums {
				line += e.Checksum.String() + " "
				if e.IsDir() {
					line += e.MetaSum.String() + " "
				}
			}
			if *xattrs {
				xs := make([]any, len(e.Meta.Xattrs))
				for i, x := range e.Meta.Xattrs {
					xs[i] = []any{append([]byte(x.Name), 0), x.Value}
				}
				line += "{ " + gvariant.Format(gvariant.MustParseType("a(ayay)"), xs) + " } "
			}
			line += e.Path
			if e.Symlink != "" {
				line += " -> " + e.Symlink
			}
			_, err := fmt.Fprintln(stdout, line)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func printCommit(w io.Writer, c ostree.Checksum, cm *ostree.Commit) {
	fmt.Fprintf(w, "commit %s\n", c)
	if !cm.Parent.IsZero() {
		fmt.Fprintf(w, "Parent:  %s\n", cm.Parent)
	}
	fmt.Fprintf(w, "Date:  %s\n", cm.Timestamp.UTC().Format("2006-01-02 15:04:05 -0700"))
	if v, ok := cm.Metadata.String("version"); ok {
		fmt.Fprintf(w, "Version: %s\n", v)
	}
	fmt.Fprintf(w, "\n    %s\n", cm.Subject)
	if cm.Body != "" {
		fmt.Fprintln(w)
		for _, l := range strings.Split(cm.Body, "\n") {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	fmt.Fprintln(w)
}

func runShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("show", "--repo=REPO REV", stderr)
	repoPath := fs.String("repo", "", "repository path")
	key := fs.String("print-metadata-key", "", "print only the value of this metadata key")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	repo, c, err := openRev(*repoPath, pos[0])
	if err != nil {
		return err
	}
	cm, err := repo.ReadCommit(c)
	if err != nil {
		return err
	}
	if *key != "" {
		v, ok := cm.Metadata.Get(*key)
		if !ok {
			return fmt.Errorf("commit %s has no metadata key %q", c, *key)
		}
		fmt.Fprintln(stdout, gvariant.FormatVariant(v))
		return nil
	}
	printCommit(stdout, c, cm)
	fmt.Fprintf(stdout, "Root:  %s %s\n", cm.RootTree, cm.RootMeta)
	if len(cm.Metadata) > 0 {
		fmt.Fprintln(stdout, "Metadata:")
		for _, e := range cm.Metadata {
			fmt.Fprintf(stdout, "  %s: %s\n", e.Key, gvariant.FormatVariant(e.Value))
		}
	}
	det, err := repo.ReadCommitMeta(c)
	if err != nil {
		return err
	}
	if len(det) > 0 {
		fmt.Fprintln(stdout, "Detached metadata:")
		for _, e := range det {
			fmt.Fprintf(stdout, "  %s: %s\n", e.Key, e.Value.Type)
		}
	}
	return nil
}

func runRefs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("refs", "--repo=REPO", stderr)
	repoPath := fs.String("repo", "", "repository path")
	withSums := fs.Bool("checksums", false, "print each ref's commit checksum after its name")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	repo, err := openRepo(*repoPath)
	if err != nil {
		return err
	}
	refs, names, err := repo.ListRefs()
	if err != nil {
		return err
	}
	for _, n := range names {
		if *withSums {
			fmt.Fprintf(stdout, "%s %s\n", n, refs[n])
		} else {
			fmt.Fprintln(stdout, n)
		}
	}
	return nil
}

func runLog(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("log", "--repo=REPO REV", stderr)
	repoPath := fs.String("repo", "", "repository path")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	repo, c, err := openRev(*repoPath, pos[0])
	if err != nil {
		return err
	}
	for {
		cm, err := repo.ReadCommit(c)
		if err != nil {
			return err
		}
		printCommit(stdout, c, cm)
		if cm.Parent.IsZero() {
			return nil
		}
		if ok, err := repo.HasObject(cm.Parent, ostree.ObjectCommit); err != nil {
			return err
		} else if !ok {
			fmt.Fprintf(stdout, "<< History beyond this commit not fetched >>\n")
			return nil
		}
		c = cm.Parent
	}
}

func runCheckout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("checkout", "--repo=REPO [--subpath=PATH] REV DEST", stderr)
	repoPath := fs.String("repo", "", "repository path")
	subpath := fs.String("subpath", "", "check out only this directory of the commit")
	owners := fs.Bool("owners", false, "apply the commit's uid/gid (needs privilege); default: files belong to you")
	xattrs := fs.Bool("xattrs", false, "apply the commit's extended attributes")
	pos, err := parseArgs(fs, args, 2, 2)
	if err != nil {
		return err
	}
	repo, c, err := openRev(*repoPath, pos[0])
	if err != nil {
		return err
	}
	return repo.Checkout(ctx, c, pos[1], ostree.CheckoutOptions{Subpath: *subpath, Owners: *owners, Xattrs: *xattrs})
}

func runFsck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fsck", "--repo=REPO", stderr)
	repoPath := fs.String("repo", "", "repository path")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	repo, err := openRepo(*repoPath)
	if err != nil {
		return err
	}
	rep, err := repo.Verify(ctx, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Verified %d commits, %d dirtrees, %d dirmetas, %d content objects\n", rep.Commits, rep.DirTrees, rep.DirMetas, rep.Files)
	for _, p := range rep.Problems {
		fmt.Fprintf(stdout, "error: %s\n", p)
	}
	if len(rep.Problems) > 0 {
		return &exitError{1, fmt.Sprintf("%d problems found in %s", len(rep.Problems), *repoPath)}
	}
	return nil
}
