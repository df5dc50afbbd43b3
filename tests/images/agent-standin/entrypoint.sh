#!/bin/sh
# warmpool-agent, the test stand-in for images/claude-code (whose image needs a
# registry to build): busybox sh, same job contract, no git and no Claude.
#
# In: REPO_FULL_NAME ISSUE_NUMBER IS_PULL_REQUEST COMMAND OPERATION_TYPE
#     BOT_USERNAME GITHUB_TOKEN ANTHROPIC_API_KEY (required), BRANCH_NAME (may
#     be empty). OPERATION_TYPE is default, review, pr-review or auto-tag.
# auto-tag: GITHUB_TOKEN must NOT be set (exit 3 if it is); stdin is
#     {"body","labels","title"} JSON; stdout is some text and a JSON array of
#     labels chosen from the title's words: "crash"/"error" -> bug,
#     "readme"/"docs" -> documentation, and always "not-a-repo-label" (a label
#     no repository has). A title containing "fail": exit 1, nothing chosen.
# pr-review: needs HEAD_SHA; prints "Review of <repo>#<n> at <HEAD_SHA>
#     (branch=<BRANCH_NAME>): looks fine" and the token-length line.
# Otherwise, on success (exit 0), exactly two lines on stdout:
#     Answer for <REPO_FULL_NAME>#<ISSUE_NUMBER> (pr=<IS_PULL_REQUEST>, branch=<BRANCH_NAME>, op=<OPERATION_TYPE>): <COMMAND>
#     token-length: <length of GITHUB_TOKEN> sha256: <its sha256's first 16 hex digits>
# and one line on stderr. The secrets' values are never written.
# Exit 2: a variable is missing (or malformed), with a message on stderr.
# COMMAND containing "sleep": sleeps 30 s first (for timeouts).
# COMMAND containing "fail": "failing as asked" on stderr, nothing on stdout, exit 1.
prog=warmpool-agent

required="REPO_FULL_NAME ISSUE_NUMBER IS_PULL_REQUEST COMMAND OPERATION_TYPE BOT_USERNAME ANTHROPIC_API_KEY"
case ${OPERATION_TYPE:-} in
  auto-tag)
    # Least privilege: labelling needs no token, and must not get one.
    if [ -n "${GITHUB_TOKEN+set}" ]; then
      echo "$prog: auto-tag got a GITHUB_TOKEN; it must not" >&2
      exit 3
    fi ;;
  pr-review) required="$required GITHUB_TOKEN HEAD_SHA" ;;
  *) required="$required GITHUB_TOKEN" ;;
esac
missing=
for v in $required; do
  eval "val=\${$v:-}"
  [ -n "$val" ] || missing="$missing $v"
done
if [ -n "$missing" ]; then
  echo "$prog: missing required variable(s):$missing (GITHUB_TOKEN and ANTHROPIC_API_KEY come from the profile's secret_env, the others from the job)" >&2
  exit 2
fi
case $ISSUE_NUMBER in
  '' | 0* | *[!0-9]*) echo "$prog: ISSUE_NUMBER: \"$ISSUE_NUMBER\" is not a positive number" >&2; exit 2 ;;
esac
case $IS_PULL_REQUEST in
  true | false) ;;
  *) echo "$prog: IS_PULL_REQUEST: \"$IS_PULL_REQUEST\" is not true or false" >&2; exit 2 ;;
esac
case $OPERATION_TYPE in
  default | review | pr-review | auto-tag) ;;
  *) echo "$prog: OPERATION_TYPE: \"$OPERATION_TYPE\" is not one of: default, review, pr-review, auto-tag" >&2; exit 2 ;;
esac

if [ "$OPERATION_TYPE" = auto-tag ]; then
  input=$(cat)
  # serde_json writes keys in order: title is the last one.
  title=$(printf '%s' "$input" | sed -n 's/.*"title":"\(.*\)"}$/\1/p' | tr 'A-Z' 'a-z')
  echo "$prog (stand-in): labelling $REPO_FULL_NAME#$ISSUE_NUMBER: $title" >&2
  case $title in
    *fail*) echo "failing as asked" >&2; exit 1 ;;
  esac
  chosen=
  case $title in *crash* | *error*) chosen="$chosen\"bug\", " ;; esac
  case $title in *readme* | *docs*) chosen="$chosen\"documentation\", " ;; esac
  printf 'Labels that fit [my choice]:\n[%s"not-a-repo-label"]\nDone.\n' "$chosen"
  exit 0
fi
if [ "$OPERATION_TYPE" = pr-review ]; then
  echo "$prog (stand-in): reviewing $REPO_FULL_NAME#$ISSUE_NUMBER at $HEAD_SHA" >&2
  printf 'Review of %s#%s at %s (branch=%s): looks fine\n' \
    "$REPO_FULL_NAME" "$ISSUE_NUMBER" "$HEAD_SHA" "${BRANCH_NAME:-}"
  printf 'token-length: %s\n' "${#GITHUB_TOKEN}"
  exit 0
fi

case $COMMAND in
  *sleep*) sleep 30 ;;
esac
case $COMMAND in
  *fail*) echo "failing as asked" >&2; exit 1 ;;
esac

echo "$prog (stand-in): answering $REPO_FULL_NAME#$ISSUE_NUMBER as $BOT_USERNAME" >&2
printf 'Answer for %s#%s (pr=%s, branch=%s, op=%s): %s\n' \
  "$REPO_FULL_NAME" "$ISSUE_NUMBER" "$IS_PULL_REQUEST" "${BRANCH_NAME:-}" \
  "$OPERATION_TYPE" "$COMMAND"
printf 'token-length: %s sha256: %s\n' "${#GITHUB_TOKEN}" \
  "$(printf %s "$GITHUB_TOKEN" | sha256sum | cut -c1-16)"
