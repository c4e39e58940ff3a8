// Package diskimage writes bootable disk images from an OSTree commit: a
// GPT disk with a FAT32 ESP holding systemd-boot and an ext4 driver, an
// ext4 /boot (XBOOTLDR) with ostree's Boot Loader Spec entries and
// kernels, and an ext4 root holding the OSTree sysroot as `ostree admin
// deploy` of the target's ostree would leave it. Everything is written in
// Go into a sparse file (no root, loop devices or mounts) and every
// identifier is derived from the recipe and the commit, so the same inputs
// give the same bytes. Raw and qcow2 outputs.
package diskimage
