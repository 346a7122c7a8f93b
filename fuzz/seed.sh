#!/usr/bin/env bash
# Seed fuzz/corpus/<target>/ from the reference payloads and signature vectors
# (the repository's own tests/fixtures/helpdesk, or $OUTCOME_METER_REFERENCE).
# Idempotent: seeds are named by content hash. Usage: fuzz/seed.sh
set -euo pipefail
cd "$(dirname "$0")"
REF="${OUTCOME_METER_REFERENCE:-../tests/fixtures/helpdesk}"
[ -f "$REF/vectors.json" ] || { echo "no reference data at $REF (set OUTCOME_METER_REFERENCE)" >&2; exit 1; }
python3 - "$REF" corpus <<'PY'
import base64, hashlib, hmac, json, pathlib, sys
from datetime import datetime

ref, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
# Index of each provider in outcome_meter::providers::all() (byte 0 of verify_signatures).
ORDER = ["generic", "zendesk", "intercom", "freshdesk", "helpscout", "front", "hubspot", "gorgias", "zohodesk"]
counts = {}

def seed(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    f = d / hashlib.sha1(data).hexdigest()
    if not f.exists():
        f.write_bytes(data)
        counts[target] = counts.get(target, 0) + 1

def request(headers, body):
    return "".join(f"{k}: {v}\n" for k, v in headers.items()) + "\n" + body

def compact(v):
    return json.dumps(v, separators=(",", ":"))

# Values for the `{{placeholders}}` of template payloads (Zendesk trigger, Freshdesk, Gorgias).
RENDERED = {"status": "closed", "updated_at": "2025-01-08T10:14:22Z", "updated_datetime": "2025-01-08T10:14:22.123456",
            "closed_datetime": "2025-01-08T10:14:22.123456", "tags": "ai, refund", "channel": "chat", "via": "Web form",
            "source": "Chat", "agent_email": "ai@example.com", "requester_email": "c@example.com"}

# parse_<provider>: every reference payload, `_source` dropped, batch `body` unwrapped.
for p in sorted((ref / "payloads").glob("*.json")):
    vendor, rest = p.stem.split("-", 1)
    v = json.loads(p.read_text())
    v.pop("_source", None)
    if set(v) == {"body"}:
        v = v["body"]
    body = compact(v)
    if vendor == "helpscout":  # parse needs X-HelpScout-Event: the event is in the name
        seed("parse_helpscout", request({"x-helpscout-event": rest.rsplit("-", 1)[0]}, body))
    else:
        seed(f"parse_{vendor}", body)
    if vendor == "front":  # rule webhooks send the bare event
        seed("parse_front", compact(v["payload"]))
    if isinstance(v, dict) and any("{{" in str(x) for x in v.values()):  # a template: render it too
        seed(f"parse_{vendor}", compact({k: RENDERED.get(k, "1") if "{{" in str(x) else x for k, x in v.items()}))

GENERIC = [
    {"event_id": "e1", "ticket_id": "T1", "type": "resolved", "occurred_at": "2026-01-01T00:00:00Z",
     "resolver": "ai", "actor_id": "ai-agent", "tags": ["ai"], "channel": "chat"},
    {"event_id": "e2", "ticket_id": "T1", "type": "reopened", "occurred_at": "2026-01-02T00:00:00Z"},
    {"event_id": "e3", "ticket_id": "T1", "type": "customer_replied", "occurred_at": "2026-01-02T00:00:00Z"},
]
for g in GENERIC:
    seed("parse_generic", compact(g))

def unix(ts):
    ts = ts.strip()
    if ts.isdigit():
        n = int(ts)
        return n // 1000 if n >= 100_000_000_000 else n
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())

def verify_seeds(vendor, headers, body, now=None, extra=None):
    h = {k.lower(): v for k, v in headers.items()}
    for name in ("x-zendesk-webhook-signature-timestamp", "x-front-request-timestamp", "x-hubspot-request-timestamp"):
        if now is None and name in h:
            now = unix(h[name])
    ctl = {"@now": now} if now is not None else {}
    ctl.update(extra or {})
    for flags in (0, 1, 3):  # as is; re-signed; re-signed with every optional setting
        hh = dict(h)
        if vendor == "zohodesk" and flags & 1:  # re-signing takes the claims JSON
            claims = h["x-zdesk-jwt"].split(".")[1]
            hh["x-zdesk-jwt"] = base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)).decode()
        seed("verify_signatures", bytes([ORDER.index(vendor), flags]) + request({**ctl, **hh}, body).encode())

payloads = {p.name: p for p in (ref / "payloads").glob("*.json")}
for x in json.loads((ref / "vectors.json").read_text())["vectors"]:
    vendor = x["vendor"]
    headers = {**x.get("headers_in", {}), **x.get("expected_headers", {}), **x.get("headers", {})}
    body = x.get("body")
    if body is None:
        same = sorted(n for n in payloads if n.startswith(vendor + "-"))
        v = json.loads(payloads[same[0]].read_text()) if same else {}
        v.pop("_source", None)
        body = compact(v)
    else:
        seed(f"parse_{vendor}", request({k: v for k, v in headers.items() if k.lower() == "x-helpscout-event"}, body)
             if vendor == "helpscout" else body)
    extra = {}
    if "uri" in x:  # HubSpot signs the full URI
        scheme, _, rest = x["uri"].partition("://")
        host, _, path = rest.partition("/")
        extra = {"@method": x.get("method", "POST"), "@path": "/" + path, "host": host, "x-forwarded-proto": scheme}
    verify_seeds(vendor, headers, body, x.get("verify_at_unix"), extra)

for g in GENERIC:
    body, t = compact(g), 1_767_225_600
    mac = hmac.new(b"fuzz-secret", f"{t}.{body}".encode(), "sha256").hexdigest()
    verify_seeds("generic", {"outcome-signature": f"t={t},v1={mac}"}, body, t)

# signature_headers: header values and times the providers meet.
for s in ["t=1767225600,v1=" + "ab" * 32, "t=1767225600,v1=00,v1=ff", "sha1=b640393dee1308d8e3905eec3d8fe88cfdc9de8b",
          "ZRYKskViYRgLlZdvQAN+LJPV3XHt4+X321OKNB00scI=", "Basic c2lkZWNhcjp0ZXN0LXBhc3M=", "2025-01-08T10:14:23Z",
          "1752613922216", "Wed, 8 Jan 2025 at 10:14 AM", "2025-01-08 10:14:23.123", "closed",
          "https%3A%2F%2Fsidecar.example.com%2Fwebhooks%2Fhubspot%3Fa%3D1"]:
    seed("signature_headers", s)

for t in sorted(counts):
    print(f"{t}: {counts[t]} new seeds")
PY
