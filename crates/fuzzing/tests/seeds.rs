//! Writes the seed corpora under `fuzz/seeds/` (committed; small): specs and
//! frames encoded by the real encoders, webhook payloads from GitHub's
//! documented examples (tests/fixtures/github-webhooks), Markdown bodies,
//! config files, API requests. Run after a format change:
//!
//! ```text
//! cargo test -p warmpool-fuzzing --test seeds -- --ignored
//! ```

use serde_json::{json, Value};
use std::path::PathBuf;
use warmpool_gate::protocol::{encode_frame, ExitStatus, Frame, JobSpec};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("fuzz/seeds").join(target);
    std::fs::create_dir_all(&dir).expect("the seeds directory");
    std::fs::write(dir.join(name), bytes).expect("a seed written");
}

fn specs() {
    let specs = [
        JobSpec {
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo hi".to_vec()],
            env: vec![b"PATH=/bin".to_vec(), b"HOME".to_vec()],
            cwd: b"/work".to_vec(),
            stdin: None,
        },
        JobSpec {
            argv: vec![b"cat".to_vec()],
            env: Vec::new(),
            cwd: Vec::new(),
            stdin: Some(b"some input\n".to_vec()),
        },
        JobSpec {
            argv: vec![b"true".to_vec()],
            env: vec![b"A=1".to_vec(), b"B=".to_vec()],
            cwd: b"/".to_vec(),
            stdin: Some(Vec::new()),
        },
    ];
    for (i, s) in specs.iter().enumerate() {
        write("spec", &format!("spec-{i}"), &s.encode());
    }
    write(
        "spec",
        "memory-events",
        b"low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    );
    write("spec", "bad-magic", b"WPGX\x00\x02\x00\x00\x00\x00");
}

fn frames() {
    let run = [
        Frame::Ready("warmpool-gate/0.1.0".into()),
        Frame::Started(42),
        Frame::Stdout(b"hello\n".to_vec()),
        Frame::Stderr(b"warning\n".to_vec()),
        Frame::Signal(15),
        Frame::Oom(1),
        Frame::Exit(ExitStatus::Signal(9)),
    ];
    let all: Vec<u8> = run.iter().flat_map(encode_frame).collect();
    write("frames", "a-run", &all);
    let failed = [
        Frame::Ready("warmpool-gate/0.1.0".into()),
        Frame::StartFailed("no such file: nope".into()),
        Frame::Exit(ExitStatus::Code(127)),
    ];
    let all: Vec<u8> = failed.iter().flat_map(encode_frame).collect();
    write("frames", "start-failed", &all);
    write(
        "frames",
        "exit-0",
        &encode_frame(&Frame::Exit(ExitStatus::Code(0))),
    );
    let reused = [
        Frame::Exit(ExitStatus::Code(0)),
        Frame::Reset {
            ok: true,
            report: "processes: 1 killed, none left; /tmp: 1 entry removed".into(),
        },
        Frame::Ready("warmpool-gate/0.1.0".into()),
        Frame::Started(7),
        Frame::Exit(ExitStatus::Code(1)),
        Frame::Reset {
            ok: false,
            report: "process 9 (uid 0) is left".into(),
        },
    ];
    let all: Vec<u8> = reused.iter().flat_map(encode_frame).collect();
    write("frames", "reuse", &all);
    write("frames", "unknown-kind", b"\x0a\x00\x00\x00\x01x");
}

fn webhooks() {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/github-webhooks/api.github.com.json"))
            .expect("the webhook examples");
    let all: Value = serde_json::from_str(&text).expect("JSON");
    let example = |event: &str, action: Option<&str>| -> Value {
        all.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["name"] == event)
            .flat_map(|e| e["examples"].as_array().into_iter().flatten())
            .find(|x| action.is_none_or(|a| x["action"] == a))
            .cloned()
            .unwrap_or_else(|| panic!("an example of {event}"))
    };
    // The selector byte is an index into `warmpool_fuzzing::webhook::EVENTS`.
    let seed = |name: &str, which: u8, payload: &Value| {
        let mut bytes = vec![which];
        bytes.extend_from_slice(&serde_json::to_vec(payload).expect("JSON"));
        write("webhook", name, &bytes);
    };
    seed("ping", 0, &example("ping", None));
    let mut c = example("issue_comment", Some("created"));
    c["comment"]["body"] = json!("Looks good.\n\n@warmpool-bot: run the tests\n");
    seed("issue-comment", 1, &c);
    let mut r = example("pull_request_review_comment", Some("created"));
    r["comment"]["body"] = json!("> @warmpool-bot old\n\n`@warmpool-bot no`\n@Warmpool-Bot lint");
    seed("review-comment", 2, &r);
    let mut i = example("issues", Some("opened"));
    i["issue"]["body"] = json!("Steps:\n\n```\n@warmpool-bot no\n```\n\n@warmpool-bot reproduce");
    seed("issue-opened", 3, &i);
    seed("issue-edited", 3, &example("issues", Some("edited")));
    seed("push", 4, &json!({"ref": "refs/heads/main"}));
    let small = json!({
        "action": "created",
        "issue": {"number": 7, "pull_request": {"url": "x"}},
        "comment": {"id": 99, "body": "@warmpool-bot build", "user": {"login": "octocat"}},
        "repository": {"full_name": "octo-org/hello-world"}
    });
    seed("small-comment", 1, &small);
    let mut own = small.clone();
    own["comment"]["user"]["login"] = json!("warmpool-bot[bot]");
    seed("own-comment", 1, &own);
    // A well-formed signature header at the front, so that path runs too.
    let mut signed =
        b"\x01sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_vec();
    signed.extend_from_slice(b"Hello, World!");
    write("webhook", "signature", &signed);
}

