package ostree

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/klauspost/compress/flate"
	"golang.org/x/sys/unix"
)

// copyBufSize is the read size when streaming file content.
const copyBufSize = 256 << 10

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

var bufWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 128<<10) }}

// flatePools holds raw-deflate writers per compression level.
var flatePools sync.Map // int -> *sync.Pool

func getFlateWriter(level int, w io.Writer) *flate.Writer {
	p, _ := flatePools.LoadOrStore(level, &sync.Pool{})
	if fw, ok := p.(*sync.Pool).Get().(*flate.Writer); ok {
		fw.Reset(w)
		return fw
	}
	fw, err := flate.NewWriter(w, level)
	if err != nil {
		panic(err) // level is validated when the repository is opened
	}
	return fw
}

func putFlateWriter(level int, fw *flate.Writer) {
	p, _ := flatePools.Load(level)
	p.(*sync.Pool).Put(fw)
}

// ContentChecksum computes a content object's checksum: SHA-256 over the
// size-prefixed (uuuusa(ayay)) header followed by the file's bytes. For
// regular files it reads exactly h.Size bytes from content.
func ContentChecksum(h FileHeader, content io.Reader) (Checksum, error) {
	hdr, err := h.checksumHeader()
	if err != nil {
		return Checksum{}, err
	}
	s := sha256.New()
	s.Write(hdr)
	if h.Mode&ModeTypeMask == ModeRegular {
		if err := copyExact(s, content, h.Size); err != nil {
			return Checksum{}, err
		}
	}
	var c Checksum
	s.Sum(c[:0])
	return c, nil
}

// copyExact copies exactly n bytes, failing if the source is shorter or longer.
func copyExact(dst io.Writer, src io.Reader, n uint64) error {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	got, err := io.CopyBuffer(dst, io.LimitReader(src, int64(n)), *bp)
	if err != nil {
		return err
	}
	if uint64(got) != n {
		return fmt.Errorf("content is %d bytes, expected %d (file changed while being read?)", got, n)
	}
	var one [1]byte
	if k, _ := io.ReadFull(src, one[:]); k != 0 {
		return fmt.Errorf("content is longer than the expected %d bytes (file changed while being read?)", n)
	}
	return nil
}

// WriteContent stores a content object read from content in one pass
// (hashing and compressing together) and returns its checksum. h.Size must
// be the exact content size of a regular file. If the object already exists
// the new copy is discarded.
func (r *Repo) WriteContent(h FileHeader, content io.Reader) (Checksum, error) {
	return r.writeContent(h, content, nil)
}

// WriteContentKnown stores a content object whose checksum the caller
// computed already (for example with ContentChecksum on a re-readable file);
// the content is hashed again while it is written and a mismatch is an error.
func (r *Repo) WriteContentKnown(want Checksum, h FileHeader, content io.Reader) error {
	_, err := r.writeContent(h, content, &want)
	return err
}

