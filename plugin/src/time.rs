//! Validity timestamps: `YYYYMMDDHHMMSS` in UTC (as RRSIG presents them) or plain seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How far back a new validity window starts, by default, against clients whose clocks are
/// behind (DNSSEC signers backdate inception the same way).
pub const DEFAULT_BACKDATE_SECS: u64 = 3600;

/// A validity window of `len` seconds from `now`, starting `backdate` seconds before it:
/// (not-before, not-after), clamped to the 32-bit range of the record.
pub fn window(now: u64, len: u64, backdate: u64) -> (u32, u32) {
    let clamp = |t: u64| u32::try_from(t).unwrap_or(u32::MAX);
    (
        clamp(now.saturating_sub(backdate)),
        clamp(now.saturating_add(len)),
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYYMMDDHHMMSS` of a timestamp.
pub fn format(t: u32) -> String {
    let t = i64::from(t);
    let (y, mo, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}{mo:02}{d:02}{:02}{:02}{:02}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Parse `YYYYMMDDHHMMSS` (UTC) or a plain number of seconds since the epoch.
pub fn parse(s: &str) -> Result<u32, String> {
    let bad = || format!("`{s}` is not a time (YYYYMMDDHHMMSS in UTC, or seconds since 1970)");
    if !s.bytes().all(|b| b.is_ascii_digit()) || s.is_empty() {
        return Err(bad());
    }
    if s.len() != 14 {
        return s.parse::<u32>().map_err(|_| bad());
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().map_err(|_| bad());
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
    );
    if !(1..=12).contains(&mo) || d == 0 || d > 31 || h > 23 || mi > 59 || se > 59 {
        return Err(bad());
    }
    let days = days_from_civil(i64::from(y), mo, d);
    if civil_from_days(days) != (i64::from(y), mo, d) {
        return Err(bad());
    }
    let t = days * 86_400 + i64::from(h * 3600 + mi * 60 + se);
    u32::try_from(t).map_err(|_| format!("`{s}` is outside 1970..2106"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for t in [0u32, 1_700_000_000, 1_893_456_000, u32::MAX] {
            assert_eq!(parse(&format(t)).unwrap(), t);
        }
        assert_eq!(format(1_700_000_000), "20231114221320");
        assert_eq!(parse("20240229000000").unwrap(), 1_709_164_800);
        assert!(parse("20230229000000").is_err());
        assert!(parse("2024-01-01").is_err());
        assert_eq!(parse("12345").unwrap(), 12345);
    }
}
