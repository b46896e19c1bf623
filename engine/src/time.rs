//! The single timestamp format of semantics.md §5: `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.
//!
//! Timestamps are carried as microseconds since the Unix epoch (`i64`) and formatted with pure
//! calendar arithmetic (proleptic Gregorian, days-from-civil), so that every replica renders the
//! same stamp to the same bytes without any time-zone or locale dependency.

use std::time::{SystemTime, UNIX_EPOCH};

const MICROSECONDS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
const MICROSECONDS_PER_DAY: i64 = SECONDS_PER_DAY * MICROSECONDS_PER_SECOND;
/// Days in one 400-year Gregorian cycle.
const DAYS_PER_ERA: i64 = 146_097;
/// Days from 0000-03-01 (start of the shifted calendar used below) to 1970-01-01.
const DAYS_FROM_CIVIL_EPOCH_TO_UNIX_EPOCH: i64 = 719_468;
/// Most fractional-second digits accepted on read (archive.md §3).
const FRACTION_DIGITS_MAX: usize = 6;

/// Why a timestamp string was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampParseError {
    /// Not of the form `YYYY-MM-DDTHH:MM:SS[.f{1,6}][Z]`.
    #[error("timestamp {0:?} is not of the form YYYY-MM-DDTHH:MM:SS[.ffffff][Z]")]
    Malformed(String),
    /// A field is out of range (month 13, day 31 of April, hour 24, …).
    #[error("timestamp {0:?} has a field out of range")]
    OutOfRange(String),
}

/// The current wall-clock time in microseconds since the Unix epoch. Only the leader calls this,
/// when it stamps a command; apply never does.
pub fn now_us() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX),
        Err(before_epoch) => {
            i64::try_from(before_epoch.duration().as_micros()).map_or(i64::MIN, |micros| -micros)
        }
    }
}

/// Format microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
///
/// Years outside `0000..=9999` (not reachable from a real clock) are written with as many digits
/// as they need, and a leading `-` for years before year 0.
pub fn format_timestamp(timestamp_us: i64) -> String {
    let days = timestamp_us.div_euclid(MICROSECONDS_PER_DAY);
    let within_day_us = timestamp_us.rem_euclid(MICROSECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let seconds_of_day = within_day_us / MICROSECONDS_PER_SECOND;
    let fraction_us = within_day_us % MICROSECONDS_PER_SECOND;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction_us:06}Z",
        seconds_of_day / 3600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60,
    )
}

/// Parse a timestamp of the accepted read forms: `YYYY-MM-DDTHH:MM:SS`, then optionally `.` and
/// 1 to 6 fractional digits, then optionally `Z` (a missing `Z` means UTC as well).
pub fn parse_timestamp(text: &str) -> Result<i64, TimestampParseError> {
    let malformed = || TimestampParseError::Malformed(text.to_owned());
    let out_of_range = || TimestampParseError::OutOfRange(text.to_owned());
    let bytes = text.as_bytes();
    let body = bytes.strip_suffix(b"Z").unwrap_or(bytes);
    if body.len() < 19 {
        return Err(malformed());
    }
    let (date_time, fraction) = body.split_at(19);
    let separators_valid = date_time[4] == b'-'
        && date_time[7] == b'-'
        && date_time[10] == b'T'
        && date_time[13] == b':'
        && date_time[16] == b':';
    if !separators_valid {
        return Err(malformed());
    }
    let digits = |range: std::ops::Range<usize>| decimal(&date_time[range]).ok_or_else(malformed);
    let year = digits(0..4)?;
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    let hour = digits(11..13)?;
    let minute = digits(14..16)?;
    let second = digits(17..19)?;
    let fraction_us = match fraction {
        [] => 0,
        [b'.', fraction_digits @ ..]
            if (1..=FRACTION_DIGITS_MAX).contains(&fraction_digits.len()) =>
        {
            let value = decimal(fraction_digits).ok_or_else(malformed)?;
            let missing_digits = FRACTION_DIGITS_MAX - fraction_digits.len();
            value * 10_i64.pow(u32::try_from(missing_digits).unwrap_or(0))
        }
        _ => return Err(malformed()),
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(out_of_range());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second;
    Ok(seconds * MICROSECONDS_PER_SECOND + fraction_us)
}

/// ASCII decimal digits (at most 6 here) to a value; `None` for any other byte.
fn decimal(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0_i64, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + i64::from(byte - b'0'))
    })
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date. The calendar is shifted to start on
/// March 1 so that the leap day is the last day of the shifted year.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year.rem_euclid(400);
    let shifted_month = (month + 9) % 12; // March = 0 … February = 11
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - DAYS_FROM_CIVIL_EPOCH_TO_UNIX_EPOCH
}

