package ostree

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// TestContentHeader: ContentHeader gives the header OpenContent gives,
// peeks at the start of regular files only when asked, and reports a
// missing object as ErrNotFound.
func TestContentHeader(t *testing.T) {
	r, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 kB: more than one deflate block
	cases := []struct {
		name string
		h    FileHeader
		data []byte
	}{
		{"regular", FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o644}}, big},
		{"short", FileHeader{FileMeta: FileMeta{UID: 7, GID: 8, Mode: ModeRegular | 0o4755}}, []byte("abc")},
		{"empty", FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o600}}, nil},
		{"xattrs", FileHeader{FileMeta: FileMeta{Mode: ModeRegular | 0o644, Xattrs: []Xattr{{Name: "user.a", Value: []byte("b")}}}}, []byte("x")},
		{"symlink", FileHeader{FileMeta: FileMeta{Mode: ModeSymlink | 0o777}, Symlink: "../target"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			h.Size = uint64(len(tc.data))
			c, err := r.WriteContent(h, bytes.NewReader(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			want, rc, err := r.OpenContent(c)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, rc)
			rc.Close()

			got, n, err := r.ContentHeader(c, nil)
			if err != nil || n != 0 || !reflect.DeepEqual(got, want) {
				t.Fatalf("ContentHeader(nil) = %+v, %d, %v; OpenContent header %+v", got, n, err, want)
			}
			var buf [20]byte
			asked := false
			got, n, err = r.ContentHeader(c, func(h FileHeader) []byte {
				asked = true
				if !reflect.DeepEqual(h, want) {
					t.Errorf("peek got header %+v, want %+v", h, want)
				}
				return buf[:]
			})
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("ContentHeader(peek) = %+v, %v", got, err)
			}
			wantN := min(len(buf), len(tc.data))
			if h.Mode&ModeTypeMask != ModeRegular {
				wantN = 0
			}
			if asked != (wantN > 0) || n != wantN || !bytes.Equal(buf[:n], tc.data[:wantN]) {
				t.Errorf("peek: asked %v, %d bytes %q; want %d bytes %q", asked, n, buf[:n], wantN, tc.data[:wantN])
			}
			// A peek callback that declines reads nothing.
			if _, n, err := r.ContentHeader(c, func(FileHeader) []byte { return nil }); err != nil || n != 0 {
				t.Errorf("declined peek: %d, %v", n, err)
			}
		})
	}
	var missing Checksum
	missing[0] = 1
	if _, _, err := r.ContentHeader(missing, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing object: %v", err)
	}
}
