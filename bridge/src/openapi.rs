//! `GET /api/openapi.json`: the HTTP API, described. A test keeps its paths equal to [`crate::http::ROUTES`].

use axum::Json;
use serde_json::{Value, json};

pub async fn document() -> Json<Value> {
    Json(spec())
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

pub fn spec() -> Value {
    let mut paths = serde_json::Map::new();
    for part in [sse_paths(), api_paths(), webhook_paths(), page_paths()] {
        if let Value::Object(entries) = part {
            paths.extend(entries);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Switchyard HTTP API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Real-time events over Server-Sent Events, with lossless resume. Event payloads are the proto3 JSON of switchyard.v1.Event (64-bit integers as strings); see docs/events.md." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                                 "cookie": { "type": "apiKey", "in": "cookie", "name": "switchyard_token" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" }, "field": { "type": "string" } } } } },
                "Event": { "type": "object", "description": "proto3 JSON of switchyard.v1.Event, or the short form {type, key?, data}." }
            }
        },
        "security": [{ "bearer": [] }, { "cookie": [] }],
        "paths": paths
    })
}

/// The streams: one channel, several, one job.
fn sse_paths() -> Value {
    let sse_params = json!([
        { "name": "Last-Event-ID", "in": "header", "schema": { "type": "string" }, "description": "Resume after this cursor: an event id, or `N~W` as sent on `id:` lines while coalescing held snapshots back (their current state is sent first). Wins over `start` and `since`." },
        { "name": "lastEventId", "in": "query", "schema": { "type": "string" }, "description": "As Last-Event-ID (for clients that cannot set headers)." },
        { "name": "start", "in": "query", "schema": { "type": "string", "enum": ["live", "state"], "default": "live" }, "description": "`state`: the current snapshot of every key first (each with its own id, in id order), then a `stream:state` event with `asOf`, then every event after it." },
        { "name": "since", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Replay everything published at or after this RFC 3339 time, then live." },
        { "name": "ticket", "in": "query", "schema": { "type": "string" }, "description": "Single-use ticket from POST /api/sse/ticket." },
        { "name": "access_token", "in": "query", "schema": { "type": "string" }, "description": "Only when the server enables auth.allow_query_token." },
        { "name": "coalesce", "in": "query", "schema": { "type": "boolean", "default": true }, "description": "Coalesce state snapshots per (type, key)." },
        { "name": "tenant", "in": "query", "schema": { "type": "string" }, "description": "System tokens only: the tenant to read." }
    ]);
    let sse_responses = json!({
        "200": { "description": "An event stream: `retry:` first, then `id`/`event`/`data` frames, `stream:gap` when a resume cannot be complete (followed by the current state of what changed and `stream:state`), and heartbeat comments.",
                 "headers": { "x-switchyard-resume": { "schema": { "type": "string", "enum": ["complete", "gap"] } } },
                 "content": { "text/event-stream": { "schema": { "type": "string" } } } },
        "400": error_response("Bad channel or Last-Event-ID."),
        "401": error_response("Missing, invalid or expired token."),
        "403": error_response("The token does not allow this channel."),
        "404": error_response("Unknown channel."),
        "429": error_response("Connection limit reached; see Retry-After.")
    });
    let mut channel_params = sse_params.as_array().cloned().unwrap_or_default();
    channel_params
        .insert(0, json!({ "name": "channel", "in": "path", "required": true, "schema": { "type": "string" } }));
    let mut job_params = sse_params.as_array().cloned().unwrap_or_default();
    job_params.insert(0, json!({ "name": "job_id", "in": "path", "required": true, "schema": { "type": "string" } }));
    let mut many_params = sse_params.as_array().cloned().unwrap_or_default();
    many_params.insert(0, json!({ "name": "channels", "in": "query", "schema": { "type": "string" }, "description": "Comma-separated channels; all the token allows when omitted." }));
    json!({
        "/api/sse/{channel}": { "get": { "summary": "Stream one channel.", "parameters": channel_params, "responses": sse_responses } },
        "/api/sse/subscribe": { "get": { "summary": "Stream several channels.", "parameters": many_params, "responses": sse_responses } },
        "/api/sse/jobs/{job_id}": { "get": { "summary": "Stream one job's progress (channel jobs/{job_id}).", "parameters": job_params, "responses": sse_responses } }
    })
}

/// State, publishing, polling, tickets and admin.
fn api_paths() -> Value {
    json!({
        "/api/state": { "get": { "summary": "The current state: the latest snapshot of every (type, key) the token may see in these channels, and the id it is consistent with (subscribe with lastEventId = asOf for what follows).",
            "parameters": [
                { "name": "channels", "in": "query", "schema": { "type": "string" }, "description": "Comma-separated channels; all the token allows when omitted." },
                { "name": "tenant", "in": "query", "schema": { "type": "string" }, "description": "System tokens only." }
            ],
            "responses": { "200": { "description": "{asOf, events: [{id, type, event}]}, events in id order" },
                           "400": error_response("Bad channel."), "401": error_response("Bad token."), "403": error_response("Channel not allowed."), "404": error_response("Unknown channel."), "503": error_response("Log unavailable.") } } },
        "/api/tokens/revoke": { "post": { "summary": "Admin: every node refuses the token with this jti from now on (its tickets too); streams it opened end at their next heartbeat.",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["jti"], "properties": { "jti": { "type": "string" }, "tenant": { "type": "string", "description": "System tokens only; * for system tokens." }, "exp": { "type": "integer", "description": "When the token expires (Unix s); the revocation is kept until then. Default one year." } } } } } },
            "responses": { "200": { "description": "{revoked: {tenant, jti, exp}}" }, "400": error_response("Bad jti or exp."), "401": error_response("Bad token."), "403": error_response("Not admin."), "429": error_response("Too many revocations outstanding.") } } },
        "/api/sse/ticket": { "post": { "summary": "Trade the bearer token for a single-use ticket valid 30 s (never past its token); valid on any node.",
            "responses": { "200": { "description": "{ticket, expires_in}" }, "401": error_response("Bad token.") } } },
        "/api/sse/broadcast": { "post": { "summary": "Admin: publish one event to a tenant (or, with a system token, to listed tenants).",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "event": { "$ref": "#/components/schemas/Event" }, "tenants": { "type": "array", "items": { "type": "string" } } } } } } },
            "responses": { "201": { "description": "{ids}" }, "400": error_response("Invalid event."), "401": error_response("Bad token."), "403": error_response("Not admin.") } } },
        "/api/sse/status": { "get": { "summary": "Admin: connections, subscribers, events by type and channel per tenant.",
            "responses": { "200": { "description": "Status JSON." }, "401": error_response("Bad token."), "403": error_response("Not admin.") } } },
        "/api/events": {
            "get": { "summary": "Polling fallback: a page of history after an id.",
                "parameters": [
                    { "name": "channels", "in": "query", "schema": { "type": "string" } },
                    { "name": "after", "in": "query", "schema": { "type": "string" }, "description": "An event id or an SSE cursor `N~W`." },
                    { "name": "since", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Instead of `after`: everything published at or after this RFC 3339 time." },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                    { "name": "ticket", "in": "query", "schema": { "type": "string" } }
                ],
                "responses": { "200": { "description": "{events: [{id, type, event}], next, complete, oldestAvailableId, headId}" },
                               "400": error_response("Bad parameter."), "401": error_response("Bad token."), "403": error_response("Channel not allowed."), "404": error_response("Unknown channel.") } },
            "post": { "summary": "Publish one event (object) or a batch (array), all or nothing; answers once durable.",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "oneOf": [ { "$ref": "#/components/schemas/Event" }, { "type": "array", "items": { "$ref": "#/components/schemas/Event" } } ] } } } },
                "responses": { "201": { "description": "{id, duplicate} or {ids, duplicates}" }, "400": error_response("Invalid event; names the field."),
                               "401": error_response("Bad token."), "403": error_response("Needs the publish role / wrong tenant."), "413": error_response("Body too large."), "503": error_response("Log unavailable.") } }
        }
    })
}

