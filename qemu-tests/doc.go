// Package qemutests will boot built images under QEMU (OVMF/AAVMF, TCG
// fallback) and run the boot, upgrade and rollback scenarios. Not
// implemented yet (issue #6).
package qemutests
