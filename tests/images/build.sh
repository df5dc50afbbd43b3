#!/usr/bin/env bash
# Builds the images the test suite runs, all FROM scratch (no registry is needed):
#   warmpool-test/busybox   static busybox with its applets (and jobtool), CMD sh
#   warmpool-test/cmd       busybox with a CMD only
#   warmpool-test/entry     busybox with an ENTRYPOINT and a CMD
#   warmpool-test/user      busybox with USER 1000:1000, WORKDIR and ENV
#   warmpool-test/noshell   nothing but a static test program (no shell at all)
#   warmpool-test/suid      busybox, USER 1000, a setuid-root jobtool-suid
#   warmpool-test/agent     the stand-in for images/claude-code (busybox sh)
#   warmpool-test/git       busybox, the host's git (http only) and the agent's
#                           clone.sh: the clone step of images/claude-code
# Needs: docker, rustc, git, and a static busybox (Debian: busybox-static, installed
# here when missing and we are root). Idempotent; the engine's cache makes reruns cheap.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

if [ ! -x "$BUSYBOX" ] || ! "$BUSYBOX" --help >/dev/null 2>&1 || ldd "$BUSYBOX" >/dev/null 2>&1; then
  if [ "$BUSYBOX" = /bin/busybox ]; then
    bash "$here/../need.sh" busybox-static
  fi
  if [ ! -x "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
    echo "build.sh: need a static busybox at $BUSYBOX: apt-get install busybox-static (or set BUSYBOX=path)" >&2
    exit 1
  fi
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
cp "$BUSYBOX" "$ctx/rootfs/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$ctx/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' > "$ctx/rootfs/etc/group"
chmod 1777 "$ctx/rootfs/tmp"

rustc --edition=2021 -O -C target-feature=+crt-static -C strip=symbols \
  -o "$ctx/jobtool" "$here/jobtool.rs"
# busybox has no SysV IPC applets: the reuse tests make objects with jobtool.
cp "$ctx/jobtool" "$ctx/rootfs/bin/jobtool"

build() { # name, dockerfile text
  printf '%s\n' "$2" > "$ctx/Dockerfile.$1"
  # The legacy builder's deprecation notice is noise here: show stderr only on failure.
  if ! docker build -q -f "$ctx/Dockerfile.$1" -t "warmpool-test/$1:latest" \
    --label warmpool.test=true "$ctx" >/dev/null 2>"$ctx/build.log"; then
    cat "$ctx/build.log" >&2
    exit 1
  fi
  echo "built warmpool-test/$1:latest"
}

build busybox 'FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
CMD ["sh"]'

build cmd 'FROM warmpool-test/busybox:latest
CMD ["echo", "hello from cmd"]'

build entry 'FROM warmpool-test/busybox:latest
ENTRYPOINT ["/bin/sh", "-c", "echo \"entry: $0 $*\"", "ep"]
CMD ["default", "args"]'

build user 'FROM warmpool-test/busybox:latest
RUN ["/bin/mkdir", "-p", "/home/app"]
RUN ["/bin/chown", "1000:1000", "/home/app"]
ENV APP_MODE=test
USER 1000:1000
WORKDIR /home/app
CMD ["sh", "-c", "id; pwd"]'

# warmpool-test/suid: a setuid-root jobtool for a user job (a process its gate
# may not kill: a reset that cannot be completed).
build suid 'FROM warmpool-test/busybox:latest
COPY jobtool /bin/jobtool-suid
RUN ["/bin/chmod", "4755", "/bin/jobtool-suid"]
USER 1000:1000'

build noshell 'FROM scratch
COPY jobtool /jobtool
ENTRYPOINT ["/jobtool"]
CMD ["args", "from", "cmd"]'

# warmpool-test/agent: the stand-in for images/claude-code (which needs a
# registry to build). Same job contract, busybox only: it checks the bot's
# variables and secrets, writes a deterministic answer and the token's length
# on stdout; "fail" / "sleep" in COMMAND fail it / make it sleep 30 s. See
# agent-standin/entrypoint.sh.
cp "$here/agent-standin/entrypoint.sh" "$ctx/agent-entrypoint.sh"
chmod 0755 "$ctx/agent-entrypoint.sh"
build agent 'FROM warmpool-test/busybox:latest
COPY agent-entrypoint.sh /usr/local/bin/warmpool-agent
RUN ["/bin/mkdir", "-p", "/workspace"]
RUN ["/bin/chown", "1000:1000", "/workspace"]
USER 1000:1000
WORKDIR /workspace
LABEL io.warmpool.agent="1"
ENTRYPOINT ["/usr/local/bin/warmpool-agent"]'

# warmpool-test/git: git from this machine (the binary, git-remote-http for
# http(s) remotes and the shared libraries ldd names), busybox for sh and the
# rest, images/claude-code/clone.sh and an entrypoint that clones with it.
command -v git >/dev/null 2>&1 || bash "$here/../need.sh" git
GIT="$(command -v git || true)"
if [ -z "$GIT" ]; then
  echo "build.sh: need git for warmpool-test/git: apt-get install git" >&2
  exit 1
fi
exec_path="$("$GIT" --exec-path)"
mkdir -p "$ctx/git/usr/local/lib/warmpool" "$ctx/git/$exec_path" "$ctx/git/usr/bin" \
  "$ctx/git/usr/share/git-core/templates" "$ctx/git/usr/local/share/git-core/templates"
cp "$GIT" "$ctx/git/usr/bin/git"
ln -sf /usr/bin/git "$ctx/git/$exec_path/git"
for helper in git-remote-http; do
  cp "$exec_path/$helper" "$ctx/git/$exec_path/$helper"
done
ln -sf git-remote-http "$ctx/git/$exec_path/git-remote-https"
for bin in "$GIT" "$exec_path/git-remote-http"; do
  for lib in $(ldd "$bin" | awk '/=> \// {print $3} $1 ~ /^\// {print $1}'); do
    mkdir -p "$ctx/git$(dirname "$lib")"
    cp -L "$lib" "$ctx/git$lib"
  done
done
cp "$here/../../images/claude-code/clone.sh" "$ctx/git/usr/local/lib/warmpool/clone.sh"
mkdir -p "$ctx/git/usr/local/bin"
cp "$here/git-standin/entrypoint.sh" "$ctx/git/usr/local/bin/warmpool-git-clone"
chmod 0755 "$ctx/git/usr/local/bin/warmpool-git-clone"
build git 'FROM warmpool-test/busybox:latest
COPY git/ /
RUN ["/bin/mkdir", "-p", "/workspace"]
RUN ["/bin/chown", "1000:1000", "/workspace"]
USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/warmpool-git-clone"]'
