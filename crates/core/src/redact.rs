//! Hiding a job's secrets in its output over the whole stream, not chunk by chunk:
//! a secret split across writes or chunks, or cut by the output cap, never shows,
//! whole or as a prefix of [`MIN_HIDDEN_PREFIX`]+ bytes. Pure byte work: it knows
//! nothing of stores, followers or the cap's accounting (that is the caller's).
//!
//! What is hidden: every byte that lies inside an occurrence of any secret. Each
//! maximal run of such bytes becomes one [`REDACTED`], so nested secrets (the
//! longest match wins), overlapping ones (`abcd` and `cdef` in `abcdef`) and a
//! secret written twice in a row all become a single marker and no part of any of
//! them is left beside it. At the end of the stream, a tail that is a prefix of a
//! secret of at least [`MIN_HIDDEN_PREFIX`] bytes is hidden too.
//!
//! How: an Aho–Corasick automaton over the secrets. Its state is the longest tail
//! of the stream that is still a prefix of some secret; exactly those bytes are
//! held back, everything before them can no longer become part of a match and is
//! emitted, in runs, at the end of each push. Between pushes it keeps no more
//! bytes than the longest secret; time is linear in the input.

use std::collections::VecDeque;
use std::sync::Arc;

/// What a run of hidden bytes becomes.
pub const REDACTED: &[u8] = b"[redacted]";

/// A stream that ends (or is cut) inside a secret hides the held tail once it is
/// this long; a shorter one is shown (it tells next to nothing, and hiding every
/// trailing `a` of a stream because a secret starts with `a` would be absurd).
pub const MIN_HIDDEN_PREFIX: usize = 4;

/// Redacts one output stream as it comes. Build one per stream, or build one and
/// take [`fresh`](Redactor::fresh) ones from it (the automaton is shared).
///
/// ```
/// use warmpool_core::redact::Redactor;
/// let mut r = Redactor::new(["hunter2"]);
/// let mut out = Vec::new();
/// r.push(b"pass=hun", &mut out);
/// r.push(b"ter2!", &mut out);
/// r.finish(&mut out);
/// assert_eq!(out, b"pass=[redacted]!");
/// ```
#[derive(Debug)]
pub struct Redactor {
    matcher: Arc<Matcher>,
    /// The automaton's state: its string is exactly the held bytes.
    state: usize,
    /// Bytes seen but not yet emitted: the longest tail of the stream that is a
    /// prefix of a secret, so never longer than the longest secret.
    held: Vec<u8>,
    /// Absolute position in the stream of the first held byte.
    base: u64,
    /// Occurrences not yet emitted, `[start, end)` in absolute positions, merged
    /// where they overlap or touch: sorted, disjoint, with gaps between them.
    spans: VecDeque<(u64, u64)>,
    /// Bytes before this position lie inside an occurrence already being hidden.
    hide_until: u64,
    /// The last thing emitted was [`REDACTED`]: a hidden byte right after joins it.
    in_hidden: bool,
}

impl Redactor {
    /// A redactor for `secrets`; empty ones are ignored. With none left, every
    /// byte is passed through as it comes.
    pub fn new<I, S>(secrets: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        Redactor::start(Arc::new(Matcher::new(secrets)))
    }

    /// A redactor of the same secrets for a new stream (the automaton is shared;
    /// nothing of this one's stream is).
    pub fn fresh(&self) -> Redactor {
        Redactor::start(self.matcher.clone())
    }

    fn start(matcher: Arc<Matcher>) -> Redactor {
        Redactor {
            matcher,
            state: ROOT,
            held: Vec::new(),
            base: 0,
            spans: VecDeque::new(),
            hide_until: 0,
            in_hidden: false,
        }
    }

    /// These secrets hidden in a whole text at once (an error message), as in a
    /// stream that ends after it. This redactor's own stream is untouched.
    pub fn redact_whole(&self, data: &[u8]) -> Vec<u8> {
        let mut r = self.fresh();
        let mut out = Vec::with_capacity(data.len());
        r.push(data, &mut out);
        r.finish(&mut out);
        out
    }

    /// No secret to hide: output is passed through unchanged.
    pub fn is_empty(&self) -> bool {
        self.matcher.longest == 0
    }

