package delta

import (
	"encoding/binary"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
)

// storeWriter writes an .xz stream whose LZMA2 data is made of
// uncompressed chunks only: valid for every xz decoder (ostree's liblzma
// included), at the cost of a CRC64. Parts of already-compressed files
// use it: xz would spend more time on them than on everything else and
// gain about 1%, and ostree cannot read parts stored without compression
// from files (it maps the payload at offset 1, which mmap refuses).
//
// Layout (the .xz file format, version 1.0.4): stream header, one block
// (header naming the LZMA2 filter, chunks of at most 64 KiB each with a
// control byte and the size, the end marker, padding, CRC64 of the data),
// an index with one record, and the stream footer.
type storeWriter struct {
	w          io.Writer
	buf        []byte
	crc        hash.Hash64
	size       uint64 // uncompressed bytes
	compressed uint64 // LZMA2 chunk bytes written
	chunks     int
	err        error
}

const storeChunk = 64 << 10

var crc64Table = crc64.MakeTable(crc64.ECMA)

// streamFlags: no flags, check type 4 (CRC64).
var streamFlags = []byte{0x00, 0x04}

// blockHeader: size byte (12/4-1), block flags (one filter, no sizes),
// filter LZMA2 (0x21) with one property byte (dictionary 4 KiB: the
// uncompressed chunks need none), padding, then its CRC32.
var blockHeader = func() []byte {
	h := []byte{2, 0x00, 0x21, 0x01, 0x00, 0, 0, 0}
	return binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(h))
}()

func newStoreWriter(w io.Writer) (*storeWriter, error) {
	s := &storeWriter{w: w, buf: make([]byte, 0, storeChunk), crc: crc64.New(crc64Table)}
	hdr := []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	hdr = append(hdr, streamFlags...)
	hdr = binary.LittleEndian.AppendUint32(hdr, crc32.ChecksumIEEE(streamFlags))
	hdr = append(hdr, blockHeader...)
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *storeWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), storeChunk-len(s.buf))
		s.buf = append(s.buf, p[:k]...)
		p = p[k:]
		if len(s.buf) == storeChunk {
			if err := s.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// flush writes the buffered bytes as one uncompressed chunk: control 1
// (with a dictionary reset) for the first, 2 after; the size minus one,
// big-endian.
func (s *storeWriter) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	ctl := byte(2)
	if s.chunks == 0 {
		ctl = 1
	}
	hdr := []byte{ctl, byte((len(s.buf) - 1) >> 8), byte(len(s.buf) - 1)}
	if _, err := s.w.Write(hdr); err != nil {
		s.err = err
		return err
	}
	if _, err := s.w.Write(s.buf); err != nil {
		s.err = err
		return err
	}
	s.crc.Write(s.buf)
	s.size += uint64(len(s.buf))
	s.compressed += uint64(len(hdr) + len(s.buf))
	s.chunks++
	s.buf = s.buf[:0]
	return nil
}

// Close ends the block (end marker, padding, CRC64), then writes the
// index and the stream footer.
func (s *storeWriter) Close() error {
	if err := s.flush(); err != nil {
		return err
	}
	if s.err != nil {
		return s.err
	}
	lzma2 := s.compressed + 1 // the chunks and the end marker
	tail := []byte{0x00}
	for (uint64(len(blockHeader))+lzma2+uint64(len(tail)-1))%4 != 0 {
		tail = append(tail, 0) // block padding
	}
	tail = binary.LittleEndian.AppendUint64(tail, s.crc.Sum64())
	// Unpadded size: header, LZMA2 data (without the padding), check.
	unpadded := uint64(len(blockHeader)) + lzma2 + 8
	idx := []byte{0x00, 0x01}
	idx = binary.AppendUvarint(idx, unpadded)
	idx = binary.AppendUvarint(idx, s.size)
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	tail = append(tail, idx...)
	foot := binary.LittleEndian.AppendUint32(nil, uint32(len(idx)/4-1))
	foot = append(foot, streamFlags...)
	tail = binary.LittleEndian.AppendUint32(tail, crc32.ChecksumIEEE(foot))
	tail = append(tail, foot...)
	tail = append(tail, 'Y', 'Z')
	_, err := s.w.Write(tail)
	return err
}
