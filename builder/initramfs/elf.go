package initramfs

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// elfResolver copies ELF executables of the target into the initramfs with
// their program interpreter and shared libraries (DT_NEEDED, transitively),
// the way the dynamic loader would find them inside the target:
// DT_RPATH/DT_RUNPATH, then the multiarch and plain system directories,
// then the directories of /etc/ld.so.conf.
type elfResolver struct {
	fs   *targetFS
	tree *tree
	done map[string]bool // canonical paths already copied
	// extraDirs are library directories outside the loader's built-in
	// search path that had to be used; /init exports them in
	// LD_LIBRARY_PATH.
	extraDirs map[string]bool
	ldconf    []string // from /etc/ld.so.conf, lazily
	ldconfOK  bool
}

func newELFResolver(t *targetFS, tr *tree) *elfResolver {
	return &elfResolver{fs: t, tree: tr, done: map[string]bool{}, extraDirs: map[string]bool{}}
}

// multiarch returns the Debian multiarch triplets for an ELF machine.
func multiarch(f *elf.File) []string {
	is64 := f.Class == elf.ELFCLASS64
	switch f.Machine {
	case elf.EM_X86_64:
		if is64 {
			return []string{"x86_64-linux-gnu"}
		}
		return []string{"x86_64-linux-gnux32"}
	case elf.EM_386:
		return []string{"i386-linux-gnu"}
	case elf.EM_AARCH64:
		return []string{"aarch64-linux-gnu"}
	case elf.EM_ARM:
		return []string{"arm-linux-gnueabihf", "arm-linux-gnueabi"}
	case elf.EM_RISCV:
		return []string{"riscv64-linux-gnu"}
	case elf.EM_PPC64:
		if f.Data == elf.ELFDATA2LSB {
			return []string{"powerpc64le-linux-gnu"}
		}
		return []string{"powerpc64-linux-gnu"}
	case elf.EM_S390:
		return []string{"s390x-linux-gnu"}
	case elf.EM_LOONGARCH:
		return []string{"loongarch64-linux-gnu"}
	case elf.EM_MIPS:
		if is64 {
			return []string{"mips64el-linux-gnuabi64"}
		}
		return []string{"mipsel-linux-gnu"}
	}
	return nil
}

// systemDirs are the directories the loader searches without a cache.
func systemDirs(f *elf.File) []string {
	var dirs []string
	for _, t := range multiarch(f) {
		dirs = append(dirs, "/lib/"+t, "/usr/lib/"+t)
	}
	dirs = append(dirs, "/lib", "/usr/lib")
	if f.Class == elf.ELFCLASS64 {
		dirs = append(dirs, "/lib64", "/usr/lib64")
	}
	return dirs
}

// ldSoConf returns the directories of the target's /etc/ld.so.conf,
// following "include" lines (globs, sorted).
func (r *elfResolver) ldSoConf() []string {
	if r.ldconfOK {
		return r.ldconf
	}
	r.ldconfOK = true
	seen := map[string]bool{}
	var walk func(p string, depth int)
	walk = func(p string, depth int) {
		if depth > 8 || seen[p] {
			return
		}
		seen[p] = true
		data, err := r.fs.readFile(p)
		if err != nil {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := sc.Text()
			if i := strings.IndexByte(line, '#'); i >= 0 {
				line = line[:i]
			}
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			if rest, ok := strings.CutPrefix(line, "include"); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "\t")) {
				pat := strings.TrimSpace(rest)
				if !strings.HasPrefix(pat, "/") {
					pat = path.Join(path.Dir("/"+clean(p)), pat)
				}
				// Globs are evaluated in the resolved directory of the tree.
				dir := path.Dir(pat)
				res, err := r.fs.resolve(dir)
				if err != nil {
					continue
				}
				matches, _ := filepath.Glob(filepath.Join(r.fs.root, filepath.FromSlash(res.canonical), path.Base(pat)))
				sort.Strings(matches)
				for _, m := range matches {
					walk(path.Join(dir, filepath.Base(m)), depth+1)
				}
				continue
			}
			for _, d := range strings.FieldsFunc(line, func(r rune) bool { return r == ':' || r == ',' || r == ' ' || r == '\t' }) {
				if strings.HasPrefix(d, "/") {
					r.ldconf = append(r.ldconf, path.Clean(d))
				}
			}
		}
	}
	walk("etc/ld.so.conf", 0)
	return r.ldconf
}

