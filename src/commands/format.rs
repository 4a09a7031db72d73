//! Human formatting: sizes, durations, times.

use chrono::{DateTime, Utc};

/// `1536` → `1.5 KiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `83.2` s → `1m23s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// Seconds between two times, when both are known.
pub fn between(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Option<f64> {
    Some((end? - start?).num_milliseconds() as f64 / 1000.0)
}

pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `--since`: `30m`, `12h`, `7d`, `2w`, or an RFC 3339 time.
///
/// # Errors
/// Anything else, with the accepted forms.
pub fn since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || format!("--since {text:?}: use 30m, 12h, 7d, 2w or an RFC 3339 time");
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 7 * 86_400,
        _ => return Err(bad()),
    };
    Ok(now - chrono::Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn since_accepts_relative_and_absolute_times() {
        let now = Utc::now();
        assert_eq!(since("2h", now).unwrap(), now - chrono::Duration::hours(2));
        assert_eq!(since("7d", now).unwrap(), now - chrono::Duration::days(7));
        assert!(since("2026-01-01T00:00:00Z", now).is_ok());
        assert!(since("yesterday", now).is_err());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(3.25), "3.2s");
        assert_eq!(duration(83.0), "1m23s");
        assert_eq!(duration(7260.0), "2h01m");
    }
}
