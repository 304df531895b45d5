//! Instants as nats-server writes them: Go's `time.Time` in RFC 3339 with
//! nanoseconds (`"2024-01-01T00:00:00.123456789Z"`), trailing zeros of the
//! fraction trimmed, always in UTC.
//!
//! The civil-date arithmetic is done here (days from and to year/month/day,
//! proleptic Gregorian calendar) so the crate needs no date library.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;
/// Seconds from the Unix epoch back to `0001-01-01T00:00:00Z`, Go's zero `time.Time`.
const GO_ZERO_UNIX_SECS: i64 = -62_135_596_800;
/// Seconds from the Unix epoch to `10000-01-01T00:00:00Z`, the first instant RFC 3339 cannot write.
const YEAR_10000_UNIX_SECS: i64 = 253_402_300_800;

/// A UTC instant with nanosecond precision, serialized as an RFC 3339 string.
///
/// [`Timestamp::ZERO`] is Go's zero time (`0001-01-01T00:00:00Z`), which
/// nats-server writes for "never" (for example `first_ts` of an empty stream);
/// it is also the [`Default`]. Every value lies between the years 0000 and
/// 9999, the range RFC 3339 can write.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// A string that is not an RFC 3339 timestamp, or an instant RFC 3339 cannot write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp: {0:?}")]
pub struct TimestampError(String);

impl Timestamp {
    /// Go's zero time, `0001-01-01T00:00:00Z`: what nats-server writes for "never".
    pub const ZERO: Timestamp = Timestamp {
        secs: GO_ZERO_UNIX_SECS,
        nanos: 0,
    };

    /// The Unix epoch, `1970-01-01T00:00:00Z`.
    pub const UNIX_EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    /// The instant `nanos` nanoseconds after the Unix epoch (negative: before it).
    ///
    /// Every `i64` is in range (years 1677 to 2262), so this cannot fail.
    pub fn from_unix_nanos(nanos: i64) -> Timestamp {
        Timestamp {
            secs: nanos.div_euclid(NANOS_PER_SEC),
            nanos: nanos.rem_euclid(NANOS_PER_SEC) as u32,
        }
    }

    /// The instant `secs` seconds and `nanos` nanoseconds after the Unix epoch,
    /// or `None` if `nanos` is not below one second or the year is outside 0000..=9999.
    pub fn from_unix(secs: i64, nanos: u32) -> Option<Timestamp> {
        let in_range = (civil_min_secs()..YEAR_10000_UNIX_SECS).contains(&secs);
        (nanos < NANOS_PER_SEC as u32 && in_range).then_some(Timestamp { secs, nanos })
    }

    /// Whole seconds since the Unix epoch (floor; negative before it).
    pub fn unix_secs(&self) -> i64 {
        self.secs
    }

    /// The nanoseconds past [`Timestamp::unix_secs`], below one second.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the Unix epoch, or `None` outside the years 1677 to 2262
    /// (for example [`Timestamp::ZERO`]).
    pub fn unix_nanos(&self) -> Option<i64> {
        let nanos = i128::from(self.secs) * i128::from(NANOS_PER_SEC) + i128::from(self.nanos);
        i64::try_from(nanos).ok()
    }

    /// Whether this is Go's zero time, nats-server's "never".
    pub fn is_zero(&self) -> bool {
        *self == Timestamp::ZERO
    }

    /// The RFC 3339 text, exactly as Go's `time.Time` marshals a UTC time.
    pub fn to_rfc3339(&self) -> String {
        self.to_string()
    }

    /// Parses RFC 3339 (`Z` or a `±hh:mm` offset, optional fraction of up to nine
    /// digits; further digits are truncated) into a UTC instant.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimestampError> {
        parse(text.as_bytes()).ok_or_else(|| TimestampError(text.to_owned()))
    }
}

/// The earliest representable second, `0000-01-01T00:00:00Z`.
const fn civil_min_secs() -> i64 {
    // Year 0 is a leap year of 366 days, one year before Go's zero time.
    GO_ZERO_UNIX_SECS - 366 * SECS_PER_DAY
}

