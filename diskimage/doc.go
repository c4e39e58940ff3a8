// Package diskimage will write bootable raw and qcow2 images: GPT, ESP,
// /boot with BLS entries and a seeded OSTree sysroot. Not implemented yet
// (issue #5).
package diskimage
