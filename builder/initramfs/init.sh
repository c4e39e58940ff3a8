#!/bin/sh
# /init of an apt-ostree-factory initramfs, run by busybox sh as PID 1.
#
# Kernel command line: root= (LABEL=, UUID=, PARTUUID=, PARTLABEL=,
# /dev/disk/by-*/..., /dev/NAME or MAJOR:MINOR), rootfstype=, rootflags=,
# ro/rw, rootwait[=SECONDS], ostree=, init= (default /sbin/init).
# Debugging: aof.debug or rd.debug (trace), rd.break[=premount|preostree|preswitch]
# (shell at that point; leaving it continues the boot), aof.shell=1 (same as
# rd.break=premount).

export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# Defaults, overridden by /etc/aof-initramfs/config.
AOF_KVER=
AOF_ROOTWAIT=30
AOF_PREPARE_ROOT=/usr/lib/ostree/ostree-prepare-root
AOF_LIBPATH=
AOF_MODULES=/etc/aof-initramfs/modules

info() { echo "initramfs: $*"; }

# shell_on_console runs an interactive shell on the console.
shell_on_console() {
	if command -v setsid >/dev/null 2>&1 && command -v cttyhack >/dev/null 2>&1; then
		setsid cttyhack sh -i </dev/console >/dev/console 2>&1
	else
		sh -i </dev/console >/dev/console 2>&1
	fi
}

# emergency never returns: PID 1 must not exit (that panics the kernel
# without telling why), so the shell is restarted whenever it ends.
emergency() {
	echo "initramfs: ERROR: $*" >/dev/console 2>&1 || echo "initramfs: ERROR: $*"
	echo "initramfs: cannot continue the boot; starting an emergency shell on the console." >/dev/console 2>&1
	echo "initramfs: (cat /proc/cmdline, blkid, dmesg and ls /dev help; 'reboot -f' reboots)" >/dev/console 2>&1
	while :; do
		shell_on_console
		echo "initramfs: emergency shell exited; starting it again" >/dev/console 2>&1
		sleep 1
	done
}

# maybe_break NAME: shell if rd.break=NAME (or plain rd.break and NAME is
# preswitch) was given; leaving the shell continues.
maybe_break() {
	case " $rdbreak " in
	*" $1 "*)
		echo "initramfs: rd.break=$1: starting a shell; exit it to continue the boot" >/dev/console 2>&1
		shell_on_console
		;;
	esac
}

mount_api() {
	[ -d /proc ] || mkdir -p /proc
	[ -e /proc/self ] || mount -t proc -o nosuid,nodev,noexec proc /proc || emergency "mounting /proc failed"
	grep -q '^[^ ]* /sys ' /proc/mounts || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || emergency "mounting /sys failed"
	grep -q '^[^ ]* /dev ' /proc/mounts || mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev || emergency "mounting devtmpfs on /dev failed (kernel without CONFIG_DEVTMPFS?)"
	grep -q '^[^ ]* /run ' /proc/mounts || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || emergency "mounting tmpfs on /run failed"
}

# parse_cmdline reads the kernel command line from $cmdline.
parse_cmdline() {
	root= rootfstype= rootflags= rootmode=rw ostree= init=/sbin/init
	rdbreak= debug= rootwait=$AOF_ROOTWAIT
	set -f
	for arg in $cmdline; do
		case "$arg" in
		root=*) root=${arg#root=} ;;
		rootfstype=*) rootfstype=${arg#rootfstype=} ;;
		rootflags=*) rootflags=${arg#rootflags=} ;;
		ro) rootmode=ro ;;
		rw) rootmode=rw ;;
		ostree=*) ostree=${arg#ostree=} ;;
		init=*) init=${arg#init=} ;;
		rootwait) rootwait=-1 ;;
		rootwait=*) rootwait=${arg#rootwait=} ;;
		rd.break) rdbreak="$rdbreak preswitch" ;;
		rd.break=*) rdbreak="$rdbreak $(echo "${arg#rd.break=}" | tr ',' ' ')" ;;
		aof.shell=1) rdbreak="$rdbreak premount" ;;
		aof.debug | aof.debug=1 | rd.debug) debug=1 ;;
		esac
	done
	set +f
	case "$rootwait" in
	-1 | [0-9] | [0-9][0-9] | [0-9][0-9][0-9] | [0-9][0-9][0-9][0-9]) ;;
	*) rootwait=$AOF_ROOTWAIT ;;
	esac
}

# modparams NAME: NAME.param=value arguments of the kernel command line.
modparams() {
	set -f
	for arg in $cmdline; do
		case "$arg" in
		*.*=*)
			m=${arg%%.*}
			if [ "$(echo "$m" | tr - _)" = "$1" ]; then
				echo "${arg#*.}"
			fi
			;;
		esac
	done
	set +f
}

