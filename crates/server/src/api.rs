//! The API's plain values: requests parsed and validated into typed commands
//! before anything touches the store or the engine, and the JSON views of jobs
//! and pools. No I/O here.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use warmpool_core::config::{parse_duration, valid_env_name};
use warmpool_core::Config;
use warmpool_store::{ids::rfc3339, JobRecord, JobState, NewJob, StreamName};

/// `POST /v1/jobs` as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub profile: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub args: Vec<String>,
    pub stdin: Option<String>,
    pub timeout: Option<String>,
}

/// Why a request is refused (a 4xx).
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// Turn a submit request into a job the store can take, or say what is wrong.
pub fn parse_submit(req: SubmitRequest, config: &Config) -> Result<NewJob, BadRequest> {
    let profile = config.profiles.get(&req.profile).ok_or_else(|| {
        BadRequest(format!(
            "no profile \"{}\" (this server has: {})",
            req.profile,
            config.profile_names()
        ))
    })?;
    // The limits first: a job far over one is refused before its entries are read.
    config
        .server
        .limits
        .check(
            req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &req.args,
            req.stdin.as_ref().map(String::len),
        )
        .map_err(|e| BadRequest(e.to_string()))?;
    let secret: BTreeSet<&String> = profile.secret_env.iter().collect();
    let mut env = Vec::with_capacity(req.env.len());
    for (k, v) in req.env {
        if !valid_env_name(&k) {
            return Err(BadRequest(format!(
                "env: \"{k}\" is not a valid variable name (letters, digits, _; not starting with a digit)"
            )));
        }
        if v.contains('\0') {
            return Err(BadRequest(format!(
                "env: the value of {k} contains a NUL byte"
            )));
        }
        if secret.contains(&k) {
            return Err(BadRequest(format!(
                "env: {k} is one of the profile's secret_env; the server supplies it"
            )));
        }
        env.push((k, v));
    }
    if let Some(i) = req.args.iter().position(|a| a.contains('\0')) {
        return Err(BadRequest(format!("args[{i}] contains a NUL byte")));
    }
    let timeout_ms = match &req.timeout {
        Some(t) => {
            let d = parse_job_timeout(t)?;
            Some(d.as_millis().min(u128::from(u64::MAX)) as u64)
        }
        None => None,
    };
    Ok(NewJob {
        profile: req.profile,
        args: req.args,
        env,
        stdin: req.stdin.map(String::into_bytes),
        timeout_ms,
    })
}

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct JobView {
    pub id: String,
    pub profile: String,
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub warm: Option<bool>,
    /// The node (`[server] instance`) that runs or ran it; none while queued.
    #[serde(default)]
    pub node: Option<String>,
    /// The head of stdout as text (see [`inline_text`]): at most `[server]
    /// inline_output` bytes once JSON-encoded. All of it, exactly, is at
    /// `output_url`.
    pub stdout: String,
    pub stderr: String,
    /// How many bytes each stream holds (what `output_url` returns).
    #[serde(default)]
    pub stdout_bytes: u64,
    #[serde(default)]
    pub stderr_bytes: u64,
    /// The inline text is not the whole stream (a head, or none: the list shows
    /// no output); the rest is at `output_url`.
    #[serde(default)]
    pub stdout_cut: bool,
    #[serde(default)]
    pub stderr_cut: bool,
    /// `/v1/jobs/{id}/output`: the streams' exact bytes (`?stream=stderr`).
    #[serde(default)]
    pub output_url: String,
    /// The job wrote more than its profile's `output_limit`: the rest was dropped.
    pub truncated: bool,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl JobView {
    /// The view of a stored job and the head of its output read with it
    /// (empty if not asked for), shown in at most `inline` bytes a stream.
    pub fn new(r: JobRecord, output: [Vec<u8>; 2], inline: usize) -> JobView {
        let [stdout_bytes, stderr_bytes] = r.output_len;
        let (stdout, stdout_cut) = inline_text(&output[0], stdout_bytes, inline);
        let (stderr, stderr_cut) = inline_text(&output[1], stderr_bytes, inline);
        JobView {
            output_url: format!("/v1/jobs/{}/output", r.id),
            id: r.id,
            profile: r.profile,
            state: r.state.as_str().to_string(),
            exit_code: r.exit_code,
            signal: r.signal,
            warm: r.warm,
            node: r.node,
            stdout,
            stderr,
            stdout_bytes,
            stderr_bytes,
            stdout_cut,
            stderr_cut,
            truncated: r.truncated,
            error: r.error,
            created_at: rfc3339(r.created_ms),
            started_at: r.started_ms.map(rfc3339),
            finished_at: r.finished_ms.map(rfc3339),
        }
    }
}

/// A head of a stream (`head`, the first bytes of `total`) as text for
/// people, at most `max` bytes once JSON-encoded, and whether it is cut (not
/// the whole stream).
///
/// The bytes are decoded as UTF-8; each invalid sequence and each control
/// character other than `\n`, `\t` and `\r` (which JSON would escape six-fold,
/// `\u0000`) is shown as U+FFFD. The text ends on a character boundary where
/// the next character would pass `max` (counting the two-byte escapes of `"`,
/// `\\`, `\n`, `\t`, `\r`); a character cut at the head's end is left out. So no
/// byte of output costs more than 3 bytes of JSON and no stream more than
/// `max`, whatever the job wrote; the exact bytes are at `/output`.
pub fn inline_text(head: &[u8], total: u64, max: usize) -> (String, bool) {
    let is_prefix = (head.len() as u64) < total;
    let mut out = String::with_capacity(head.len().min(max));
    let mut budget = max;
    let mut chunks = head.utf8_chunks().peekable();
    while let Some(chunk) = chunks.next() {
        for c in chunk.valid().chars() {
            let c = if c.is_control() && !matches!(c, '\n' | '\t' | '\r') {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            };
            let cost = match c {
                '"' | '\\' | '\n' | '\t' | '\r' => 2,
                c => c.len_utf8(),
            };
            if cost > budget {
                return (out, true);
            }
            budget -= cost;
            out.push(c);
        }
        if chunk.invalid().is_empty() || (is_prefix && chunks.peek().is_none()) {
            continue;
        }
        if budget < 3 {
            return (out, true);
        }
        budget -= 3;
        out.push(char::REPLACEMENT_CHARACTER);
    }
    (out, is_prefix)
}

/// A job's `timeout` as the OpenAPI document gives it: a positive number (an
/// integer part of digits, then maybe `.` and more digits) and a unit, `ms`,
/// `s` (the default), `m` or `h`, with at most 12, 9, 7 or 5 significant digits
/// before the point (so under 1e9 s, the longest a duration may be). Exactly
/// what [`parse_job_timeout`] takes; the service's schemathesis run holds the
/// two together.
pub const TIMEOUT_PATTERN: &str = "^0*([1-9][0-9]{0,11}(\\.[0-9]*)?|\\.[0-9]*[1-9][0-9]*)ms$|^0*([1-9][0-9]{0,8}(\\.[0-9]*)?|\\.[0-9]*[1-9][0-9]*)s?$|^0*([1-9][0-9]{0,6}(\\.[0-9]*)?|\\.[0-9]*[1-9][0-9]*)m$|^0*([1-9][0-9]{0,4}(\\.[0-9]*)?|\\.[0-9]*[1-9][0-9]*)h$";

/// A job's `timeout` ([`TIMEOUT_PATTERN`]); under 1ms is 1ms (never 0, never
/// "no timeout").
pub fn parse_job_timeout(t: &str) -> Result<std::time::Duration, BadRequest> {
    let bad = || {
        BadRequest(format!(
            "timeout: \"{t}\" is not a timeout: a positive number and a unit, ms, s (the default), m or h, \
             under 1e12ms, 1e9s, 1e7m or 1e5h (\"500ms\", \"30s\", \"1.5m\")"
        ))
    };
    let (num, max_int) = if let Some(n) = t.strip_suffix("ms") {
        (n, 12)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 9)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 7)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 5)
    } else {
        (t, 9)
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (num, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let significant = int.trim_start_matches('0');
    let positive = !significant.is_empty() || frac.is_some_and(|f| f.bytes().any(|b| b != b'0'));
    if !digits(int) || !frac.is_none_or(digits) || significant.len() > max_int || !positive {
        return Err(bad());
    }
    let d = parse_duration(t).map_err(|_| bad())?;
    Ok(d.max(std::time::Duration::from_millis(1)))
}

/// The most jobs one list answers (`?limit=`, 1 to this; 100 when not given).
pub const LIST_LIMIT_MAX: usize = 1000;

/// `?limit=` of the job list.
pub fn parse_limit(limit: Option<u64>) -> Result<usize, BadRequest> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=LIST_LIMIT_MAX as u64).contains(&n) => Ok(n as usize),
        Some(n) => Err(BadRequest(format!(
            "limit: {n} is out of range (1 to {LIST_LIMIT_MAX})"
        ))),
    }
}

