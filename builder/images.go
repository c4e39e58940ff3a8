package builder

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/apt-ostree/apt-ostree-factory/diskimage"
	"github.com/apt-ostree/apt-ostree-factory/ostree"
	"github.com/apt-ostree/apt-ostree-factory/recipe"
	"github.com/apt-ostree/apt-ostree-factory/signing"
)

// ImageOptions selects the images WriteImages writes.
type ImageOptions struct {
	Recipe *recipe.Recipe
	Repo   *ostree.Repo
	Commit ostree.Checksum
	// OutputDir receives the images and their .sha256 files ("." if
	// empty).
	OutputDir string
	// Only, when not empty, names the images to write (outputs.images[].name).
	Only   []string
	Report Reporter
}

// WriteImages writes the recipe's outputs.images from a commit, in the
// recipe's order. Each image is written to a temporary file and renamed
// into place: a failure leaves the images written so far and no partial
// file.
func WriteImages(ctx context.Context, o ImageOptions) ([]*diskimage.Result, error) {
	r := o.Recipe
	rep := o.Report
	if rep == nil {
		rep = discardReporter{}
	}
	if len(r.Outputs.Images) == 0 {
		return nil, fmt.Errorf("%s: the recipe lists no outputs.images", r.Path)
	}
	want := map[string]bool{}
	for _, n := range o.Only {
		want[n] = true
	}
	found := map[string]bool{}
	out := o.OutputDir
	if out == "" {
		out = "."
	}
	var trusted []byte
	if len(r.Signing.GPGKeys) > 0 {
		var err error
		if trusted, err = signing.PublicKeyring(r.Signing.GPGKeys); err != nil {
			return nil, err
		}
	}
	var edKeys []byte
	if len(r.Signing.Ed25519Keys) > 0 {
		var err error
		if edKeys, err = signing.Ed25519PublicKeys(r.Signing.Ed25519Keys); err != nil {
			return nil, err
		}
	}
	var results []*diskimage.Result
	for i, im := range r.Outputs.Images {
		if len(want) > 0 && !want[im.Name] {
			continue
		}
		found[im.Name] = true
		if err := ctx.Err(); err != nil {
			return results, err
		}
		res, err := diskimage.Write(ctx, diskimage.Options{
			Image: im, Index: i, Architecture: r.Architecture, RecipeName: r.Name,
			KernelArgs: r.KernelArguments,
			Deployment: diskimage.Deployment{
				Repo: o.Repo, Commit: o.Commit, Branch: r.OSTree.Branch,
				Remote: r.OSTree.Remote.Name, RemoteURL: r.OSTree.Remote.URL,
				Stateroot: r.OSTree.Stateroot, TrustedKeys: trusted,
				Ed25519Keys: edKeys, Ed25519Verify: r.Signing.Ed25519Verify,
			},
			OutputDir: out,
			Log:       rep.Logf,
		})
		if err != nil {
			return results, err
		}
		results = append(results, res)
	}
	for _, n := range o.Only {
		if !found[n] {
			return results, fmt.Errorf("%s: no image named %q in outputs.images", r.Path, n)
		}
	}
	return results, nil
}

// ImageSummary is a one-line description of a written image.
func ImageSummary(res *diskimage.Result) string {
	var total time.Duration
	var parts []string
	for _, k := range []string{"seed", "plan", "write", "qcow2", "checksum"} {
		if d, ok := res.Times[k]; ok {
			total += d
			parts = append(parts, fmt.Sprintf("%s %.1fs", k, d.Seconds()))
		}
	}
	return fmt.Sprintf("%s: %s %s disk, %.0f MB allocated, sha256 %s (%.1fs: %s)", res.Path, res.Format,
		recipe.FormatBytes(res.Size), float64(res.Allocated)/1e6, res.SHA256[:16], total.Seconds(), strings.Join(parts, ", "))
}
