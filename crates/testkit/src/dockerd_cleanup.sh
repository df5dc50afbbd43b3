# Cleanup for a test engine (warmpool-testkit's dockerd module). POSIX sh.
# $1 = mode:
#   kill   SIGKILL every process of the engine, unmount what it mounted, forget
#          its runtime state (exec root, pidfile, socket): a crash and a reboot.
#          The data root (images, container records) is kept.
#   clean  kill, then remove the temp dir and the engine's cgroups.
#   watch  wait for EOF on stdin (the test process holds the pipe's write end;
#          it closes when the test process exits, however it exits), then clean.
# Environment: WPD_DIR (the temp dir, absolute), WPD_CGROUP (the cgroup parent's
# name, one path component). They are passed in the environment, never as
# arguments, so this script's own command line does not match WPD_DIR.
dir="$WPD_DIR"
cg="$WPD_CGROUP"
case "$dir" in
  /?*) ;;
  *) echo "dockerd cleanup: WPD_DIR must be an absolute path" >&2; exit 2 ;;
esac

# Pids whose command line names the temp dir: dockerd, its containerd, the
# shims (their -address is the containerd socket under the exec root), and any
# docker client talking to this engine.
engine_pids() {
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [ "$p" = "$$" ] && continue
    c="$( { tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null)" || continue
    case "$c" in *"$dir/"*) echo "$p" ;; esac
  done
}

# Every process of the containers: the engine puts them under the cgroup
# parent $cg (cgroupfs driver), in every hierarchy (v1) or in the unified one (v2).
cgroup_dirs() {
  [ -n "$cg" ] || return 0
  for d in /sys/fs/cgroup/"$cg" /sys/fs/cgroup/*/"$cg"; do
    [ -d "$d" ] && echo "$d"
  done
}
container_pids() {
  for d in $(cgroup_dirs); do
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | while read -r p; do
    # A zombie is dead already (cgroup v2 may still list it, and its parent
    # may be an init that does not reap).
    s="$(awk '/^State:/ { print $2 }' "/proc/$p/status" 2>/dev/null)"
    [ -n "$s" ] && [ "$s" != Z ] && echo "$p"
  done
}

# Unix sockets the shims listen on outside the temp dir (containerd puts them
# in /run/containerd/s/): a SIGKILLed shim leaves its socket file behind. The
# engine runs in a network namespace of its own, so each process's sockets are
# looked up in its own /proc/<pid>/net/unix.
shim_sockets() {
  for p in "$@"; do
    inodes="$(for f in /proc/"$p"/fd/*; do
      l="$(readlink "$f" 2>/dev/null)" || continue
      case "$l" in socket:\[*\]) i="${l#socket:[}"; echo "${i%]}" ;; esac
    done)"
    [ -n "$inodes" ] || continue
    awk -v inodes="$inodes" '
      BEGIN { n = split(inodes, a, "\n"); for (i = 1; i <= n; i++) want[a[i]] = 1 }
      NR > 1 && ($7 in want) && $8 ~ /^\/run\/containerd\/s\// { print $8 }' \
      "/proc/$p/net/unix" 2>/dev/null
  done | sort -u
}

kill_all() {
  n=0
  while [ "$n" -lt 100 ]; do
    pids="$(engine_pids) $(container_pids)"
    pids="$(echo $pids)"
    [ -n "$pids" ] || return 0
    socks="$(shim_sockets $pids)"
    kill -9 $pids 2>/dev/null
    for s in $socks; do rm -f "$s"; done
    n=$((n + 1))
    sleep 0.1
  done
  echo "dockerd cleanup: processes still alive under $dir: $pids" >&2
}

mounts_under() {
  awk -v d="$dir" 'index($5, d "/") == 1 || $5 == d { print $5 }' /proc/self/mountinfo | sort -r
}
unmount_all() {
  n=0
  while [ "$n" -lt 20 ]; do
    m="$(mounts_under)"
    [ -n "$m" ] || return 0
    for x in $m; do umount "$x" 2>/dev/null || umount -l "$x" 2>/dev/null; done
    n=$((n + 1))
  done
  echo "dockerd cleanup: still mounted under $dir: $(mounts_under | tr '\n' ' ')" >&2
}

remove_cgroups() {
  for d in $(cgroup_dirs); do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
}

case "$1" in
  kill)
    kill_all
    unmount_all
    rm -rf "$dir/run" "$dir/d.pid" "$dir/d.sock"
    ;;
  clean|watch)
    if [ "$1" = watch ]; then
      trap '' INT TERM HUP QUIT
      while read -r _; do :; done
    fi
    kill_all
    unmount_all
    remove_cgroups
    rm -rf "$dir"
    [ -e "$dir" ] && { echo "dockerd cleanup: could not remove $dir" >&2; exit 1; }
    ;;
  *) echo "dockerd cleanup: unknown mode $1" >&2; exit 2 ;;
esac
exit 0
