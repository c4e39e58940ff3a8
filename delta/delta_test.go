package delta

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/apt-ostree/apt-ostree-factory/internal/testenv"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// objectsOf lists every object reachable from a commit (but the commit) with
// Repo.Walk, independently of the generator's traversal; content objects map
// to their headers.
func objectsOf(t testing.TB, repo *ostree.Repo, c ostree.Checksum) map[ostree.ObjectName]*ostree.TreeEntry {
	t.Helper()
	out := map[ostree.ObjectName]*ostree.TreeEntry{}
	err := repo.Walk(c, "/", true, func(e *ostree.TreeEntry) error {
		if e.IsDir() {
			out[ostree.ObjectName{Checksum: e.Checksum, Type: ostree.ObjectDirTree}] = e
			out[ostree.ObjectName{Checksum: e.MetaSum, Type: ostree.ObjectDirMeta}] = e
		} else {
			out[ostree.ObjectName{Checksum: e.Checksum, Type: ostree.ObjectFile}] = e
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkDelta compares a delta's parts and fallbacks with the objects that
// are new in to, and checks the emission order (metadata, regular files,
// symlinks).
func checkDelta(t *testing.T, fx *fixture, info *Info, from *ostree.Checksum, to ostree.Checksum, minFallback int64) {
	t.Helper()
	want := objectsOf(t, fx.repo, to)
	if from != nil {
		for n := range objectsOf(t, fx.repo, *from) {
			delete(want, n)
		}
	}
	wantFallbacks := map[ostree.ObjectName]bool{}
	for n, e := range want {
		if n.Type == ostree.ObjectFile && minFallback > 0 && e.Meta.Mode&ostree.ModeTypeMask == ostree.ModeRegular && e.Size > uint64(minFallback) {
			wantFallbacks[n] = true
		}
	}
	got := map[ostree.ObjectName]bool{}
	stage := 0 // 0 metadata, 1 regular, 2 symlinks, 3 already-compressed files
	var packed ostree.ObjectName
	for n, e := range want {
		if strings.HasSuffix(e.Path, ".gz") && e.Size >= packedMinSize {
			packed = n
		}
	}
	for i, p := range info.Parts {
		if !p.Decoded {
			t.Errorf("part %d not decoded", i)
		}
		if p.Verified != len(p.Objects) {
			t.Errorf("part %d: %d of %d objects verified", i, p.Verified, len(p.Objects))
		}
		for _, op := range p.Ops {
			if !strings.ContainsRune("SroBcR", rune(op)) {
				t.Errorf("part %d: opcode %q", i, op)
			}
		}
		for _, n := range p.Objects {
			if got[n] {
				t.Errorf("object %s twice", n)
			}
			got[n] = true
			e, ok := want[n]
			if !ok {
				t.Errorf("object %s is not new in the target", n)
				continue
			}
			s := 0
			if n.Type == ostree.ObjectFile {
				s = 1
				if e.Meta.Mode&ostree.ModeTypeMask == ostree.ModeSymlink {
					s = 2
				}
			}
			if n == packed {
				s = 3
				if !p.Stored || len(p.Objects) != 1 {
					t.Errorf("the compressed file %s is not alone in a stored part", e.Path)
				}
			}
			if s < stage {
				t.Errorf("object %s out of order", n)
			}
			stage = s
		}
	}
	for _, f := range info.Fallbacks {
		if !wantFallbacks[f.Object] {
			t.Errorf("unexpected fallback %s", f.Object)
		}
		if got[f.Object] {
			t.Errorf("fallback %s also in a part", f.Object)
		}
		got[f.Object] = true
		e := want[f.Object]
		st, err := os.Stat(contentPath(fx.repo, f.Object.Checksum))
		if err != nil {
			t.Fatal(err)
		}
		if e != nil && (f.UncompressedSize != e.Size || f.CompressedSize != uint64(st.Size())) {
			t.Errorf("fallback %s sizes %d/%d, want %d/%d", f.Object, f.CompressedSize, f.UncompressedSize, st.Size(), e.Size)
		}
	}
	if len(info.Fallbacks) != len(wantFallbacks) {
		t.Errorf("%d fallbacks, want %d", len(info.Fallbacks), len(wantFallbacks))
	}
	for n := range want {
		if !got[n] {
			t.Errorf("object %s missing from the delta", n)
		}
	}
	if info.To != to || (from == nil) != (info.From == nil) || (from != nil && *info.From != *from) {
		t.Errorf("from/to %v/%s", info.From, info.To)
	}
	if info.Endianness != 'l' {
		t.Errorf("endianness %q", info.Endianness)
	}
}

func TestGenerateAndShow(t *testing.T) {
	fx := makeFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		from *ostree.Checksum
		opts Options
	}{
		{"from-to", &fx.v1, DefaultOptions()},
		{"scratch", nil, DefaultOptions()},
		{"scratch-nofallback", nil, Options{}},
		{"small-parts", nil, Options{MaxChunkSize: 64 << 10}},
		{"inline", &fx.v1, Options{Inline: true, MinFallbackSize: DefaultMinFallbackSize}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Time = fixedTime
			tc.opts.Metadata = ostree.Metadata{{Key: "user.first", Value: gvariant.NewVariant("s", "hello")}}
			res, err := Generate(ctx, fx.repo, tc.from, fx.v2, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			wantDir := filepath.Join(fx.path, ostree.DeltaDir(tc.from, fx.v2))
			if res.Dir != wantDir {
				t.Errorf("dir %s, want %s", res.Dir, wantDir)
			}
			info, err := ShowSources(res.Dir, func(c ostree.Checksum) ([]byte, error) { return readAll(fx.repo, c) })
			if err != nil {
				t.Fatal(err)
			}
			patched := 0
			for _, p := range info.Parts {
				patched += p.Patched
			}
			// The fixture's changed.txt is a small edit of its v1 version.
			if (patched > 0) != (tc.from != nil) {
				t.Errorf("%d patched objects", patched)
			}
			minFallback := tc.opts.MinFallbackSize
			if tc.opts.Inline {
				minFallback = 0
			}
			checkDelta(t, fx, info, tc.from, fx.v2, minFallback)
			if len(info.Parts) != res.Parts || len(info.Fallbacks) != res.Fallbacks {
				t.Errorf("result %+v, show %d parts %d fallbacks", res, len(info.Parts), len(info.Fallbacks))
			}
			if info.Metadata[0].Key != "user.first" || info.Metadata[1].Key != "ostree.endianness" {
				t.Errorf("metadata order: %v", info.Metadata)
			}
			if !info.Timestamp.Equal(fixedTime) {
				t.Errorf("timestamp %v", info.Timestamp)
			}
			wantMeta, _ := ostree.EncodeMetadata(fx.meta)
			if !bytes.Equal(info.CommitMeta, wantMeta) {
				t.Errorf("commitmeta %x, want %x", info.CommitMeta, wantMeta)
			}
			for i, p := range info.Parts {
				if p.Inline != tc.opts.Inline {
					t.Errorf("part %d inline=%v", i, p.Inline)
				}
			}
			if tc.opts.MaxChunkSize > 0 && tc.opts.MaxChunkSize < 1<<20 && len(info.Parts) < 3 {
				t.Errorf("only %d parts with MaxChunkSize %d", len(info.Parts), tc.opts.MaxChunkSize)
			}
			for i, p := range info.Parts {
				if len(p.Objects) > 1 && tc.opts.MaxChunkSize > 0 && int64(p.BlobSize) > tc.opts.MaxChunkSize {
					t.Errorf("part %d blob %d > max %d", i, p.BlobSize, tc.opts.MaxChunkSize)
				}
			}
			sb, err := os.ReadFile(filepath.Join(res.Dir, "superblock"))
			if err != nil {
				t.Fatal(err)
			}
			if !gvariant.IsNormal(typeSuperblock, sb) {
				t.Error("superblock is not in GVariant normal form")
			}
			readDeltaFiles(t, res.Dir)
			ds, err := fx.repo.ListDeltas()
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, d := range ds {
				if d.Name() == res.ID {
					found = true
					if d.Superblock != res.SuperblockSHA256 {
						t.Errorf("superblock sha256 mismatch")
					}
				}
			}
			if !found {
				t.Errorf("ListDeltas does not list %s", res.ID)
			}
		})
	}
}

// TestWorkedExample reproduces the decompressed part payload of the
// reference's §4.5 example (ostree 2022.7): from the §2.8 tree, hello
// changed to "hello world\n".
func TestWorkedExample(t *testing.T) {
	ctx := context.Background()
	repo, err := ostree.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tree := func(hello string) *ostree.MemDir {
		dm := ostree.FileMeta{Mode: ostree.ModeDir | 0o755}
		root := ostree.NewMemDir(dm)
		root.Files["hello"] = regFile(0, 0, 0o644, []byte(hello))
		root.Files["link"] = symlink("hello")
		sub := ostree.NewMemDir(dm)
		sub.Files["x"] = regFile(0, 0, 0o755, []byte("x"))
		root.Dirs["sub"] = sub
		return root
	}
	ts := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	c1, err := repo.CommitTree(ctx, tree("hello\n"), ostree.CommitOptions{Branch: "test", Subject: "subj", Body: "body", Timestamp: ts})
	if err != nil {
		t.Fatal(err)
	}
	if got := c1.Checksum.String(); got != "defe4c578434aae15825027dbb6b485022ae10da84cac8f9640897fd8e7abba3" {
		t.Fatalf("v1 commit %s differs from the reference example", got)
	}
	c2, err := repo.CommitTree(ctx, tree("hello world\n"), ostree.CommitOptions{Branch: "test", Subject: "subj", Body: "body", Timestamp: ts})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Generate(ctx, repo, &c1.Checksum, c2.Checksum, Options{Time: ts})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(res.Dir, "0"))
	if err != nil {
		t.Fatal(err)
	}
	if raw[0] != 'x' {
		t.Fatalf("compression byte %q", raw[0])
	}
	zr, err := xz.NewReader(bytes.NewReader(raw[1:]))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := repo.ReadCommit(c2.Checksum)
	if err != nil {
		t.Fatal(err)
	}
	dirtree, err := repo.ReadMetadata(ostree.ObjectDirTree, cm.RootTree)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirtree) != 151 {
		t.Fatalf("root dirtree %d bytes", len(dirtree))
	}
	var want []byte
	want = append(want, mustHex("00000000 00000000 000081a4 00")...)
	want = append(want, dirtree...)
	want = append(want, "hello world\n"...)
	want = append(want, mustHex("53 9701 00  53 00 00 0c 9701 | b0 0d 0c")...)
	if !bytes.Equal(payload, want) {
		t.Errorf("payload\n%x\nwant\n%x", payload, want)
	}
	info, err := Show(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	p := info.Parts[0]
	if len(p.Objects) != 2 || p.Objects[0] != (ostree.ObjectName{Checksum: cm.RootTree, Type: ostree.ObjectDirTree}) || p.Objects[1].Type != ostree.ObjectFile {
		t.Errorf("objects %v", p.Objects)
	}
	if p.UncompressedSize != 151+12 {
		t.Errorf("uncompressed size %d", p.UncompressedSize)
	}
}

func mustHex(s string) []byte {
	s = strings.NewReplacer(" ", "", "|", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestSuperblockRope checks the streamed layout against the generic
// encoder, with inline parts of various sizes around offset-width limits.
func TestSuperblockRope(t *testing.T) {
	dir := t.TempDir()
	for _, sizes := range [][]int{{1}, {200}, {240, 3}, {70000}, {10, 65500}, {}} {
		var entries []superblockEntry
		var values []gvariant.DictEntry
		entries = append(entries, superblockEntry{key: "ostree.endianness", value: gvariant.NewVariant("y", byte('l'))})
		values = append(values, gvariant.DictEntry{Key: "ostree.endianness", Value: gvariant.NewVariant("y", byte('l'))})
		for i, n := range sizes {
			part := append([]byte{'x'}, randBytes(uint64(n), n)...)
			p := filepath.Join(dir, "part")
			p += string(rune('a' + i))
			if err := os.WriteFile(p, part, 0o644); err != nil {
				t.Fatal(err)
			}
			key := "deltas/ab/cd/" + string(rune('0'+i))
			entries = append(entries, superblockEntry{key: key, file: p, size: int64(len(part))})
			values = append(values, gvariant.DictEntry{Key: key, Value: gvariant.NewVariant("(yay)", []any{byte('x'), part[1:]})})
		}
		to := randBytes(99, 32)
		c := &ostree.Commit{Subject: "s", Timestamp: fixedTime}
		commitBytes, err := ostree.EncodeCommit(c)
		if err != nil {
			t.Fatal(err)
		}
		cv, _ := gvariant.Decode(gvariant.MustParseType("(a{sv}aya(say)sstayay)"), commitBytes)
		hdrs := []any{[]any{uint32(0), to, uint64(5), uint64(6), append([]byte{2}, to...)}}
		fbs := []any{[]any{byte(1), to, uint64(7), uint64(8)}}
		hb, _ := gvariant.Encode(typePartHeaders, hdrs)
		fb, _ := gvariant.Encode(typeFallbacks, fbs)
		for _, from := range [][]byte{nil, randBytes(5, 32)} {
			r, err := superblockRope(entries, 0x0102030405060708, from, to, commitBytes, hb, fb)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := r.writeTo(&got); err != nil {
				t.Fatal(err)
			}
			if from == nil {
				from = []byte{}
			}
			want, err := gvariant.Encode(typeSuperblock, []any{values, uint64(0x0102030405060708), from, to, cv, []byte{}, hdrs, fbs})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("sizes %v: rope differs from the encoder (%d vs %d bytes)", sizes, got.Len(), len(want))
			}
		}
	}
}

func TestDeterministic(t *testing.T) {
	fx := makeFixture(t)
	ctx := context.Background()
	for _, goXZ := range []bool{false, true} {
		saved := xzCommand
		if goXZ {
			xzCommand = ""
		} else if xzCommand == "" {
			continue
		}
		opts := Options{Time: fixedTime, MaxChunkSize: 256 << 10, MinFallbackSize: DefaultMinFallbackSize}
		res, err := Generate(ctx, fx.repo, &fx.v1, fx.v2, opts)
		if err != nil {
			xzCommand = saved
			t.Fatal(err)
		}
		first := readDeltaFiles(t, res.Dir)
		opts.Workers = 1
		res2, err := Generate(ctx, fx.repo, &fx.v1, fx.v2, opts)
		xzCommand = saved
		if err != nil {
			t.Fatal(err)
		}
		second := readDeltaFiles(t, res.Dir)
		if len(first) != len(second) || len(first) != res.Parts+1 {
			t.Errorf("files %d vs %d (parts %d)", len(first), len(second), res.Parts)
		}
		for name, b := range first {
			if !bytes.Equal(second[name], b) {
				t.Errorf("goXZ=%v: %s differs between generations", goXZ, name)
			}
		}
		if *res != *res2 {
			t.Errorf("results differ: %+v vs %+v", res, res2)
		}
		if _, err := Show(res.Dir); err != nil {
			t.Errorf("goXZ=%v: %v", goXZ, err)
		}
	}
}

func TestRegenerateRemovesStaleParts(t *testing.T) {
	fx := makeFixture(t)
	ctx := context.Background()
	res, err := Generate(ctx, fx.repo, nil, fx.v2, Options{Time: fixedTime, MaxChunkSize: 32 << 10, MinFallbackSize: DefaultMinFallbackSize})
	if err != nil {
		t.Fatal(err)
	}
	if res.Parts < 3 {
		t.Fatalf("%d parts", res.Parts)
	}
	res, err = Generate(ctx, fx.repo, nil, fx.v2, Options{Time: fixedTime, MinFallbackSize: DefaultMinFallbackSize})
	if err != nil {
		t.Fatal(err)
	}
	files := readDeltaFiles(t, res.Dir)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "0,1,superblock" { // the second part: changelog.gz
		t.Errorf("files after regeneration: %v", names)
	}
}

func TestCancelAndCorruptSource(t *testing.T) {
	fx := makeFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Generate(ctx, fx.repo, nil, fx.v2, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled generation: %v", err)
	}
	// A corrupted content object must fail generation, not produce a bad part.
	var victim ostree.Checksum
	for n, e := range objectsOf(t, fx.repo, fx.v2) {
		if n.Type == ostree.ObjectFile && e.Size > 1000 && e.Size < 100000 {
			victim = n.Checksum
			break
		}
	}
	p := contentPath(fx.repo, victim)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	good := append([]byte(nil), b...)
	b[len(b)-10] ^= 0x55
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, goXZ := range []bool{false, true} {
		saved := xzCommand
		if goXZ {
			xzCommand = ""
		}
		_, err = Generate(context.Background(), fx.repo, nil, fx.v2, DefaultOptions())
		xzCommand = saved
		if err == nil || !strings.Contains(err.Error(), victim.String()) {
			t.Errorf("goXZ=%v: generation with a corrupted object: %v", goXZ, err)
		}
	}
	os.WriteFile(p, good, 0o644)
	dir := filepath.Join(fx.path, ostree.DeltaDir(nil, fx.v2))
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		t.Errorf("left in %s: %s", dir, e.Name())
	}
}

func TestBundleShow(t *testing.T) {
	fx := makeFixture(t)
	p := filepath.Join(t.TempDir(), "x.delta")
	res, err := WriteBundle(context.Background(), fx.repo, nil, fx.v2, p, Options{Time: fixedTime, MinFallbackSize: DefaultMinFallbackSize})
	if err != nil {
		t.Fatal(err)
	}
	if res.Fallbacks != 0 || res.Path != p {
		t.Errorf("result %+v", res)
	}
	info, err := Show(p)
	if err != nil {
		t.Fatal(err)
	}
	checkDelta(t, fx, info, nil, fx.v2, 0)
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("%d files next to the bundle", len(ents))
	}
}

func TestXZArgs(t *testing.T) {
	p := &partPlan{blobLen: 10 << 20, x86Bytes: 2 << 20, threads: 2, level: 8}
	got := strings.Join(p.xzArgs(), " ")
	// payloadSize is the blob plus tables and offsets: just over 10 MiB,
	// in two blocks of about 5 MiB with an 8 MiB dictionary.
	for _, want := range []string{"--x86", "--lzma2=preset=8,dict=8388608", "-T2", "--block-size=5242886"} {
		if !strings.Contains(got, want) {
			t.Errorf("xz %s: want %s", got, want)
		}
	}
	p = &partPlan{blobLen: 100 << 10, x86Bytes: 1 << 10, threads: 2, level: 1}
	got = strings.Join(p.xzArgs(), " ")
	if strings.Contains(got, "--x86") || !strings.Contains(got, "-T1") || !strings.Contains(got, "preset=1,dict=131072") {
		t.Errorf("small text part: xz %s", got)
	}
	// A family part compressed the faster way: its dictionary, the
	// hash-chain match finder, and pb=0 without code.
	p = &partPlan{blobLen: 2 << 20, threads: 1, level: 8, fast: true, dictCap: 512 << 10}
	if got = strings.Join(p.xzArgs(), " "); !strings.Contains(got, "--lzma2=preset=8,dict=524288,mf=hc4,nice=32,pb=0 -T1") {
		t.Errorf("fast part: xz %s", got)
	}
	p.x86Bytes = 1 << 20
	if got = strings.Join(p.xzArgs(), " "); !strings.Contains(got, "--x86 --lzma2=preset=8,dict=524288,mf=hc4,nice=32 -T1") {
		t.Errorf("fast part with code: xz %s", got)
	}
	p.level = 1 // presets 1-3 are fast already
	if got = strings.Join(p.xzArgs(), " "); !strings.Contains(got, "--lzma2=preset=1,dict=524288 -T1") {
		t.Errorf("fast part at preset 1: xz %s", got)
	}
}

// TestX86FilterUsed: the part holding the fixture's x86-64 program is
// compressed with the x86 filter (xz --list shows it), and the Go xz
// reader, the xz tool and ostree (TestPullUsesOurDeltas) decode it.
func TestX86FilterUsed(t *testing.T) {
	xzBin := testenv.Tool(t, "xz")
	fx := makeFixture(t)
	res, err := Generate(context.Background(), fx.repo, &fx.v1, fx.v2, Options{Time: fixedTime, MinFallbackSize: DefaultMinFallbackSize})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Show(res.Dir); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(res.Dir, "0"))
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "part.xz")
	os.WriteFile(f, raw[1:], 0o644)
	out, err := exec.Command(xzBin, "--robot", "--list", "-vv", f).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--x86") {
		t.Errorf("xz --list of part 0: %v\n%s", err, out)
	}
}
