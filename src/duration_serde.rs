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