/// `?stream=stdout|stderr` (default stdout).
pub fn parse_stream(s: Option<&str>) -> Result<StreamName, BadRequest> {
    match s.unwrap_or("stdout") {
        "stdout" => Ok(StreamName::Stdout),
        "stderr" => Ok(StreamName::Stderr),
        other => Err(BadRequest(format!(
            "stream: \"{other}\" is not a stream (stdout or stderr)"
        ))),
    }
}

/// `?state=` of the job list.
pub fn parse_state(s: Option<&str>) -> Result<Option<JobState>, BadRequest> {
    match s {
        None => Ok(None),
        Some(s) => JobState::parse(s)
            .map(Some)
            .ok_or_else(|| BadRequest(format!("state: \"{s}\" is not a job state"))),
    }
}

/// One pool, as `GET /v1/pools` shows it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct PoolView {
    /// The node (`[server] instance`) whose pool this is.
    #[serde(default)]
    pub node: String,
    pub profile: String,
    pub image: String,
    pub idle: usize,
    pub busy: usize,
    pub starting: usize,
    pub queued: usize,
    pub target_idle: usize,
    pub hits: u64,
    pub misses: u64,
    /// Jobs a container may serve (the profile's `reuse`; 1: single use).
    #[serde(default = "one")]
    pub reuse: usize,
    /// Containers reset by their gate after a job and parked again.
    #[serde(default)]
    pub reused: u64,
    /// Resets that failed (the container was removed instead).
    #[serde(default)]
    pub reset_failed: u64,
    /// Jobs run per container parked, so far (claims / containers parked).
    #[serde(default)]
    pub jobs_per_container: f64,
    /// Time from a job's claim to a container in hand on this node, in
    /// milliseconds: the median, 90th and 99th percentiles since the server
    /// started (`null` before the first job; estimated within histogram buckets).
    #[serde(default)]
    pub claim_p50_ms: Option<f64>,
    #[serde(default)]
    pub claim_p90_ms: Option<f64>,
    #[serde(default)]
    pub claim_p99_ms: Option<f64>,
}

