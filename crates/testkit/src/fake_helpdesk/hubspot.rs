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

impl Vendor for HubSpot {
    fn name(&self) -> &'static str {
        "hubspot"
    }

    fn authorized(&self, req: &Request, state: &State) -> bool {
        bearer_ok(req, &state.token)
    }

    fn handle(&self, req: &Request, state: &State) -> Response {
        if req.method != "GET" {
            return error(405, "METHOD_NOT_ALLOWED", "method not allowed");
        }
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
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
