package delta

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"
	"os"
	"os/exec"
	"sync"

	"github.com/ulikunitz/xz"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/ostree/gvariant"
)

// Delta opcodes (§4.5).
const (
	opOpenSpliceAndClose = 'S'
	opOpen               = 'o'
	opWrite              = 'w'
	opSetReadSource      = 'r'
	opUnsetReadSource    = 'R'
	opClose              = 'c'
	opBspatch            = 'B'
)

var (
	typeModeTable  = gvariant.MustParseType("a(uuu)")
	typeXattrTable = gvariant.MustParseType("aa(ayay)")
	typeXattrs     = gvariant.MustParseType("a(ayay)")
)

// xzCommand is the xz binary used to compress parts; when empty the pure-Go
// encoder is used. Tests override it.
var xzCommand = func() string {
	p, err := exec.LookPath("xz")
	if err != nil {
		return ""
	}
	return p
}()

// xzHasARM64 reports whether the xz tool has the ARM64 filter (5.4).
var xzHasARM64 = sync.OnceValue(func() bool {
	if xzCommand == "" {
		return false
	}
	out, _ := exec.Command(xzCommand, "--long-help").Output()
	return bytes.Contains(out, []byte("--arm64"))
})

type modeKey struct{ uid, gid, mode uint32 }

// ELF machines whose code xz's x86 or ARM64 filter makes more
// compressible.
const (
	elf386     = 3
	elfX8664   = 62
	elfAArch64 = 183
	codeShare  = 8 // a filter is used when its code is at least 1/codeShare of the blob
	minBlock   = 1 << 20
	maxDict    = 32 << 20
	presetMax  = 9
)

// xzArgs is the xz command line for a part: the x86 filter for parts of
// x86 code (every liblzma decodes it), the ARM64 filter for parts of
// arm64 code when the receivers' liblzma has it (arm64OK); LZMA2 at the part's
// preset with a dictionary no larger than the input (xz -8 would
// allocate 370 MB per process for a 32 MiB dictionary the part cannot
// use); several threads (independent blocks) when there are fewer parts
// than cores.
func (p *partPlan) xzArgs() []string {
	args := []string{"-z", "-c", "-q", "--check=crc64"}
	switch {
	case p.arm64OK && p.arm64Bytes > p.x86Bytes && p.arm64Bytes*codeShare >= p.blobLen && xzHasARM64():
		args = append(args, "--arm64")
	case p.x86Bytes > 0 && p.x86Bytes*codeShare >= p.blobLen:
		args = append(args, "--x86")
	}
	size := p.payloadSize()
	threads := max(1, p.threads)
	block := size
	if threads > 1 {
		block = max(minBlock, (size+uint64(threads)-1)/uint64(threads))
		threads = int(min(uint64(threads), (size+block-1)/block))
		if threads == 1 {
			block = size
		}
	}
	dict := uint64(4096)
	for dict < block && dict < maxDict {
		dict *= 2
	}
	level := min(max(p.level, 1), presetMax)
	if p.dictCap > 0 {
		dict = min(dict, max(p.dictCap, 4096))
	}
	lzma2 := fmt.Sprintf("--lzma2=preset=%d,dict=%d", level, dict)
	if p.fast && level >= 4 {
		// Presets 4-9 use the binary-tree match finder; presets 1-3
		// are already fast.
		lzma2 += ",mf=hc4,nice=32"
		if p.x86Bytes == 0 && p.arm64Bytes == 0 {
			// No code: byte-oriented data (text, translations), for
			// which xz's manual recommends pb=0.
			lzma2 += ",pb=0"
		}
	}
	args = append(args, lzma2, fmt.Sprintf("-T%d", threads))
	if threads > 1 {
		args = append(args, fmt.Sprintf("--block-size=%d", block))
	}
	return args
}