    /// Take the next bytes of the stream; append to `out` what is safe to show
    /// now (each occurrence replaced). Holds back only the tail that could still
    /// grow into a secret, never more than the longest secret.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.is_empty() {
            out.extend_from_slice(data);
            return;
        }
        // Positions are absolute; `data` starts right after the held bytes.
        let data_base = self.base + self.held.len() as u64;
        let mut i = 0;
        while i < data.len() {
            if self.state == ROOT {
                // Nothing can be under way: skip bytes that start no secret.
                i += data[i..]
                    .iter()
                    .take_while(|&&b| !self.matcher.starts[b as usize])
                    .count();
                if i == data.len() {
                    break;
                }
            }
            self.state = self.matcher.next(self.state, data[i]);
            i += 1;
            let hit = self.matcher.nodes[self.state].hit;
            if hit > 0 {
                // The longest secret ending here; shorter ones ending here lie
                // inside it. It starts no earlier than the held bytes do.
                let end = data_base + i as u64;
                self.add_span(end - hit as u64, end);
            }
        }
        // Everything before the state's string can no longer become part of an
        // occurrence: emit it.
        let depth = self.matcher.nodes[self.state].depth as u64;
        let safe = data_base + data.len() as u64 - depth;
        self.emit_until(safe, data, out);
    }

    /// The stream has ended (or was cut): emit what is held, hiding it if it is a
    /// prefix of a secret at least [`MIN_HIDDEN_PREFIX`] bytes long. The redactor
    /// is then ready for a new stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        // The held bytes are the automaton state's string: a prefix of a secret.
        let end = self.base + self.held.len() as u64;
        if self.held.len() >= MIN_HIDDEN_PREFIX {
            self.add_span(self.base, end);
        }
        self.emit_until(end, &[], out);
        self.state = ROOT;
        self.in_hidden = false;
    }

    /// Record an occurrence. Ends come in increasing order, so only the last
    /// spans can meet the new one.
    fn add_span(&mut self, mut start: u64, end: u64) {
        while let Some(&(s, e)) = self.spans.back() {
            if e < start {
                break;
            }
            start = start.min(s);
            self.spans.pop_back();
        }
        self.spans.push_back((start, end));
    }

    /// Emit the stream (the held bytes, then `data`) up to the absolute position
    /// `safe`, and hold the rest.
    fn emit_until(&mut self, safe: u64, data: &[u8], out: &mut Vec<u8>) {
        let mut at = self.base;
        loop {
            while let Some(&(s, e)) = self.spans.front() {
                if s > at {
                    break;
                }
                self.hide_until = self.hide_until.max(e);
                self.spans.pop_front();
            }
            if at >= safe {
                break;
            }
            if at < self.hide_until {
                if !self.in_hidden {
                    out.extend_from_slice(REDACTED);
                    self.in_hidden = true;
                }
                at = self.hide_until.min(safe);
            } else {
                let next = self.spans.front().map_or(safe, |&(s, _)| s.min(safe));
                self.copy(at, next, data, out);
                self.in_hidden = false;
                at = next;
            }
        }
        // Hold what is left: the held bytes and `data` from `safe` on.
        let from = (safe - self.base) as usize;
        if from >= self.held.len() {
            let from = (from - self.held.len()).min(data.len());
            self.held.clear();
            self.held.extend_from_slice(&data[from..]);
        } else {
            self.held.drain(..from);
            self.held.extend_from_slice(data);
        }
        self.base = safe;
    }

    /// Append the stream's bytes `[from, to)` (absolute) from the held bytes and `data`.
    fn copy(&self, from: u64, to: u64, data: &[u8], out: &mut Vec<u8>) {
        let held = self.held.len();
        let (from, to) = ((from - self.base) as usize, (to - self.base) as usize);
        if from < held {
            out.extend_from_slice(&self.held[from..to.min(held)]);
        }
        if to > held {
            out.extend_from_slice(&data[from.max(held) - held..to - held]);
        }
    }
}

/// Redact a whole text at once (an error message, a stored field), by the same
/// rules as a stream that ends after it.
pub fn redact_all<I, S>(data: &[u8], secrets: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    Redactor::new(secrets).redact_whole(data)
}

const ROOT: usize = 0;

