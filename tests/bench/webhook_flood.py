#!/usr/bin/env python3
"""Memory under a flood of unauthenticated webhook posts (issue: hardening).

Starts `warmpool serve` (the binary given, default target/release/warmpool)
with a [github] section on a free port, then sends N concurrent 24 MiB POSTs
to /webhooks/github with a wrong signature, while a signed delivery (an
authorized mention) is sent every half second. Prints the server's peak RSS
(VmHWM), what the flood got, and what the signed deliveries got.

    bash tests/images/build.sh && cargo build --release
    python3 tests/bench/webhook_flood.py [--bin target/release/warmpool] [--posts 32]

Needs only Python's standard library; the GitHub API is not reached (the
bot's reactions and comments fail in the background, as they may).
"""
import argparse, hashlib, hmac, http.client, json, os, socket, subprocess, sys, tempfile, threading, time

SECRET = b"flood-test-secret"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024  # MiB
    return 0


def post(port, body, signature, delivery):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issue_comment",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature,
        "Content-Length": str(len(body)),
    }
    try:
        conn.request("POST", "/webhooks/github", body=body, headers=headers)
        return conn.getresponse().status
    except Exception as e:  # a server that closes early is an answer too
        return f"error: {e.__class__.__name__}"
    finally:
        conn.close()


def mention(n):
    return json.dumps({
        "action": "created",
        "issue": {"number": 1, "title": "t", "body": "", "user": {"login": "alice"}},
        "comment": {"id": 1000 + n, "body": "@FloodBot hello", "user": {"login": "alice"}},
        "repository": {"full_name": "alice/repo", "name": "repo", "owner": {"login": "alice"}},
        "sender": {"login": "alice"},
    }).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/warmpool")
    ap.add_argument("--posts", type=int, default=32)
    ap.add_argument("--mib", type=int, default=24)
    args = ap.parse_args()
    port = free_port()
    work = tempfile.mkdtemp(prefix="warmpool-flood-")
    cfg = os.path.join(work, "warmpool.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{port}"
data_dir = "{work}/data"
instance = "flood-{os.getpid()}"

[profiles.agent]
image = "warmpool-test/busybox:latest"
network = "none"
min_idle = 0

[github]
bot_username = "FloodBot"
authorized_users = ["alice"]
profile = "agent"
api_url = "http://127.0.0.1:9"
""")
    env = dict(os.environ, GITHUB_WEBHOOK_SECRET=SECRET.decode(), GITHUB_TOKEN="t")
    server = subprocess.Popen([args.bin, "serve", "--config", cfg], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "log"), "w"))
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        start_rss = rss(server.pid, "VmRSS")
        big = b"x" * (args.mib << 20)
        bad = "sha256=" + "0" * 64
        flood_results = []
        def flood(i):
            flood_results.append(post(port, big, bad, f"flood-{i}"))
        threads = [threading.Thread(target=flood, args=(i,)) for i in range(args.posts)]
        started = time.time()
        for t in threads:
            t.start()
        signed, n = [], 0
        while any(t.is_alive() for t in threads):
            body = mention(n)
            sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
            t0 = time.time()
            signed.append((post(port, body, sig, f"signed-{n}"), round((time.time() - t0) * 1000)))
            n += 1
            time.sleep(0.5)
        took = time.time() - started
        peak = rss(server.pid, "VmHWM")
        print(f"warmpool webhook flood: {args.posts} concurrent {args.mib} MiB posts with a wrong signature")
        print(f"server RSS at start {start_rss} MiB, peak {peak} MiB (goal < 150 MiB: {'met' if peak < 150 else 'MISSED'})")
        counts = {}
        for r in flood_results:
            counts[r] = counts.get(r, 0) + 1
        print(f"flood answers: {counts} in {took:.1f} s")
        ok = sum(1 for s, _ in signed if s == 202)
        print(f"signed deliveries meanwhile: {ok} of {len(signed)} got 202; latencies ms {[ms for _, ms in signed]}")
        return 0 if peak < 150 and ok == len(signed) else 1
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
