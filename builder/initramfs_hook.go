package builder

import (
	"context"
	"errors"

	"github.com/apt-ostree/apt-ostree-factory/ostree"
)

func buildInitramfs(ctx context.Context, repo *ostree.Repo, root string, req *InitramfsRequest, res *HookResult) error {
	return errors.New("not wired yet")
}
