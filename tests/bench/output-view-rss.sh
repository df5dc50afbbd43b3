#!/usr/bin/env bash
# Measures what viewing a job with large output costs the server: starts a
# real `warmpool serve` (busybox profile, test images), runs one job that
# writes 10 MiB of binary output, then GETs /v1/jobs/{id} from 8 clients at
# once, and reports the server's peak RSS (VmHWM in /proc/PID/status) over the
# GETs alone (the peak is reset after the job, /proc/PID/clear_refs) and over
# its whole life, with the size of one GET's body.
#
#   tests/bench/output-view-rss.sh [path/to/warmpool]   (default target/release/warmpool)
#
# Env: OUTPUT=zero (NUL bytes, JSON's worst case: \u0000 per byte; default)
#      or random (/dev/urandom); MIB=10; CLIENTS=8; ROUNDS=3 (GET rounds).
# Needs docker, curl, and tests/images/build.sh's images (built here if missing).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${1:-$root/target/release/warmpool}"
OUTPUT="${OUTPUT:-zero}"
MIB="${MIB:-10}"
CLIENTS="${CLIENTS:-8}"
ROUNDS="${ROUNDS:-3}"
[ -x "$bin" ] || { echo "no warmpool binary at $bin (cargo build --release -p warmpool)" >&2; exit 1; }
case "$OUTPUT" in zero | random) ;; *) echo "OUTPUT is zero or random" >&2; exit 1 ;; esac
bash "$root/tests/images/build.sh" >/dev/null

dir="$(mktemp -d)"
label="rss-bench-$$"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
cat >"$dir/warmpool.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
data_dir = "$dir/data"
instance = "$label"
shutdown_grace = "5s"

[profiles.bb]
image = "warmpool-test/busybox:latest"
network = "none"
output_limit = "$((MIB + 1))m"
labels = { "warmpool-test-run" = "$label" }
TOML

"$bin" serve --config "$dir/warmpool.toml" </dev/null >/dev/null 2>"$dir/server.log" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  docker ps -aq --filter "label=warmpool-test-run=$label" | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 300); do
  curl -sf "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  sleep 0.1
done
hwm() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }

src=/dev/zero
[ "$OUTPUT" = random ] && src=/dev/urandom
bytes=$((MIB * 1024 * 1024))
curl -sS -o "$dir/job.json" -X POST "$base/v1/jobs?wait=true" -H 'content-type: application/json' \
  -d "{\"profile\":\"bb\",\"args\":[\"head\",\"-c\",\"$bytes\",\"$src\"]}"
id="$(head -c 100 "$dir/job.json" | LC_ALL=C grep -o '^{"id":"[^"]*"' | cut -d'"' -f4)"
[ -n "$id" ] || { echo "no job id in: $(head -c 300 "$dir/job.json")" >&2; exit 1; }
stored="$(curl -sS -o "$dir/output" -w '%{size_download}' "$base/v1/jobs/$id/output")"
[ "$stored" = "$bytes" ] || { echo "/output has $stored bytes, not $bytes: $(head -c 300 "$dir/output")" >&2; exit 1; }
after_job_hwm="$(hwm)"
after_job_rss="$(rss)"

# From here the peak is the GETs' (writing 5 resets VmHWM to the current RSS).
echo 5 >"/proc/$pid/clear_refs"
for _ in $(seq "$ROUNDS"); do
  gets=()
  for c in $(seq "$CLIENTS"); do
    curl -sS -o /dev/null -w '%{size_download}\n' "$base/v1/jobs/$id" >>"$dir/size.$c" &
    gets+=($!)
  done
  wait "${gets[@]}"
done
body="$(cat "$dir"/size.* | sort -n | tail -1)"
gets_hwm="$(hwm)"

echo "warmpool: $bin"
echo "job: $MIB MiB of $OUTPUT bytes on stdout ($stored bytes at /output)"
echo "GET /v1/jobs/{id}: $body bytes of JSON"
echo "server RSS after the job: $after_job_rss MB; peak through the job: $after_job_hwm MB"
echo "server peak RSS over $ROUNDS rounds of $CLIENTS concurrent GETs: $gets_hwm MB"
