// Package qemutests boots kernels, initramfs images and disk images under
// QEMU for the tests: a VM value describes the machine, Run boots it and
// watches the serial console. /dev/kvm may exist and hang, so KVM is used
// only when a short probe answers; otherwise TCG (software emulation).
//
// Issue #6 adds the image boot, upgrade and rollback scenarios
// (OVMF/AAVMF firmware) on top of this harness.
package qemutests
