//! HubSpot's CRM tickets API as the client reads it:
//! `GET /crm/v3/objects/tickets/{ticketId}?properties=…&propertiesWithHistory=…&archived=…`
//! behind `Authorization: Bearer <private app access token>`.
//!
//! Found (sources): the object shape `{id, properties, propertiesWithHistory:
//! {name: [{value, timestamp, sourceType, sourceId?, sourceLabel?,
//! updatedByUserId?}]}, createdAt, updatedAt, archived}` and comma-separated
//! `properties`/`propertiesWithHistory` (https://github.com/HubSpot/hubspot-api-nodejs,
//! codegen/crm/tickets; https://developers.hubspot.com/docs/api-reference/crm-tickets-v3/guide);
//! `hs_pipeline_stage` is the ticket's status, internal stage ids, `"4"` closed
//! in the default support pipeline (https://developers.hubspot.com/docs/api/crm/tickets);
//! errors `{status: "error", message, correlationId, category}` (SDK
//! `ModelError`). A single-object read is not paginated, so `page_size` does not
//! apply here.
//!
//! Backfill's listing: `POST /crm/v3/objects/tickets/search` with a JSON body
//! `{filterGroups, sorts, properties, limit, after}`; filters on `hs_lastmodifieddate`
//! (the life's last step, or its creation), `createdate` and `hs_object_id` with
//! `EQ`/`NEQ`/`GT`/`GTE`/`LT`/`LTE`, values in Unix ms or ISO 8601; groups OR'ed,
//! filters in a group AND'ed; one sort; at most 200 a page (and `page_size`);
//! `after` an offset (string or number); paging past 10 000 results is a 400
//! (https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm).
//! The filters are evaluated as HubSpot would, rather than rendering
//! `state.changed_tickets`, so a wrong filter shows. Any other property is a 400
//! here (HubSpot would filter on it).
//!
//! Assumed (not documented): history newest first; every stage change is in it;
//! the 404 message text and `category: OBJECT_NOT_FOUND`; a 401 for a wrong
//! token (body `category: INVALID_AUTHENTICATION`, played by the shared core
//! with its own body); `sourceType` values (`CRM_UI` here).
//!
//! Rendering of a life (default pipeline `"0"`): created in stage `"1"`;
//! `Resolved` → stage `"4"` by `userId:<AI_AGENT>` or `userId:<HUMAN_AGENT>`;
//! `Reopened` → stage `"2"`; `CustomerReplied` and `HandedOff` change no stage
//! (the ticket object does not show them).

use super::{
    bearer_ok, json, query_param, rfc3339, Happening, Life, Request, Response, State, Vendor,
    AI_AGENT, HUMAN_AGENT,
};
use chrono::{DateTime, Utc};
use serde_json::{json as j, Map, Value};

pub struct HubSpot;

/// The closed stage of the default support pipeline (what `closed_stage_ids` lists).
pub const CLOSED_STAGE: &str = "4";
pub const NEW_STAGE: &str = "1";
pub const REOPENED_STAGE: &str = "2";

/// The stage history, newest first.
fn stage_history(life: &Life) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(created) = life.created_at {
        out.push(j!({"value": NEW_STAGE, "timestamp": rfc3339(created), "sourceType": "CRM_UI"}));
    }
    for (_, s) in life.ordered() {
        let (stage, user) = match s.what {
            Happening::Resolved { by_ai } => {
                (CLOSED_STAGE, if by_ai { AI_AGENT } else { HUMAN_AGENT })
            }
            Happening::Reopened => (REOPENED_STAGE, HUMAN_AGENT),
            Happening::CustomerReplied | Happening::HandedOff => continue,
        };
        out.push(j!({
            "value": stage,
            "timestamp": rfc3339(s.at),
            "sourceType": "CRM_UI",
            "sourceId": format!("userId:{user}"),
            "updatedByUserId": user.parse::<i64>().unwrap_or_default(),
        }));
    }
    out.reverse();
    out
}

