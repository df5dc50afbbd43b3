//! Job ids and timestamps as text: ids that sort by creation time, and RFC 3339
//! UTC with milliseconds for the API. Pure functions; no store, no clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `j` + 13 hex digits of the creation time in ms + 8 random hex digits: URL
/// safe, 22 characters, and sorted by creation time to the millisecond.
pub fn new_id(created_ms: i64) -> String {
    // Not cryptographic: ids are names, not secrets. A clash (two jobs in the
    // same millisecond drawing the same 32 bits) is retried by the store.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    let seed = nanos
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let random = splitmix64(seed) >> 32;
    let millis = u64::try_from(created_ms).unwrap_or(0) & 0xf_ffff_ffff_ffff;
    format!("j{millis:013x}{random:08x}")
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Unix milliseconds as RFC 3339 UTC, e.g. `2024-05-01T12:00:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time() {
        let early = new_id(1_700_000_000_000);
        let late = new_id(1_700_000_000_001);
        assert!(early < late);
        assert_eq!(&early[..14], "j0018bcfe56800");
        assert_eq!(early.len(), 22);
        assert!(early.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(new_id(5), new_id(5));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        // Absurd values still format.
        let _ = rfc3339(i64::MAX);
        let _ = rfc3339(i64::MIN);
    }
}