/// The Aho–Corasick automaton: a trie of the secrets with failure links.
#[derive(Debug)]
struct Matcher {
    nodes: Vec<Node>,
    /// Bytes that start some secret (the root's children), for the fast path.
    starts: [bool; 256],
    /// The root's transitions, dense: most failure chains end there.
    from_root: [usize; 256],
    longest: usize,
}

#[derive(Debug, Default)]
struct Node {
    /// Children, sorted by byte.
    next: Vec<(u8, usize)>,
    /// The node of the longest proper suffix of this node's string that is in the trie.
    fail: usize,
    /// Length of this node's string.
    depth: usize,
    /// Length of the longest secret that is a suffix of this node's string; 0: none.
    hit: usize,
}

impl Node {
    fn child(&self, byte: u8) -> Option<usize> {
        self.next
            .binary_search_by_key(&byte, |&(b, _)| b)
            .ok()
            .map(|i| self.next[i].1)
    }
}

impl Matcher {
    fn new<I, S>(secrets: I) -> Matcher
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut nodes = vec![Node::default()];
        let mut longest = 0;
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            longest = longest.max(secret.len());
            let mut at = ROOT;
            for &b in secret {
                at = match nodes[at].child(b) {
                    Some(n) => n,
                    None => {
                        let n = nodes.len();
                        let depth = nodes[at].depth + 1;
                        nodes.push(Node {
                            depth,
                            ..Node::default()
                        });
                        let next = &mut nodes[at].next;
                        let i = next.partition_point(|&(c, _)| c < b);
                        next.insert(i, (b, n));
                        n
                    }
                };
            }
            nodes[at].hit = secret.len();
        }
        // Failure links, breadth first: a node's link is shallower, so already set.
        let mut queue: VecDeque<usize> = nodes[ROOT].next.iter().map(|&(_, n)| n).collect();
        while let Some(u) = queue.pop_front() {
            let children = nodes[u].next.clone();
            for (b, v) in children {
                let mut f = nodes[u].fail;
                let link = loop {
                    if let Some(n) = nodes[f].child(b) {
                        break n;
                    }
                    if f == ROOT {
                        break ROOT;
                    }
                    f = nodes[f].fail;
                };
                nodes[v].fail = link;
                if nodes[v].hit == 0 {
                    nodes[v].hit = nodes[link].hit;
                }
                queue.push_back(v);
            }
        }
        let mut starts = [false; 256];
        let mut from_root = [ROOT; 256];
        for &(b, n) in &nodes[ROOT].next {
            starts[b as usize] = true;
            from_root[b as usize] = n;
        }
        Matcher {
            nodes,
            starts,
            from_root,
            longest,
        }
    }

    /// The state after `byte`. Amortised O(1): each failure step drops depth,
    /// and each byte adds at most one.
    fn next(&self, mut state: usize, byte: u8) -> usize {
        while state != ROOT {
            if let Some(n) = self.nodes[state].child(byte) {
                return n;
            }
            state = self.nodes[state].fail;
        }
        self.from_root[byte as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules written the slow, obvious way: mark every byte inside any
    /// occurrence, and the tail that is a prefix of a secret at least
    /// MIN_HIDDEN_PREFIX long; each run of marked bytes becomes one marker.
    fn reference(data: &[u8], secrets: &[&[u8]]) -> Vec<u8> {
        let mut hidden = vec![false; data.len()];
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            for i in 0..data.len() {
                if data[i..].starts_with(s) {
                    hidden[i..i + s.len()].iter_mut().for_each(|h| *h = true);
                }
            }
        }
        let tail = (0..=data.len())
            .filter(|&k| {
                secrets
                    .iter()
                    .any(|s| s.starts_with(&data[data.len() - k..]))
            })
            .max()
            .unwrap_or(0);
        if tail >= MIN_HIDDEN_PREFIX {
            let n = data.len();
            hidden[n - tail..].iter_mut().for_each(|h| *h = true);
        }
        let mut out = Vec::new();
        for (i, &b) in data.iter().enumerate() {
            if !hidden[i] {
                out.push(b);
            } else if i == 0 || !hidden[i - 1] {
                out.extend_from_slice(REDACTED);
            }
        }
        out
    }

    fn streamed(chunks: &[&[u8]], secrets: &[&[u8]]) -> Vec<u8> {
        let mut r = Redactor::new(secrets);
        let mut out = Vec::new();
        for c in chunks {
            r.push(c, &mut out);
        }
        r.finish(&mut out);
        out
    }

    fn byte_by_byte(data: &[u8], secrets: &[&[u8]]) -> Vec<u8> {
        let chunks: Vec<&[u8]> = data.chunks(1).collect();
        streamed(&chunks, secrets)
    }

    /// A small deterministic PRNG (xorshift64*): no crate, same splits every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn whole_secrets_are_replaced() {
        let out = redact_all(b"token=hunter2 and hunter2!", ["hunter2"]);
        assert_eq!(out, b"token=[redacted] and [redacted]!");
        assert_eq!(redact_all(b"nothing", ["hunter2"]), b"nothing");
    }

    #[test]
    fn a_secret_printed_byte_by_byte_never_shows() {
        let secret = b"ghp_0123456789abcdefXYZ";
        let mut text = b"before ".to_vec();
        text.extend_from_slice(secret);
        text.extend_from_slice(b" after\n");
        let out = byte_by_byte(&text, &[secret]);
        assert_eq!(out, b"before [redacted] after\n");
    }

    #[test]
    fn a_secret_in_two_writes_never_shows() {
        // printf %s "${S:0:10}"; printf "%s\n" "${S:10}"
        let s: &[u8] = b"s3cr3t-value-0123456789";
        let out = streamed(&[&s[..10], &s[10..], b"\n"], &[s]);
        assert_eq!(out, b"[redacted]\n");
    }

    #[test]
    fn every_split_point_gives_the_one_shot_result() {
        let secrets: &[&[u8]] = &[b"hunter2", b"ter2xyz", b"p4ss", b"aaab"];
        let text: &[u8] = b"hunter2 hunte hunter2xyz p4p4ss aaaab aaab hunter2hunter2 end";
        let want = reference(text, secrets);
        assert_eq!(redact_all(text, secrets), want);
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let out = streamed(&[&text[..i], &text[i..j], &text[j..]], secrets);
                assert_eq!(out, want, "split at {i} and {j}");
            }
        }
        for s in secrets {
            assert!(!contains(&want, s));
        }
    }

    #[test]
    fn random_splits_give_the_one_shot_result() {
        let alphabet = b"abc2-";
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            // Secrets over a small alphabet, so they overlap, nest and repeat.
            let secrets: Vec<Vec<u8>> = (0..1 + rng.below(4))
                .map(|_| {
                    (0..1 + rng.below(7))
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect()
                })
                .collect();
            let refs: Vec<&[u8]> = secrets.iter().map(|s| s.as_slice()).collect();
            let mut text: Vec<u8> = Vec::new();
            for _ in 0..rng.below(200) {
                if rng.below(5) == 0 {
                    text.extend_from_slice(&secrets[rng.below(secrets.len())]);
                } else {
                    text.push(alphabet[rng.below(alphabet.len())]);
                }
            }
            let want = reference(&text, &refs);
            assert_eq!(redact_all(&text, &refs), want, "seed {seed}");
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < text.len() {
                // Small pieces, larger ones, and empty pushes now and then.
                let most = if seed % 2 == 0 { 9 } else { 64 };
                let n = rng.below(most + 1).min(text.len() - at);
                chunks.push(&text[at..at + n]);
                at += n;
            }
            assert_eq!(streamed(&chunks, &refs), want, "seed {seed}");
        }
    }

    #[test]
    fn overlapping_secrets_hide_their_union() {
        let secrets: &[&[u8]] = &[b"abcd", b"cdef"];
        assert_eq!(byte_by_byte(b"xabcdefy", secrets), b"x[redacted]y");
        // A secret that overlaps itself.
        assert_eq!(byte_by_byte(b"x ababab y", &[b"abab"]), b"x [redacted] y");
    }

    #[test]
    fn nested_secrets_longest_wins() {
        let secrets: &[&[u8]] = &[b"secret", b"mysecretvalue"];
        let text = b"a mysecretvalue b secret c mysecretvalu";
        // The last word is a 12-byte prefix of the long one: hidden at the end.
        let want = b"a [redacted] b [redacted] c [redacted]";
        assert_eq!(byte_by_byte(text, secrets), want);
        assert_eq!(redact_all(text, secrets), want);
        // A shorter secret found while a longer one fails: "bc" inside "abcX".
        assert_eq!(
            byte_by_byte(b"abcX abcd", &[b"bc", b"abcd"]),
            b"a[redacted]X [redacted]"
        );
    }

    #[test]
    fn repeated_characters_are_not_missed() {
        // A matcher that restarts after a failed partial match misses these.
        assert_eq!(byte_by_byte(b"aaaab", &[b"aaab"]), b"a[redacted]");
        assert_eq!(byte_by_byte(b"aabaaab!", &[b"aaab"]), b"aab[redacted]!");
        assert_eq!(byte_by_byte(b"abababc", &[b"ababc"]), b"ab[redacted]");
    }

    #[test]
    fn a_stream_ending_inside_a_secret_hides_prefixes_of_four_or_more() {
        let s: &[&[u8]] = &[b"hunter2"];
        assert_eq!(byte_by_byte(b"pw: hunt", s), b"pw: [redacted]");
        assert_eq!(byte_by_byte(b"pw: hunte", s), b"pw: [redacted]");
        assert_eq!(byte_by_byte(b"pw: hun", s), b"pw: hun");
        assert_eq!(byte_by_byte(b"pw: h", s), b"pw: h");
        // The prefix counts, not the secret: a 3-byte tail of a long secret shows.
        assert_eq!(byte_by_byte(b"abc", &[b"abcdefgh"]), b"abc");
        // Right after a whole secret, the tail joins its marker.
        assert_eq!(byte_by_byte(b"hunter2hunt", s), b"[redacted]");
    }

    #[test]
    fn a_redactor_starts_over_after_finish() {
        let mut r = Redactor::new(["hunter2"]);
        let mut out = Vec::new();
        r.push(b"x hunte", &mut out);
        r.finish(&mut out);
        out.extend_from_slice(b"|cut|");
        r.push(b"r2 hunter2", &mut out);
        r.finish(&mut out);
        assert_eq!(out, b"x [redacted]|cut|r2 [redacted]");
    }

    #[test]
    fn fresh_redactors_share_secrets_not_streams() {
        let mut a = Redactor::new(["hunter2"]);
        let mut out = Vec::new();
        a.push(b"x hunt", &mut out);
        let mut b = a.fresh();
        b.push(b"er2", &mut out);
        assert_eq!(out, b"x er2");
        assert_eq!(a.redact_whole(b"e: hunter2"), b"e: [redacted]");
        a.push(b"er2 y", &mut out);
        a.finish(&mut out);
        assert_eq!(out, b"x er2[redacted] y");
    }

    #[test]
    fn binary_data_is_redacted_byte_exact() {
        let secret: &[u8] = &[0x00, 0xff, b'\n', 0x80, 0x00, 0x00, 0x7f];
        let mut rng = Rng(7);
        let mut text: Vec<u8> = (0..5000).map(|_| rng.next() as u8).collect();
        for at in [0, 100, 2500, 4993] {
            text[at..at + secret.len()].copy_from_slice(secret);
        }
        let want = reference(&text, &[secret]);
        assert!(!contains(&want, secret));
        assert_eq!(byte_by_byte(&text, &[secret]), want);
        let chunks: Vec<&[u8]> = text.chunks(61).collect();
        assert_eq!(streamed(&chunks, &[secret]), want);
    }

    #[test]
    fn no_secrets_pass_everything_through() {
        let r = Redactor::new([""; 0]);
        assert!(r.is_empty());
        let r = Redactor::new(["", ""]);
        assert!(r.is_empty());
        assert_eq!(redact_all(b"hunt", [""]), b"hunt");
        assert_eq!(streamed(&[b"a", b"", b"bc"], &[b""]), b"abc");
    }

    #[test]
    fn memory_is_bounded_by_the_longest_secret() {
        let mut r = Redactor::new(["aaaaaaab", "xyz"]);
        let mut out = Vec::new();
        for _ in 0..10_000 {
            r.push(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &mut out);
            assert!(r.held.len() < 8);
        }
        r.finish(&mut out);
        // The held tail was 7 `a`s, a prefix of the first secret: hidden.
        assert_eq!(out.len(), 10_000 * 39 - 7 + REDACTED.len());
    }
}
