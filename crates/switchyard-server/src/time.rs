//! UTC timestamps as JavaScript's `Date.toJSON()` writes them, and the date formats
//! accepted by `?inactive_since=` (what JavaScript's `Date.parse` reads in CHP: ISO 8601
//! and RFC 2822 dates).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, always UTC with millisecond precision.
pub(crate) fn format_ms(ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    write_ms(&mut out, ms);
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_ms`] appended to `out` without formatting machinery (the route listing writes
/// one per route).
pub(crate) fn write_ms(out: &mut Vec<u8>, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        // Outside JavaScript's four-digit years: the general path.
        let (h, min, s, milli) = (
            rem / 3_600_000,
            rem / 60_000 % 60,
            rem / 1000 % 60,
            rem % 1000,
        );
        let text = format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z");
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let digits = |out: &mut Vec<u8>, value: i64, width: u32| {
        for place in (0..width).rev() {
            let digit = value / 10_i64.pow(place) % 10;
            out.push(b'0' + u8::try_from(digit).unwrap_or(0));
        }
    };
    digits(out, y, 4);
    out.push(b'-');
    digits(out, m, 2);
    out.push(b'-');
    digits(out, d, 2);
    out.push(b'T');
    digits(out, rem / 3_600_000, 2);
    out.push(b':');
    digits(out, rem / 60_000 % 60, 2);
    out.push(b':');
    digits(out, rem / 1000 % 60, 2);
    out.push(b'.');
    digits(out, rem % 1000, 3);
    out.push(b'Z');
}

/// Parses ISO 8601 (`2999`, `2999-01`, `2999-01-01`, `2999-01-01T00:00[:00[.123]][Z|±hh:mm]`)
/// and RFC 2822 / IMF-fixdate (`Tue, 01 Jan 2999 00:00:00 GMT`) into epoch milliseconds.
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
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then_some(())?;
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0, 4)?;
    let mut pos = 4;
    let (mut month, mut day) = (1, 1);
    if b.get(pos) == Some(&b'-') {
        month = num(pos + 1, 2)?;
        pos += 3;
        if b.get(pos) == Some(&b'-') {
            day = num(pos + 1, 2)?;
            pos += 3;
        }
    }
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if pos == b.len() {
        return Some(ms);
    }
    if !matches!(b.get(pos), Some(b'T' | b't' | b' ')) || pos < 10 {
        return None;
    }
    let hour = num(pos + 1, 2)?;
    if b.get(pos + 3) != Some(&b':') {
        return None;
    }
    let minute = num(pos + 4, 2)?;
    pos += 6;
    let (mut second, mut milli) = (0, 0);
    if b.get(pos) == Some(&b':') {
        second = num(pos + 1, 2)?;
        pos += 3;
        if b.get(pos) == Some(&b'.') {
            let digits = b[pos + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits == 0 {
                return None;
            }
            let frac = std::str::from_utf8(&b[pos + 1..pos + 1 + digits.min(3)]).ok()?;
            milli = frac.parse::<i64>().ok()? * 10_i64.pow(3 - u32::try_from(digits.min(3)).ok()?);
            pos += 1 + digits;
        }
    }
    if hour > 24
        || minute > 59
        || second > 59
        || (hour == 24 && (minute, second, milli) != (0, 0, 0))
    {
        return None;
    }
    ms += ((hour * 60 + minute) * 60 + second) * 1000 + milli;
    match b.get(pos) {
        None => Some(ms),
        Some(b'Z' | b'z') if pos + 1 == b.len() => Some(ms),
        Some(sign @ (b'+' | b'-')) => {
            let oh = num(pos + 1, 2)?;
            let om = match b.get(pos + 3) {
                Some(b':') => num(pos + 4, 2).filter(|_| pos + 6 == b.len())?,
                _ => num(pos + 3, 2).filter(|_| pos + 5 == b.len())?,
            };
            let offset = (oh * 60 + om) * 60_000;
            Some(if *sign == b'+' {
                ms - offset
            } else {
                ms + offset
            })
        }
        _ => None,
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (era-based day counting).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_date_to_json() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_795_416_289_187), "2026-11-23T06:44:49.187Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    /// The digit writer agrees with the formatting machinery, and round-trips through the
    /// parser, over dates spread across years 1900–2999.
    #[test]
    fn fast_writer_matches_format() {
        let mut ms: i64 = -2_208_988_800_000; // 1900-01-01
        while ms < 32_503_680_000_000 {
            let days = ms.div_euclid(86_400_000);
            let rem = ms.rem_euclid(86_400_000);
            let (y, m, d) = civil_from_days(days);
            let expected = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3_600_000,
                rem / 60_000 % 60,
                rem / 1000 % 60,
                rem % 1000
            );
            assert_eq!(format_ms(ms), expected);
            assert_eq!(parse_date_ms(&expected), Some(ms));
            ms += 7_777_777_777; // ~90 days and an odd number of ms
        }
    }

    #[test]
    fn parses_what_chp_accepts() {
        let y2999 = parse_date_ms("2999-01-01T00:00:00Z").unwrap();
        assert_eq!(format_ms(y2999), "2999-01-01T00:00:00.000Z");
        assert_eq!(parse_date_ms("2999-01-01T00:00:00.123Z"), Some(y2999 + 123));
        assert_eq!(parse_date_ms("2999-01-01T05:00:00+05:00"), Some(y2999));
        assert_eq!(parse_date_ms("2999-01-01"), Some(y2999));
        assert_eq!(parse_date_ms("2999-01-01T00:00:00"), Some(y2999));
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
            "2999-02-30",
            "2999-01-01T",
            "2999-01-01T00:00:00Zjunk",
        ] {
            assert_eq!(parse_date_ms(bad), None, "{bad}");
        }
    }
}
