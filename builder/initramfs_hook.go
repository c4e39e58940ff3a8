package builder

import (
	"context"
	"fmt"
	"os"

	"github.com/apt-ostree/apt-ostree-factory/builder/initramfs"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

// buildInitramfs builds the initramfs from the configured tree at root and
// stores it as a root-owned 0644 content object.
func buildInitramfs(ctx context.Context, repo *ostree.Repo, root string, req *InitramfsRequest, res *HookResult) error {
	f, err := os.CreateTemp("", "aof-initramfs-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	r, err := initramfs.Build(f, initramfs.Options{Root: root, KernelVersion: res.KernelVersion, Modules: req.Modules, MTime: req.MTime})
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, 0); err != nil {
		return err
	}
	sum, err := repo.WriteContent(ostree.FileHeader{FileMeta: ostree.FileMeta{Mode: ostree.ModeRegular | 0o644}, Size: uint64(r.Size)}, f)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	res.Initramfs, res.InitramfsSize = sum.String(), r.Size
	res.Modules, res.Missing = r.Modules, r.Missing
	return nil
}