impl Default for Timestamp {
    fn default() -> Self {
        Timestamp::ZERO
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(SECS_PER_DAY);
        let sod = self.secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )?;
        if self.nanos != 0 {
            // Go's RFC3339Nano layout trims trailing zeros of the fraction.
            let mut frac = self.nanos;
            let mut width = 9;
            while frac % 10 == 0 {
                frac /= 10;
                width -= 1;
            }
            write!(f, ".{frac:0width$}")?;
        }
        f.write_str("Z")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse_rfc3339(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// Formats nanoseconds since the Unix epoch as nats-server would (RFC 3339, UTC).
pub fn unix_nanos_to_rfc3339(nanos: i64) -> String {
    Timestamp::from_unix_nanos(nanos).to_rfc3339()
}

/// Parses an RFC 3339 timestamp into nanoseconds since the Unix epoch.
///
/// Instants outside the years 1677 to 2262 (such as Go's zero time) do not fit
/// an `i64` and are an error; use [`Timestamp`] to keep them.
pub fn rfc3339_to_unix_nanos(text: &str) -> Result<i64, TimestampError> {
    Timestamp::parse_rfc3339(text)?
        .unix_nanos()
        .ok_or_else(|| TimestampError(text.to_owned()))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month and day of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `digits` ASCII digits at `at`.
fn number(b: &[u8], at: usize, digits: usize) -> Option<u32> {
    let field = b.get(at..at + digits)?;
    field.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn parse(b: &[u8]) -> Option<Timestamp> {
    let year = i64::from(number(b, 0, 4)?);
    let month = number(b, 5, 2)?;
    let day = number(b, 8, 2)?;
    let hour = number(b, 11, 2)?;
    let minute = number(b, 14, 2)?;
    let second = number(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }

    let mut at = 19;
    let mut nanos = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        let digits = at - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }

    let offset_secs = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() && b[at + 3] == b':' => {
            let oh = i64::from(number(b, at + 1, 2)?);
            let om = i64::from(number(b, at + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };

    let secs = days_from_civil(year, month, day) * SECS_PER_DAY
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - offset_secs;
    Timestamp::from_unix(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(Timestamp::ZERO.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(Timestamp::UNIX_EPOCH.to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            unix_nanos_to_rfc3339(1_704_067_200_123_456_789),
            "2024-01-01T00:00:00.123456789Z"
        );
        assert_eq!(
            unix_nanos_to_rfc3339(1_704_067_200_120_000_000),
            "2024-01-01T00:00:00.12Z"
        );
        assert_eq!(unix_nanos_to_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            unix_nanos_to_rfc3339(951_782_400 * NANOS_PER_SEC),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn parses_what_it_formats() {
        for nanos in [
            0,
            -1,
            1,
            1_704_067_200_123_456_789,
            i64::MAX,
            i64::MIN,
            951_782_400_000_000_007,
        ] {
            let text = unix_nanos_to_rfc3339(nanos);
            assert_eq!(rfc3339_to_unix_nanos(&text), Ok(nanos), "{text}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("0001-01-01T00:00:00Z"),
            Ok(Timestamp::ZERO)
        );
        assert!(Timestamp::ZERO.unix_nanos().is_none());
    }

    #[test]
    fn civil_dates_agree_both_ways_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!(d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn parses_offsets_and_long_fractions() {
        let t = Timestamp::parse_rfc3339("2024-01-01T02:30:00.5+02:30").unwrap();
        assert_eq!(t.to_string(), "2024-01-01T00:00:00.5Z");
        let t = Timestamp::parse_rfc3339("2023-12-31T23:00:00-01:00").unwrap();
        assert_eq!(t.to_string(), "2024-01-01T00:00:00Z");
        let t = Timestamp::parse_rfc3339("2024-01-01T00:00:00.1234567891Z").unwrap();
        assert_eq!(t.subsec_nanos(), 123_456_789);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00Zjunk",
            "2024-01-01 00:00:00Z",
            "0000-01-01T00:00:00+00:01",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let t = Timestamp::from_unix_nanos(1_704_067_200_000_000_001);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2024-01-01T00:00:00.000000001Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
