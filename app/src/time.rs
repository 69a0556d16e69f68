//! Times as people read them: "3 minutes ago" (with the exact time and zone on hover)
//! and durations like "2m 14s". Relative times are computed against the "now" the
//! server sent with the page, so the server's render and the browser's hydration say
//! the same thing.

/// Seconds since the Unix epoch of Usher's RFC 3339 UTC text (`2026-11-28T03:24:12.123Z`).
pub fn epoch_seconds(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// "45s", "2m 14s", "1h 3m", "2d 4h".
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// "just now", "5 seconds ago", "3 minutes ago", "2 hours ago", "4 days ago".
pub fn ago(now: &str, t: &str) -> String {
    let (Some(now), Some(t)) = (epoch_seconds(now), epoch_seconds(t)) else {
        return t.to_string();
    };
    let s = (now - t).max(0);
    let unit = |n: i64, one: &str| format!("{n} {one}{} ago", if n == 1 { "" } else { "s" });
    match s {
        0..5 => "just now".into(),
        5..60 => unit(s, "second"),
        60..3600 => unit(s / 60, "minute"),
        3600..86_400 => unit(s / 3600, "hour"),
        _ => unit(s / 86_400, "day"),
    }
}

/// The exact time with its zone, for a tooltip: `2026-11-28 03:24:12 UTC`.
pub fn exact(t: &str) -> String {
    format!("{} UTC", t.get(..19).map(|s| s.replace('T', " ")).unwrap_or_else(|| t.to_string()))
}

/// How long something ran: from `started` to `finished`, or to `now` while it runs.
pub fn took(now: &str, started: Option<&str>, finished: Option<&str>) -> Option<String> {
    let start = epoch_seconds(started?)?;
    let end = epoch_seconds(finished.unwrap_or(now))?;
    Some(duration(end - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_of_known_times() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(epoch_seconds("2026-11-28T03:24:12.123Z"), Some(1_795_836_252));
        assert_eq!(epoch_seconds("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        assert_eq!(epoch_seconds("nonsense"), None);
    }

    #[test]
    fn people_read_these() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(134), "2m 14s");
        assert_eq!(duration(3780), "1h 3m");
        let now = "2026-11-28T03:24:12.000Z";
        assert_eq!(ago(now, "2026-11-28T03:24:11.000Z"), "just now");
        assert_eq!(ago(now, "2026-11-28T03:21:12.000Z"), "3 minutes ago");
        assert_eq!(ago(now, "2026-11-28T02:24:12.000Z"), "1 hour ago");
        assert_eq!(took(now, Some("2026-11-28T03:22:00.000Z"), None).as_deref(), Some("2m 12s"));
        assert_eq!(exact(now), "2026-11-28 03:24:12 UTC");
    }
}
