#!/usr/bin/env bash
# Proves the README's two commands on a truly clean Debian 12 root: debootstraps a minimal
# bookworm system (no container runtime needed), copies this working tree into it (tracked and
# untracked-but-not-ignored files, uncommitted changes included; never build*/ or
# data/prepared/), and runs inside a chroot, as root, in the project directory, with a clean
# environment (env -i: PATH, HOME, LANG=C.UTF-8, TERM only):
#
#     launch/demo.sh      then      launch/test.sh
#
# exactly as the README gives them. Everything goes to a log file; a summary comes at the end
# (Debian version, package counts, each command's exit status and wall time, the demo's final
# validation line, ctest's summary line). Exits non-zero if either command fails. Needs root
# (re-runs itself with sudo when it can), network access to a Debian mirror and ~4 GB free
# where DIR is (the root grows to 3 GB); downloads ~0.5 GB (the base system, ~50 MB, then the
# ~520 packages launch/setup.sh installs, ~440 MB). Not for CI. Documented, with a recorded
# run, in docs/clean-room.md.
#
# Usage: launch/clean_room.sh [options] [DIR]
#   DIR                 where the root is built (default /var/tmp/moetron-clean-room). It must
#                       not exist, be empty, or be a root this script made (then it is deleted
#                       first: nothing of a previous run is reused unless --reuse-base).
#   --keep              keep the root afterwards (default: delete it; mounts are always undone)
#   --reuse-base        keep a tarball of the freshly debootstrapped base (before anything else
#                       touches it) and, when it exists, start from it instead of downloading
#                       the base again. Every check still starts from that pristine base.
#   --base-tarball FILE the tarball for --reuse-base (default /var/tmp/moetron-clean-room-base.tar)
#   --commit REV        copy the tree of commit REV (git archive) instead of the working tree,
#                       e.g. --commit HEAD to prove what is committed, whatever is being edited
#   --short             NOT the README command: run `launch/demo.sh --set schedule.total_steps=300`
#                       to shorten training (the summary says so). Default: the full README demo.
#   --mirror URL        Debian mirror (default: the host's bookworm mirror from /etc/apt, or
#                       http://deb.debian.org/debian)
#   --log FILE          log file (default DIR-YYYYmmdd-HHMMSS.log next to DIR)
#   -h, --help          this text
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

repo=$(cd "$(dirname "$0")/.." && pwd -P)
self=$repo/launch/clean_room.sh
args=("$@")

dir=/var/tmp/moetron-clean-room
keep=0
reuse=0
short=0
mirror=
log=
base_tar=/var/tmp/moetron-clean-room-base.tar
commit=
dir_given=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --reuse-base) reuse=1 ;;
    --base-tarball) base_tar=${2:?--base-tarball needs a file}; shift ;;
    --commit) commit=${2:?--commit needs a revision}; shift ;;
    --short) short=1 ;;
    --mirror) mirror=${2:?--mirror needs a URL}; shift ;;
    --log) log=${2:?--log needs a file}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "clean_room: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ $dir_given -eq 0 ] || { echo "clean_room: only one DIR" >&2; exit 2; }
       dir=$1; dir_given=1 ;;
  esac
  shift
done

die() { echo "clean_room: $*" >&2; exit 1; }

# --- root, and a private mount namespace --------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "needs root (debootstrap, mount, chroot)"
  exec sudo -- "$self" "${args[@]}"
fi
# Every mount is made in a mount namespace of this script's own: the host never sees them, and
# even a SIGKILL cannot leave one behind (the trap below also undoes them explicitly).
if [ "${MOETRON_CLEAN_ROOM_NS:-}" != 1 ]; then
  export MOETRON_CLEAN_ROOM_NS=1
  exec unshare --mount --propagation private -- /bin/bash "$self" "${args[@]}"
fi

# --- checks on DIR (it is deleted at the end) ---------------------------------------------
dir=$(realpath -m -- "$dir")
base_tar=$(realpath -m -- "$base_tar")
case "$dir" in
  /|/bin|/boot|/dev|/etc|/home|/lib*|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/var|/var/tmp)
    die "refusing DIR=$dir" ;;
