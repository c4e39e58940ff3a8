package ostree

import (
	"encoding/hex"
	"fmt"
)

// Checksum is the SHA-256 that names an OSTree object.
type Checksum [32]byte

// String returns the 64-character lowercase hex form used in refs and paths.
func (c Checksum) String() string { return hex.EncodeToString(c[:]) }

// IsZero reports whether c is the all-zero checksum (no object).
func (c Checksum) IsZero() bool { return c == Checksum{} }

// ParseChecksum parses 64 hex characters.
func ParseChecksum(s string) (Checksum, error) {
	var c Checksum
	if len(s) != 64 {
		return c, fmt.Errorf("invalid checksum %q: want 64 hex characters", s)
	}
	for i := 0; i < len(s); i++ {
		if ch := s[i]; !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f') {
			return c, fmt.Errorf("invalid checksum %q: not lowercase hex", s)
		}
	}
	_, err := hex.Decode(c[:], []byte(s))
	return c, err
}

func checksumFromBytes(b []byte) (Checksum, error) {
	var c Checksum
	if len(b) != 32 {
		return c, fmt.Errorf("checksum has %d bytes, want 32", len(b))
	}
	copy(c[:], b)
	return c, nil
}

// ObjectType is the kind of an object, with OSTree's numbering.
type ObjectType int

const (
	ObjectFile            ObjectType = 1
	ObjectDirTree         ObjectType = 2
	ObjectDirMeta         ObjectType = 3
	ObjectCommit          ObjectType = 4
	ObjectTombstoneCommit ObjectType = 5
	ObjectCommitMeta      ObjectType = 6
)

// String returns the object file extension used for the type in bare repositories.
func (t ObjectType) String() string {
	switch t {
	case ObjectFile:
		return "file"
	case ObjectDirTree:
		return "dirtree"
	case ObjectDirMeta:
		return "dirmeta"
	case ObjectCommit:
		return "commit"
	case ObjectTombstoneCommit:
		return "commit-tombstone"
	case ObjectCommitMeta:
		return "commitmeta"
	}
	return fmt.Sprintf("objtype%d", int(t))
}

// IsMeta reports whether objects of the type are stored as plain GVariant bytes.
func (t ObjectType) IsMeta() bool { return t >= ObjectDirTree && t <= ObjectCommitMeta }

// ObjectName names an object by checksum and type, as in "csum.dirtree".
type ObjectName struct {
	Checksum Checksum
	Type     ObjectType
}

func (o ObjectName) String() string { return o.Checksum.String() + "." + o.Type.String() }
