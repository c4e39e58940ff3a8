package apt_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/apt"
	"github.com/apt-ostree/apt-ostree-factory/apt/apttest"
)

// Keys are generated once per test binary: the archive key, a second key
// also in the keyring, and a stranger's key.
var (
	keysOnce                  sync.Once
	archiveKey, second, alien *apttest.Key
	keysErr                   error
)

func testKeys(t *testing.T) (archive, trusted2, stranger *apttest.Key) {
	t.Helper()
	keysOnce.Do(func() {
		if archiveKey, keysErr = apttest.NewKey("Archive Key"); keysErr != nil {
			return
		}
		if second, keysErr = apttest.NewKey("Second Archive Key"); keysErr != nil {
			return
		}
		alien, keysErr = apttest.NewKey("Somebody Else")
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return archiveKey, second, alien
}

// fixture is a published synthetic archive with a keyring trusting the
// archive key (and the second key).
type fixture struct {
	repo    *apttest.Repo
	keyring string
	opener  *apttest.FileOpener
	cache   string
}

// newFixture builds a one-package archive; adjust modifies the Repo before
// it is published.
func newFixture(t *testing.T, adjust func(r *apttest.Repo)) *fixture {
	t.Helper()
	archive, trusted2, _ := testKeys(t)
	dir := t.TempDir()
	f := &fixture{
		repo:    apttest.NewRepo(filepath.Join(dir, "archive"), archive),
		keyring: filepath.Join(dir, "archive-keyring.gpg"),
		opener:  &apttest.FileOpener{},
		cache:   filepath.Join(dir, "cache"),
	}
	if err := apttest.WriteKeyring(f.keyring, false, archive, trusted2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.AddDeb("main", apttest.Deb{Package: "hello", Version: "1.0-1", Files: map[string]string{"usr/bin/hello": "#!/bin/sh\necho hello\n"}}); err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(f.repo)
	}
	if err := f.repo.Publish(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) source() *apt.Source { return f.repo.Source([]string{f.keyring}) }

func (f *fixture) fetch(t *testing.T) (*apt.Release, error) {
	t.Helper()
	return apt.FetchRelease(context.Background(), f.opener, f.source(), time.Now())
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestFetchReleaseInRelease(t *testing.T) {
	f := newFixture(t, func(r *apttest.Repo) {
		r.ValidUntil = time.Now().Add(7 * 24 * time.Hour)
		r.Version = "13.2"
	})
	rel, err := f.fetch(t)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(rel.URL, "/dists/stable/InRelease") {
		t.Errorf("URL = %s, want the InRelease", rel.URL)
	}
	if want := sha256File(t, f.repo.DistPath("InRelease")); rel.SHA256 != want {
		t.Errorf("SHA256 = %s, want %s (digest of the InRelease as fetched)", rel.SHA256, want)
	}
	if rel.Suite != "stable" || rel.Codename != "apttest" || rel.Origin != "apttest" || rel.Version != "13.2" {
		t.Errorf("fields: suite %q codename %q origin %q version %q", rel.Suite, rel.Codename, rel.Origin, rel.Version)
	}
	if rel.Date.IsZero() || rel.ValidUntil.IsZero() || rel.ValidUntil.Before(rel.Date) {
		t.Errorf("Date %v, Valid-Until %v", rel.Date, rel.ValidUntil)
	}
	if strings.Join(rel.Architectures, " ") != "amd64" || strings.Join(rel.Components, " ") != "main" {
		t.Errorf("Architectures %v Components %v", rel.Architectures, rel.Components)
	}
	gz, ok := rel.File("main/binary-amd64/Packages.gz")
	if !ok {
		t.Fatalf("Release lacks Packages.gz: %v", rel.Files)
	}
	if want := sha256File(t, f.repo.DistPath("main/binary-amd64/Packages.gz")); gz.SHA256 != want {
		t.Errorf("Packages.gz SHA256 = %s, want %s", gz.SHA256, want)
	}
	if len(rel.Signatures) != 1 || rel.Signatures[0].Status != apt.SigGood {
		t.Errorf("signatures: %v", rel.Signatures)
	}
	if got := f.opener.Opened(); len(got) != 1 {
		t.Errorf("opened %v, want only the InRelease", got)
	}
}

func TestFetchReleaseDetachedFallback(t *testing.T) {
	f := newFixture(t, func(r *apttest.Repo) { r.NoInRelease = true })
	rel, err := f.fetch(t)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(rel.URL, "/dists/stable/Release") {
		t.Errorf("URL = %s, want the Release", rel.URL)
	}
	if want := sha256File(t, f.repo.DistPath("Release")); rel.SHA256 != want {
		t.Errorf("SHA256 = %s, want %s", rel.SHA256, want)
	}
	opened := strings.Join(f.opener.Opened(), "\n")
	for _, name := range []string{"InRelease", "Release", "Release.gpg"} {
		if !strings.Contains(opened, "/dists/stable/"+name+"\n") && !strings.HasSuffix(opened, "/dists/stable/"+name) {
			t.Errorf("did not try %s: %s", name, opened)
		}
	}
}

// Debian signs InRelease with several keys, of which a keyring may hold
// only some: the unknown ones are ignored.
func TestFetchReleaseMultipleSignaturesOneUnknown(t *testing.T) {
	archive, _, stranger := testKeys(t)
	for _, detached := range []bool{false, true} {
		f := newFixture(t, func(r *apttest.Repo) {
			r.Signers = []*apttest.Key{stranger, archive}
			r.NoInRelease = detached
		})
		rel, err := f.fetch(t)
		if err != nil {
			t.Fatalf("detached=%v: %v", detached, err)
		}
		var statuses []string
		for _, s := range rel.Signatures {
			statuses = append(statuses, s.KeyID+"="+s.Status)
		}
		want := stranger.KeyID() + "=" + apt.SigNoPubKey + " " + archive.KeyID() + "=" + apt.SigGood
		if got := strings.Join(statuses, " "); got != want {
			t.Errorf("detached=%v: signatures %s, want %s", detached, got, want)
		}
	}
}

// Both keys of the keyring signing: both are checked and good.
func TestFetchReleaseEverySignatureChecked(t *testing.T) {
	archive, trusted2, _ := testKeys(t)
	f := newFixture(t, func(r *apttest.Repo) { r.Signers = []*apttest.Key{archive, trusted2} })
	rel, err := f.fetch(t)
	if err != nil {
		t.Fatal(err)
	}
	if len(rel.Signatures) != 2 || rel.Signatures[0].Status != apt.SigGood || rel.Signatures[1].Status != apt.SigGood {
		t.Errorf("signatures: %v", rel.Signatures)
	}
}

func TestFetchReleaseKeyringFormats(t *testing.T) {
	rsa, err := apttest.NewRSAKey("RSA Archive Key", 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		armored bool
		rsa     bool
	}{
		{"binary-ed25519", false, false},
		{"armored-ed25519", true, false},
		{"binary-rsa", false, true},
		{"armored-rsa", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archive, _, _ := testKeys(t)
			key := archive
			if tc.rsa {
				key = rsa
			}
			f := newFixture(t, func(r *apttest.Repo) { r.Signers = []*apttest.Key{key} })
			if err := apttest.WriteKeyring(f.keyring, tc.armored, key); err != nil {
				t.Fatal(err)
			}
			if _, err := f.fetch(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFetchReleaseByCodename(t *testing.T) {
	f := newFixture(t, nil)
	src := f.source()
	src.Suite = "apttest" // the codename; dists/apttest -> stable
	rel, err := apt.FetchRelease(context.Background(), f.opener, src, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rel.Codename != "apttest" {
		t.Errorf("codename %q", rel.Codename)
	}
}

// TestFetchReleaseRefusals covers every way a Release must be refused: the
// error wraps the right sentinel and names the URL and the source.
func TestFetchReleaseRefusals(t *testing.T) {
	archive, trusted2, stranger := testKeys(t)
	for _, tc := range []struct {
		name   string
		adjust func(r *apttest.Repo)
		breakf func(t *testing.T, f *fixture)
		suite  string // request another suite
		want   error
		msg    []string // further substrings of the message
		url    string   // file the message must name
	}{
		{
			name:   "tampered InRelease field",
			breakf: func(t *testing.T, f *fixture) { must(t, f.repo.Tamper("InRelease", "Label: apttest", "Label: evil")) },
			want:   apt.ErrBadSignature, url: "InRelease",
			msg: []string{archive.KeyID(), "modified"},
		},
		{
			name: "tampered InRelease checksum",
			breakf: func(t *testing.T, f *fixture) {
				rel, err := os.ReadFile(f.repo.DistPath("Release"))
				must(t, err)
				i := bytes.Index(rel, []byte("SHA256:\n ")) + len("SHA256:\n ")
				must(t, f.repo.Tamper("InRelease", string(rel[i:i+8]), "00000000"))
			},
			want: apt.ErrBadSignature, url: "InRelease",
		},
		{
			name:   "tampered Release with Release.gpg",
			adjust: func(r *apttest.Repo) { r.NoInRelease = true },
			breakf: func(t *testing.T, f *fixture) { must(t, f.repo.Tamper("Release", "Suite: stable", "Suite: stable ")) },
			want:   apt.ErrBadSignature, url: "Release.gpg",
		},
		{
			name:   "unsigned: no InRelease, no Release.gpg",
			adjust: func(r *apttest.Repo) { r.Signers = nil },
			want:   apt.ErrUnsigned, url: "Release",
		},
		{
			name: "unsigned InRelease",
			breakf: func(t *testing.T, f *fixture) {
				rel, err := os.ReadFile(f.repo.DistPath("Release"))
				must(t, err)
				must(t, f.repo.WriteDist("InRelease", rel))
			},
			want: apt.ErrUnsigned, url: "InRelease",
		},
		{
			name:   "signed by unknown key",
			adjust: func(r *apttest.Repo) { r.Signers = []*apttest.Key{stranger} },
			want:   apt.ErrUnknownKey, url: "InRelease",
			msg: []string{stranger.KeyID(), "archive-keyring.gpg"},
		},
		{
			name:   "Release.gpg by unknown key",
			adjust: func(r *apttest.Repo) { r.Signers, r.NoInRelease = []*apttest.Key{stranger}, true },
			want:   apt.ErrUnknownKey, url: "Release.gpg",
		},
		{
			// gpgv's BADSIG from a trusted key is fatal for apt even next
			// to a good signature.
			name:   "bad signature next to a good one",
			adjust: func(r *apttest.Repo) { r.BadSigners = []*apttest.Key{trusted2} },
			want:   apt.ErrBadSignature, url: "InRelease",
			msg: []string{trusted2.KeyID()},
		},
		{
			name:   "expired",
			adjust: func(r *apttest.Repo) { r.ValidUntil = time.Now().Add(-2 * time.Hour) },
			want:   apt.ErrExpired, url: "InRelease",
			msg: []string{"expired since"},
		},
		{
			name:   "date in the future",
			adjust: func(r *apttest.Repo) { r.Date = time.Now().Add(time.Hour) },
			want:   apt.ErrNotYetValid, url: "InRelease",
			msg: []string{"not valid yet"},
		},
		{
			name: "other suite",
			breakf: func(t *testing.T, f *fixture) {
				must(t, os.Symlink("stable", filepath.Join(f.repo.Dir, "dists", "oldstable")))
			},
			suite: "oldstable",
			want:  apt.ErrWrongSuite, url: "InRelease",
			msg: []string{`"oldstable"`, `"stable"`},
		},
		{
			name: "text after the signature",
			breakf: func(t *testing.T, f *fixture) {
				in, err := os.ReadFile(f.repo.DistPath("InRelease"))
				must(t, err)
				must(t, f.repo.WriteDist("InRelease", append(in, "Suite: evil\n"...)))
			},
			want: apt.ErrBadSignature, url: "InRelease",
			msg: []string{"unsigned text after"},
		},
		{
			name: "text before the signed block",
			breakf: func(t *testing.T, f *fixture) {
				in, err := os.ReadFile(f.repo.DistPath("InRelease"))
				must(t, err)
				must(t, f.repo.WriteDist("InRelease", append([]byte("Suite: evil\n\n"), in...)))
			},
			want: apt.ErrBadSignature, url: "InRelease",
		},
		{
			name: "unescaped dash line in signed text",
			breakf: func(t *testing.T, f *fixture) {
				must(t, f.repo.Tamper("InRelease", "Label: apttest\n", "Label: apttest\n-----BEGIN PGP SIGNATURE-----x\n"))
			},
			want: apt.ErrBadSignature, url: "InRelease",
		},
		{
			name:   "no Release at all",
			breakf: func(t *testing.T, f *fixture) { must(t, os.RemoveAll(filepath.Join(f.repo.Dir, "dists"))) },
			want:   apt.ErrNotFound, url: "Release",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.adjust)
			if tc.breakf != nil {
				tc.breakf(t, f)
			}
			src := f.source()
			if tc.suite != "" {
				src.Suite = tc.suite
			}
			rel, err := apt.FetchRelease(context.Background(), f.opener, src, time.Now())
			if err == nil {
				t.Fatalf("accepted: %+v", rel)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %q does not wrap %q", err, tc.want)
			}
			msg := err.Error()
			for _, s := range append([]string{src.String(), "/dists/" + src.Suite + "/" + tc.url}, tc.msg...) {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not mention %q", msg, s)
				}
			}
		})
	}
}

func TestFetchReleaseKeyringErrors(t *testing.T) {
	f := newFixture(t, nil)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"missing.gpg", "", "no such file"},
		{"empty.gpg", "\n", "empty"},
		{"garbage.gpg", "this is not a key", "not a usable OpenPGP keyring"},
		{"pubring.kbx", "\x00\x00\x00\x20\x01\x01\x00\x02KBXf\x00\x00\x00\x00", "keybox"},
		{"secret.asc", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n", "armor"},
	} {
		path := filepath.Join(dir, tc.name)
		if tc.name != "missing.gpg" {
			must(t, os.WriteFile(path, []byte(tc.content), 0o644))
		}
		src := f.source()
		src.SignedBy = []string{path}
		_, err := apt.FetchRelease(context.Background(), f.opener, src, time.Now())
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to name the file and say %q", tc.name, err, tc.want)
		}
	}
	src := f.source()
	src.SignedBy = nil
	if _, err := apt.FetchRelease(context.Background(), f.opener, src, time.Now()); err == nil || !strings.Contains(err.Error(), "signed-by") {
		t.Errorf("no signed-by: error %v", err)
	}
}

// An armored keyring made by concatenating two exports holds both keys.
func TestLoadKeyringConcatenatedArmor(t *testing.T) {
	archive, trusted2, _ := testKeys(t)
	a, err := apttest.Keyring(true, archive)
	must(t, err)
	b, err := apttest.Keyring(true, trusted2)
	must(t, err)
	kr, err := apt.ParseKeyring("two.asc", append(a, b...))
	must(t, err)
	if kr.Len() != 2 {
		t.Errorf("%d keys, want 2: %v", kr.Len(), kr.KeyIDs())
	}
}

func TestParseReleaseTime(t *testing.T) {
	want := time.Date(2026, 7, 11, 10, 16, 37, 0, time.UTC)
	for _, s := range []string{"Sat, 11 Jul 2026 10:16:37 UTC", "Sat, 11 Jul 2026 10:16:37 GMT", "Sat, 11 Jul 2026 10:16:37 +0000", "Sat, 11 Jul 2026 12:16:37 +0200"} {
		got, err := apt.ParseReleaseTime(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("%q: %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"Sat, 11 Jul 2026 10:16:37 CET", "2026-07-11T10:16:37Z", "yesterday", ""} {
		if _, err := apt.ParseReleaseTime(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestParseReleaseMalformed(t *testing.T) {
	const sum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	good := "Suite: stable\nSHA256:\n " + sum + " 0 main/binary-amd64/Packages\n"
	if _, err := apt.ParseRelease([]byte(good)); err != nil {
		t.Fatalf("good Release refused: %v", err)
	}
	for name, content := range map[string]string{
		"no checksums":    "Suite: stable\n",
		"bad size":        "Suite: stable\nSHA256:\n " + sum + " -1 main/binary-amd64/Packages\n",
		"short checksum":  "Suite: stable\nSHA256:\n abcd 0 main/binary-amd64/Packages\n",
		"missing path":    "Suite: stable\nSHA256:\n " + sum + " 0\n",
		"duplicate path":  good + " " + sum + " 0 main/binary-amd64/Packages\n",
		"duplicate field": "Suite: stable\nsuite: evil\nSHA256:\n " + sum + " 0 x\n",
		"bad date":        "Date: tomorrow\n" + good,
		"bad valid-until": "Valid-Until: Sat, 11 Jul 2026 10:16:37 CET\n" + good,
		"not a field":     "Suite stable\n",
		"nested armor":    "-----BEGIN PGP SIGNED MESSAGE-----\n" + good,
		"empty":           "",
	} {
		if _, err := apt.ParseRelease([]byte(content)); !errors.Is(err, apt.ErrMalformedRelease) {
			t.Errorf("%s: error %v, want ErrMalformedRelease", name, err)
		}
	}
}

// Garbage in place of an InRelease never panics and is always refused.
func TestVerifyInReleaseGarbage(t *testing.T) {
	archive, _, _ := testKeys(t)
	data, err := apttest.Keyring(false, archive)
	must(t, err)
	kr, err := apt.ParseKeyring("test", data)
	must(t, err)
	f := newFixture(t, nil)
	in, err := os.ReadFile(f.repo.DistPath("InRelease"))
	must(t, err)
	cases := [][]byte{nil, []byte("\n"), []byte("-----BEGIN PGP SIGNED MESSAGE-----\n"),
		[]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx\n-----BEGIN PGP SIGNATURE-----\n\n!!!!\n-----END PGP SIGNATURE-----\n"),
		[]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx\n-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n"),
	}
	for i := 0; i < len(in); i += 97 {
		cases = append(cases, in[:i])
	}
	for i := 0; i < len(in); i += 89 {
		c := bytes.Clone(in)
		c[i] ^= 0x20
		cases = append(cases, c)
	}
	for _, c := range cases {
		if _, err := apt.VerifyInRelease(c, kr, time.Now()); err == nil && !bytes.Equal(c, in) {
			// A flipped bit in the armor's CRC line or in ignorable
			// whitespace may leave the signed text intact: only then is
			// acceptance right.
			content := func(b []byte) string { return string(b[:bytes.Index(b, []byte("-----BEGIN PGP SIGNATURE-----"))]) }
			if !bytes.Contains(c, []byte("-----BEGIN PGP SIGNATURE-----")) || strings.TrimSpace(content(c)) != strings.TrimSpace(content(in)) {
				t.Errorf("accepted altered input:\n%s", c)
			}
		}
	}
}

// TestVerifyRealDebianInRelease verifies the InRelease files apt left in
// /var/lib/apt/lists against Debian's archive keyring: three signatures on
// bookworm's, of which every one whose key is in the keyring is checked.
func TestVerifyRealDebianInRelease(t *testing.T) {
	const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
	files, _ := filepath.Glob("/var/lib/apt/lists/*debian*_InRelease")
	if len(files) == 0 {
		t.Skip("no Debian InRelease in /var/lib/apt/lists (run apt-get update)")
	}
	if _, err := os.Stat(keyring); err != nil {
		t.Skipf("no %s", keyring)
	}
	kr, err := apt.LoadKeyring(keyring)
	must(t, err)
	for _, file := range files {
		data, err := os.ReadFile(file)
		must(t, err)
		start := time.Now()
		rel, err := apt.VerifyInRelease(data, kr, time.Now())
		elapsed := time.Since(start)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if len(rel.Files) == 0 || rel.Codename == "" {
			t.Errorf("%s: parsed %d files, codename %q", file, len(rel.Files), rel.Codename)
		}
		for _, s := range rel.Signatures {
			if s.Status == apt.SigBad {
				t.Errorf("%s: %s", file, s)
			}
		}
		t.Logf("%s: %s (%s), %d files, %d good of %d signatures, verify+parse %s",
			filepath.Base(file), rel.Suite, rel.Codename, len(rel.Files), len(goodSigs(rel)), len(rel.Signatures), elapsed)
		// A one-byte change in the signed part must be refused.
		i := bytes.Index(data, []byte("Origin: Debian"))
		if i < 0 {
			continue
		}
		bad := bytes.Clone(data)
		bad[i+len("Origin: ")] = 'd'
		if _, err := apt.VerifyInRelease(bad, kr, time.Now()); !errors.Is(err, apt.ErrBadSignature) {
			t.Errorf("%s tampered: %v, want ErrBadSignature", file, err)
		}
	}
}

func BenchmarkVerifyRealDebianInRelease(b *testing.B) {
	data, err := os.ReadFile("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease")
	if err != nil {
		b.Skip("no bookworm InRelease")
	}
	kr, err := apt.LoadKeyring("/usr/share/keyrings/debian-archive-keyring.gpg")
	if err != nil {
		b.Skip(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := apt.VerifyInRelease(data, kr, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// GnuPG's clearsigned output, as dak produces it, verifies; and gpgv
// accepts what apttest writes, so the synthetic archives are real ones.
func TestGnuPGInterop(t *testing.T) {
	gpg, err1 := exec.LookPath("gpg")
	gpgv, err2 := exec.LookPath("gpgv")
	if err1 != nil || err2 != nil {
		if os.Getenv("AOF_REQUIRE_TOOLS") == "1" {
			t.Fatal("gpg and gpgv are required (AOF_REQUIRE_TOOLS=1)")
		}
		t.Skip("gpg or gpgv not installed")
	}
	archive, _, _ := testKeys(t)
	f := newFixture(t, nil)

	// gpgv on our InRelease and Release.gpg.
	for _, args := range [][]string{{f.repo.DistPath("InRelease")}, {f.repo.DistPath("Release.gpg"), f.repo.DistPath("Release")}} {
		cmd := exec.Command(gpgv, append([]string{"--keyring", f.keyring}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("gpgv %v: %v\n%s", args, err, out)
		}
	}

	// gpg --clearsign with the same key, verified by us.
	home := t.TempDir()
	secret, err := archive.SecretKey()
	must(t, err)
	run := func(stdin []byte, args ...string) []byte {
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	run(secret, "--import")
	release, err := os.ReadFile(f.repo.DistPath("Release"))
	must(t, err)
	// Trailing blanks and a dash-escaped line exercise the canonical form.
	release = append(release, "X-Note: trailing blanks   \n-X-Dash: yes\n"...)
	clear := run(release, "--digest-algo", "SHA512", "--clearsign")
	kr, err := apt.LoadKeyring(f.keyring)
	must(t, err)
	rel, err := apt.VerifyInRelease(clear, kr, time.Now())
	if err != nil {
		t.Fatalf("gpg-clearsigned InRelease refused: %v\n%s", err, clear)
	}
	if len(goodSigs(rel)) != 1 {
		t.Errorf("signatures %v", rel.Signatures)
	}
	detached := run(release, "--armor", "--detach-sign")
	if _, err := apt.VerifyRelease(release, detached, kr, time.Now()); err != nil {
		t.Errorf("gpg detached signature refused: %v", err)
	}
}

func goodSigs(rel *apt.Release) []string {
	var ids []string
	for _, s := range rel.Signatures {
		if s.Status == apt.SigGood {
			ids = append(ids, s.KeyID)
		}
	}
	return ids
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzVerifyInRelease: arbitrary input never panics, and nothing but the
// genuine signed text is ever accepted.
func FuzzVerifyInRelease(f *testing.F) {
	key, err := apttest.NewKey("Fuzz Key")
	if err != nil {
		f.Fatal(err)
	}
	ring, err := apttest.Keyring(false, key)
	if err != nil {
		f.Fatal(err)
	}
	kr, err := apt.ParseKeyring("fuzz", ring)
	if err != nil {
		f.Fatal(err)
	}
	const release = "Suite: stable\nCodename: fuzz\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nSHA256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-amd64/Packages\n"
	signed, err := apttest.ClearSign([]byte(release), []*apttest.Key{key})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Add([]byte(release))
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n- -x\n-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rel, err := apt.VerifyInRelease(data, kr, time.Now())
		if err != nil {
			return
		}
		// Only framing the signature does not cover (blank lines after
		// it, armor details) can vary in accepted input.
		if rel.Codename != "fuzz" || len(rel.Files) != 1 || !bytes.HasPrefix(data, []byte("-----BEGIN PGP SIGNED MESSAGE-----\n")) {
			t.Fatalf("accepted altered content: %+v", rel)
		}
	})
}
