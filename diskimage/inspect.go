package diskimage

import (
	"fmt"
	"os"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// roleOfType maps partition type GUIDs back to roles.
var roleOfType = map[string]string{
	strings.ToUpper(string(typeESP)):             "esp",
	strings.ToUpper(string(typeXBOOTLDR)):        "boot",
	strings.ToUpper(string(gpt.LinuxRootX86_64)): "root",
	strings.ToUpper(string(gpt.LinuxRootArm64)):  "root",
	strings.ToUpper(string(typeVar)):             "var",
}

// ReadPartitions lists the GPT partitions of a raw image (Role from the
// type GUID, Label from the partition name; Used and FSUUID are not
// known from the table and left empty).
func ReadPartitions(path string) ([]PartitionResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := diskfs.OpenBackend(file.New(f, true))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pt, err := d.GetPartitionTable()
	if err != nil {
		return nil, fmt.Errorf("%s: no partition table: %w", path, err)
	}
	t, ok := pt.(*gpt.Table)
	if !ok {
		return nil, fmt.Errorf("%s: not a GPT disk", path)
	}
	var out []PartitionResult
	for _, p := range t.Partitions {
		if p == nil || p.Type == gpt.Unused {
			continue
		}
		out = append(out, PartitionResult{
			Role: roleOfType[strings.ToUpper(string(p.Type))], Label: p.Name,
			Start: int64(p.Start) * sectorSize, Size: int64(p.End-p.Start+1) * sectorSize,
			TypeGUID: string(p.Type), PartitionGUID: p.GUID,
		})
	}
	return out, nil
}
