//! UTC timestamps as JavaScript's `Date.toJSON()` writes them, and the date formats
//! accepted by `?inactive_since=` (what JavaScript's `Date.parse` reads in CHP: ISO 8601
//! and RFC 2822 dates). The calendar arithmetic is jiff's.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::SignedDuration;
use jiff::civil::{Date, DateTime, Time};
use jiff::fmt::temporal::{DateTimeParser, DateTimePrinter};
use jiff::tz::Offset;

/// `Date.toJSON()`'s shape: UTC, always three fractional digits, `Z`.
static PRINTER: DateTimePrinter = DateTimePrinter::new().precision(Some(3));
static PARSER: DateTimeParser = DateTimeParser::new();

const DAY_MS: i64 = 86_400_000;
const EPOCH: Date = Date::constant(1970, 1, 1);

/// Milliseconds since the Unix epoch, now. From the system clock directly: through
/// jiff's `Timestamp` it cost a third more (callgrind), and it runs for every request and
/// every WebSocket read from a client (`last_activity`).
pub(crate) fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, always UTC with millisecond precision.
pub(crate) fn format_ms(ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    write_ms(&mut out, ms);
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_ms`] appended to `out` (the route listing writes one per route, so without
/// `core::fmt`). Instants beyond the years -9999 to 9999 are written as those limits.
pub(crate) fn write_ms(out: &mut Vec<u8>, ms: i64) {
    // Through the civil date and time of day in UTC: jiff's `Timestamp` stops a day short
    // of the end of year 9999, its civil types do not.
    let days = SignedDuration::from_secs(ms.div_euclid(DAY_MS) * 86_400);
    let time = Time::MIN
        .checked_add(SignedDuration::from_millis(ms.rem_euclid(DAY_MS)))
        .unwrap_or(Time::MAX);
    let dt = EPOCH
        .checked_add(days)
        .map_or(if ms < 0 { DateTime::MIN } else { DateTime::MAX }, |date| {
            date.to_datetime(time)
        });
    // Writing into a `Vec` cannot fail.
    let _ = PRINTER.print_datetime(&dt, &mut *out);
    out.push(b'Z');
}

/// Parses ISO 8601 (`2999`, `2999-01`, `2999-01-01`, `2999-01-01T00:00[:00[.123]][Z|±hh:mm]`,
/// `T24:00` as the end of the day) and RFC 2822 / IMF-fixdate
/// (`Tue, 01 Jan 2999 00:00:00 GMT`) into epoch milliseconds.
///
/// A date-time without a zone is taken as UTC (JavaScript would use the local zone; servers
/// running the proxy normally run in UTC, and JupyterHub never sends this parameter).
pub(crate) fn parse_date_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    parse_iso(s).or_else(|| {
        let t = httpdate::parse_http_date(s).ok()?;
        let d = t.duration_since(UNIX_EPOCH).ok()?;
        i64::try_from(d.as_millis()).ok()
    })
}

fn parse_iso(s: &str) -> Option<i64> {
    // JavaScript also reads a year alone and a year and month; jiff wants a whole date.
    let full: Cow<'_, str> = match s.len() {
        4 => format!("{s}-01-01").into(),
        7 => format!("{s}-01").into(),
        _ => s.into(),
    };
    let (text, extra_ms) = match end_of_day(&full) {
        Some(midnight) => (Cow::Owned(midnight), DAY_MS),
        None => (full, 0),
    };
    let ts = match PARSER.parse_timestamp(&*text) {
        Ok(ts) => ts,
        Err(_) => Offset::UTC
            .to_timestamp(PARSER.parse_datetime(&*text).ok()?)
            .ok()?,
    };
    let ms = i64::try_from(ts.as_nanosecond().div_euclid(1_000_000)).ok()?;
    ms.checked_add(extra_ms)
}

/// ISO 8601 allows `24:00` (with zero minutes, seconds and fraction) for the end of a day,
/// and JavaScript reads it; jiff does not. Returns the text with `00:00` instead, a day
/// early.
fn end_of_day(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 16 || !matches!(b[10], b'T' | b't' | b' ') || &b[11..13] != b"24" {
        return None;
    }
    let time_end = b[13..]
        .iter()
        .position(|c| matches!(c, b'Z' | b'z' | b'+' | b'-' | b'['))
        .map_or(b.len(), |p| p + 13);
    let zeros = b[13..time_end]
        .iter()
        .all(|c| matches!(c, b':' | b'.' | b'0'));
    zeros.then(|| format!("{}00{}", &s[..11], &s[13..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system clock in milliseconds, as jiff reads it.
    #[test]
    fn now_is_the_epoch_milliseconds() {
        let before = now_ms();
        let jiff = jiff::Timestamp::now().as_millisecond();
        let after = now_ms();
        assert!(before <= jiff && jiff <= after, "{before} {jiff} {after}");
    }

    #[test]
    fn formats_like_date_to_json() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_795_416_289_187), "2026-11-23T06:44:49.187Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(-2_208_988_800_000), "1900-01-01T00:00:00.000Z");
    }

    /// Every written date has `Date.toJSON()`'s fixed shape and parses back to the same
    /// instant, over dates spread across years 1900–2999.
    #[test]
    fn written_dates_round_trip() {
        let mut ms: i64 = -2_208_988_800_000; // 1900-01-01
        while ms < 32_503_680_000_000 {
            let text = format_ms(ms);
            let b = text.as_bytes();
            assert_eq!(b.len(), 24, "{text}");
            for (at, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
                assert_eq!(b[at], c, "{text}");
            }
            assert_eq!((b[19], b[23]), (b'.', b'Z'), "{text}");
            assert_eq!(parse_date_ms(&text), Some(ms), "{text}");
            ms += 7_777_777_777; // ~90 days and an odd number of ms
        }
    }

    #[test]
    fn parses_what_chp_accepts() {
        let y2999 = parse_date_ms("2999-01-01T00:00:00Z").unwrap();
        assert_eq!(format_ms(y2999), "2999-01-01T00:00:00.000Z");
        assert_eq!(parse_date_ms("2999-01-01T00:00:00.123Z"), Some(y2999 + 123));
        assert_eq!(
            parse_date_ms("2999-01-01T00:00:00.1239Z"),
            Some(y2999 + 123)
        );
        assert_eq!(parse_date_ms("2999-01-01T05:00:00+05:00"), Some(y2999));
        assert_eq!(parse_date_ms("2999-01-01T05:00:00+0500"), Some(y2999));
        assert_eq!(parse_date_ms("2998-12-31T19:00:00-05:00"), Some(y2999));
        assert_eq!(parse_date_ms("2999-01-01"), Some(y2999));
        assert_eq!(parse_date_ms("2999-01-01T00:00:00"), Some(y2999));
        assert_eq!(parse_date_ms("2999-01-01t00:00z"), Some(y2999));
        assert_eq!(parse_date_ms("2999-01-01 00:00"), Some(y2999));
        assert_eq!(parse_date_ms("2998-12-31T24:00:00Z"), Some(y2999));
        assert_eq!(parse_date_ms("2998-12-31T24:00"), Some(y2999));
        assert_eq!(parse_date_ms("2999-01"), Some(y2999));
        assert_eq!(parse_date_ms("2999"), Some(y2999));
        assert_eq!(parse_date_ms("Tue, 01 Jan 2999 00:00:00 GMT"), Some(y2999));
        assert_eq!(
            parse_date_ms("2026-11-23T06:44:49.187Z"),
            Some(1_795_416_289_187)
        );
        for bad in [
            "endoftheuniverse",
            "32503680000000",
            "",
            "2999-13-01",
            "2999-13",
            "2999-02-30",
            "2999-01-01T",
            "2999-01-01T00:00:00Zjunk",
            "2999-01-01T24:00:01Z",
            "2999-01-01T25:00:00Z",
            "abcd",
        ] {
            assert_eq!(parse_date_ms(bad), None, "{bad}");
        }
    }
}