esac
case "$dir/" in "$repo/"*) die "DIR must be outside the repository ($repo)" ;; esac
case "$repo/" in "$dir/"*) die "DIR must not contain the repository ($repo)" ;; esac
marker=$dir/.moetron-clean-room
mounts_under() { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo; }
if [ -e "$dir" ]; then
  [ -z "$(mounts_under "$dir")" ] || die "$dir has file systems mounted under it: $(mounts_under "$dir" | tr '\n' ' ')"
  if [ -n "$(ls -A "$dir" 2>/dev/null)" ] && [ ! -e "$marker" ]; then
    die "$dir exists, is not empty and was not made by this script; choose another DIR"
  fi
fi
[ -n "$log" ] || log=$dir-$(date -u +%Y%m%d-%H%M%S).log
log=$(realpath -m -- "$log")
case "$log/" in "$dir/"*) die "the log must be outside DIR" ;; esac
mkdir -p "$(dirname "$log")"
: >"$log"

# Everything from here on goes to the console and the log. tee ignores SIGINT so that what
# the cleanup prints after a Ctrl-C still reaches the log.
exec > >(trap '' INT TERM HUP; exec tee -a "$log") 2>&1
tee_pid=$!

t0=$(date +%s)
now() { date +%s; }
dur() { local s=$1; printf '%dm%02ds' $((s / 60)) $((s % 60)); }
say() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

phases=()      # "name|seconds" in order
add_phase() { phases+=("$1|$2"); }

work=$(mktemp -d /tmp/moetron-clean-room.XXXXXX)
proj=/root/moetron
root_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mounted=()
root_fate=
interrupted=
state=starting
base_desc=
base_version=
base_pkgs=
final_version=
final_pkgs=
root_size=
tree_desc=
demo_cmd="launch/demo.sh"
[ $short -eq 0 ] || demo_cmd="launch/demo.sh --set schedule.total_steps=300"
declare -A rc=() secs=() steps=()

# Processes whose root is the chroot (whatever the commands left running).
procs_in_root() {
  local p r
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null) || continue
    [ "$r" = "$dir" ] && echo "${p#/proc/}"
  done
  return 0
}

undo_mounts() {
  local pids i m
  pids=$(procs_in_root)
  if [ -n "$pids" ]; then
    echo "clean_room: stopping processes left in the root: $(echo $pids)"
    kill -TERM $pids 2>/dev/null || true
    for i in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(procs_in_root); [ -n "$pids" ] || break; sleep 1
    done
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    sleep 1
  fi
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    m=${mounted[i]}
    umount "$m" 2>/dev/null || umount -l "$m" || echo "clean_room: could not unmount $m"
  done
  mounted=()
}

cleanup() {
  local t
  t=$(now)
  undo_mounts
  if [ -d "$dir" ]; then
    if [ $keep -eq 1 ]; then
      echo "clean_room: keeping the root at $dir (--keep)"
      root_fate="kept (--keep)"
    elif [ -n "$(mounts_under "$dir")" ]; then
      echo "clean_room: NOT deleting $dir: still mounted: $(mounts_under "$dir" | tr '\n' ' ')"
      root_fate="NOT deleted: still mounted"
    else
      say "deleting $dir"
      rm -rf --one-file-system -- "$dir" && root_fate=deleted
    fi
  fi
  add_phase "cleanup" $(($(now) - t))
}

