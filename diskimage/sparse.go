package diskimage

import (
	"errors"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

var zeros = make([]byte, 1<<20)

// sparseRead writes f's bytes to w, reading only its data extents
// (SEEK_DATA/SEEK_HOLE) and writing zeros for the holes.
func sparseRead(f *os.File, w io.Writer) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	fd := int(f.Fd())
	buf := make([]byte, 1<<20)
	writeZeros := func(n int64) error {
		for n > 0 {
			k := int64(len(zeros))
			if n < k {
				k = n
			}
			if _, err := w.Write(zeros[:k]); err != nil {
				return err
			}
			n -= k
		}
		return nil
	}
	off := int64(0)
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) { // only a hole is left
				return writeZeros(size - off)
			}
			// No SEEK_DATA: read everything.
			_, err := io.Copy(w, io.NewSectionReader(f, off, size-off))
			return err
		}
		if err := writeZeros(data - off); err != nil {
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if _, err := io.CopyBuffer(w, io.NewSectionReader(f, data, hole-data), buf); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// allocated is the space a file takes on the host.
func allocated(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks * 512
	}
	return st.Size()
}
