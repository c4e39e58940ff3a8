package recipe

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `name: demo
architecture: arm64
sources:
  - uri: http://deb.example.org/debian
    suite: trixie
    signed-by: [keys/archive.gpg]
packages: [systemd-sysv, udev]
excludes: [nano]
`

func TestParseGoodAppliesDefaults(t *testing.T) {
	r, err := Parse([]byte(good), "/x/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := r.Sources[0]
	if r.Variant != "minbase" || s.Components[0] != "main" || s.Architectures[0] != "arm64" {
		t.Errorf("defaults: %+v %+v", r, s)
	}
	if s.SignedBy[0] != "/x/keys/archive.gpg" {
		t.Errorf("keyring path not resolved against the recipe: %s", s.SignedBy[0])
	}
}

func TestErrorsCarryFileAndLine(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"unknown key":        {good + "colour: blue\n", "r.yaml:9"},
		"unknown nested key": {strings.Replace(good, "    suite: trixie\n", "    suite: trixie\n    sute: x\n", 1), "r.yaml:6"},
		"wrong type":         {strings.Replace(good, "packages: [systemd-sysv, udev]", "packages: 3", 1), "r.yaml:7"},
		"missing name":       {strings.Replace(good, "name: demo\n", "", 1), "missing required field \"name\""},
		"missing suite":      {strings.Replace(good, "    suite: trixie\n", "", 1), "r.yaml:4: sources[0]: missing required field \"suite\""},
		"bad variant":        {good + "variant: tiny\n", "r.yaml:9: unknown variant \"tiny\""},
		"bad uri":            {strings.Replace(good, "http://deb", "ftp://deb", 1), "r.yaml:4: sources[0].uri"},
		"no keyring":         {strings.Replace(good, "    signed-by: [keys/archive.gpg]\n", "", 1), "signed-by"},
		"bad package":        {strings.Replace(good, "udev]", "\"a b\"]", 1), "r.yaml:7: invalid package name"},
	}
	for name, c := range cases {
		_, err := Parse([]byte(c.yaml), "r.yaml")
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "r.yaml") {
			t.Errorf("%s: error %q does not contain %q", name, err, c.want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}
