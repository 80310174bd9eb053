//! Example payloads built from the spec's own `example`s, for the `send` command and tests.
//!
//! Where the spec gives no example, the value is the simplest one its schema accepts, so the
//! example always parses into the generated type (an `example` that contradicts its `enum`, like
//! the seed's upper-case `STARTING` against a later lower-case enum, loses to the enum).

use serde_json::{Map, Value, json};

/// Nesting deeper than this is cut off (recursive schemas would never end).
const MAX_DEPTH: usize = 12;

pub(crate) fn example(schema: &Value, document: &Value) -> Value {
    build(schema, document, 0)
}

fn build(schema: &Value, document: &Value, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = reference.trim_start_matches('#');
        return match document.pointer(pointer) {
            Some(target) => build(target, document, depth + 1),
            None => Value::Null,
        };
    }
    let own_example = schema.get("example").cloned();
    if let Some(Value::Array(values)) = schema.get("enum") {
        return match own_example {
            Some(example) if values.contains(&example) => example,
            _ => values.first().cloned().unwrap_or(Value::Null),
        };
    }
    if let Some(example) = own_example.or_else(|| schema.get("default").cloned()) {
        return example;
    }
    if let Some(Value::Array(parts)) = schema.get("allOf") {
        let mut merged = Map::new();
        for part in parts {
            if let Value::Object(fields) = build(part, document, depth + 1) {
                merge(&mut merged, fields);
            }
        }
        if let Value::Object(own) = object(schema, document, depth) {
            merge(&mut merged, own);
        }
        return Value::Object(merged);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|a| a.first()) {
            return build(first, document, depth + 1);
        }
    }
    let minimum = schema.get("minimum").and_then(Value::as_f64);
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => json!(match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => "2025-04-01T12:00:00Z",
            Some("date") => "2025-04-01",
            Some("uuid") => "00000000-0000-4000-8000-000000000000",
            Some("uri" | "url") => "https://example.com/",
            Some("email") => "user@example.com",
            Some("ipv4") => "127.0.0.1",
            _ => "string",
        }),
        Some("integer") => json!(minimum.map_or(1, |m| m.ceil() as i64).max(1)),
        Some("number") => json!(minimum.unwrap_or(0.0).max(0.0)),
        Some("boolean") => json!(false),
        Some("array") => match schema.get("items") {
            Some(items) => json!([build(items, document, depth + 1)]),
            None => json!([]),
        },
        Some("object") | None if schema.get("properties").is_some() => object(schema, document, depth),
        Some("object") => json!({}),
        _ => Value::Null,
    }
}

fn object(schema: &Value, document: &Value, depth: usize) -> Value {
    let mut out = Map::new();
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (name, property) in properties {
            out.insert(name.clone(), build(property, document, depth + 1));
        }
    }
    Value::Object(out)
}

/// Merges `fields` into `into`; objects under the same key are merged too (an `allOf` that
/// narrows `data.status` keeps the rest of `data`).
fn merge(into: &mut Map<String, Value>, fields: Map<String, Value>) {
    for (key, value) in fields {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(more)) => merge(existing, more),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
