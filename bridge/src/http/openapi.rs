//! `GET /api/openapi.json`: the HTTP API, described from the route table ([`crate::http::route`]):
//! every served route is in it, with the operation its feature wrote beside the handler.

use serde_json::{Map, Value, json};

use crate::http::route::Route;

/// An error response: the JSON body every handler answers errors with.
pub fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

/// The document for `routes`.
pub fn spec<S>(routes: &[Route<S>]) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let ops = paths.entry(r.path.clone()).or_insert_with(|| json!({}));
        ops[r.method.to_ascii_lowercase()] = r.doc.clone();
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
