//! `Retry-After` as HTTP sends it, for every service outcome-meter calls.

use std::time::Duration;

/// `Retry-After` in either form HTTP allows (RFC 9110 §10.2.3): a number of
/// seconds, or an HTTP date, measured from the response's own `Date` header (so
/// neither clock's skew counts; without `Date`, a date is ignored).
pub fn parse(value: &str, date: Option<&str>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        // `try_`: a value too large for a Duration (`1e30`) is no wait, not a panic.
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let now = chrono::DateTime::parse_from_rfc2822(date?.trim()).ok()?;
    (at - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse("30", None), Some(Duration::from_secs(30)));
        assert_eq!(parse(" 2 ", None), Some(Duration::from_secs(2)));
        assert_eq!(parse("0.5", None), Some(Duration::from_millis(500)));
        let date = Some("Wed, 21 Oct 2026 07:28:00 GMT");
        assert_eq!(
            parse("Wed, 21 Oct 2026 07:29:30 GMT", date),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse("Wed, 21 Oct 2026 07:27:00 GMT", date),
            None,
            "a date in the past is no wait"
        );
        assert_eq!(
            parse("Wed, 21 Oct 2026 07:29:30 GMT", None),
            None,
            "a date needs the response's Date"
        );
        assert_eq!(parse("-1", None), None);
        assert_eq!(parse("1e30", None), None, "no panic on a huge value");
        assert_eq!(parse("NaN", None), None);
        assert_eq!(parse("soon", None), None);
    }
}
