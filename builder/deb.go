package builder

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz/lzma"
	"github.com/xi2/xz"
	"pault.ag/go/debian/control"
)

// A .deb is an ar archive: debian-binary, control.tar[.comp], data.tar[.comp]
// in that order (deb(5)); members whose names start with "_" may follow
// debian-binary and are ignored, as dpkg-deb ignores them. The reader here
// is streaming: it never seeks, so the .deb can come straight from the
// cache's verifying reader.

const arMagic = "!<arch>\n"

// arReader walks the members of an ar archive read sequentially.
type arReader struct {
	r      io.Reader
	cur    *io.LimitedReader // the current member's data
	padded bool              // the current member is followed by a pad byte
}

type arMember struct {
	Name string
	Size int64
	Data io.Reader
}

func newArReader(r io.Reader) (*arReader, error) {
	var magic [8]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, fmt.Errorf("not a .deb: %w", noEOF(err))
	}
	if string(magic[:]) != arMagic {
		return nil, errors.New("not a .deb: no ar archive signature")
	}
	return &arReader{r: r}, nil
}

// next skips what is left of the current member and returns the next one,
// or io.EOF at the end of the archive.
func (a *arReader) next() (*arMember, error) {
	if a.cur != nil {
		if _, err := io.Copy(io.Discard, a.cur); err != nil {
			return nil, err
		}
		if a.cur.N != 0 {
			return nil, io.ErrUnexpectedEOF
		}
		if a.padded {
			var pad [1]byte
			if _, err := io.ReadFull(a.r, pad[:]); err != nil {
				return nil, truncated(noEOF(err))
			}
		}
		a.cur = nil
	}
	var hdr [60]byte
	n, err := io.ReadFull(a.r, hdr[:])
	if err == io.EOF || (err == io.ErrUnexpectedEOF && n == 1 && hdr[0] == '\n') {
		return nil, io.EOF
	}
	if err != nil {
		return nil, truncated(err)
	}
	if hdr[58] != '`' || hdr[59] != '\n' {
		return nil, errors.New("ar member header is corrupted (bad magic)")
	}
	name := strings.TrimRight(string(hdr[0:16]), " ")
	name = strings.TrimSuffix(name, "/") // GNU ar
	size, err := strconv.ParseInt(strings.TrimRight(string(hdr[48:58]), " "), 10, 64)
	if err != nil || size < 0 {
		return nil, fmt.Errorf("ar member %q has an invalid size %q", name, strings.TrimSpace(string(hdr[48:58])))
	}
	a.cur = &io.LimitedReader{R: a.r, N: size}
	a.padded = size%2 == 1
	return &arMember{Name: name, Size: size, Data: a.cur}, nil
}

// drain reads the archive to its end, so that a verifying reader below
// sees every byte (and reports a corrupted file).
func (a *arReader) drain() error {
	for {
		if _, err := a.next(); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
	}
	// Anything after the last member (there should be nothing).
	_, err := io.Copy(io.Discard, a.r)
	return err
}

func truncated(err error) error {
	if err == io.ErrUnexpectedEOF {
		return errors.New("ar archive truncated")
	}
	return err
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// tarMember splits "data.tar.xz" into its base ("data") and compression
// (".xz"); ok is false for names that are not a tar member.
func tarMember(name string) (base, comp string, ok bool) {
	for _, c := range []string{"", ".gz", ".xz", ".zst", ".bz2", ".lzma"} {
		if b, found := strings.CutSuffix(name, ".tar"+c); found {
			return b, c, true
		}
	}
	return "", "", false
}

// decompress returns a reader of the uncompressed member. Close releases
// decoder resources (zstd runs goroutines, xz may run a process) but not r.
func decompress(comp string, r io.Reader) (io.ReadCloser, error) {
	return decompressWith(comp, r, false)
}

// decompressWith may decode large .xz members with the xz program (see
// externalXZ).
func decompressWith(comp string, r io.Reader, allowExternal bool) (io.ReadCloser, error) {
	if comp == ".xz" && allowExternal {
		if path := xzProgram(); path != "" {
			return externalXZ(path, r)
		}
	}
	switch comp {
	case "":
		return io.NopCloser(r), nil
	case ".gz":
		return gzip.NewReader(bufio.NewReaderSize(r, 256<<10))
	case ".xz":
		// xi2/xz (a port of xz-embedded) decodes about 1.6 times as fast
		// as ulikunitz/xz here; dpkg-deb's data.tar.xz is the common case.
		zr, err := xz.NewReader(bufio.NewReaderSize(r, 256<<10), 0)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(zr), nil
	case ".zst":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	case ".bz2":
		return io.NopCloser(bzip2.NewReader(bufio.NewReaderSize(r, 256<<10))), nil
	case ".lzma":
		zr, err := lzma.NewReader(bufio.NewReaderSize(r, 256<<10))
		if err != nil {
			return nil, err
		}
		return io.NopCloser(zr), nil
	}
	return nil, fmt.Errorf("unsupported compression %q", comp)
}

// Limits on control.tar, which is read into memory: real packages have a
// few KiB to a few MiB (md5sums of large packages, translated templates).
const (
	maxControlMember = 64 << 20
	maxControlTotal  = 128 << 20
)

// readControl reads every regular file of control.tar into memory, keyed by
// its base name ("control", "postinst", "md5sums", ...).
func readControl(r io.Reader) (map[string][]byte, error) {
	tr := tar.NewReader(r)
	members := map[string][]byte{}
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, fmt.Errorf("control member %q: unsupported type %q", h.Name, h.Typeflag)
		}
		if name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("control member %q is not a plain file name", h.Name)
		}
		total += h.Size
		if h.Size > maxControlMember || total > maxControlTotal {
			return nil, fmt.Errorf("control member %q is too large (%d bytes)", name, h.Size)
		}
		b := make([]byte, h.Size)
		if _, err := io.ReadFull(tr, b); err != nil {
			return nil, fmt.Errorf("control member %q: %w", name, noEOF(err))
		}
		members[name] = b
	}
	if _, ok := members["control"]; !ok {
		return nil, errors.New("control.tar has no control file")
	}
	return members, nil
}

