#!/usr/bin/env bash
# Makes a deterministic bare git repository with over 100 MB of history, for
# the warm-mirror tests and bench: the same commits (same SHAs) on every
# machine, made by `git fast-import` from a seeded generator.
#
#   tests/bench/gen-repo.sh [OUT]      # default: ${CARGO_TARGET_DIR:-target}/bench-repo/gen.git
#
# History: COMMITS commits (default 420) on main; each rewrites one of 40
# files of incompressible bytes (BLOB_KB KiB each, default 256) and appends a
# line to CHANGELOG.md, beside 200 small text files: the packed history is
# COMMITS x BLOB_KB (105 MiB by default), the working tree about 10 MiB.
# Cached: when OUT already holds the repository of these settings, nothing is done.
# Needs git and python3. Prints OUT.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
out="${1:-$target/bench-repo/gen.git}"
commits="${COMMITS:-420}"
blob_kb="${BLOB_KB:-256}"
stamp="gen-repo v1 commits=$commits blob_kb=$blob_kb"

if [ -f "$out/warmpool-gen" ] && [ "$(cat "$out/warmpool-gen")" = "$stamp" ]; then
  echo "$out"
  exit 0
fi
rm -rf "$out" "$out.tmp"
mkdir -p "$(dirname "$out")"
git init --quiet --bare --initial-branch=main "$out.tmp"
python3 - "$commits" "$blob_kb" <<'PY' | git -C "$out.tmp" fast-import --quiet --done
import random, sys
commits, blob_kb = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(20261130)
w = sys.stdout.buffer
def data(b):
    w.write(b"data %d\n" % len(b)); w.write(b); w.write(b"\n")
t0 = 1764460800  # 2025-11-30T00:00:00Z
changelog = b"# Changelog\n"
for i in range(commits):
    w.write(b"commit refs/heads/main\n")
    w.write(b"committer Gen Repo <gen@example.com> %d +0000\n" % (t0 + 3600 * i))
    data(b"change %d\n" % i)
    if i == 0:
        for f in range(200):
            body = "".join("line %d of module %d: %s\n" % (n, f, rng.getrandbits(64)) for n in range(40))
            w.write(b"M 100644 inline src/module_%03d.txt\n" % f)
            data(body.encode())
    changelog += b"- change %d\n" % i
    w.write(b"M 100644 inline data/blob_%02d.bin\n" % (i % 40))
    data(rng.randbytes(blob_kb * 1024))
    w.write(b"M 100644 inline CHANGELOG.md\n")
    data(changelog)
w.write(b"done\n")
PY
git -C "$out.tmp" symbolic-ref HEAD refs/heads/main
echo "$stamp" > "$out.tmp/warmpool-gen"
mv "$out.tmp" "$out"
echo "$out"