fn one() -> usize {
    1
}

/// One node, as `GET /v1/nodes` shows it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct NodeView {
    /// `[server] instance`.
    pub instance: String,
    /// Where its API is.
    pub address: String,
    /// When its last heartbeat was stored (RFC 3339).
    pub last_seen: String,
    pub joined: String,
    /// Seen within `[cluster] node_timeout` and not declared lost.
    pub alive: bool,
    /// Declared lost: its jobs were taken over; it must join again.
    pub lost: bool,
    /// Bumped at every join (a restart, or a return after being lost).
    pub generation: i64,
    /// Its pools as of its last heartbeat.
    pub pools: Vec<PoolView>,
}

impl NodeView {
    pub fn new(
        n: warmpool_store::NodeRecord,
        now_ms: i64,
        timeout: std::time::Duration,
    ) -> NodeView {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        NodeView {
            alive: !n.lost && now_ms.saturating_sub(n.last_seen_ms) <= timeout_ms,
            pools: serde_json::from_str(&n.pools).unwrap_or_default(),
            instance: n.node,
            address: n.address,
            last_seen: rfc3339(n.last_seen_ms),
            joined: rfc3339(n.joined_ms),
            lost: n.lost,
            generation: n.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "[profiles.echo]\nimage = \"x\"\nsecret_env = [\"TOKEN\"]\n[profiles.other]\nimage = \"y\"\n",
        )
        .unwrap()
    }

