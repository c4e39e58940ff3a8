package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// HookRequest is work done in the configure worker on the configured tree
// while it is still on disk.
type HookRequest struct {
	Initramfs *InitramfsRequest `json:",omitempty"`
}

// InitramfsRequest asks for an initramfs built from the tree's own files.
type InitramfsRequest struct {
	Modules []string // extra kernel modules
	MTime   int64    // timestamp of every entry
}

// HookResult reports what the hook made; its files are content objects in
// the repository.
type HookResult struct {
	KernelVersion string
	Initramfs     string // content object checksum (root-owned 0644)
	InitramfsSize int64
	Modules       []string // loaded by the initramfs, in order
	Missing       []string // requested modules the kernel does not have
}

// KernelVersions lists the kernels installed in a tree: the directories of
// usr/lib/modules that hold modules.dep or a kernel image.
func KernelVersions(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, "usr/lib/modules"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		kver := e.Name()
		for _, p := range []string{"usr/lib/modules/" + kver + "/modules.dep", "boot/vmlinuz-" + kver, "usr/lib/modules/" + kver + "/vmlinuz"} {
			if _, err := os.Stat(filepath.Join(root, p)); err == nil {
				out = append(out, kver)
				break
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

func runHook(ctx context.Context, repo *ostree.Repo, root string, h *HookRequest) (*HookResult, error) {
	res := &HookResult{}
	if h.Initramfs == nil {
		return res, nil
	}
	kvers, err := KernelVersions(root)
	if err != nil {
		return nil, err
	}
	if len(kvers) != 1 {
		return nil, fmt.Errorf("initramfs: the tree has %d kernels (%v); exactly one is needed", len(kvers), kvers)
	}
	res.KernelVersion = kvers[0]
	if err := buildInitramfs(ctx, repo, root, h.Initramfs, res); err != nil {
		return nil, fmt.Errorf("initramfs for %s: %w", res.KernelVersion, err)
	}
	return res, nil
}
