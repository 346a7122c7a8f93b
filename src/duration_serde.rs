//! Durations in config are human strings ("72h", "5m", "500ms").

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration `{s}`: {e}")))
}

/// The same for `Option<Duration>`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            humantime::parse_duration(s.trim())
                .map_err(|e| serde::de::Error::custom(format!("invalid duration `{s}`: {e}")))
        })
        .transpose()
    }
}

fn parse_none_or(s: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "none" | "" => Ok(None),
        other => humantime::parse_duration(other)
            .map(Some)
            .map_err(|e| format!("invalid duration `{other}` (or `none`): {e}")),
    }
}

/// `"none"` or a duration, as `Option<Duration>`.
pub mod none_or {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_str("none"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        parse_none_or(&s).map_err(serde::de::Error::custom)
    }
}

/// An optional override of a `none_or` value: absent, `"none"`, or a duration.
pub mod none_or_option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Option<Duration>>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(inner) => none_or::serialize(inner, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| parse_none_or(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A signed duration (`"-240h"`, `"+73h"`, `"0s"`) as milliseconds.
pub mod signed_millis {
    use super::*;

    pub fn parse(s: &str) -> Result<i64, String> {
        let t = s.trim();
        let (sign, rest) = match t.strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, t.strip_prefix('+').unwrap_or(t)),
        };
        let d = humantime::parse_duration(rest.trim())
            .map_err(|e| format!("invalid duration `{s}` (e.g. \"-240h\", \"+73h\"): {e}"))?;
        i64::try_from(d.as_millis())
            .map(|ms| sign * ms)
            .map_err(|_| format!("duration `{s}` is too large"))
    }

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        let d = humantime::format_duration(Duration::from_millis(ms.unsigned_abs()));
        s.serialize_str(&if *ms < 0 {
            format!("-{d}")
        } else {
            d.to_string()
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn signs_and_units() {
            assert_eq!(super::parse("-2h"), Ok(-7_200_000));
            assert_eq!(super::parse("+1s"), Ok(1000));
            assert_eq!(super::parse(" 10days "), Ok(864_000_000));
            assert_eq!(super::parse("0s"), Ok(0));
            assert!(super::parse("-soon").is_err());
        }
    }
}