load_modules() {
	[ -f "$AOF_MODULES" ] || return 0
	while read -r name file; do
		[ -n "$name" ] || continue
		case "$name" in '#'*) continue ;; esac
		params=$(modparams "$name")
		set -f
		# shellcheck disable=SC2086 # params are separate words
		if ! out=$(insmod "/$file" $params 2>&1); then
			case "$out" in
			*"File exists"*) ;;
			*"No such device"* | *"Operation not supported"*)
				[ -z "$debug" ] || info "module $name: $out"
				;;
			*) info "warning: loading module $name failed: $out" ;;
			esac
		fi
		set +f
	done <"$AOF_MODULES"
}

# le_hex BYTES...: the hex digits of a little-endian number given as hex bytes.
le_hex() {
	r=
	for b in "$@"; do r=$b$r; done
	echo "$r"
}

# read_hex DEV OFFSET COUNT: COUNT bytes of DEV at byte OFFSET as hex bytes.
read_hex() {
	dd if="$1" bs=1 skip="$2" count="$3" 2>/dev/null | od -An -v -tx1
}

# part_uuid PART: the PARTUUID of partition PART (a name of /sys/class/block),
# GPT ("unique partition GUID", lower case) or MBR ("SSSSSSSS-PP").
part_uuid() {
	sys=/sys/class/block/$1
	[ -f "$sys/partition" ] || return 1
	n=$(cat "$sys/partition")
	disk=$(basename "$(readlink -f "$sys/..")")
	[ -b "/dev/$disk" ] || return 1
	ss=$(cat "/sys/block/$disk/queue/logical_block_size" 2>/dev/null)
	[ -n "$ss" ] || ss=512
	part_uuid_of "/dev/$disk" "$n" "$ss"
}

# part_uuid_of DISK PARTNO SECTORSIZE
part_uuid_of() {
	if [ "$(read_hex "$1" "$3" 8 | tr -d ' \n')" = "4546492050415254" ]; then
		# GPT: header at LBA 1; entries start at LBA (header+72), entry
		# size at header+84; unique GUID at entry+16.
		# shellcheck disable=SC2046
		lba=$((0x$(le_hex $(read_hex "$1" $(($3 + 72)) 8))))
		# shellcheck disable=SC2046
		esz=$((0x$(le_hex $(read_hex "$1" $(($3 + 84)) 4))))
		off=$((lba * $3 + ($2 - 1) * esz + 16))
		# shellcheck disable=SC2046
		set -- $(read_hex "$1" "$off" 16)
		[ $# -eq 16 ] || return 1
		echo "$4$3$2$1-$6$5-$8$7-$9${10}-${11}${12}${13}${14}${15}${16}"
		return 0
	fi
	# MBR: disk signature at 440, "SSSSSSSS-PP".
	# shellcheck disable=SC2046
	sig=$(le_hex $(read_hex "$1" 440 4))
	[ -n "$sig" ] && [ "$sig" != "00000000" ] || return 1
	printf '%s-%02x\n' "$sig" "$2"
}

# find_by_partuuid UUID / find_by_partlabel LABEL print a /dev path.
find_by_partuuid() {
	want=$(echo "$1" | tr 'A-Z' 'a-z')
	for p in /sys/class/block/*; do
		p=${p##*/}
		[ -f "/sys/class/block/$p/partition" ] || continue
		[ "$(part_uuid "$p")" = "$want" ] && echo "/dev/$p" && return 0
	done
	return 1
}

find_by_partlabel() {
	for p in /sys/class/block/*; do
		[ -f "$p/uevent" ] || continue
		if grep -qxF "PARTNAME=$1" "$p/uevent"; then
			echo "/dev/${p##*/}"
			return 0
		fi
	done
	return 1
}

# find_by_tag TAG VALUE (TAG is LABEL or UUID): busybox findfs, then blkid.
find_by_tag() {
	d=$(findfs "$1=$2" 2>/dev/null) && [ -b "$d" ] && echo "$d" && return 0
	blkid 2>/dev/null | while IFS= read -r line; do
		case "$line" in
		*" $1=\"$2\""*)
			echo "${line%%:*}"
			break
			;;
		esac
	done | grep . && return 0
	return 1
}

