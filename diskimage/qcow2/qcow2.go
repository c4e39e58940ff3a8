// Package qcow2 converts sparse raw disk images into qcow2 images without
// qemu-img, and copies sparse files keeping their holes.
//
// The images written are qcow2 version 3 (compat 1.1): no backing file, no
// encryption, no snapshots, no header extensions, 16-bit refcounts
// (refcount_order 4), zlib (raw deflate) compression for compressed clusters.
// Only guest clusters holding at least one non-zero byte are stored; every
// other guest cluster is left unallocated and reads as zeros.
//
// Output is deterministic: the same raw input and options always give the
// same bytes, whatever the number of CPUs.
//
// # Layout
//
// All host clusters are laid out in this order:
//
//	cluster 0          header (104 bytes; the rest of the cluster is zero)
//	L1 table           ceil(l1_size*8 / cluster_size) clusters
//	refcount table     sized from an upper bound of the image's clusters
//	data clusters      in guest order; compressed clusters are packed
//	                   byte after byte, uncompressed ones cluster-aligned
//	L2 tables          one per L1 entry with data, in guest order
//	refcount blocks    exactly as many as needed to cover the whole file,
//	                   themselves included
//
// Data is streamed to the file first (its host offsets are only known once
// it has been compressed); the L2 tables, refcount blocks, refcount table,
// L1 table and, last, the header are written after it.
package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
)

// Options control Convert.
type Options struct {
	// ClusterBits is log2 of the cluster size, 9 (512 B) to 21 (2 MiB).
	// 0 means DefaultClusterBits (64 KiB clusters).
	ClusterBits int
	// Compress writes each data cluster as a qcow2 compressed cluster (raw
	// deflate, 4 KiB window as QEMU uses) when its compressed form is
	// smaller than a cluster, and uncompressed otherwise.
	Compress bool
}

const (
	// DefaultClusterBits gives 64 KiB clusters, as qemu-img does.
	DefaultClusterBits = 16
	// MinClusterBits and MaxClusterBits are the limits QEMU accepts.
	MinClusterBits = 9
	MaxClusterBits = 21

	magic         = 0x514649fb // "QFI\xfb"
	version       = 3
	headerLength  = 104
	refcountOrder = 4 // 16-bit refcounts
	maxRefcount   = 1<<16 - 1

	oflagCopied     = uint64(1) << 63
	oflagCompressed = uint64(1) << 62

	sectorSize = 512
	// deflateWindow is the window QEMU's zlib compression uses
	// (windowBits -12); its decompressor is initialised with the same value.
	deflateWindow = 1 << 12

	// QEMU's limits on the L1 and refcount tables.
	maxL1Bytes       = 32 << 20
	maxRefTableBytes = 8 << 20

	// Highest host offset an L2/L1 entry can hold (bits 9-55).
	maxHostOffset = int64(1) << 56
)

// Convert writes a qcow2 image of the raw image src to dst. The virtual size
// is src's size rounded up to a multiple of 512 bytes (QEMU's raw driver
// shows a raw file the same way). Data extents of src are found with
// SEEK_DATA/SEEK_HOLE (all of src is read where the file system lacks them)
// and clusters that are all zero are not stored, even inside data extents.
//
// dst must be an empty, newly created regular file opened for writing
// (without O_APPEND). On error dst holds garbage; the caller removes it.
func Convert(dst *os.File, src *os.File, opts Options) error {
	return convert(dst, src, opts, true)
}

func convert(dst, src *os.File, opts Options, useSeek bool) error {
	cb := opts.ClusterBits
	if cb == 0 {
		cb = DefaultClusterBits
	}
	if cb < MinClusterBits || cb > MaxClusterBits {
		return fmt.Errorf("qcow2: cluster bits %d out of range [%d, %d]", cb, MinClusterBits, MaxClusterBits)
	}
	if err := checkEmpty(dst); err != nil {
		return err
	}
	sfi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	if !sfi.Mode().IsRegular() {
		return fmt.Errorf("qcow2: source %s is not a regular file", src.Name())
	}
	c, err := newConverter(dst, src, uint(cb), sfi.Size(), opts.Compress)
	if err != nil {
		return err
	}
	if err := c.writeData(useSeek); err != nil {
		return err
	}
	return c.writeMetadata()
}