// partPlan is one part's content, decided before any content is read: the
// opcodes only need object sizes, so the payload can be streamed.
type partPlan struct {
	objects      []*object
	modes        []modeKey
	modeIdx      map[modeKey]int
	xattrs       [][]byte // each a serialised a(ayay)
	xattrIdx     map[string]int
	ops          []byte
	blobLen      uint64
	uncompressed uint64
	// stored parts hold already-compressed files: their xz stream
	// stores the payload without compressing it (storeWriter).
	stored bool
	// x86Bytes and arm64Bytes count the blob bytes of x86 (32 and 64
	// bit) and arm64 ELF files; arm64OK allows the ARM64 filter (when
	// the xz tool has it too).
	x86Bytes, arm64Bytes uint64
	arm64OK              bool
	// threads and level tell xz how to compress the part; fast asks
	// for the faster match finder (see splitForCores).
	threads, level int
	fast           bool
	// dictCap, when set, bounds the dictionary (see splitForCores).
	dictCap uint64

	modeTable, xattrTable []byte
}

func newPartPlan() *partPlan {
	return &partPlan{modeIdx: map[modeKey]int{}, xattrIdx: map[string]int{}}
}

func (p *partPlan) add(o *object) error {
	p.objects = append(p.objects, o)
	n := o.blobLen()
	off := p.blobLen
	p.blobLen += n
	if o.name.Type.IsMeta() {
		p.uncompressed += n
		p.ops = append(p.ops, opOpenSpliceAndClose)
		p.ops = binary.AppendUvarint(p.ops, n)
		p.ops = binary.AppendUvarint(p.ops, off)
		return nil
	}
	// As ostree: a symlink's size in its file info is 0.
	p.uncompressed += o.hdr.Size
	if o.patch == nil {
		switch o.machine {
		case elfX8664, elf386:
			p.x86Bytes += o.hdr.Size
		case elfAArch64:
			p.arm64Bytes += o.hdr.Size
		}
	}
	mk := modeKey{o.hdr.UID, o.hdr.GID, o.hdr.Mode}
	mi, ok := p.modeIdx[mk]
	if !ok {
		mi = len(p.modes)
		p.modeIdx[mk] = mi
		p.modes = append(p.modes, mk)
	}
	xb, err := ostree.EncodeXattrs(o.hdr.Xattrs)
	if err != nil {
		return fmt.Errorf("object %s: %w", o.name, err)
	}
	xi, ok := p.xattrIdx[string(xb)]
	if !ok {
		xi = len(p.xattrs)
		p.xattrIdx[string(xb)] = xi
		p.xattrs = append(p.xattrs, xb)
	}
	if o.patch != nil {
		// set-read-source (the old object's checksum in the blob), open,
		// bspatch (the patch after it), close, unset-read-source: ostree's
		// sequence.
		p.ops = append(p.ops, opSetReadSource)
		p.ops = binary.AppendUvarint(p.ops, off)
		p.ops = append(p.ops, opOpen)
		p.ops = binary.AppendUvarint(p.ops, uint64(mi))
		p.ops = binary.AppendUvarint(p.ops, uint64(xi))
		p.ops = binary.AppendUvarint(p.ops, o.hdr.Size)
		p.ops = append(p.ops, opBspatch)
		p.ops = binary.AppendUvarint(p.ops, off+uint64(len(o.source)))
		p.ops = binary.AppendUvarint(p.ops, uint64(len(o.patch)))
		p.ops = append(p.ops, opClose, opUnsetReadSource)
		return nil
	}
	p.ops = append(p.ops, opOpenSpliceAndClose)
	p.ops = binary.AppendUvarint(p.ops, uint64(mi))
	p.ops = binary.AppendUvarint(p.ops, uint64(xi))
	p.ops = binary.AppendUvarint(p.ops, n)
	p.ops = binary.AppendUvarint(p.ops, off)
	return nil
}