/// Webhook ingress, one path per platform.
fn webhook_paths() -> Value {
    json!({
        "/api/webhooks/shopify": { "post": { "summary": "Shopify deliveries (every topic), verified with X-Shopify-Hmac-Sha256 over the raw body.", "security": [],
            "responses": { "200": { "description": "{ids, duplicates} once durable" }, "401": error_response("Bad signature."), "404": error_response("Not configured, or the shop is not mapped to a tenant.") } } },
        "/api/webhooks/xero": { "post": { "summary": "Xero deliveries and intent-to-receive, verified with x-xero-signature.", "security": [],
            "responses": { "200": { "description": "Empty body, once durable" }, "401": { "description": "Bad signature (empty body)." } } } },
        "/api/webhooks/unleashed": { "post": { "summary": "Unleashed deliveries, verified with x-unleashed-signature over `{x-unleashed-timestamp}.{body}`.", "security": [],
            "responses": { "200": { "description": "{ids, duplicates} once durable" }, "401": error_response("Bad or stale signature."), "404": error_response("Not configured.") } } },
        "/api/webhooks/amazon": { "post": { "summary": "AWS SNS messages (EventBridge → SNS → HTTPS) carrying SP-API notifications; RSA signature versions 1 and 2, certificates only from sns.<region>.amazonaws.com.", "security": [],
            "responses": { "200": { "description": "{ids, duplicates} once durable; {confirmed} for a subscription confirmation" }, "400": error_response("Not an SNS message."), "401": error_response("Bad signature or certificate URL."), "404": error_response("Not configured, topic not allowed, or seller not mapped."), "502": error_response("AWS unreachable (certificate or confirmation); SNS retries.") } } },
        "/api/webhooks/{source}": { "post": { "summary": "Standard Webhooks senders configured under webhooks.standard.<source>.", "security": [],
            "parameters": [{ "name": "source", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": { "200": { "description": "{ids, duplicates} once durable" }, "401": error_response("Bad or stale signature."), "404": error_response("Unknown source.") } } }
    })
}

/// The dashboard, the browser client, this document and the operational endpoints.
fn page_paths() -> Value {
    json!({
        "/": { "get": { "summary": "The live operations dashboard (HTML; token in the URL fragment).", "security": [], "responses": { "200": { "description": "text/html" } } } },
        "/dashboard.js": { "get": { "summary": "The dashboard's script.", "security": [], "responses": { "200": { "description": "text/javascript" } } } },
        "/dashboard.css": { "get": { "summary": "The dashboard's styles.", "security": [], "responses": { "200": { "description": "text/css" } } } },
        "/client.js": { "get": { "summary": "The browser client library (ES module): resume, backoff with jitter, heartbeat watchdog, polling fallback.", "security": [], "responses": { "200": { "description": "text/javascript" } } } },
        "/client.d.ts": { "get": { "summary": "TypeScript types for /client.js.", "security": [], "responses": { "200": { "description": "TypeScript" } } } },
        "/api/openapi.json": { "get": { "summary": "This document.", "security": [], "responses": { "200": { "description": "OpenAPI 3.1" } } } },
        "/metrics": { "get": { "summary": "Prometheus metrics.", "security": [], "responses": { "200": { "description": "text/plain" } } } },
        "/healthz": { "get": { "summary": "Liveness.", "security": [], "responses": { "200": { "description": "ok" } } } },
        "/readyz": { "get": { "summary": "Readiness: the log answers.", "security": [], "responses": { "200": { "description": "ready" }, "503": error_response("Not ready.") } } }
    })
}
