package ostree

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Commits  int
	DirTrees int
	DirMetas int
	Files    int
	// Problems names each bad object or ref; empty means the repository is sound.
	Problems []string
}

// Verify walks every commit in the repository (not only those behind refs)
// and checks every object it reaches: that it exists, hashes to its name,
// and, for metadata, is normal-form GVariant of the right type. Refs must
// point at commits that are present. It is the equivalent of `ostree fsck`.
func (r *Repo) Verify(ctx context.Context, workers int) (*VerifyReport, error) {
	if err := r.requireArchive(); err != nil {
		return nil, err
	}
	rep := &VerifyReport{}
	var mu sync.Mutex
	problem := func(format string, args ...any) {
		mu.Lock()
		rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}

	refs, names, err := r.ListRefs()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if ok, err := r.HasObject(refs[n], ObjectCommit); err != nil {
			return nil, err
		} else if !ok {
			problem("ref %s points at missing commit %s", n, refs[n])
		}
	}

	commits, err := r.listObjects(ObjectCommit)
	if err != nil {
		return nil, err
	}
	rep.Commits = len(commits)
	trees := map[Checksum]bool{}
	metas := map[Checksum]bool{}
	files := map[Checksum]bool{}
	for _, c := range commits {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		partial := r.isPartial(c)
		b, err := r.ReadMetadata(ObjectCommit, c)
		if err != nil {
			problem("%v", err)
			continue
		}
		if !gvariant.IsNormal(typeCommit, b) {
			problem("object %s.commit is not in normal form", c)
			continue
		}
		cm, err := DecodeCommit(b)
		if err != nil {
			problem("object %s.commit: %v", c, err)
			continue
		}
		if mb, err := r.ReadMetadata(ObjectCommitMeta, c); err == nil {
			if !gvariant.IsNormal(typeMetadataDict, mb) {
				problem("object %s.commitmeta is not normal-form a{sv}", c)
			}
		} else if !errors.Is(err, ErrNotFound) {
			problem("%v", err)
		}
		r.verifyTree(cm.RootTree, cm.RootMeta, trees, metas, files, partial, problem)
	}
	rep.DirTrees, rep.DirMetas = len(trees), len(metas)

	list := make([]Checksum, 0, len(files))
	for c := range files {
		list = append(list, c)
	}
	rep.Files = len(list)
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var wg sync.WaitGroup
	ch := make(chan Checksum)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range ch {
				if err := r.VerifyContent(c); err != nil {
					problem("%v", err)
				}
			}
		}()
	}
	for _, c := range list {
		if ctx.Err() != nil {
			break
		}
		ch <- c
	}
	close(ch)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sort.Strings(rep.Problems)
	return rep, nil
}

func (r *Repo) verifyTree(tree, meta Checksum, trees, metas, files map[Checksum]bool, partial bool, problem func(string, ...any)) {
	missingOK := func(err error) bool { return partial && errors.Is(err, ErrNotFound) }
	if !metas[meta] {
		metas[meta] = true
		b, err := r.ReadMetadata(ObjectDirMeta, meta)
		switch {
		case err != nil:
			if !missingOK(err) {
				problem("%v", err)
			}
		case !gvariant.IsNormal(typeDirMeta, b):
			problem("object %s.dirmeta is not in normal form", meta)
		default:
			if _, err := DecodeDirMeta(b); err != nil {
				problem("object %s.dirmeta: %v", meta, err)
			}
		}
	}
	if trees[tree] {
		return
	}
	trees[tree] = true
	b, err := r.ReadMetadata(ObjectDirTree, tree)
	if err != nil {
		if !missingOK(err) {
			problem("%v", err)
		}
		return
	}
	if !gvariant.IsNormal(typeDirTree, b) {
		problem("object %s.dirtree is not in normal form", tree)
		return
	}
	dt, err := DecodeDirTree(b)
	if err != nil {
		problem("object %s.dirtree: %v", tree, err)
		return
	}
	for i := range dt.Files {
		if i > 0 && dt.Files[i-1].Name >= dt.Files[i].Name {
			problem("object %s.dirtree: file entries not sorted at %q", tree, dt.Files[i].Name)
		}
		c := dt.Files[i].Checksum
		if !files[c] {
			if ok, _ := r.HasObject(c, ObjectFile); ok || !partial {
				files[c] = true
			}
		}
	}
	for i, d := range dt.Dirs {
		if i > 0 && dt.Dirs[i-1].Name >= d.Name {
			problem("object %s.dirtree: directory entries not sorted at %q", tree, d.Name)
		}
		r.verifyTree(d.Tree, d.Meta, trees, metas, files, partial, problem)
	}
}

func (r *Repo) isPartial(c Checksum) bool {
	_, err := os.Stat(filepath.Join(r.path, "state", c.String()+".commitpartial"))
	return err == nil
}

// listObjects returns the checksums of all loose objects of type t.
func (r *Repo) listObjects(t ObjectType) ([]Checksum, error) {
	ext := "." + t.String()
	if t == ObjectFile && r.mode == ModeArchive {
		ext = ".filez"
	}
	base := filepath.Join(r.path, "objects")
	fans, err := os.ReadDir(base)
	if err != nil {
		return nil, err
	}
	var out []Checksum
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(base, fan.Name()))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			name := e.Name()
			if !strings.HasSuffix(name, ext) {
				continue
			}
			c, err := ParseChecksum(fan.Name() + strings.TrimSuffix(name, ext))
			if err != nil {
				continue
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// ListCommits returns the checksums of all commit objects in the repository.
func (r *Repo) ListCommits() ([]Checksum, error) { return r.listObjects(ObjectCommit) }