func checkEmpty(dst *os.File) error {
	fi, err := dst.Stat()
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("qcow2: destination %s is not a regular file", dst.Name())
	}
	if fi.Size() != 0 {
		return fmt.Errorf("qcow2: destination %s is not empty (%d bytes)", dst.Name(), fi.Size())
	}
	return nil
}

type converter struct {
	dst, src *os.File
	cb       uint
	cs       int64 // cluster size
	srcSize  int64
	vsize    int64 // virtual size
	compress bool

	l1Size      int64 // entries
	l1Clusters  int64
	rtClusters  int64
	rbEntries   int64 // refcounts per refcount block
	dataStartCl int64 // first data cluster

	l2 [][]uint64 // by L1 index; nil when the L2 table has no entry

	// Data area allocation.
	next    int64    // next free, cluster-aligned host offset
	cpos    int64    // end of the last compressed cluster; 0 if none yet
	dataRef []uint16 // refcounts of clusters [dataStartCl, next/cs)
	out     outBuf

	zero []byte // one cluster of zeros
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func roundUp(a, b int64) int64 { return ceilDiv(a, b) * b }

func newConverter(dst, src *os.File, cb uint, srcSize int64, compress bool) (*converter, error) {
	cs := int64(1) << cb
	c := &converter{
		dst: dst, src: src, cb: cb, cs: cs, srcSize: srcSize,
		vsize:     roundUp(srcSize, sectorSize),
		compress:  compress,
		rbEntries: cs * 8 / (1 << refcountOrder),
		zero:      make([]byte, cs),
	}
	l2Entries := cs / 8
	c.l1Size = ceilDiv(c.vsize, cs*l2Entries)
	if c.l1Size*8 > maxL1Bytes {
		return nil, fmt.Errorf("qcow2: virtual size %d too large for %d-byte clusters (L1 table over %d bytes)", c.vsize, cs, maxL1Bytes)
	}
	c.l1Clusters = ceilDiv(c.l1Size*8, cs)

	// Upper bound on the number of host clusters: every guest cluster
	// stored (a compressed cluster never needs more than one new host
	// cluster), every L2 table, plus the fixed metadata and the refcount
	// blocks covering it all. The refcount table only has to be big enough
	// for that bound; unused entries stay zero.
	vClusters := ceilDiv(c.vsize, cs)
	var rt, rb int64
	for {
		total := 1 + c.l1Clusters + rt + vClusters + c.l1Size + rb
		nrb := ceilDiv(total, c.rbEntries)
		nrt := max(1, ceilDiv(nrb*8, cs))
		if nrb == rb && nrt == rt {
			break
		}
		rb, rt = nrb, nrt
	}
	if rt*cs > maxRefTableBytes {
		return nil, fmt.Errorf("qcow2: virtual size %d too large for %d-byte clusters (refcount table over %d bytes)", c.vsize, cs, maxRefTableBytes)
	}
	c.rtClusters = rt
	c.dataStartCl = 1 + c.l1Clusters + c.rtClusters
	c.next = c.dataStartCl * cs
	c.l2 = make([][]uint64, c.l1Size)
	c.out = outBuf{f: dst, base: c.next}
	return c, nil
}

// setL2 records the L2 entry of guest cluster vc.
func (c *converter) setL2(vc int64, entry uint64) {
	shift := c.cb - 3 // log2 of entries per L2 table
	i := vc >> shift
	if c.l2[i] == nil {
		c.l2[i] = make([]uint64, 1<<shift)
	}
	c.l2[i][vc&(1<<shift-1)] = entry
}

// growRefs extends dataRef to cover clusters up to c.next.
func (c *converter) growRefs() {
	n := c.next>>c.cb - c.dataStartCl
	for int64(len(c.dataRef)) < n {
		c.dataRef = append(c.dataRef, 0)
	}
}

// placeRaw allocates a host cluster for an uncompressed data cluster.
func (c *converter) placeRaw(vc int64, data []byte) error {
	off := c.next
	if off+c.cs > maxHostOffset {
		return errors.New("qcow2: image too large")
	}
	c.next += c.cs
	c.growRefs()
	c.dataRef[off>>c.cb-c.dataStartCl] = 1
	c.setL2(vc, oflagCopied|uint64(off))
	return c.out.put(off, data, c.lowWater())
}

// placeCompressed allocates host bytes for a compressed cluster: right after
// the previous compressed cluster when it fits in that cluster, or in the
// free cluster that follows it; otherwise at the start of a new cluster.
func (c *converter) placeCompressed(vc int64, data []byte) error {
	n := int64(len(data))
	cs := c.cs
	off := int64(-1)
	if c.cpos != 0 {
		curEnd := roundUp(c.cpos, cs)
		if end := c.cpos + n; end <= curEnd || curEnd == c.next {
			off = c.cpos
			// Keep every touched cluster's refcount representable.
			for cl := off >> c.cb; cl <= (end-1)>>c.cb; cl++ {
				if i := cl - c.dataStartCl; i < int64(len(c.dataRef)) && c.dataRef[i] == maxRefcount {
					off = -1
					break
				}
			}
		}
	}
	if off < 0 {
		off = c.next
	}
	end := off + n
	// Offset bits 0..x-1, x = 62 - (cluster_bits - 8); then the number of
	// 512-byte sectors after the one holding the offset.
	x := 62 - (c.cb - 8)
	if end > int64(1)<<x {
		return errors.New("qcow2: image too large for compressed cluster offsets")
	}
	if end > c.next {
		c.next = roundUp(end, cs)
		c.growRefs()
	}
	c.cpos = end
	for cl := off >> c.cb; cl <= (end-1)>>c.cb; cl++ {
		c.dataRef[cl-c.dataStartCl]++
	}
	sectors := uint64((end-1)/sectorSize - off/sectorSize)
	c.setL2(vc, oflagCompressed|sectors<<x|uint64(off))
	return c.out.put(off, data, c.lowWater())
}

// lowWater is the lowest host offset still to be written in the data area.
func (c *converter) lowWater() int64 {
	low := c.next
	if c.cpos != 0 {
		low = min(low, c.cpos&^(c.cs-1))
	}
	return low
}

// writeData reads src, stores its non-zero clusters and keeps their L2
// entries and refcounts.
func (c *converter) writeData(useSeek bool) error {
	workers := 1
	if c.compress {
		workers = runtime.GOMAXPROCS(0)
	}
	batchMax := int(max(int64(4*workers), (8<<20)>>c.cb))
	b := newBatch(batchMax, c.cs, workers, c.compress)

	chunk := max(1, (4<<20)>>c.cb) // clusters read at once
	rbuf := make([]byte, int64(chunk)*c.cs)
	nextCl := int64(0) // clusters below this one have been read
	err := walkData(c.src, c.srcSize, useSeek, func(start, end int64) error {
		c0 := max(start>>c.cb, nextCl)
		c1 := ceilDiv(end, c.cs)
		for c0 < c1 {
			n := min(c1-c0, int64(chunk))
			buf := rbuf[:n*c.cs]
			if err := readFull(c.src, buf, c0*c.cs); err != nil {
				return err
			}
			for i := int64(0); i < n; i++ {
				cl := buf[i*c.cs : (i+1)*c.cs]
				if bytes.Equal(cl, c.zero) {
					continue
				}
				b.add(c0+i, cl)
				if b.full() {
					if err := c.flushBatch(b); err != nil {
						return err
					}
				}
			}
			c0 += n
			nextCl = c0
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := c.flushBatch(b); err != nil {
		return err
	}
	return c.out.flush()
}

// readFull reads len(buf) bytes at off; bytes past the end of the file read
// as zeros.
func readFull(f *os.File, buf []byte, off int64) error {
	n, err := f.ReadAt(buf, off)
	if err == io.EOF {
		clear(buf[n:])
		return nil
	}
	if err != nil {
		return fmt.Errorf("qcow2: read %s: %w", f.Name(), err)
	}
	return nil
}

func (c *converter) flushBatch(b *batch) error {
	if b.n == 0 {
		return nil
	}
	if c.compress {
		b.compressAll()
	}
	for i := 0; i < b.n; i++ {
		var err error
		if c.compress && b.zlen[i] > 0 {
			err = c.placeCompressed(b.vc[i], b.zbuf[i].Bytes())
		} else {
			err = c.placeRaw(b.vc[i], b.cluster(i))
		}
		if err != nil {
			return err
		}
	}
	b.n = 0
	return nil
}

// batch holds guest clusters waiting to be compressed and written.
type batch struct {
	cs   int64
	n    int
	vc   []int64
	data []byte
	zbuf []bytes.Buffer
	zlen []int // compressed length, 0 when stored uncompressed
	zw   []*flate.Writer
}

func newBatch(size int, cs int64, workers int, compress bool) *batch {
	b := &batch{cs: cs, vc: make([]int64, size), data: make([]byte, int64(size)*cs)}
	if compress {
		b.zbuf = make([]bytes.Buffer, size)
		b.zlen = make([]int, size)
		b.zw = make([]*flate.Writer, workers)
	}
	return b
}

func (b *batch) full() bool { return b.n == len(b.vc) }

func (b *batch) cluster(i int) []byte { return b.data[int64(i)*b.cs : int64(i+1)*b.cs] }

func (b *batch) add(vc int64, data []byte) {
	b.vc[b.n] = vc
	copy(b.cluster(b.n), data)
	b.n++
}

// compressAll compresses the batch's clusters on all workers. Each cluster
// is compressed on its own, so the result does not depend on scheduling.
func (b *batch) compressAll() {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range b.zw {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.n {
					return
				}
				b.zlen[i] = b.compressOne(w, i)
			}
		}()
	}
	wg.Wait()
}

// compressOne compresses cluster i with worker w's writer and returns the
// compressed length, or 0 if compressing does not make it smaller.
func (b *batch) compressOne(w, i int) int {
	zb := &b.zbuf[i]
	zb.Reset()
	zw := b.zw[w]
	if zw == nil {
		var err error
		zw, err = flate.NewWriterWindow(zb, deflateWindow)
		if err != nil {
			panic(err) // constant, valid window size
		}
		b.zw[w] = zw
	} else {
		zw.Reset(zb)
	}
	// Writes to a bytes.Buffer do not fail.
	_, _ = zw.Write(b.cluster(i))
	_ = zw.Close()
	if int64(zb.Len()) >= b.cs {
		return 0
	}
	return zb.Len()
}

// writeMetadata lays out and writes the L2 tables, refcount blocks,
// refcount table, L1 table and header.
func (c *converter) writeMetadata() error {
	cs := c.cs
	l2Start := c.next
	l1 := make([]uint64, c.l1Size)
	off := l2Start
	nL2 := int64(0)
	for i, t := range c.l2 {
		if t == nil {
			continue
		}
		l1[i] = oflagCopied | uint64(off)
		off += cs
		nL2++
	}
	base := off >> c.cb // clusters before the refcount blocks
	var rb int64
	for {
		need := ceilDiv(base+rb, c.rbEntries)
		if need == rb {
			break
		}
		rb = need
	}
	if rb*8 > c.rtClusters*cs {
		return fmt.Errorf("qcow2: internal error: %d refcount blocks exceed the refcount table", rb)
	}
	rbStart := off
	end := rbStart + rb*cs
	if end > maxHostOffset {
		return errors.New("qcow2: image too large")
	}

	buf := make([]byte, cs)
	put64 := func(p []byte, v []uint64) {
		for i, e := range v {
			binary.BigEndian.PutUint64(p[i*8:], e)
		}
	}

	// L2 tables.
	off = l2Start
	for _, t := range c.l2 {
		if t == nil {
			continue
		}
		put64(buf, t)
		if err := c.writeAt(buf, off); err != nil {
			return err
		}
		off += cs
	}
	c.l2 = nil

	// Refcount blocks.
	dataEndCl := l2Start >> c.cb
	refOf := func(cl int64) uint16 {
		switch {
		case cl < c.dataStartCl:
			return 1 // header, L1, refcount table
		case cl < dataEndCl:
			return c.dataRef[cl-c.dataStartCl]
		case cl < end>>c.cb:
			return 1 // L2 tables, refcount blocks
		}
		return 0
	}
	for i := int64(0); i < rb; i++ {
		clear(buf)
		for j := int64(0); j < c.rbEntries; j++ {
			binary.BigEndian.PutUint16(buf[j*2:], refOf(i*c.rbEntries+j))
		}
		if err := c.writeAt(buf, rbStart+i*cs); err != nil {
			return err
		}
	}

	// Refcount table.
	rt := make([]byte, c.rtClusters*cs)
	for i := int64(0); i < rb; i++ {
		binary.BigEndian.PutUint64(rt[i*8:], uint64(rbStart+i*cs))
	}
	rtOff := (1 + c.l1Clusters) * cs
	if err := c.writeAt(rt, rtOff); err != nil {
		return err
	}

	// L1 table.
	l1Off := int64(0)
	if c.l1Size > 0 {
		l1Off = cs
		l1b := make([]byte, c.l1Clusters*cs)
		put64(l1b, l1)
		if err := c.writeAt(l1b, l1Off); err != nil {
			return err
		}
	}

	// Header, last.
	h := make([]byte, cs)
	be := binary.BigEndian
	be.PutUint32(h[0:], magic)
	be.PutUint32(h[4:], version)
	// 8: backing_file_offset, 16: backing_file_size: none.
	be.PutUint32(h[20:], uint32(c.cb))
	be.PutUint64(h[24:], uint64(c.vsize))
	// 32: crypt_method: none.
	be.PutUint32(h[36:], uint32(c.l1Size))
	be.PutUint64(h[40:], uint64(l1Off))
	be.PutUint64(h[48:], uint64(rtOff))
	be.PutUint32(h[56:], uint32(c.rtClusters))
	// 60: nb_snapshots, 64: snapshots_offset, 72: incompatible,
	// 80: compatible, 88: autoclear features: all zero.
	be.PutUint32(h[96:], refcountOrder)
	be.PutUint32(h[100:], headerLength)
	// Header extensions start at 104: the end marker (type 0) is zeros.
	if err := c.writeAt(h, 0); err != nil {
		return err
	}
	// Every region written is whole clusters and the refcount blocks come
	// last, so the file already ends at end; make that explicit.
	if err := c.dst.Truncate(end); err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	return nil
}

func (c *converter) writeAt(p []byte, off int64) error {
	if _, err := c.dst.WriteAt(p, off); err != nil {
		return fmt.Errorf("qcow2: write %s: %w", c.dst.Name(), err)
	}
	return nil
}

// outBuf buffers the data area, which is written in increasing offsets
// except that compressed clusters may still be appended to the last
// partly filled cluster.
type outBuf struct {
	f    *os.File
	base int64  // file offset of buf[0]
	buf  []byte // bytes [base, base+len(buf)); gaps are zeros
}

const outFlushSize = 8 << 20

// put stores p at off (off >= o.base) and writes out everything below low
// once enough has accumulated.
func (o *outBuf) put(off int64, p []byte, low int64) error {
	if off < o.base {
		return fmt.Errorf("qcow2: internal error: write at %d below %d", off, o.base)
	}
	end := off - o.base + int64(len(p))
	if end > int64(len(o.buf)) {
		old := len(o.buf)
		o.buf = append(o.buf, make([]byte, end-int64(old))...)
	}
	copy(o.buf[off-o.base:], p)
	if n := low - o.base; n >= outFlushSize {
		if _, err := o.f.WriteAt(o.buf[:n], o.base); err != nil {
			return fmt.Errorf("qcow2: write %s: %w", o.f.Name(), err)
		}
		rest := copy(o.buf, o.buf[n:])
		o.buf = o.buf[:rest]
		o.base += n
	}
	return nil
}

func (o *outBuf) flush() error {
	if len(o.buf) > 0 {
		if _, err := o.f.WriteAt(o.buf, o.base); err != nil {
			return fmt.Errorf("qcow2: write %s: %w", o.f.Name(), err)
		}
	}
	o.base += int64(len(o.buf))
	o.buf = nil
	return nil
}