func (p *partPlan) finish() error {
	modes := make([]any, len(p.modes))
	for i, m := range p.modes {
		modes[i] = []any{bits.ReverseBytes32(m.uid), bits.ReverseBytes32(m.gid), bits.ReverseBytes32(m.mode)}
	}
	var err error
	if p.modeTable, err = gvariant.Encode(typeModeTable, modes); err != nil {
		return err
	}
	xl := make([]any, len(p.xattrs))
	for i, x := range p.xattrs {
		v, err := gvariant.Decode(typeXattrs, x)
		if err != nil {
			return err
		}
		xl[i] = v
	}
	p.xattrTable, err = gvariant.Encode(typeXattrTable, xl)
	return err
}

// offsetWidth is GVariant's framing offset size for a container whose
// content (without offsets) is body bytes and which stores n offsets.
func offsetWidth(body uint64, n int) int {
	switch {
	case body+uint64(n) <= 0xff:
		return 1
	case body+2*uint64(n) <= 0xffff:
		return 2
	case body+4*uint64(n) <= 0xffffffff:
		return 4
	}
	return 8
}

func appendOffset(b []byte, v uint64, w int) []byte {
	for i := 0; i < w; i++ {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// payloadSize is the size of the serialised (a(uuu)aa(ayay)ayay).
func (p *partPlan) payloadSize() uint64 {
	body := uint64(len(p.modeTable)+len(p.xattrTable)) + p.blobLen + uint64(len(p.ops))
	return body + uint64(3*offsetWidth(body, 3))
}

// writePayload streams the part's payload: mode table, xattr table, blob
// (objects read from the repository, content verified against its
// checksum), opcodes, framing offsets.
func (p *partPlan) writePayload(ctx context.Context, repo *ostree.Repo, w io.Writer) error {
	if _, err := w.Write(p.modeTable); err != nil {
		return err
	}
	if _, err := w.Write(p.xattrTable); err != nil {
		return err
	}
	for _, o := range p.objects {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case o.name.Type.IsMeta():
			if _, err := w.Write(o.meta); err != nil {
				return err
			}
		case o.patch != nil:
			if _, err := w.Write(o.source[:]); err != nil {
				return err
			}
			if _, err := w.Write(o.patch); err != nil {
				return err
			}
		case o.hdr.Mode&ostree.ModeTypeMask == ostree.ModeSymlink:
			if _, err := io.WriteString(w, o.hdr.Symlink); err != nil {
				return err
			}
		default:
			if err := copyContent(repo, o, w); err != nil {
				return err
			}
		}
	}
	if _, err := w.Write(p.ops); err != nil {
		return err
	}
	modeEnd := uint64(len(p.modeTable))
	xattrEnd := modeEnd + uint64(len(p.xattrTable))
	blobEnd := xattrEnd + p.blobLen
	body := blobEnd + uint64(len(p.ops))
	wd := offsetWidth(body, 3)
	var offs []byte
	offs = appendOffset(offs, blobEnd, wd)
	offs = appendOffset(offs, xattrEnd, wd)
	offs = appendOffset(offs, modeEnd, wd)
	_, err := w.Write(offs)
	return err
}

func copyContent(repo *ostree.Repo, o *object, w io.Writer) error {
	h, rc, err := repo.OpenContent(o.name.Checksum)
	if err != nil {
		return err
	}
	defer rc.Close()
	if h.Size != o.hdr.Size {
		return fmt.Errorf("object %s changed size while generating the delta", o.name)
	}
	n, err := io.Copy(w, rc) // reads to EOF, where the checksum is verified
	if err != nil {
		return err
	}
	if uint64(n) != o.hdr.Size {
		return fmt.Errorf("object %s: read %d bytes, expected %d", o.name, n, o.hdr.Size)
	}
	return nil
}

// partFile is a compressed part in a temporary file.
type partFile struct {
	path string
	size int64
	sum  ostree.Checksum
}

// compressParts compresses every planned part into temporary files in dir,
// opts.Workers at a time; the result is in part order.
func (g *generator) compressParts(ctx context.Context, dir string) ([]*partFile, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make([]*partFile, len(g.parts))
	errs := make([]error, len(g.parts))
	// Cores are shared among the parts xz compresses: with fewer parts
	// than workers, each part is compressed in several threads.
	xzParts := 0
	for _, p := range g.parts {
		if !p.stored {
			xzParts++
		}
	}
	for _, p := range g.parts {
		p.level = g.opts.Level
		p.arm64OK = g.arm64OK
		p.threads = 1
		if xzParts > 0 && xzParts < g.opts.Workers {
			p.threads = g.opts.Workers / xzParts
		}
	}
	sem := make(chan struct{}, g.opts.Workers)
	var wg sync.WaitGroup
	for i := range g.parts {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			pf, err := compressPart(ctx, g.repo, g.parts[i], dir)
			if err != nil {
				errs[i] = fmt.Errorf("delta part %d: %w", i, err)
				cancel()
				return
			}
			out[i] = pf
		}(i)
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		removeParts(out)
		return nil, err
	}
	return out, nil
}