fn mentions() {
    let bodies: [(&str, &str); 10] = [
        ("plain", "@warmpool-bot run the tests"),
        ("colon", "Hi!\n\n@Warmpool-Bot: lint --fix\nthanks"),
        ("fenced", "```\n@warmpool-bot no\n```\n@warmpool-bot yes"),
        ("indented", "    @warmpool-bot no\n\n@warmpool-bot yes"),
        ("quote", "> @warmpool-bot no\n\n@warmpool-bot yes"),
        (
            "html",
            "<blockquote>\n@warmpool-bot no\n</blockquote>\n<div>@warmpool-bot yes</div>",
        ),
        ("comment", "<!-- @warmpool-bot no -->\n@warmpool-bot yes"),
        ("inline", "`@warmpool-bot no` and @warmpool-bot yes"),
        ("table", "| a | b |\n|---|---|\n| @warmpool-bot yes | x |"),
        (
            "list",
            "- [ ] item\n- @warmpool-bot **yes** _now_\n\nmail me@warmpool-bot.com",
        ),
    ];
    for (name, body) in bodies {
        write("mention", name, body.as_bytes());
    }
}

fn configs() {
    let root = root();
    for (name, path) in [
        ("example", "examples/warmpool.toml"),
        ("cluster", "examples/cluster/warmpool.toml"),
    ] {
        let text = std::fs::read(root.join(path)).expect("an example config");
        write("config", name, &text);
    }
    write("config", "api", warmpool_fuzzing::api::CONFIG.as_bytes());
    write(
        "config",
        "github",
        br#"[server]
instance = "node-1"
listen = "0.0.0.0:7070"
max_body = "2m"
inline_output = "4k"
max_env = 16
max_env_bytes = "64k"
max_stdin = "1m"

[store]
url = "postgres://warmpool@db/warmpool"

[cluster]
node_timeout = "30s"
heartbeat = "5s"

[github]
bot_username = "warmpool-bot"
authorized_users = ["octocat"]
profile = "ci"
max_body = "1m"

[profiles.ci]
image = "ci:latest"
job_timeout = 600
min_idle = 1
max_idle = 2
max_containers = 4
max_wait = "1m"
memory = "1g"
cpus = 0.5
tmpfs = ["/tmp"]
labels = { team = "a" }
"#,
    );
}

fn api() {
    let requests: [(&str, &str); 6] = [
        ("minimal", "wait=true\n{\"profile\":\"shell\"}"),
        (
            "full",
            "state=running&profile=shell&limit=10\n{\"profile\":\"shell\",\"args\":[\"sh\",\"-c\",\"echo hi\"],\"env\":{\"A\":\"1\",\"B_2\":\"x\"},\"stdin\":\"input\",\"timeout\":\"30s\"}",
        ),
        ("secret", "stream=stderr&follow=true\n{\"profile\":\"shell\",\"env\":{\"API_TOKEN\":\"x\"}}"),
        ("unknown-profile", "stream=both\n{\"profile\":\"nope\",\"args\":[]}"),
        ("over", "limit=100000\n{\"profile\":\"noshell\",\"args\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\"]}"),
        ("timeout", "wait=maybe\n{\"profile\":\"shell\",\"timeout\":\"0.0001ms\"}"),
    ];
    for (name, r) in requests {
        write("api", name, r.as_bytes());
    }
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand after a format change"]
fn write_seeds() {
    specs();
    frames();
    webhooks();
    mentions();
    configs();
    api();
}
