package ostree

// PackagesKey is the commit metadata key under which apt-ostree-factory
// records the package manifest: a(sss) of name, version, architecture.
const PackagesKey = "apt-ostree.packages"

// PackageVersion is the version the commit's package manifest lists for
// the first of names it has, or "" (no manifest, or none of them).
func (m Metadata) PackageVersion(names ...string) string {
	v, ok := m.Get(PackagesKey)
	if !ok {
		return ""
	}
	list, _ := v.Value.([]any)
	for _, want := range names {
		for _, e := range list {
			t, _ := e.([]any)
			if len(t) != 3 {
				continue
			}
			if n, _ := t[0].(string); n == want {
				s, _ := t[1].(string)
				return s
			}
		}
	}
	return ""
}