type countingHash struct {
	h hash.Hash
	w io.Writer
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// compressPart writes 'x' followed by the xz-compressed payload (liblzma
// preset 8, CRC64, as ostree) to a temporary file.
func compressPart(ctx context.Context, repo *ostree.Repo, p *partPlan, dir string) (*partFile, error) {
	f, err := os.CreateTemp(dir, ".part-tmp-*")
	if err != nil {
		return nil, err
	}
	pf := &partFile{path: f.Name()}
	fail := func(err error) (*partFile, error) {
		f.Close()
		os.Remove(pf.path)
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 256<<10)
	out := &countingHash{h: sha256.New(), w: bw}
	out.Write([]byte{'x'})
	if p.stored {
		err = storePayload(ctx, repo, p, out)
	} else if xzCommand != "" {
		err = compressCommand(ctx, repo, p, dir, out)
	} else {
		err = compressGo(ctx, repo, p, out)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(pf.path)
		return nil, err
	}
	pf.size = out.n
	out.h.Sum(pf.sum[:0])
	return pf, nil
}

// compressCommand stages the part's payload in a temporary file in dir,
// then has xz compress that file. Streaming the payload through a pipe
// instead made xz take a quarter longer when parts are compressed on
// every core (0.45-0.5 s instead of 0.35-0.4 s for the parts of the
// default recipe's v1→v2 delta): the writers woke on every pipe buffer
// and took the cores and their caches from the compressors.
func compressCommand(ctx context.Context, repo *ostree.Repo, p *partPlan, dir string, out io.Writer) error {
	tf, err := os.CreateTemp(dir, ".payload-tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tf.Name())
	defer tf.Close()
	bw := bufio.NewWriterSize(tf, 256<<10)
	if err := p.writePayload(ctx, repo, bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if _, err := tf.Seek(0, io.SeekStart); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, xzCommand, p.xzArgs()...)
	cmd.Stdin = tf
	cmd.Stdout = out
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("xz: %v: %s", err, stderr.String())
	}
	return nil
}

type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		l.b = append(l.b, p[:room]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

func compressGo(ctx context.Context, repo *ostree.Repo, p *partPlan, out io.Writer) error {
	zw, err := xz.WriterConfig{DictCap: 8 << 20, CheckSum: xz.CRC64}.NewWriter(out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(zw, 256<<10)
	if err := p.writePayload(ctx, repo, bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return zw.Close()
}

func storePayload(ctx context.Context, repo *ostree.Repo, p *partPlan, out io.Writer) error {
	sw, err := newStoreWriter(out)
	if err != nil {
		return err
	}
	if err := p.writePayload(ctx, repo, sw); err != nil {
		return err
	}
	return sw.Close()
}
