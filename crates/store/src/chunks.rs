//! Shared by the backends: a stream's bytes `[offset, end)` put together from
//! its stored chunks (each stored at its byte offset), and the SQL list of the
//! states a lifecycle rule allows.

use warmpool_core::lifecycle::JobState;

/// The bytes `[offset, end)` of one stream, from its chunks in order.
pub(crate) struct Assembly {
    offset: u64,
    end: u64,
    next: Option<u64>,
    out: Vec<u8>,
}

impl Assembly {
    pub(crate) fn new(offset: u64, end: u64) -> Assembly {
        Assembly {
            offset,
            end,
            next: None,
            out: Vec::new(),
        }
    }

    /// The next chunk, stored at byte `start`; `Err(detail)` when it does not
    /// follow the one before (the stream is damaged).
    pub(crate) fn push(&mut self, start: u64, data: &[u8], stream: &str) -> Result<(), String> {
        if let Some(expected) = self.next {
            if start != expected {
                return Err(format!(
                    "{stream} has a chunk at byte {start} where byte {expected} was expected"
                ));
            }
        }
        let chunk_end = start + data.len() as u64;
        self.next = Some(chunk_end);
        if chunk_end <= self.offset {
            return Ok(());
        }
        let from = usize::try_from(self.offset.saturating_sub(start)).unwrap_or(usize::MAX);
        let to = usize::try_from(self.end.min(chunk_end) - start).unwrap_or(data.len());
        if let Some(part) = data.get(from..to) {
            self.out.extend_from_slice(part);
        }
        Ok(())
    }

    pub(crate) fn bytes(self) -> Vec<u8> {
        self.out
    }
}

/// `'queued', 'running'`: the states for which `rule` holds, as an SQL list, so
/// the stores' conditional updates are the core's rules.
pub(crate) fn states_where(rule: impl Fn(JobState) -> bool) -> String {
    let names: Vec<String> = JobState::ALL
        .into_iter()
        .filter(|s| rule(*s))
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_across_chunks() {
        let mut a = Assembly::new(2, 7);
        a.push(0, b"abc", "stdout").unwrap();
        a.push(3, b"defg", "stdout").unwrap();
        a.push(7, b"hij", "stdout").unwrap();
        assert_eq!(a.bytes(), b"cdefg");
        let mut gap = Assembly::new(0, 10);
        gap.push(0, b"ab", "stderr").unwrap();
        let e = gap.push(5, b"x", "stderr").unwrap_err();
        assert!(e.contains("byte 5 where byte 2"), "{e}");
    }

    #[test]
    fn states_as_sql() {
        assert_eq!(states_where(|s| !s.is_final()), "'queued', 'running'");
    }
}