fn listed(req: &Request, name: &str) -> Vec<String> {
    query_param(req, name)
        .map(|v| {
            v.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn ticket(req: &Request, id: &str, life: &Life) -> Value {
    let history = stage_history(life);
    let stage = history
        .first()
        .and_then(|h| h["value"].as_str())
        .unwrap_or(NEW_STAGE)
        .to_string();
    let mut current = Map::new();
    current.insert("hs_object_id".into(), j!(id));
    for p in listed(req, "properties") {
        let v = match p.as_str() {
            "hs_pipeline_stage" => j!(stage),
            "hs_pipeline" => j!("0"),
            _ => Value::Null,
        };
        current.insert(p, v);
    }
    let mut with_history = Map::new();
    for p in listed(req, "propertiesWithHistory") {
        if p == "hs_pipeline_stage" {
            with_history.insert(p, j!(history));
        }
    }
    let mut v = j!({
        "id": id,
        "properties": current,
        "createdAt": life.created_at.map(rfc3339),
        "updatedAt": life.updated_at().map(rfc3339),
        "archived": false,
    });
    if !with_history.is_empty() {
        v["propertiesWithHistory"] = Value::Object(with_history);
    }
    v
}

fn error(status: u16, category: &str, message: &str) -> Response {
    json(
        status,
        &j!({"status": "error", "message": message,
             "correlationId": "00000000-0000-4000-8000-000000000000", "category": category}),
    )
}

/// A search filter's value as ms: Unix ms, or ISO 8601.
fn filter_ms(v: &Value) -> Option<i64> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    text.parse::<i64>().ok().or_else(|| {
        DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|d| d.timestamp_millis())
    })
}

fn ms(t: Option<DateTime<Utc>>) -> i64 {
    t.map_or(0, |t| t.timestamp_millis())
}

/// Whether ticket `id` passes one filter; `Err` for what the fake cannot evaluate.
fn passes(id: &str, life: &Life, f: &Value) -> Result<bool, String> {
    let name = f["propertyName"].as_str().unwrap_or_default();
    let have = match name {
        "hs_lastmodifieddate" => ms(life.updated_at()),
        "createdate" => ms(life.created_at),
        "hs_object_id" => id
            .parse()
            .map_err(|_| "hs_object_id is numeric".to_string())?,
        other => return Err(format!("the fake cannot filter on `{other}`")),
    };
    let want = filter_ms(&f["value"]).ok_or_else(|| format!("bad value for {name}"))?;
    Ok(match f["operator"].as_str().unwrap_or_default() {
        "EQ" => have == want,
        "NEQ" => have != want,
        "GT" => have > want,
        "GTE" => have >= want,
        "LT" => have < want,
        "LTE" => have <= want,
        other => return Err(format!("unsupported operator `{other}`")),
    })
}

fn found(id: &str, life: &Life, properties: &[String]) -> Value {
    let iso = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let mut props = Map::new();
    props.insert("hs_object_id".into(), j!(id));
    for p in properties {
        let v = match p.as_str() {
            "hs_lastmodifieddate" => j!(iso(life.updated_at())),
            "createdate" => j!(iso(life.created_at)),
            _ => Value::Null,
        };
        props.insert(p.clone(), v);
    }
    j!({"id": id, "properties": props, "createdAt": iso(life.created_at),
        "updatedAt": iso(life.updated_at()), "archived": false})
}

/// `POST /crm/v3/objects/tickets/search`.
fn search(req: &Request, state: &State) -> Response {
    let bad = |m: &str| error(400, "VALIDATION_ERROR", m);
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return bad("the body is not JSON");
    };
    let groups = body["filterGroups"].as_array().cloned().unwrap_or_default();
    let mut hits: Vec<(&String, &Life)> = Vec::new();
    for (id, life) in &state.tickets {
        let mut any = groups.is_empty();
        for g in &groups {
            let mut all = true;
            for f in g["filters"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                match passes(id, life, f) {
                    Ok(ok) => all &= ok,
                    Err(e) => return bad(&e),
                }
            }
            any |= all;
        }
        if any {
            hits.push((id, life));
        }
    }
    let sorts = body["sorts"].as_array().cloned().unwrap_or_default();
    if sorts.len() > 1 {
        return bad("only one sort is allowed");
    }
    if let Some(sort) = sorts.first() {
        let key = |(id, life): &(&String, &Life)| match sort["propertyName"].as_str() {
            Some("hs_lastmodifieddate") => (ms(life.updated_at()), (*id).clone()),
            Some("createdate") => (ms(life.created_at), (*id).clone()),
            _ => (0, (*id).clone()),
        };
        hits.sort_by_key(key);
        if sort["direction"] == "DESCENDING" {
            hits.reverse();
        }
    }
    let limit = body["limit"].as_u64().unwrap_or(10).clamp(1, 200) as usize;
    let limit = limit.min(state.page_size);
    let after = match &body["after"] {
        Value::Null => 0,
        v => match filter_ms(v).and_then(|n| usize::try_from(n).ok()) {
            Some(n) => n,
            None => return bad("after is not an offset"),
        },
    };
    if after + limit > 10_000 {
        return bad("paging is limited to 10 000 results");
    }
    let properties: Vec<String> = body["properties"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let results: Vec<Value> = hits
        .iter()
        .skip(after)
        .take(limit)
        .map(|(id, life)| found(id, life, &properties))
        .collect();
    let mut answer = j!({"total": hits.len(), "results": results});
    if after + limit < hits.len() {
        let next = (after + limit).to_string();
        answer["paging"] = j!({"next": {"after": next, "link": format!("?after={next}")}});
    }
    json(200, &answer)
}

impl Vendor for HubSpot {
    fn name(&self) -> &'static str {
        "hubspot"
    }

    fn authorized(&self, req: &Request, state: &State) -> bool {
        bearer_ok(req, &state.token)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        if req.method == "POST" && parts == ["crm", "v3", "objects", "tickets", "search"] {
            return search(req, state);
        }
        if req.method != "GET" {
            return error(405, "METHOD_NOT_ALLOWED", "method not allowed");
        }
        let ["crm", "v3", "objects", "tickets", id] = parts.as_slice() else {
            return error(404, "OBJECT_NOT_FOUND", "unknown route");
        };
        match state.tickets.get(*id) {
            Some(life) => json(200, &ticket(req, id, life)),
            None => error(
                404,
                "OBJECT_NOT_FOUND",
                "Object not found.  objectId are usually numeric.",
            ),
        }
    }

    fn ai_agent_id(&self) -> String {
        AI_AGENT.into()
    }

    fn extra_settings(&self) -> Vec<(&'static str, String)> {
        vec![("closed_stage_ids", CLOSED_STAGE.into())]
    }
}