func (r *Repo) writeContent(h FileHeader, content io.Reader, want *Checksum) (Checksum, error) {
	if err := r.requireArchive(); err != nil {
		return Checksum{}, err
	}
	isReg := h.Mode&ModeTypeMask == ModeRegular
	if !isReg {
		h.Size = 0
	}
	csHdr, err := h.checksumHeader()
	if err != nil {
		return Checksum{}, err
	}
	arHdr, err := h.archiveHeader()
	if err != nil {
		return Checksum{}, err
	}
	f, err := r.createObjectTemp()
	if err != nil {
		return Checksum{}, err
	}
	bw := bufWriterPool.Get().(*bufio.Writer)
	bw.Reset(f)
	defer func() { bw.Reset(nil); bufWriterPool.Put(bw) }()
	fail := func(err error) (Checksum, error) {
		f.discard()
		return Checksum{}, err
	}
	bw.Write(arHdr)
	s := sha256.New()
	s.Write(csHdr)
	if isReg && h.Size > 0 {
		fw := getFlateWriter(r.level, bw)
		err := copyExact(hashingWriter{s, fw}, content, h.Size)
		if err == nil {
			err = fw.Close()
		}
		putFlateWriter(r.level, fw)
		if err != nil {
			return fail(err)
		}
	} else if isReg {
		// An empty file still has a (empty) deflate stream, as zlib writes one.
		fw := getFlateWriter(r.level, bw)
		err := fw.Close()
		putFlateWriter(r.level, fw)
		if err != nil {
			return fail(err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	var c Checksum
	s.Sum(c[:0])
	if want != nil && c != *want {
		return fail(fmt.Errorf("content changed while being stored: expected object %s, got %s", *want, c))
	}
	if ok, err := r.HasObject(c, ObjectFile); err != nil || ok {
		f.discard()
		return c, err
	}
	if err := r.installTemp(f, c, ObjectFile); err != nil {
		return Checksum{}, fmt.Errorf("write %s.file: %w", c, err)
	}
	return c, nil
}

// hashingWriter feeds the hash and the compressor with the same bytes.
type hashingWriter struct {
	h hash.Hash
	w io.Writer
}

func (hw hashingWriter) Write(p []byte) (int, error) {
	hw.h.Write(p)
	return hw.w.Write(p)
}

// OpenContent opens a content object. For regular files the returned reader
// yields the content and, at its end, verifies the object's checksum,
// returning an error that names the object if it does not match.
func (r *Repo) OpenContent(c Checksum) (FileHeader, io.ReadCloser, error) {
	if err := r.requireArchive(); err != nil {
		return FileHeader{}, nil, err
	}
	name := ObjectName{c, ObjectFile}
	f, err := os.Open(r.objectPath(c, ObjectFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return FileHeader{}, nil, fmt.Errorf("object %s: %w", name, ErrNotFound)
		}
		return FileHeader{}, nil, fmt.Errorf("object %s: %w", name, err)
	}
	br := bufio.NewReaderSize(f, 64<<10)
	h, err := readArchiveHeader(br, name)
	if err != nil {
		f.Close()
		return FileHeader{}, nil, err
	}
	csHdr, err := h.checksumHeader()
	if err != nil {
		f.Close()
		return FileHeader{}, nil, fmt.Errorf("object %s is corrupted: %w", name, err)
	}
	s := sha256.New()
	s.Write(csHdr)
	vr := &verifyingReader{name: name, want: c, h: s, remaining: h.Size, file: f}
	if h.Mode&ModeTypeMask == ModeRegular {
		vr.r = flate.NewReader(br)
	}
	return h, vr, nil
}

// readArchiveHeader reads the header at the start of an archive-mode
// content object: its size (big-endian u32), 4 bytes of padding and the
// header variant.
func readArchiveHeader(br *bufio.Reader, name ObjectName) (FileHeader, error) {
	var pre [8]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return FileHeader{}, fmt.Errorf("object %s is corrupted: truncated header", name)
	}
	n := int(pre[0])<<24 | int(pre[1])<<16 | int(pre[2])<<8 | int(pre[3])
	if n > 1<<20 {
		return FileHeader{}, fmt.Errorf("object %s is corrupted: header length %d", name, n)
	}
	hb := make([]byte, 8+n)
	copy(hb, pre[:])
	if _, err := io.ReadFull(br, hb[8:]); err != nil {
		return FileHeader{}, fmt.Errorf("object %s is corrupted: truncated header", name)
	}
	h, _, err := parseArchiveHeader(hb)
	if err != nil {
		return FileHeader{}, fmt.Errorf("object %s is corrupted: %w", name, err)
	}
	return h, nil
}

// ContentHeader reads a content object's header. For a regular file for
// which peek (when not nil) returns a buffer, it also reads up to that
// buffer's length (at most a few hundred bytes) from the start of the
// content into it, and returns how many bytes it read. The peeked bytes
// are not verified against the checksum (OpenContent does that) and may be
// fewer than asked for if the content is corrupted: they are for deciding
// how to handle a file. Much cheaper than OpenContent when only the header
// is wanted (no read-ahead, no decompressor unless peeking).
func (r *Repo) ContentHeader(c Checksum, peek func(FileHeader) []byte) (FileHeader, int, error) {
	if err := r.requireArchive(); err != nil {
		return FileHeader{}, 0, err
	}
	name := ObjectName{c, ObjectFile}
	path := r.objectPath(c, ObjectFile)
	fd, err := openRetry(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return FileHeader{}, 0, fmt.Errorf("object %s: %w", name, ErrNotFound)
		}
		return FileHeader{}, 0, fmt.Errorf("object %s: %w", name, &fs.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	br := headerReaders.Get().(*bufio.Reader)
	defer headerReaders.Put(br)
	br.Reset(fdReader(fd))
	h, err := readArchiveHeader(br, name)
	if err != nil {
		return FileHeader{}, 0, err
	}
	if peek == nil || h.Mode&ModeTypeMask != ModeRegular || h.Size == 0 {
		return h, 0, nil
	}
	buf := peek(h)
	if len(buf) == 0 {
		return h, 0, nil
	}
	// The decompressor fills its whole window (32 KiB) before it returns
	// anything, unless its input ends first: given only the first
	// compressed bytes, it returns what they decode to.
	in, _ := br.Peek(peekInput)
	src := bytes.NewReader(in)
	var fr io.ReadCloser
	if v := peekInflaters.Get(); v != nil {
		fr = v.(io.ReadCloser)
		if err := fr.(flate.Resetter).Reset(src, nil); err != nil {
			return FileHeader{}, 0, err
		}
	} else {
		fr = flate.NewReader(src)
	}
	defer peekInflaters.Put(fr)
	n, _ := io.ReadFull(fr, buf[:min(uint64(len(buf)), h.Size)])
	return h, n, nil
}

// peekInput is the compressed input ContentHeader decodes a peek from:
// enough for a deflate block's header and the first bytes of data.
const peekInput = 2048

var (
	headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	peekInflaters sync.Pool // io.ReadCloser from flate.NewReader
)

// fdReader reads a file descriptor without the runtime's poller.
type fdReader int

func (f fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(f), p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// verifyingReader decompresses content and checks the object checksum at EOF.
type verifyingReader struct {
	name      ObjectName
	want      Checksum
	h         hash.Hash
	r         io.ReadCloser // nil for symlinks
	remaining uint64
	file      *os.File
	done      bool
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.done {
		return 0, io.EOF
	}
	if v.remaining > 0 {
		if uint64(len(p)) > v.remaining {
			p = p[:v.remaining]
		}
		n, err := v.r.Read(p)
		v.h.Write(p[:n])
		v.remaining -= uint64(n)
		if err == io.EOF && v.remaining > 0 {
			return n, fmt.Errorf("object %s is corrupted: content ends %d bytes early", v.name, v.remaining)
		}
		if err != nil && err != io.EOF {
			return n, fmt.Errorf("object %s is corrupted: %w", v.name, err)
		}
		if n > 0 {
			return n, nil
		}
	}
	v.done = true
	if v.r != nil {
		var one [1]byte
		if k, _ := v.r.Read(one[:]); k != 0 {
			return 0, fmt.Errorf("object %s is corrupted: content longer than its header says", v.name)
		}
	}
	var got Checksum
	v.h.Sum(got[:0])
	if got != v.want {
		return 0, fmt.Errorf("object %s is corrupted: content hashes to %s", v.name, got)
	}
	return 0, io.EOF
}

func (v *verifyingReader) Close() error {
	if v.r != nil {
		v.r.Close()
	}
	return v.file.Close()
}

// VerifyContent reads a content object completely and checks its checksum.
func (r *Repo) VerifyContent(c Checksum) error {
	_, rc, err := r.OpenContent(c)
	if err != nil {
		return err
	}
	defer rc.Close()
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	_, err = io.CopyBuffer(io.Discard, rc, *bp)
	return err
}