// parseControlFields parses the control file's single paragraph.
func parseControlFields(b []byte) (map[string]string, error) {
	pr, err := control.NewParagraphReader(bytes.NewReader(b), nil)
	if err != nil {
		return nil, err
	}
	p, err := pr.Next()
	if err != nil {
		if err == io.EOF {
			return nil, errors.New("control file is empty")
		}
		return nil, err
	}
	fields := make(map[string]string, len(p.Values))
	for k, v := range p.Values {
		fields[k] = v
	}
	return fields, nil
}

// parseConffiles returns the paths listed in a conffiles member. Lines may
// carry flags before the path ("remove-on-upgrade /etc/foo", dpkg ≥ 1.20.1).
func parseConffiles(b []byte) []string {
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, "/") {
			if i := strings.Index(line, " /"); i >= 0 {
				line = strings.TrimSpace(line[i+1:])
			}
		}
		out = append(out, line)
	}
	return out
}

// The xz program (XZ Utils ≥ 5.4) decodes the blocks of a multi-block
// stream on all cores, and one block about 1.3 times as fast as the Go
// decoder: dpkg-deb has written multi-block data.tar.xz members since
// dpkg 1.21 (bookworm's kernel image has 17 blocks, trixie's 5). Unpack
// uses it for large data.tar.xz members when it is installed and falls
// back to the Go decoder otherwise; it is an optional runtime dependency
// (the xz-utils package), documented with the others.
var (
	xzOnce sync.Once
	xzPath string
)

// XZProgram overrides the xz program Unpack runs; "" (the default) looks
// it up in PATH once, "-" disables it. Set it before unpacking.
var XZProgram = ""

func xzProgram() string {
	switch XZProgram {
	case "-":
		return ""
	case "":
		xzOnce.Do(func() {
			if p, err := exec.LookPath("xz"); err == nil {
				if out, err := exec.Command(p, "--version").Output(); err == nil && xzSupportsThreads(string(out)) {
					xzPath = p
				}
			}
		})
		return xzPath
	}
	return XZProgram
}

// xzSupportsThreads reports whether `xz --version` names XZ Utils 5.4 or
// later, the first with threaded decompression.
func xzSupportsThreads(version string) bool {
	f := strings.Fields(version)
	for i, w := range f {
		if w == "Utils)" && i+1 < len(f) {
			var major, minor int
			if _, err := fmt.Sscanf(f[i+1], "%d.%d", &major, &minor); err == nil {
				return major > 5 || major == 5 && minor >= 4
			}
		}
	}
	return false
}

// xzProcess reads the output of `xz -d` fed from r. Read returns the
// process's failure (with its message) instead of io.EOF.
type xzProcess struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *bytes.Buffer
	err    error // set once the process was waited for
	waited bool
}

func externalXZ(path string, r io.Reader) (io.ReadCloser, error) {
	cmd := exec.Command(path, "--decompress", "--stdout", "--threads=0", "--no-warn")
	cmd.Stdin = r
	var stderr bytes.Buffer
	cmd.Stderr = &limitedWriter{w: &stderr, n: 4096}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	return &xzProcess{cmd: cmd, out: out, stderr: &stderr}, nil
}

func (x *xzProcess) Read(p []byte) (int, error) {
	if x.waited {
		return 0, x.final()
	}
	n, err := x.out.Read(p)
	if err == io.EOF {
		x.wait()
		return n, x.final()
	}
	return n, err
}

func (x *xzProcess) wait() {
	x.waited = true
	if err := x.cmd.Wait(); err != nil {
		msg := strings.TrimSpace(x.stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		x.err = fmt.Errorf("xz: %s", msg)
	}
}

func (x *xzProcess) final() error {
	if x.err != nil {
		return x.err
	}
	return io.EOF
}

// Close stops the process if its output was not read to the end. Wait
// also returns only once the input copier is done with r, so r can be
// read again after Close.
func (x *xzProcess) Close() error {
	if !x.waited {
		x.out.Close()
		x.cmd.Process.Kill()
		x.waited = true
		x.cmd.Wait()
	}
	return nil
}

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
