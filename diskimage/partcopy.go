package diskimage

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// ExtractPartition copies partition p of a raw image into the new sparse
// file dst (for checkers such as e2fsck and fsck.fat, which take a
// filesystem, not a disk).
func ExtractPartition(image string, p PartitionResult, dst string) error {
	return copyRange(image, p.Start, p.Size, dst, 0, true)
}

// ReplacePartition writes the filesystem image src over partition p of
// a raw image (for tests that damage a filesystem on purpose).
func ReplacePartition(image string, p PartitionResult, src string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.Size() != p.Size {
		return fmt.Errorf("%s is %d bytes, the partition %d", src, st.Size(), p.Size)
	}
	return copyRange(src, 0, p.Size, image, p.Start, false)
}

// copyRange copies n bytes of src at off to dst at doff. Zero blocks are
// skipped where dst is known to be zero (a new file), so copies stay
// sparse; otherwise they are written.
func copyRange(src string, off, n int64, dst string, doff int64, create bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	out, err := os.OpenFile(dst, flags, 0o644)
	if err != nil {
		return err
	}
	if create {
		if err := out.Truncate(n); err != nil {
			out.Close()
			return err
		}
	}
	buf := make([]byte, 1<<20)
	for pos := int64(0); pos < n; pos += int64(len(buf)) {
		chunk := buf
		if n-pos < int64(len(chunk)) {
			chunk = chunk[:n-pos]
		}
		k, err := in.ReadAt(chunk, off+pos)
		if err != nil && err != io.EOF {
			out.Close()
			return err
		}
		if k == 0 {
			break
		}
		if create && bytes.Equal(chunk[:k], zeros[:k]) {
			continue
		}
		if _, err := out.WriteAt(chunk[:k], doff+pos); err != nil {
			out.Close()
			return err
		}
	}
	return out.Close()
}
