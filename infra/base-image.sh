#!/bin/sh
# Makes a local stand-in for node:20-bookworm-slim on machines that cannot pull
# images: a minimal Debian bookworm root (debootstrap) with this machine's Node 20,
# npm and Node headers, imported as one image layer.
#
# The stand-in gets its own tag (see docs/decisions/image-offline-base.md) and is
# handed to the Dockerfile as the BASE_IMAGE build argument by infra/build-image.sh.
#
#   infra/base-image.sh            builds the stand-in unless it (or the real image) exists
#   ASH_BASE_IMAGE=<tag>           name of the stand-in (default below)
#
# Needs root, debootstrap, and Node 20 installed on the machine.
set -eu

upstream=node:20-bookworm-slim
tag="${ASH_BASE_IMAGE:-ash-local/node:20-bookworm-slim}"

say() { printf 'base image: %s\n' "$*"; }
die() { printf 'base image: %s\n' "$*" >&2; exit 1; }

# A real upstream image (pulled earlier on a machine with a registry) needs no
# stand-in, unless a stand-in name was asked for explicitly.
if [ -z "${ASH_BASE_IMAGE:-}" ] && docker image inspect "$upstream" >/dev/null 2>&1; then
  say "$upstream (present)"
  exit 0
fi
if docker image inspect "$tag" >/dev/null 2>&1; then
  say "$tag (present)"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building $tag needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"

node_bin="$(command -v node)" || die "node is not installed"
node_bin="$(readlink -f "$node_bin")"
node_version="$("$node_bin" --version)"
case "$node_version" in
  v20.*) ;;
  *) die "the machine's node is $node_version; the stand-in must carry Node 20" ;;
esac
node_prefix="$(dirname "$(dirname "$node_bin")")"
npm_dir="$node_prefix/lib/node_modules/npm"
headers_dir="$node_prefix/include/node"
[ -f "$npm_dir/bin/npm-cli.js" ] || die "npm not found at $npm_dir"
[ -f "$headers_dir/node.h" ] || die "Node headers not found at $headers_dir"

work="$(mktemp -d "${TMPDIR:-/tmp}/ash-base-image.XXXXXX")"
root="$work/root"
log="$work/debootstrap.log"

# debootstrap mounts proc/sys inside the new root; unmount anything left there
# before deleting, and never cross into another file system while deleting.
cleanup() {
  if [ -d "$root" ]; then
    awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts \
      | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
if ! debootstrap --variant=minbase bookworm "$root" >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  die "debootstrap failed"
fi

# Trim what the slim Debian images leave out, and keep it out of later apt installs.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
rm -rf "$root/usr/share/man" "$root/usr/share/info"
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* "$root/var/log/"*.log
: >"$root/etc/resolv.conf"
echo localhost >"$root/etc/hostname"

# Node where the official image has it: /usr/local.
mkdir -p "$root/usr/local/bin" "$root/usr/local/lib/node_modules" "$root/usr/local/include"
cp -p "$node_bin" "$root/usr/local/bin/node"
cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
cp -a "$headers_dir" "$root/usr/local/include/node"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"

# The official image has an unprivileged "node" user with uid/gid 1000.
chroot "$root" groupadd --gid 1000 node
chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node

"$root/usr/local/bin/node" --version >/dev/null || die "copied node does not run"

tar --numeric-owner -C "$root" \
  --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
  -c . \
  | docker import \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c "ENV NODE_VERSION=${node_version#v}" \
      -c 'CMD ["node"]' \
      -m "Debian bookworm minbase with Node ${node_version#v}, standing in for $upstream" \
      - "$tag" >/dev/null

say "$tag (built with Node ${node_version#v} in $(( $(date +%s) - start )) s)"
