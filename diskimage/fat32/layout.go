package fat32

import "fmt"

// geometry is the layout of the filesystem's sectors.
type geometry struct {
	spc      uint32 // sectors per cluster
	fatSz    uint32 // sectors per FAT
	clusters uint32 // data clusters
	totSec   uint32 // BPB_TotSec32
}

func (g geometry) clusterBytes() int64 { return int64(g.spc) * sectorSize }
func (g geometry) dataStart() int64 {
	return (reservedSectors + numFATs*int64(g.fatSz)) * sectorSize
}

// clusterOffset is the byte offset of cluster c in the filesystem.
func (g geometry) clusterOffset(c uint32) int64 {
	return g.dataStart() + int64(c-2)*g.clusterBytes()
}

// clusterTiers is the FAT32 cluster-size table of Microsoft's FAT
// specification (also mkfs.fat's): sectors per cluster for partitions of
// up to maxSectors sectors.
var clusterTiers = []struct {
	maxSectors uint64
	spc        uint32
}{
	{532480, 1},      // 260 MiB: 512 B
	{16777216, 8},    // 8 GiB: 4 KiB
	{33554432, 16},   // 16 GiB: 8 KiB
	{67108864, 32},   // 32 GiB: 16 KiB
	{0xFFFFFFFF, 64}, // 2 TiB: 32 KiB
}

func clusterSectors(ts uint64) uint32 {
	for _, t := range clusterTiers {
		if ts <= t.maxSectors {
			return t.spc
		}
	}
	return 64
}

// fatSectors is the exact FAT size for n data clusters.
func fatSectors(n uint64) uint64 { return (n + 2 + 127) / 128 }

// sectorsFor is the smallest sector count holding n clusters of spc.
func sectorsFor(n uint64, spc uint32) uint64 {
	return reservedSectors + numFATs*fatSectors(n) + n*uint64(spc)
}

// fitClusters is the largest cluster count whose exactly sized FATs and
// clusters fit in ts sectors.
func fitClusters(ts uint64, spc uint32) uint64 {
	if ts < reservedSectors {
		return 0
	}
	avail := ts - reservedSectors
	// Each cluster costs spc sectors plus 2*4 bytes of FAT.
	n := avail * 64 / (uint64(spc)*64 + 1)
	for n > 0 && sectorsFor(n, spc) > ts {
		n--
	}
	for sectorsFor(n+1, spc) <= ts {
		n++
	}
	return n
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// geometryFor lays out a filesystem of ts sectors.
func geometryFor(ts uint64) (geometry, error) {
	if ts > 0xFFFFFFFF {
		return geometry{}, fmt.Errorf("fat32: %d sectors (%.0f MiB) is more than FAT32's limit of %d sectors (2 TiB)", ts, mib(int64(ts)*sectorSize), uint64(0xFFFFFFFF))
	}
	spc := clusterSectors(ts)
	n := fitClusters(ts, spc)
	if n < minClusters {
		need := int64(sectorsFor(minClusters, spc)) * sectorSize
		return geometry{}, fmt.Errorf("fat32: %d bytes (%.2f MiB) is too small for FAT32 (%d-byte clusters, %d clusters, at least %d needed): the minimum size is %d bytes (%.2f MiB)",
			int64(ts)*sectorSize, mib(int64(ts)*sectorSize), spc*sectorSize, n, minClusters, need, mib(need))
	}
	if n > maxClusters {
		n = maxClusters // not reachable with 32 KiB clusters and 2^32 sectors
	}
	g := geometry{spc: spc, fatSz: uint32(fatSectors(n)), clusters: uint32(n), totSec: uint32(ts)}
	// fsck.fat counts floor((TotSec - data start) / spc) clusters; drop the
	// whole clusters' worth of leftover sectors the FAT has no entries for.
	left := ts - sectorsFor(n, spc)
	g.totSec -= uint32(left / uint64(spc) * uint64(spc))
	return g, nil
}

// layout assigns short names and clusters to the tree for clusters of
// clusterBytes and returns the number of clusters used.
func (f *FS) layout(clusterBytes int64) (uint64, error) {
	var dirs, files []*node
	var walk func(d *node) error
	walk = func(d *node) error {
		dirs = append(dirs, d)
		kids := d.sortedChildren()
		if err := d.assignShortNames(kids); err != nil {
			return err
		}
		d.children = kids
		for _, c := range kids {
			if c.dir {
				if err := walk(c); err != nil {
					return err
				}
			} else {
				files = append(files, c)
			}
		}
		return nil
	}
	if err := walk(f.root); err != nil {
		return 0, err
	}
	next := uint64(2)
	for _, d := range dirs {
		n := f.dirEntries(d)
		if n > maxDirEntries {
			return 0, fmt.Errorf("fat32: directory %s needs %d entries (max %d)", d.path(), n, maxDirEntries)
		}
		c := (int64(n)*32 + clusterBytes - 1) / clusterBytes
		if c == 0 {
			c = 1
		}
		d.cluster, d.nclusters = uint32(next), uint32(c)
		next += uint64(c)
	}
	for _, fl := range files {
		c := (fl.size + clusterBytes - 1) / clusterBytes
		fl.cluster, fl.nclusters = 0, uint32(c)
		if c > 0 {
			fl.cluster = uint32(next)
			next += uint64(c)
		}
	}
	return next - 2, nil
}

// dirEntries is the number of 32-byte entries in directory d.
func (f *FS) dirEntries(d *node) int {
	n := 2 // "." and ".."
	if d.parent == nil {
		n = 0
		if f.hasLabel {
			n = 1
		}
	}
	for _, c := range d.children {
		n += 1 + lfnEntries(c.lfn)
	}
	return n
}

// MinSize is the smallest size (bytes, a multiple of 512) of a filesystem
// that holds the content added so far; it is at least MinFSSize. It is 0
// if the tree cannot be laid out at all (a directory with more than 65536
// entries; WriteTo reports it).
func (f *FS) MinSize() int64 {
	var lo uint64
	var ts uint64
	for _, t := range clusterTiers {
		used, err := f.layout(int64(t.spc) * sectorSize)
		if err != nil {
			return 0
		}
		n := used
		if n < minClusters {
			n = minClusters
		}
		ts = sectorsFor(n, t.spc)
		if ts <= lo {
			ts = lo + 1
		}
		if ts <= t.maxSectors {
			break
		}
		lo = t.maxSectors
	}
	return int64(ts) * sectorSize
}
