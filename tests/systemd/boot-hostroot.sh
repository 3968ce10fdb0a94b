#!/bin/bash
# Boot the host's own systemd as PID 1 in new namespaces, over a read-only
# bind mount of the host root.
#
# Usage: boot-hostroot.sh NEWROOT CGROUP [WRITABLE_DIR...]
#
#   NEWROOT       an empty directory on the host disk; it becomes the mount
#                 point of the read-only root inside the mount namespace
#   CGROUP        a name such as bpm-ci-1234-abcd; the script moves itself
#                 into /sys/fs/cgroup/{unified,systemd}/CGROUP first, so
#                 everything systemd starts stays below that cgroup
#   WRITABLE_DIR  host directories that stay writable inside, bound at the
#                 same path
#
# Start it in the background with stdin from /dev/null and stdout/stderr in
# a log file. PID 1 of the new PID namespace is the `systemd` child of this
# process (after the exec, this process is `unshare`). Drive it with
# `nsenter -t <PID1> -a -r -w systemctl ...`; stop it with
# `systemctl poweroff`. Because of --kill-child, killing this process kills
# PID 1, and with it every process in the namespace.
#
# Never point this at a writable root: `systemd-tmpfiles --boot --remove`
# would clean the host's /tmp and the host's enabled units would start.
# /run, /tmp and the /var directories systemd writes to are tmpfs mounts
# inside, so nothing is written to the host disk apart from the bound
# WRITABLE_DIRs.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 NEWROOT CGROUP [WRITABLE_DIR...]" >&2
  exit 2
fi
NEWROOT=$1
CGROUP=$2
shift 2

for hierarchy in unified systemd; do
  mkdir -p "/sys/fs/cgroup/$hierarchy/$CGROUP"
  echo $$ > "/sys/fs/cgroup/$hierarchy/$CGROUP/cgroup.procs"
done
mkdir -p "$NEWROOT"

export NEWROOT
exec unshare --pid --fork --kill-child --mount --uts --ipc --net --cgroup --propagation private \
  bash -c '
  set -euo pipefail
  N=$NEWROOT
  mount --bind / "$N"
  mount -o remount,bind,ro "$N"
  mount -t proc proc "$N/proc"
  # systemd mounts its own cgroup2 file system on /sys/fs/cgroup.
  mount -t sysfs -o ro sysfs "$N/sys"
  mount --rbind /dev "$N/dev"
  for directory in run tmp var/tmp var/log var/lib/systemd var/cache; do
    mount -t tmpfs -o mode=755 tmpfs "$N/$directory"
  done
  chmod 1777 "$N/tmp" "$N/var/tmp"
  for directory in "$@"; do
    mount --bind "$directory" "$N$directory"
  done

  # A small target instead of multi-user.target or graphical.target, so
  # no getty, cron or other host service starts.
  mkdir -p "$N/run/systemd/system"
  printf "[Unit]\nDescription=bpm-ci minimal target\nRequires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n" \
    > "$N/run/systemd/system/bpm-ci.target"

  cd "$N"
  # In container mode systemd reads the kernel command-line options
  # (systemd.unified_cgroup_hierarchy, systemd.mask) from its own argv.
  # The unified hierarchy keeps it out of the host v1 controllers.
  exec chroot "$N" /usr/bin/env -i container=bpm-ci TERM=dumb \
    /lib/systemd/systemd --unit=bpm-ci.target \
    systemd.unified_cgroup_hierarchy=1 \
    systemd.mask=systemd-sysctl.service systemd.mask=systemd-modules-load.service \
    systemd.mask=systemd-binfmt.service systemd.mask=apt-daily.timer \
    systemd.mask=apt-daily-upgrade.timer systemd.mask=dpkg-db-backup.timer \
    systemd.mask=e2scrub_all.timer systemd.mask=fstrim.timer systemd.mask=man-db.timer \
    systemd.mask=systemd-timesyncd.service
' boot-hostroot "$@"