summary() {
  local overall=$1 p name
  echo
  echo "=================== moetron clean-room summary ==================="
  echo "date            $(date -u -d "@$t0" '+%Y-%m-%d %H:%M UTC') (host: $(. /etc/os-release; echo "$PRETTY_NAME"), $(nproc) cores, kernel $(uname -r))"
  echo "tree            ${tree_desc:-?}"
  echo "root            $dir (${root_fate:-never made})"
  echo "base            ${base_desc:-?}"
  echo "base system     Debian ${base_version:-?}, ${base_pkgs:-?} packages installed"
  if [ -n "$final_pkgs" ]; then
    echo "after the run   Debian ${final_version:-?}, $final_pkgs packages installed (+$((final_pkgs - base_pkgs)) by launch/setup.sh), root ${root_size:-?}"
  fi
  for name in demo test; do
    [ -n "${rc[$name]:-}" ] || continue
    if [ "$name" = demo ]; then
      printf 'launch/demo.sh  exit %s, %s%s\n' "${rc[demo]}" "$(dur "${secs[demo]}")" \
        "$([ $short -eq 1 ] && echo "  (SHORTENED with --short: ran '$demo_cmd', not the README command)")"
      [ -z "${steps[demo]:-}" ] || echo "  inside        ${steps[demo]}"
      [ -s "$work/demo.out" ] && grep -E '^ *step ' "$work/demo.out" | tail -n 1 | sed 's/^/  last step     /'
      [ -s "$work/demo.out" ] && { grep -E '^ *val ' "$work/demo.out" | tail -n 1 | sed 's/^/  final val     /' || echo "  final val     (no validation line)"; }
    else
      printf 'launch/test.sh  exit %s, %s\n' "${rc[test]}" "$(dur "${secs[test]}")"
      [ -z "${steps[test]:-}" ] || echo "  inside        ${steps[test]}"
      [ -s "$work/test.out" ] && { grep -E 'tests passed, [0-9]+ tests failed out of' "$work/test.out" | tail -n 1 | sed 's/^/  ctest         /' || echo "  ctest         (no ctest summary line)"; }
      [ -s "$work/test.out" ] && grep -E '^Total Test time' "$work/test.out" | tail -n 1 | sed 's/^/  ctest         /'
      [ -s "$work/test.out" ] && sed -n '/^The following tests FAILED:/,/^Errors while running CTest/{/^[[:space:]]*[0-9]\+ - /s/^[[:space:]]*/  failed        /p}' "$work/test.out"
    fi
  done
  for p in "${phases[@]}"; do
    printf 'phase %-12s%s\n' "${p%%|*}" "$(dur "${p#*|}")"
  done
  printf 'total             %s\n' "$(dur $(($(now) - t0)))"
  [ -z "$interrupted" ] || echo "INTERRUPTED     by SIG$interrupted during: $state"
  echo "result          $([ "$overall" -eq 0 ] && echo PASS || echo "FAIL (exit $overall, during: $state)")"
  echo "log             $log"
  echo "=================================================================="
}

on_exit() {
  local status=$?
  trap '' INT TERM HUP
  set +e
  cleanup
  summary "$status"
  rm -rf -- "$work"
  exec >&- 2>&-
  wait "$tee_pid" 2>/dev/null
  exit "$status"
}
trap on_exit EXIT
trap 'interrupted=INT; exit 130' INT
trap 'interrupted=TERM; exit 143' TERM
trap 'interrupted=HUP; exit 129' HUP

# --- mirror --------------------------------------------------------------------------------
host_uris() {  # every URI of an enabled deb source on the host, one-line and deb822 formats
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -nE 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+([^[:space:]]+).*/\3 \2/p' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = "" } {
           t = ""; s = ""; u = ""; e = "yes"
           n = split($0, L, "\n")
           for (i = 1; i <= n; i++) {
             if (L[i] ~ /^Types:/) t = L[i]
             if (L[i] ~ /^Suites:/) s = L[i]
             if (L[i] ~ /^URIs:/) u = L[i]
             if (L[i] ~ /^Enabled:/) e = L[i]
           }
           if (t !~ /[ \t]deb([ \t]|$)/ || e ~ /[ \t]no/) next
           sub(/^Suites:[ \t]*/, "", s); sub(/^URIs:[ \t]*/, "", u)
           split(s, S, /[ \t]+/); m = split(u, U, /[ \t]+/)
           for (j = 1; j <= m; j++) print S[1], U[j]
         }' "$f"
  done
}
if [ -z "$mirror" ]; then
  mirror=$(host_uris | awk '$1 == "bookworm" { print $2; exit }')
  mirror=${mirror:-http://deb.debian.org/debian}
fi
security=$(host_uris | awk '$1 == "bookworm-security" { print $2; exit }')
security=${security:-http://deb.debian.org/debian-security}
mirror=${mirror%/}
security=${security%/}

say "moetron clean room: $repo -> $dir (log: $log)"
echo "mirror $mirror, security $security; keep=$keep reuse-base=$reuse short=$short"

# --- a snapshot of the tree, taken now (read only: git takes no index lock) ---------------
# It is staged here and moved into the root once the root exists, so edits made to the
# checkout while the base is downloaded do not end up half in the copy.
t=$(now)
head=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null) || die "$repo is not a git checkout"
mkdir -p "$work/tree"
if [ -n "$commit" ]; then
  state="exporting $commit"
  rev=$(git -C "$repo" rev-parse --short "$commit^{commit}") || die "no commit $commit"
  git -C "$repo" archive --format=tar "$rev" | tar -xpf - --no-same-owner -C "$work/tree"
  nfiles=$(find "$work/tree" -type f -o -type l | wc -l)
  tree_desc="commit $rev of $repo (git archive: uncommitted changes NOT included), $nfiles files"
else
  state="copying the working tree"
  dirty=$(GIT_OPTIONAL_LOCKS=0 git -C "$repo" status --porcelain 2>/dev/null | wc -l)
  ( cd "$repo" && git ls-files -co --exclude-standard -z ) |
    while IFS= read -r -d '' f; do
      case "$f" in build*/*|data/prepared/*) continue ;; esac
      [ -e "$repo/$f" ] || [ -L "$repo/$f" ] || continue   # deleted in the work tree
      printf '%s\0' "$f"
    done >"$work/files"
  nfiles=$(tr -cd '\0' <"$work/files" | wc -c)
  [ "$nfiles" -gt 0 ] || die "no files to copy"
  ( cd "$repo" && tar --null --no-recursion -T "$work/files" -cf - ) |
    tar -xpf - --no-same-owner -C "$work/tree"
  tree_desc="working tree of $repo at $head + $dirty uncommitted change(s) (git status lines), $nfiles files, copied $(date -u +%H:%M:%S) UTC"
fi
add_phase "snapshot" $(($(now) - t))

# --- host tools ----------------------------------------------------------------------------
state="installing debootstrap on the host"
if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap on the host"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
keyring_opt=()
[ -f "$keyring" ] && keyring_opt=(--keyring="$keyring")

# --- a fresh root --------------------------------------------------------------------------
state="preparing $dir"
if [ -e "$dir" ]; then
  say "deleting the previous root at $dir"
  rm -rf --one-file-system -- "$dir"
fi
mkdir -p "$dir"
: >"$marker"

t=$(now)
if [ $reuse -eq 1 ] && [ -f "$base_tar" ]; then
  state="extracting the base tarball"
  say "extracting the pristine base from $base_tar (--reuse-base)"
  tar -xpf "$base_tar" --numeric-owner -C "$dir"
  base_desc="reused pristine tarball $base_tar (made $(date -u -r "$base_tar" '+%Y-%m-%d %H:%M UTC'))"
  add_phase "base" $(($(now) - t))
else
  state="debootstrap"
  say "debootstrap --variant=minbase bookworm $dir $mirror"
  debootstrap --variant=minbase "${keyring_opt[@]}" bookworm "$dir" "$mirror"
  base_desc="debootstrap --variant=minbase bookworm $mirror"
  add_phase "debootstrap" $(($(now) - t))
  if [ $reuse -eq 1 ]; then
    t=$(now)
    state="saving the base tarball"
    say "saving the pristine base to $base_tar (--reuse-base)"
    mkdir -p "$(dirname "$base_tar")"
    tar -cpf "$base_tar.tmp" --numeric-owner --one-file-system --exclude=./.moetron-clean-room -C "$dir" .
    mv -f "$base_tar.tmp" "$base_tar"
    add_phase "save-base" $(($(now) - t))
  fi
fi
base_version=$(cat "$dir/etc/debian_version")
base_pkgs=$(chroot "$dir" /usr/bin/dpkg-query -W -f='${db:Status-Abbrev}\n' | grep -c '^ii')

# What a fresh Debian 12 install has and debootstrap leaves out: the updates and security
# suites, name resolution. policy-rc.d keeps package scripts from starting daemons inside the
# chroot, as in Debian's own container images. Nothing else on the base is changed.
state="configuring the root"
cat >"$dir/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
rm -f "$dir/etc/resolv.conf"
cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
chmod 755 "$dir/usr/sbin/policy-rc.d"

# --- the project ---------------------------------------------------------------------------
state="copying the project into the root"
say "copying the snapshot ($nfiles files, $(du -sh --apparent-size "$work/tree" | cut -f1)) to $proj"
mkdir -p "$dir$proj"
cp -a "$work/tree/." "$dir$proj/"
chown -R 0:0 "$dir$proj"

# --- mounts ----------------------------------------------------------------------------------
state="mounting"
mnt() {  # mnt TARGET MOUNT-ARGS...
  local target=$1; shift
  mount "$@" "$target"
  mounted+=("$target")
}
mnt "$dir/proc" -t proc proc
mnt "$dir/sys" --bind /sys
mnt "$dir/dev" --bind /dev
mnt "$dir/dev/pts" --bind /dev/pts
mnt "$dir/dev/shm" -t tmpfs -o mode=1777,nosuid,nodev tmpfs
findmnt -R -o TARGET,FSTYPE "$dir" || true

# --- the two commands ----------------------------------------------------------------------
# inner_steps NAME START END: how long the steps inside a command took, from what they left in
# the root (the commands' output cannot be timed line by line: through a pipe, make and
# moetron buffer it). setup.sh ends when dpkg last wrote its status, cmake's configure when
# build/Makefile was written, the build with build/trainer/moetron, prepare with the dataset's
# manifest; ctest's time is its own "Total Test time".
mtime() { stat -c %Y "$1" 2>/dev/null || true; }
inner_steps() {
  local name=$1 start=$2 end=$3 p=$dir$proj s1 s2 s3 s4 ct
  s1=$(mtime "$dir/var/lib/dpkg/status")
  [ -n "$s1" ] && [ "$s1" -ge "$start" ] || s1=$start
  if [ "$name" = demo ]; then
    s2=$(mtime "$p/build/Makefile"); s3=$(mtime "$p/build/trainer/moetron")
    s4=$(mtime "$p/data/prepared/fortunes/manifest.json")
    [ -n "$s2" ] && [ -n "$s3" ] && [ -n "$s4" ] && [ "$s2" -ge "$s1" ] && [ "$s3" -ge "$s2" ] &&
      [ "$s4" -ge "$s3" ] || return 0
    echo "setup.sh $(dur $((s1 - start))), cmake configure $(dur $((s2 - s1))), build $(dur $((s3 - s2))), prepare $(dur $((s4 - s3))), train $(dur $((end - s4)))"
  else
    ct=$(sed -nE 's/^Total Test time \(real\) = *([0-9]+)(\.[0-9]*)? sec.*/\1/p' "$work/test.out" | tail -n 1)
    [ -n "$ct" ] || return 0
    echo "setup.sh $(dur $((s1 - start))), cmake configure + build $(dur $((end - s1 - ct))), ctest $(dur "$ct")"
  fi
}

