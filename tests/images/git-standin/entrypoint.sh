#!/bin/sh
# warmpool-git-clone, the entrypoint of the test image warmpool-test/git: the
# clone step of images/claude-code with its very code (clone.sh), no Claude.
#
# In: REPO_FULL_NAME, GITHUB_SERVER_URL, GITHUB_TOKEN; REPO_MIRROR (optional,
#     as warmpool sets it); CLONE_ONLY=1 (the bench): print head and stop.
# Out (stdout), after a clone in a fresh directory under /tmp:
#     head: <sha of HEAD>          the working tree's commit
#     tree: clean|dirty            git status of the checked-out tree
#     alternates: <path>|none      where the clone borrows objects from
#     origin: <remote.origin.url>
#     token-in-git-dir: <n>        files under .git holding GITHUB_TOKEN (0)
#     token-in-mirror: <n>         files in REPO_MIRROR holding it, when there is one (0)
#     mirrors-mount: <options>     /warmpool/mirrors in /proc/mounts ("ro,...")
# Exit 3: the clone failed.
set -eu
. /usr/local/lib/warmpool/clone.sh
server=${GITHUB_SERVER_URL%/}
git_credentials "$server"
dir=$(mktemp -d /tmp/job.XXXXXX)/repo
clone_repo "$server/$REPO_FULL_NAME.git" "$dir" || { echo "clone failed" >&2; exit 3; }
cd "$dir"
echo "head: $(git rev-parse HEAD)"
if [ "${CLONE_ONLY:-}" = 1 ]; then exit 0; fi
if [ -z "$(git status --porcelain)" ]; then echo "tree: clean"; else echo "tree: dirty"; fi
echo "alternates: $(cat .git/objects/info/alternates 2>/dev/null || echo none)"
echo "origin: $(git config --get remote.origin.url)"
echo "token-in-git-dir: $(grep -rlF -- "$GITHUB_TOKEN" .git 2>/dev/null | wc -l)"
# The mirrors' mount as the kernel has it: "ro,..." (read-only).
echo "mirrors-mount: $(awk '$2 == "/warmpool/mirrors" {print $4}' /proc/mounts)"
if [ -n "${REPO_MIRROR:-}" ] && [ -d "$REPO_MIRROR" ]; then
  echo "token-in-mirror: $(grep -rlF -- "$GITHUB_TOKEN" "$REPO_MIRROR" 2>/dev/null | wc -l)"
fi