// openELF opens a file of the tree as ELF.
func (r *elfResolver) openELF(p string) (*elf.File, string, error) {
	res, err := r.fs.resolve(p)
	if err != nil {
		return nil, "", err
	}
	if !res.info.Mode().IsRegular() {
		return nil, "", fmt.Errorf("/%s: not a regular file", res.canonical)
	}
	f, err := elf.Open(filepath.Join(r.fs.root, filepath.FromSlash(res.canonical)))
	if err != nil {
		return nil, "", fmt.Errorf("/%s: %w", res.canonical, err)
	}
	return f, res.canonical, nil
}

// add copies the ELF file at p (a path inside the target) and everything it
// needs at run time.
func (r *elfResolver) add(p string) error {
	f, canonical, err := r.openELF(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := r.fs.copyInto(r.tree, p); err != nil {
		return err
	}
	if r.done[canonical] {
		return nil
	}
	r.done[canonical] = true

	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		buf := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(buf, 0); err != nil {
			return fmt.Errorf("/%s: reading PT_INTERP: %w", canonical, err)
		}
		interp := string(bytes.TrimRight(buf, "\x00"))
		if _, err := r.fs.copyInto(r.tree, interp); err != nil {
			return fmt.Errorf("/%s: program interpreter %s: %w", canonical, interp, err)
		}
	}

	needed, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("/%s: %w", canonical, err)
	}
	var searchPath []string
	for _, tag := range []elf.DynTag{elf.DT_RPATH, elf.DT_RUNPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				d = strings.ReplaceAll(d, "${ORIGIN}", "$ORIGIN")
				d = strings.ReplaceAll(d, "$ORIGIN", "/"+path.Dir(canonical))
				if d != "" {
					searchPath = append(searchPath, path.Clean(d))
				}
			}
		}
	}
	sys := systemDirs(f)
	isSys := map[string]bool{}
	for _, d := range sys {
		isSys[d] = true
	}
	searchPath = append(searchPath, sys...)
	searchPath = append(searchPath, r.ldSoConf()...)

	for _, lib := range needed {
		if strings.Contains(lib, "/") {
			if err := r.add(lib); err != nil {
				return fmt.Errorf("/%s needs %s: %w", canonical, lib, err)
			}
			continue
		}
		found := ""
		for _, d := range searchPath {
			cand := path.Join(d, lib)
			if r.compatible(cand, f) {
				found = cand
				if !isSys[d] {
					r.extraDirs[d] = true
				}
				break
			}
		}
		if found == "" {
			return fmt.Errorf("/%s needs %s: not found in the target (searched %s)", canonical, lib, strings.Join(searchPath, ":"))
		}
		if err := r.add(found); err != nil {
			return fmt.Errorf("/%s needs %s: %w", canonical, lib, err)
		}
	}
	return nil
}

// compatible reports whether p is an ELF file of the same class and machine
// as f, as the loader would require.
func (r *elfResolver) compatible(p string, f *elf.File) bool {
	g, _, err := r.openELF(p)
	if err != nil {
		return false
	}
	defer g.Close()
	return g.Class == f.Class && g.Machine == f.Machine && g.Data == f.Data
}

// libraryPath is the value /init exports as LD_LIBRARY_PATH ("" if none).
func (r *elfResolver) libraryPath() string {
	dirs := make([]string, 0, len(r.extraDirs))
	for d := range r.extraDirs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	return strings.Join(dirs, ":")
}

// isNotExist reports whether err says a file of the target is missing.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
