#!/usr/bin/env bash
# The warm-mirror bench: time from hand-over to a checked-out working tree of
# the generated repository (tests/bench/gen-repo.sh, 105 MiB of history),
# through warmpool (a bot profile job on a parked container running
# images/claude-code/clone.sh in warmpool-test/git), without and with the
# mirror, alternated, RUNS times each (default 5); prints medians and ratio.
#
#   tests/bench/mirror-clone.sh            # RUNS=9 tests/bench/mirror-clone.sh
#
# Needs what the test suite needs: a Docker engine, git, python3, busybox-static.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/images/build.sh >/dev/null
tests/bench/gen-repo.sh >/dev/null
exec cargo test -q -p warmpool --test github_mirror bench_mirror_clone -- \
  --ignored --nocapture --test-threads 1