/// Inverse of [`days_from_civil`]: `(year, month, day)` of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted_days = days + DAYS_FROM_CIVIL_EPOCH_TO_UNIX_EPOCH;
    let era = shifted_days.div_euclid(DAYS_PER_ERA);
    let day_of_era = shifted_days.rem_euclid(DAYS_PER_ERA);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_round_trips() {
        let text = "2026-01-05T10:11:12.123456Z";
        let timestamp_us = parse_timestamp(text).expect("example parses");
        assert_eq!(timestamp_us, 1_767_607_872_123_456);
        assert_eq!(format_timestamp(timestamp_us), text);
        assert_eq!(
            format_timestamp(parse_timestamp("2026-01-05T10:11:13.000001Z").expect("parses")),
            "2026-01-05T10:11:13.000001Z"
        );
    }

    #[test]
    fn epoch_and_negative_times() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.999999Z"), Ok(-1));
    }

    #[test]
    fn leap_years() {
        // 2024 is a leap year; 1900 and 2100 are not; 2000 is.
        let leap_day = parse_timestamp("2024-02-29T00:00:00Z").expect("leap day parses");
        assert_eq!(
            format_timestamp(leap_day + MICROSECONDS_PER_DAY),
            "2024-03-01T00:00:00.000000Z"
        );
        assert_eq!(
            format_timestamp(leap_day - MICROSECONDS_PER_DAY),
            "2024-02-28T00:00:00.000000Z"
        );
        assert!(matches!(
            parse_timestamp("2023-02-29T00:00:00Z"),
            Err(TimestampParseError::OutOfRange(_))
        ));
        assert!(parse_timestamp("1900-02-29T00:00:00Z").is_err());
        assert!(parse_timestamp("2100-02-29T00:00:00Z").is_err());
        assert!(parse_timestamp("2000-02-29T00:00:00Z").is_ok());
        assert_eq!(
            format_timestamp(parse_timestamp("2000-12-31T23:59:59.5Z").expect("parses")),
            "2000-12-31T23:59:59.500000Z"
        );
        // 2000-03-01 is day 11,017 since the epoch.
        assert_eq!(
            parse_timestamp("2000-03-01T00:00:00Z"),
            Ok(11_017 * MICROSECONDS_PER_DAY)
        );
    }

    #[test]
    fn every_day_over_eight_centuries_round_trips() {
        let first = days_from_civil(1600, 1, 1);
        let last = days_from_civil(2400, 12, 31);
        for days in first..=last {
            let (year, month, day) = civil_from_days(days);
            assert!((1..=days_in_month(year, month)).contains(&day));
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }

    #[test]
    fn accepted_read_forms() {
        let full = parse_timestamp("2026-01-05T10:11:12.120000Z").expect("parses");
        for text in [
            "2026-01-05T10:11:12.12Z",
            "2026-01-05T10:11:12.12",
            "2026-01-05T10:11:12.120",
            "2026-01-05T10:11:12.120000",
        ] {
            assert_eq!(parse_timestamp(text), Ok(full), "{text}");
        }
        let whole = parse_timestamp("2026-01-05T10:11:12Z").expect("parses");
        assert_eq!(parse_timestamp("2026-01-05T10:11:12"), Ok(whole));
        assert_eq!(whole + 120_000, full);
    }

    #[test]
    fn rejected_forms() {
        for text in [
            "",
            "2026-01-05",
            "2026-01-05 10:11:12Z",
            "2026-01-05T10:11:12.Z",
            "2026-01-05T10:11:12.1234567Z",
            "2026-01-05T10:11:12+00:00",
            "2026-01-05T10:11:12ZZ",
            "2026-01-05t10:11:12Z",
            "+026-01-05T10:11:12Z",
            "2026-1-05T10:11:12Z",
            "2026-01-05T10:11:1aZ",
            "2026-01-05T10:11:12.1a",
        ] {
            assert!(
                matches!(
                    parse_timestamp(text),
                    Err(TimestampParseError::Malformed(_))
                ),
                "{text}"
            );
        }
        for text in [
            "2026-13-05T10:11:12Z",
            "2026-00-05T10:11:12Z",
            "2026-04-31T10:11:12Z",
            "2026-01-00T10:11:12Z",
            "2026-01-05T24:00:00Z",
            "2026-01-05T10:60:00Z",
            "2026-01-05T10:11:60Z",
        ] {
            assert!(
                matches!(
                    parse_timestamp(text),
                    Err(TimestampParseError::OutOfRange(_))
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn now_is_after_2025() {
        assert!(now_us() > parse_timestamp("2025-01-01T00:00:00Z").expect("parses"));
    }
}
