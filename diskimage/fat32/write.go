package fat32

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

const (
	attrVolumeID  = 0x08
	attrDirectory = 0x10
	attrArchive   = 0x20
	endOfChain    = 0x0FFFFFFF
)

// WriteTo writes the filesystem into w at offset off. Only non-zero data
// is written: w must be pre-zeroed (a new sparse file), and clusters no
// file uses stay holes. It fails before writing anything if the content
// does not fit, and fails if a file's open function does not yield
// exactly its size.
func (f *FS) WriteTo(w io.WriterAt, off int64) error {
	g := f.geo
	used, err := f.layout(g.clusterBytes())
	if err != nil {
		return err
	}
	if used > uint64(g.clusters) {
		need := f.MinSize()
		return fmt.Errorf("fat32: content does not fit: needs %.2f MiB (%d clusters of %d bytes), the filesystem is %.2f MiB (%d clusters)",
			mib(need), used, g.clusterBytes(), mib(f.size), g.clusters)
	}
	wr := func(b []byte, at int64) error {
		if _, err := w.WriteAt(b, off+at); err != nil {
			return fmt.Errorf("fat32: write at %d: %w", off+at, err)
		}
		return nil
	}

	// Reserved area.
	free := g.clusters - uint32(used)
	nextFree := uint32(2 + used)
	if free == 0 {
		nextFree = 0xFFFFFFFF
	}
	boot := f.bootSector()
	info := fsInfo(free, nextFree)
	for _, s := range []struct {
		b      []byte
		sector int64
	}{{boot, 0}, {info, 1}, {boot, 6}, {info, 7}} {
		if err := wr(s.b, s.sector*sectorSize); err != nil {
			return err
		}
	}

	// FATs: only the entries in use (the rest are zero, free).
	fat := make([]byte, (2+used)*4)
	binary.LittleEndian.PutUint32(fat[0:], 0x0FFFFF00|0xF8)
	binary.LittleEndian.PutUint32(fat[4:], endOfChain) // clean, no errors
	var chains func(n *node)
	chains = func(n *node) {
		for i := uint32(0); i < n.nclusters; i++ {
			c := n.cluster + i
			v := uint32(c + 1)
			if i == n.nclusters-1 {
				v = endOfChain
			}
			binary.LittleEndian.PutUint32(fat[c*4:], v)
		}
		for _, c := range n.children {
			chains(c)
		}
	}
	chains(f.root)
	for i := int64(0); i < numFATs; i++ {
		if err := wr(fat, (reservedSectors+i*int64(g.fatSz))*sectorSize); err != nil {
			return err
		}
	}

	// Directories, then files.
	var dirs func(d *node) error
	dirs = func(d *node) error {
		if err := wr(f.dirData(d), g.clusterOffset(d.cluster)); err != nil {
			return err
		}
		for _, c := range d.children {
			if c.dir {
				if err := dirs(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := dirs(f.root); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var files func(d *node) error
	files = func(d *node) error {
		for _, c := range d.children {
			var err error
			if c.dir {
				err = files(c)
			} else {
				err = f.writeFile(c, w, off+g.clusterOffset(c.cluster), buf)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return files(f.root)
}

// writeFile copies n's content to w at at, skipping all-zero sectors.
func (f *FS) writeFile(n *node, w io.WriterAt, at int64, buf []byte) error {
	rc, err := n.open()
	if err != nil {
		return fmt.Errorf("fat32: %s: %w", n.path(), err)
	}
	err = copySparse(n, rc, w, at, buf)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("fat32: %s: close: %w", n.path(), cerr)
	}
	return err
}

func copySparse(n *node, r io.Reader, w io.WriterAt, at int64, buf []byte) error {
	var zero [sectorSize]byte
	var done int64
	for done < n.size {
		b := buf
		if rem := n.size - done; rem < int64(len(b)) {
			b = b[:rem]
		}
		k, err := io.ReadFull(r, b)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("fat32: %s: content is %d bytes, want %d", n.path(), done+int64(k), n.size)
			}
			return fmt.Errorf("fat32: %s: read: %w", n.path(), err)
		}
		// Write the runs of non-zero sectors.
		for i := 0; i < k; {
			j := i
			for j < k && !bytes.Equal(b[j:min(j+sectorSize, k)], zero[:min(sectorSize, k-j)]) {
				j += sectorSize
			}
			j = min(j, k)
			if j > i {
				if _, err := w.WriteAt(b[i:j], at+done+int64(i)); err != nil {
					return fmt.Errorf("fat32: %s: write: %w", n.path(), err)
				}
				i = j
				continue
			}
			i += sectorSize
		}
		done += int64(k)
	}
	var one [1]byte
	for {
		k, err := r.Read(one[:])
		if k > 0 {
			return fmt.Errorf("fat32: %s: content is longer than %d bytes", n.path(), n.size)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fat32: %s: read: %w", n.path(), err)
		}
	}
}

// bootSector is the boot sector (also written as the backup at sector 6).
func (f *FS) bootSector() []byte {
	g := f.geo
	b := make([]byte, sectorSize)
	le := binary.LittleEndian
	copy(b[0:], []byte{0xEB, 0x58, 0x90}) // jmp 0x5A; nop
	copy(b[3:11], "MSWIN4.1")
	le.PutUint16(b[11:], sectorSize)
	b[13] = byte(g.spc)
	le.PutUint16(b[14:], reservedSectors)
	b[16] = numFATs
	// RootEntCnt, TotSec16 = 0
	b[21] = 0xF8 // media: fixed disk
	// FATSz16 = 0
	spt, heads := chs(g.totSec)
	le.PutUint16(b[24:], spt)
	le.PutUint16(b[26:], heads)
	le.PutUint32(b[28:], f.opts.HiddenSectors)
	le.PutUint32(b[32:], g.totSec)
	le.PutUint32(b[36:], g.fatSz)
	// ExtFlags 0 (FATs mirrored), FSVer 0.0
	le.PutUint32(b[44:], 2) // root cluster
	le.PutUint16(b[48:], 1) // FSInfo sector
	le.PutUint16(b[50:], 6) // backup boot sector
	b[64] = 0x80            // drive number
	b[66] = 0x29            // extended boot signature
	le.PutUint32(b[67:], f.opts.VolumeID)
	copy(b[71:82], f.label[:])
	copy(b[82:90], "FAT32   ")
	// Boot code at 0x5A: int 0x18 (no bootable disk: try the next
	// device), then halt.
	copy(b[0x5A:], []byte{0xCD, 0x18, 0xF4, 0xEB, 0xFD})
	b[510], b[511] = 0x55, 0xAA
	return b
}

// chs is a nominal geometry for the BPB: 32 sectors per track (which
// divides the sector count of any MiB-aligned partition) and a power of
// two of heads up to 128 (255 beyond) so that cylinders stay ≤ 1024.
func chs(ts uint32) (spt, heads uint16) {
	spt, heads = 32, 2
	for heads < 128 && uint64(ts) > 1024*uint64(spt)*uint64(heads) {
		heads *= 2
	}
	if uint64(ts) > 1024*uint64(spt)*uint64(heads) {
		heads = 255
	}
	return spt, heads
}

func fsInfo(free, nextFree uint32) []byte {
	b := make([]byte, sectorSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], 0x41615252)
	le.PutUint32(b[484:], 0x61417272)
	le.PutUint32(b[488:], free)
	le.PutUint32(b[492:], nextFree)
	le.PutUint32(b[508:], 0xAA550000)
	return b
}

// fatTime encodes t (UTC fields) as FAT date, time and 10 ms units.
func fatTime(t time.Time) (date, tm uint16, tenth byte) {
	t = t.UTC()
	lo := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	hi := time.Date(2107, 12, 31, 23, 59, 59, 990_000_000, time.UTC)
	if t.Before(lo) {
		t = lo
	}
	if t.After(hi) {
		t = hi
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tm = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	tenth = byte(t.Second()%2*100 + t.Nanosecond()/10_000_000)
	return date, tm, tenth
}

func (f *FS) putEntry(e []byte, name [11]byte, attr byte, cluster uint32, size uint32) {
	le := binary.LittleEndian
	date, tm, tenth := fatTime(f.opts.Time)
	copy(e[0:11], name[:])
	e[11] = attr
	e[13] = tenth
	le.PutUint16(e[14:], tm)
	le.PutUint16(e[16:], date)
	le.PutUint16(e[18:], date)
	le.PutUint16(e[20:], uint16(cluster>>16))
	le.PutUint16(e[22:], tm)
	le.PutUint16(e[24:], date)
	le.PutUint16(e[26:], uint16(cluster))
	le.PutUint32(e[28:], size)
}

// dirData is the entries of directory d (without the zero padding to the
// end of its clusters).
func (f *FS) dirData(d *node) []byte {
	buf := make([]byte, 0, f.dirEntries(d)*32)
	var e [32]byte
	if d.parent == nil {
		if f.hasLabel {
			e = [32]byte{}
			f.putEntry(e[:], f.label, attrVolumeID, 0, 0)
			buf = append(buf, e[:]...)
		}
	} else {
		parent := d.parent.cluster
		if d.parent.parent == nil {
			parent = 0 // the root directory is cluster 0 in ".."
		}
		e = [32]byte{}
		f.putEntry(e[:], makeShort(".", ""), attrDirectory, d.cluster, 0)
		buf = append(buf, e[:]...)
		e = [32]byte{}
		f.putEntry(e[:], makeShort("..", ""), attrDirectory, parent, 0)
		buf = append(buf, e[:]...)
	}
	for _, c := range d.children {
		if c.lfn != nil {
			buf = appendLFN(buf, c.lfn, c.short)
		}
		e = [32]byte{}
		if c.dir {
			f.putEntry(e[:], c.short, attrDirectory, c.cluster, 0)
		} else {
			f.putEntry(e[:], c.short, attrArchive, c.cluster, uint32(c.size))
		}
		buf = append(buf, e[:]...)
	}
	return buf
}
