# shellcheck shell=sh
# The agent's git setup and clone, sourced by images/claude-code's entrypoint
# and by the test image warmpool-test/git (busybox sh): the very same code.
#
#   . /usr/local/lib/warmpool/clone.sh
#   git_credentials https://github.com      # git asks a helper for GITHUB_TOKEN
#   clone_repo https://github.com/o/r.git DIR
#
# No token is ever in a URL, an argv or a config file: the helper, given to git
# through GIT_CONFIG_COUNT/KEY_n/VALUE_n, is text naming $GITHUB_TOKEN that
# git's sh expands only when git asks for a password.

# git_credentials SERVER: the credential helper for SERVER (and no other helper).
git_credentials() {
  export GIT_CONFIG_COUNT=2
  export GIT_CONFIG_KEY_0=credential.helper GIT_CONFIG_VALUE_0=
  export GIT_CONFIG_KEY_1="credential.$1.helper"
  # shellcheck disable=SC2016 # expanded by git's sh when it runs the helper
  export GIT_CONFIG_VALUE_1='!f() { test "$1" = get || return 0; echo username=x-access-token; echo "password=${GITHUB_TOKEN}"; }; f'
  export GIT_TERMINAL_PROMPT=0
}

# clone_repo URL DIR: a clone of URL in DIR. With REPO_MIRROR naming a bare
# mirror of it (warmpool mounts them read-only), objects are borrowed from the
# mirror (--reference-if-able: .git/objects/info/alternates) and only what
# the mirror lacks is fetched; else, or if that fails, a plain clone.
clone_repo() {
  if [ -n "${REPO_MIRROR:-}" ] && [ -f "$REPO_MIRROR/HEAD" ]; then
    echo "clone: $1 with the mirror $REPO_MIRROR" >&2
    if git clone --quiet --reference-if-able "$REPO_MIRROR" -- "$1" "$2" >&2; then
      return 0
    fi
    echo "clone: with the mirror failed; cloning without it" >&2
    rm -rf "$2"
  elif [ -n "${REPO_MIRROR:-}" ]; then
    echo "clone: no mirror at $REPO_MIRROR; a plain clone" >&2
  fi
  echo "clone: $1" >&2
  git clone --quiet -- "$1" "$2" >&2
}