# run_in_root NAME COMMAND: runs COMMAND with bash in the project directory inside the root,
# with nothing of the host's environment; its output goes to the log and $work/NAME.out.
run_in_root() {
  local name=$1 cmd=$2 t child
  state="$cmd"
  say "chroot $dir: cd $proj && $cmd"
  t=$(now)
  {
    (
      trap - INT QUIT TERM HUP
      set +e
      /usr/bin/env -i PATH="$root_path" HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
        /usr/sbin/chroot "$dir" /bin/bash -c "cd $proj && $cmd" </dev/null
      echo $? >"$work/$name.rc"
    ) 2>&1
  } | tee "$work/$name.out" &
  child=$!
  wait "$child" || true
  secs[$name]=$(($(now) - t))
  steps[$name]=$(inner_steps "$name" "$t" "$(now)")
  rc[$name]=$(cat "$work/$name.rc" 2>/dev/null || echo "?")
  add_phase "$name" "${secs[$name]}"
  say "$cmd: exit ${rc[$name]} after $(dur "${secs[$name]}")"
}

run_in_root demo "$demo_cmd"
run_in_root test "launch/test.sh"

state="collecting the summary"
final_version=$(cat "$dir/etc/debian_version")
final_pkgs=$(chroot "$dir" /usr/bin/dpkg-query -W -f='${db:Status-Abbrev}\n' | grep -c '^ii')
root_size=$(du -sh --one-file-system "$dir" 2>/dev/null | cut -f1)

state="finished"
[ "${rc[demo]}" = 0 ] && [ "${rc[test]}" = 0 ] || { state="finished (a command failed)"; exit 1; }
exit 0
