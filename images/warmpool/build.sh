#!/usr/bin/env bash
# Build warmpool's own container image FROM scratch: a static musl build of
# the binary (the gate inside it is static too), then `docker build` with no
# base image, so no registry is needed.
#
#   bash images/warmpool/build.sh            # tags warmpool:local
#   WARMPOOL_IMAGE=me/warmpool:1 bash images/warmpool/build.sh
#
# Needs the musl target (`rustup target add <arch>-unknown-linux-musl`, done
# here when rustup is there) and a musl C compiler for the bundled SQLite and
# ring (`musl-gcc`: Debian's musl-tools). The binary is built in
# target/image so it never waits on (or invalidates) the ordinary build.
set -euo pipefail
cd "$(dirname "$0")/../.."
image=${WARMPOOL_IMAGE:-warmpool:local}
target="$(uname -m)-unknown-linux-musl"
target_dir=${WARMPOOL_IMAGE_TARGET_DIR:-target/image}

say() { echo "images/warmpool/build.sh: $*" >&2; }

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    say "adding the Rust target $target"
    rustup target add "$target" >&2
  fi
fi
if ! command -v musl-gcc >/dev/null 2>&1 && ! command -v "$(uname -m)-linux-musl-gcc" >/dev/null 2>&1; then
  bash tests/need.sh musl-tools
  if ! command -v musl-gcc >/dev/null 2>&1; then
    say "no musl C compiler: install musl-tools (Debian/Ubuntu: apt-get install musl-tools)"
    exit 1
  fi
fi

say "building warmpool for $target (release)"
CARGO_TARGET_DIR="$target_dir" cargo build --release --locked --target "$target" -p warmpool >&2
bin="$target_dir/$target/release/warmpool"
# A static-pie binary makes ldd say "statically linked" (and exit 0).
case "$(ldd "$bin" 2>&1 || true)" in
  *"statically linked"* | *"not a dynamic executable"*) ;;
  *) say "$bin is not static: $(ldd "$bin" 2>&1 | head -n 3)"; exit 1 ;;
esac

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp images/warmpool/Dockerfile "$ctx/"
cp "$bin" "$ctx/warmpool"
mkdir -p "$ctx/rootfs/tmp" "$ctx/rootfs/etc/warmpool" "$ctx/rootfs/var/lib/warmpool"
chmod 1777 "$ctx/rootfs/tmp"
chmod 0700 "$ctx/rootfs/var/lib/warmpool"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
say "docker build -t $image"
docker build -q -t "$image" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.version=$("$bin" --version | awk '{print $2}')" \
  "$ctx" >/dev/null
echo "$image"
