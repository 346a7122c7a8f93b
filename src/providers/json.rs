//! Small helpers for reading loosely typed vendor JSON.

use serde_json::Value;

/// A string at `path`, accepting JSON strings and numbers (ids are often either).
pub(crate) fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    match cur {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn i64_at(v: &Value, path: &[&str]) -> Option<i64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_i64().or_else(|| cur.as_str()?.trim().parse().ok())
}

/// Strings of an array at `path`, or of a `field` of each object in it.
pub(crate) fn strings_at(v: &Value, path: &[&str], field: Option<&str>) -> Vec<String> {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(x) => cur = x,
            None => return Vec::new(),
        }
    }
    cur.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| match field {
                    Some(f) => x.get(f)?.as_str().map(str::to_string),
                    None => x.as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}