# resolve_root prints the block device named by root=, if it exists now.
resolve_root() {
	spec=$1
	case "$spec" in
	/dev/disk/by-label/*) spec=LABEL=${spec#/dev/disk/by-label/} ;;
	/dev/disk/by-uuid/*) spec=UUID=${spec#/dev/disk/by-uuid/} ;;
	/dev/disk/by-partuuid/*) spec=PARTUUID=${spec#/dev/disk/by-partuuid/} ;;
	/dev/disk/by-partlabel/*) spec=PARTLABEL=${spec#/dev/disk/by-partlabel/} ;;
	esac
	case "$spec" in
	LABEL=*) find_by_tag LABEL "${spec#LABEL=}" ;;
	UUID=*) find_by_tag UUID "$(echo "${spec#UUID=}" | tr 'A-Z' 'a-z')" ||
		find_by_tag UUID "${spec#UUID=}" ;;
	PARTUUID=*) find_by_partuuid "${spec#PARTUUID=}" ;;
	PARTLABEL=*) find_by_partlabel "${spec#PARTLABEL=}" ;;
	/dev/*) [ -b "$spec" ] && echo "$spec" ;;
	*:*)
		maj=${spec%%:*} min=${spec#*:}
		[ -f "/sys/dev/block/$maj:$min/uevent" ] || return 1
		dn=$(grep '^DEVNAME=' "/sys/dev/block/$maj:$min/uevent")
		[ -b "/dev/${dn#DEVNAME=}" ] && echo "/dev/${dn#DEVNAME=}"
		;;
	*) return 1 ;;
	esac
}

wait_for_root() {
	waited=0
	announced=
	while :; do
		rootdev=$(resolve_root "$root") && [ -n "$rootdev" ] && return 0
		if [ "$rootwait" != -1 ] && [ "$waited" -ge "$rootwait" ]; then
			return 1
		fi
		if [ -z "$announced" ]; then
			info "waiting for root device $root ..."
			announced=1
		fi
		sleep 1
		waited=$((waited + 1))
	done
}

main() {
	mount_api
	if [ -f /etc/aof-initramfs/config ]; then
		. /etc/aof-initramfs/config
	fi
	read -r cmdline </proc/cmdline
	parse_cmdline
	[ -z "$debug" ] || set -x

	[ -n "$root" ] || emergency "no root= on the kernel command line"
	if [ -n "$AOF_KVER" ] && [ "$(uname -r)" != "$AOF_KVER" ]; then
		info "warning: running kernel $(uname -r), but this initramfs has modules of $AOF_KVER"
	fi
	load_modules

	maybe_break premount
	wait_for_root || emergency "root device $root did not appear within ${rootwait}s (modules loaded: $(wc -l <"$AOF_MODULES" 2>/dev/null || echo 0); see 'blkid' and 'ls /sys/class/block')"
	info "root device $root is $rootdev"

	mkdir -p /sysroot
	opts=$rootmode
	[ -z "$rootflags" ] || opts="$opts,$rootflags"
	if [ -n "$rootfstype" ]; then
		mount -t "$rootfstype" -o "$opts" "$rootdev" /sysroot || emergency "mounting $rootdev (type $rootfstype, options $opts) on /sysroot failed"
	else
		mount -o "$opts" "$rootdev" /sysroot || emergency "mounting $rootdev (options $opts) on /sysroot failed"
	fi

	maybe_break preostree
	if [ -n "$ostree" ]; then
		[ -x "$AOF_PREPARE_ROOT" ] || emergency "$AOF_PREPARE_ROOT is missing from the initramfs"
		info "ostree=$ostree: running ostree-prepare-root /sysroot"
		if [ -n "$AOF_LIBPATH" ]; then
			LD_LIBRARY_PATH=$AOF_LIBPATH "$AOF_PREPARE_ROOT" /sysroot || emergency "ostree-prepare-root /sysroot failed (ostree=$ostree)"
		else
			"$AOF_PREPARE_ROOT" /sysroot || emergency "ostree-prepare-root /sysroot failed (ostree=$ostree)"
		fi
	else
		info "no ostree= on the kernel command line: booting /sysroot as a plain root file system"
	fi

	if [ ! -e "/sysroot$init" ] && [ ! -L "/sysroot$init" ]; then
		emergency "init $init not found in the root file system"
	fi

	# busybox switch_root does not carry mounts over: move the API file
	# systems into the new root first (/run keeps /run/ostree-booted and
	# /run/ostree, which ostree-system-generator and ostree-remount need).
	for d in dev proc sys run; do
		[ -d "/sysroot/$d" ] || emergency "/sysroot/$d is missing: cannot move /$d into the new root"
	done
	maybe_break preswitch
	for d in run sys dev proc; do
		mount -o move "/$d" "/sysroot/$d" || emergency "moving /$d to /sysroot/$d failed"
	done
	unset LD_LIBRARY_PATH
	info "switching root to /sysroot, starting $init"
	exec switch_root /sysroot "$init" "$@"
	# switch_root only returns on failure; /proc is gone by now.
	mount -t proc proc /proc 2>/dev/null
	emergency "switch_root /sysroot $init failed"
}

# Tests source this file with AOF_INIT_LIBRARY=1 to call its functions; as
# PID 1 it always boots.
if [ "$$" = 1 ] || [ "${AOF_INIT_LIBRARY:-}" != 1 ]; then
	main "$@"
fi
