//! Time formatting in the shapes nats-server uses: RFC 3339 timestamps, its
//! log-line timestamps and its compact uptime strings (`1d2h3m4s`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Civil date (UTC) from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    nanos: u32,
}

fn parts(t: SystemTime) -> Parts {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Parts {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        nanos: d.subsec_nanos(),
    }
}

/// `2006-01-02T15:04:05.999999999Z`, as Go marshals a UTC `time.Time`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let p = parts(t);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        p.year, p.month, p.day, p.hour, p.minute, p.second
    );
    if p.nanos > 0 {
        let frac = format!("{:09}", p.nanos);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// `2006/01/02 15:04:05.000000`, the timestamp of nats-server's log lines.
pub(crate) fn log_stamp(t: SystemTime) -> String {
    let p = parts(t);
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
        p.year,
        p.month,
        p.day,
        p.hour,
        p.minute,
        p.second,
        p.nanos / 1000
    )
}

/// nats-server's uptime format: `3d4h5m6s`, leading zero units left out.
pub(crate) fn uptime(d: Duration) -> String {
    let mut secs = d.as_secs();
    let years = secs / (365 * 86_400);
    secs %= 365 * 86_400;
    let days = secs / 86_400;
    secs %= 86_400;
    let hours = secs / 3600;
    secs %= 3600;
    let minutes = secs / 60;
    secs %= 60;
    let mut out = String::new();
    let mut started = false;
    for (value, unit) in [(years, 'y'), (days, 'd'), (hours, 'h'), (minutes, 'm')] {
        if value > 0 || started {
            out.push_str(&value.to_string());
            out.push(unit);
            started = true;
        }
    }
    out.push_str(&secs.to_string());
    out.push('s');
    out
}

/// Go's `time.Duration.String()` for the small durations `/connz` shows (`rtt`).
pub(crate) fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".into()
    } else if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        format!("{}µs", trim_float(nanos as f64 / 1e3))
    } else if nanos < 1_000_000_000 {
        format!("{}ms", trim_float(nanos as f64 / 1e6))
    } else {
        format!("{}s", trim_float(nanos as f64 / 1e9))
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_707_404) + Duration::from_micros(123_400);
        assert_eq!(rfc3339(t), "2026-11-26T15:36:44.1234Z");
        assert_eq!(log_stamp(t), "2026/11/26 15:36:44.123400");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(uptime(Duration::from_secs(5)), "5s");
        assert_eq!(uptime(Duration::from_secs(86_400 + 61)), "1d0h1m1s");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(250)), "250ns");
    }
}
