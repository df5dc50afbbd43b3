#!/bin/sh
# warmpool-agent, the test stand-in for images/claude-code (whose image needs a
# registry to build): busybox sh, same job contract, no git and no Claude.
#
# In: REPO_FULL_NAME ISSUE_NUMBER IS_PULL_REQUEST COMMAND OPERATION_TYPE
#     BOT_USERNAME GITHUB_TOKEN ANTHROPIC_API_KEY (required), BRANCH_NAME (may
#     be empty).
# Out, on success (exit 0), exactly two lines on stdout:
#     Answer for <REPO_FULL_NAME>#<ISSUE_NUMBER> (pr=<IS_PULL_REQUEST>, branch=<BRANCH_NAME>, op=<OPERATION_TYPE>): <COMMAND>
#     token-length: <length of GITHUB_TOKEN> sha256: <its sha256's first 16 hex digits>
# and one line on stderr. The secrets' values are never written.
# Exit 2: a variable is missing (or malformed), with a message on stderr.
# COMMAND containing "sleep": sleeps 30 s first (for timeouts).
# COMMAND containing "fail": "failing as asked" on stderr, nothing on stdout, exit 1.
prog=warmpool-agent

missing=
for v in REPO_FULL_NAME ISSUE_NUMBER IS_PULL_REQUEST COMMAND OPERATION_TYPE \
  BOT_USERNAME GITHUB_TOKEN ANTHROPIC_API_KEY; do
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
  default | review) ;;
  *) echo "$prog: OPERATION_TYPE: \"$OPERATION_TYPE\" is not one of: default, review" >&2; exit 2 ;;
esac

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