    fn req(json: &str) -> Result<NewJob, BadRequest> {
        let r: SubmitRequest = serde_json::from_str(json).map_err(|e| BadRequest(e.to_string()))?;
        parse_submit(r, &config())
    }

    #[test]
    fn a_good_request_becomes_a_job() {
        let j =
            req(r#"{"profile":"echo","env":{"K":"V"},"args":["a"],"stdin":"in","timeout":"30s"}"#)
                .unwrap();
        assert_eq!(j.profile, "echo");
        assert_eq!(j.env, vec![("K".to_string(), "V".to_string())]);
        assert_eq!(j.args, vec!["a"]);
        assert_eq!(j.stdin.as_deref(), Some(&b"in"[..]));
        assert_eq!(j.timeout_ms, Some(30_000));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let e = req(r#"{"profile":"nope"}"#).unwrap_err().0;
        assert!(
            e.contains("no profile \"nope\"") && e.contains("echo, other"),
            "{e}"
        );
        let e = req(r#"{"profile":"echo","env":{"A-B":"v"}}"#)
            .unwrap_err()
            .0;
        assert!(e.contains("A-B"), "{e}");
        let e = req(r#"{"profile":"echo","env":{"TOKEN":"v"}}"#)
            .unwrap_err()
            .0;
        assert!(e.contains("secret_env"), "{e}");
        let e = req(r#"{"profile":"echo","timeout":"soon"}"#).unwrap_err().0;
        assert!(e.contains("timeout"), "{e}");
        let e = req(r#"{"profile":"echo","surprise":1}"#).unwrap_err().0;
        assert!(e.contains("surprise"), "{e}");
        assert!(parse_stream(Some("stdin")).is_err());
        assert!(parse_state(Some("sleeping")).is_err());
        assert_eq!(parse_state(Some("queued")).unwrap(), Some(JobState::Queued));
    }

    #[test]
    fn timeouts_follow_the_documented_grammar() {
        let ms = |t: &str| parse_job_timeout(t).map(|d| d.as_millis()).map_err(|e| e.0);
        for (t, want) in [
            ("30s", 30_000),
            ("30", 30_000),
            ("500ms", 500),
            ("1.5m", 90_000),
            ("2h", 7_200_000),
            ("0.5", 500),
            (".5s", 500),
            ("1.", 1000),
            ("007s", 7000),
            ("999999999s", 999_999_999_000),
            ("999999999999.9ms", 999_999_999_999),
            ("99999h", 359_996_400_000),
            // Positive but under 1ms: 1ms, never 0 (no timeout).
            ("0.0001s", 1),
            (
                ".000000000000000000000000000000000000000000000000000001ms",
                1,
            ),
        ] {
            assert_eq!(ms(t), Ok(want), "{t}");
        }
        for t in [
            "",
            "0",
            "0s",
            "00.000ms",
            ".",
            "s",
            "ms",
            "-1s",
            " 30s",
            "30s ",
            "30 s",
            "1e3",
            "1.2.3s",
            "1000000000s",
            "1000000000000ms",
            "10000000m",
            "100000h",
            "1d",
            "30sec",
            "soon",
            "5s\n",
            "\u{0660}s",
        ] {
            let e = ms(t).unwrap_err();
            assert!(
                e.starts_with("timeout:") && e.contains("ms, s (the default), m or h"),
                "{t}: {e}"
            );
        }
    }

    #[test]
    fn a_list_limit_is_1_to_1000_and_a_state_is_a_state() {
        assert_eq!(parse_limit(None), Ok(100));
        assert_eq!(parse_limit(Some(1)), Ok(1));
        assert_eq!(parse_limit(Some(1000)), Ok(1000));
        for n in [0, 1001, u64::MAX] {
            let e = parse_limit(Some(n)).unwrap_err().0;
            assert_eq!(e, format!("limit: {n} is out of range (1 to 1000)"));
        }
        assert_eq!(parse_state(None), Ok(None));
        assert!(parse_state(Some("")).is_err());
    }

    #[test]
    fn an_empty_profile_is_an_unknown_profile() {
        let e = req(r#"{"profile":""}"#).unwrap_err().0;
        assert!(e.contains("no profile \"\""), "{e}");
    }

    /// The JSON string `text` encodes to, in bytes.
    fn json_len(text: &str) -> usize {
        serde_json::to_string(text).unwrap().len() - 2
    }

    #[test]
    fn inline_text_is_the_whole_stream_when_it_fits() {
        assert_eq!(inline_text(b"", 0, 10), (String::new(), false));
        assert_eq!(
            inline_text(b"hi\n\tthere\r\n", 11, 100),
            ("hi\n\tthere\r\n".into(), false)
        );
        assert_eq!(inline_text("héllo ✓".as_bytes(), 10, 100).0, "héllo ✓");
    }

    #[test]
    fn control_and_invalid_bytes_are_one_replacement_each() {
        let (t, cut) = inline_text(b"a\0b\x1b[0m\x7fc\xff\xfed", 12, 100);
        assert_eq!(t, "a\u{FFFD}b\u{FFFD}[0m\u{FFFD}c\u{FFFD}\u{FFFD}d");
        assert!(!cut);
        // Never a `\u0000` escape: three bytes of JSON a byte at most.
        let nul = vec![0u8; 1000];
        let (t, cut) = inline_text(&nul, 1000, 1 << 20);
        assert!(!cut);
        assert_eq!(json_len(&t), 3000);
        assert!(!serde_json::to_string(&t).unwrap().contains("\\u"));
    }

    #[test]
    fn the_text_is_cut_at_the_limit_as_json() {
        for (bytes, max) in [
            (vec![0u8; 10_000], 1000),
            (vec![b'"'; 10_000], 1001),
            (vec![b'\n'; 10_000], 999),
            ("✓é".repeat(3000).into_bytes(), 1000),
            (vec![0xffu8; 10_000], 1000),
            (b"abc".repeat(3000), 1000),
        ] {
            let (t, cut) = inline_text(&bytes, bytes.len() as u64, max);
            assert!(cut);
            let n = json_len(&t);
            assert!(n <= max && n + 4 > max, "{n} of {max}");
        }
        // Limit 0: nothing inline, cut when there is something.
        assert_eq!(inline_text(b"x", 1, 0), (String::new(), true));
        assert_eq!(inline_text(b"", 0, 0), (String::new(), false));
    }

    #[test]
    fn a_head_shorter_than_the_stream_is_cut_on_a_character() {
        // "é" is c3 a9: a head ending in c3 leaves it out rather than show U+FFFD.
        let (t, cut) = inline_text(b"ab\xc3", 10, 100);
        assert_eq!((t.as_str(), cut), ("ab", true));
        // The same bytes as the whole stream: an invalid end.
        let (t, cut) = inline_text(b"ab\xc3", 3, 100);
        assert_eq!((t.as_str(), cut), ("ab\u{FFFD}", false));
    }

    #[test]
    fn a_view_says_how_much_there_is_and_where() {
        let r = JobRecord {
            id: "j-9".into(),
            profile: "bb".into(),
            state: JobState::Succeeded,
            args: Vec::new(),
            timeout_ms: None,
            warm: Some(true),
            exit_code: Some(0),
            signal: None,
            truncated: false,
            error: None,
            node: None,
            cancel_requested: false,
            output_len: [10 << 20, 2],
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
        };
        let v = JobView::new(r, [vec![0u8; 1 << 20], b"e\n".to_vec()], 1 << 20);
        assert_eq!((v.stdout_bytes, v.stdout_cut), (10 << 20, true));
        assert_eq!(
            (v.stderr.as_str(), v.stderr_bytes, v.stderr_cut),
            ("e\n", 2, false)
        );
        assert_eq!(v.output_url, "/v1/jobs/j-9/output");
        let body = serde_json::to_string(&v).unwrap();
        assert!(body.len() < (1 << 20) + 4096, "{}", body.len());
    }

    #[test]
    fn jobs_over_the_limits_are_refused_naming_the_limit() {
        let mut c = Config::parse(
            "[server]\nmax_env = 3\nmax_env_bytes = 20\nmax_args = 2\nmax_args_bytes = 8\nmax_stdin = 4\n[profiles.echo]\nimage = \"x\"\n",
        )
        .unwrap();
        let parse = |c: &Config, json: String| {
            let r: SubmitRequest = serde_json::from_str(&json).unwrap();
            parse_submit(r, c)
        };
        // At every limit: 3 entries of 6 bytes ("Kn=vv" and its NUL) and 2 args of 4.
        let at = r#"{"profile":"echo","env":{"K1":"vv","K2":"vv","K3":"vv"},"args":["abc","def"],"stdin":"1234"}"#;
        let j = parse(&c, at.to_string()).unwrap();
        assert_eq!(j.env.len(), 3);
        let over = [
            (
                r#""env":{"A":"","B":"","C":"","D":""}"#,
                "env: 4 entries, over the limit of 3 ([server] max_env)",
            ),
            (
                r#""env":{"A":"12345678901234567890"}"#,
                "env: 23 bytes, over the limit of 20 ([server] max_env_bytes)",
            ),
            (
                r#""args":["a","b","c"]"#,
                "args: 3 arguments, over the limit of 2 ([server] max_args)",
            ),
            (
                r#""args":["abcdefgh"]"#,
                "args: 9 bytes, over the limit of 8 ([server] max_args_bytes)",
            ),
            (
                r#""stdin":"12345""#,
                "stdin: 5 bytes, over the limit of 4 ([server] max_stdin)",
            ),
        ];
        for (part, want) in over {
            let e = parse(&c, format!(r#"{{"profile":"echo",{part}}}"#))
                .unwrap_err()
                .0;
            assert_eq!(e, want);
        }
        // A count over its limit is refused even when the entries are bad too.
        let e = parse(
            &c,
            r#"{"profile":"echo","env":{"A-1":"","B":"","C":"","D":""}}"#.into(),
        )
        .unwrap_err()
        .0;
        assert!(e.contains("max_env"), "{e}");
        // The defaults: 4096 entries pass, 4097 do not.
        c.server.limits = Default::default();
        let env = |n: usize| {
            let m: BTreeMap<String, String> =
                (0..n).map(|i| (format!("K{i}"), "v".to_string())).collect();
            serde_json::json!({"profile": "echo", "env": m}).to_string()
        };
        assert_eq!(parse(&c, env(4096)).unwrap().env.len(), 4096);
        let e = parse(&c, env(4097)).unwrap_err().0;
        assert!(e.contains("4097 entries") && e.contains("max_env"), "{e}");
    }
}
