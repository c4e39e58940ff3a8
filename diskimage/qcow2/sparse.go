package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// walkData calls fn for each data extent [start, end) of f below size, in
// increasing order, found with SEEK_DATA/SEEK_HOLE. If useSeek is false or
// the file system does not support them, the whole file is one extent.
func walkData(f *os.File, size int64, useSeek bool, fn func(start, end int64) error) error {
	if size <= 0 {
		return nil
	}
	if !useSeek {
		return fn(0, size)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fn(0, size)
	}
	seek := func(off int64, whence int) (int64, error) {
		var r int64
		var serr error
		if err := rc.Control(func(fd uintptr) {
			r, serr = unix.Seek(int(fd), off, whence)
		}); err != nil {
			return 0, err
		}
		return r, serr
	}
	off := int64(0)
	for off < size {
		start, err := seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // no data after off
		}
		if err != nil {
			if off == 0 && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP)) {
				return fn(0, size) // not supported here
			}
			return fmt.Errorf("qcow2: seek data in %s: %w", f.Name(), err)
		}
		if start >= size {
			return nil
		}
		end, err := seek(start, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("qcow2: seek hole in %s: %w", f.Name(), err)
		}
		end = min(end, size)
		if end <= start {
			// A file shrinking under us; do not loop forever.
			return fmt.Errorf("qcow2: inconsistent extents in %s at %d", f.Name(), start)
		}
		if err := fn(start, end); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// copyBlock is the granularity at which CopySparse skips zeros.
const copyBlock = 4096

// CopySparse copies src to dst, a new empty regular file, so that holes
// stay holes: only src's data extents (SEEK_DATA/SEEK_HOLE) are read, blocks
// of them that are all zeros are not written either, and dst is truncated
// to src's size at the end.
func CopySparse(dst, src *os.File) error {
	return copySparse(dst, src, true)
}

func copySparse(dst, src *os.File, useSeek bool) error {
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
	size := sfi.Size()
	buf := make([]byte, 1<<20)
	zero := make([]byte, copyBlock)
	err = walkData(src, size, useSeek, func(start, end int64) error {
		for off := start; off < end; {
			n := min(int64(len(buf)), end-off)
			// End chunks on a block boundary where possible.
			if e := off + n; e < end {
				if a := e &^ (copyBlock - 1); a > off {
					n = a - off
				}
			}
			b := buf[:n]
			if err := readFull(src, b, off); err != nil {
				return err
			}
			// Write runs of non-zero blocks, blocks aligned on absolute
			// offsets so that skipped ones are whole file system blocks.
			runStart := int64(-1)
			for p := int64(0); p < n; {
				q := min((off+p)&^(copyBlock-1)+copyBlock-off, n)
				if bytes.Equal(b[p:q], zero[:q-p]) {
					if runStart >= 0 {
						if err := writeAt(dst, b[runStart:p], off+runStart); err != nil {
							return err
						}
						runStart = -1
					}
				} else if runStart < 0 {
					runStart = p
				}
				p = q
			}
			if runStart >= 0 {
				if err := writeAt(dst, b[runStart:], off+runStart); err != nil {
					return err
				}
			}
			off += n
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	return nil
}

func writeAt(f *os.File, p []byte, off int64) error {
	if _, err := f.WriteAt(p, off); err != nil {
		return fmt.Errorf("qcow2: write %s: %w", f.Name(), err)
	}
	return nil
}
