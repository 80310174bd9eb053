//! What a spec means to handler code, and what changes between two specs.
//!
//! A [`Shape`] is what a handler sees of each webhook: its method, and every field of its body
//! by path (`data.status`), with the Rust type the generated struct gives it (`Option<String>`,
//! `String`, `enum`), and an enum's values. It is read from the bundled document, as the
//! generator reads it, so that it says what the generated code does. The build embeds the
//! shape of the spec it was built from (`SPEC.shape`), so that the service's `spec diff` can
//! compare it with a newer spec without the old files; and [`diff`] says, for each change,
//! whether handler code that compiled before still does.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bundle::{Bundle, method_name};

/// Every webhook of a spec, as handler code sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// `info.title` and `info.version`.
    pub title: String,
    pub version: String,
    /// In spec order ([`Shape::webhook`] finds one by its event).
    pub webhooks: Vec<WebhookShape>,
}

/// One webhook as handler code sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookShape {
    /// The `event` its deliveries carry.
    pub event: String,
    /// The `WebhookHandler` method that handles it.
    pub method: String,
    /// Every field of its body, by path (`data.status`; an array's items as `data.files[]`).
    pub fields: BTreeMap<String, Field>,
}

/// One field of a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The Rust type without `Option`: `String`, `i64`, `f64`, `bool`, `enum`, `struct`, `map`,
    /// `union`, `serde_json::Value`, or `Vec<…>` of one of them.
    pub ty: String,
    /// Whether the generated field is an `Option` (not required, or nullable).
    pub optional: bool,
    /// An enum's values (empty for other types).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Field {
    /// [`Field::rust`], with an enum's values: `enum (starting | active)`.
    pub fn described(&self) -> String {
        if self.values.is_empty() { self.rust() } else { format!("{} ({})", self.rust(), self.values.join(" | ")) }
    }

    /// The type a handler sees: `Option<String>`, `String`, `Vec<enum>`.
    pub fn rust(&self) -> String {
        if self.optional { format!("Option<{}>", self.ty) } else { self.ty.clone() }
    }
}

/// What a change does to handler code that compiled before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// It no longer compiles wherever it names what changed.
    Breaking,
    /// It no longer compiles if it matches on the type exhaustively.
    PossiblyBreaking,
    /// It compiles as before.
    Compatible,
}

impl Effect {
    /// As the text report shows it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Breaking => "breaking",
            Self::PossiblyBreaking => "may break",
            Self::Compatible => "compatible",
        }
    }
}

/// One difference between two shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The webhook's event.
    pub webhook: String,
    /// The field's path; `None` for the webhook itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub effect: Effect,
    /// What changed, and what that does to a handler, in words.
    pub what: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = match &self.field {
            Some(field) => format!("{} {field}", self.webhook),
            None => self.webhook.clone(),
        };
        write!(f, "{:<11} {at}: {}", self.effect.label(), self.what)
    }
}

impl Shape {
    /// The shape of a bundled spec.
    pub fn of(bundle: &Bundle) -> Self {
        let text = |key| bundle.document.pointer(&format!("/info/{key}")).and_then(Value::as_str).unwrap_or("");
        let webhooks = bundle
            .webhooks
            .iter()
            .map(|webhook| {
                let mut fields = BTreeMap::new();
                if let Some(name) = &webhook.body_component {
                    let body = serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
                    Walk { document: &bundle.document, fields: &mut fields, seen: Vec::new() }.ty(&[&body], "");
                }
                WebhookShape { event: webhook.event.clone(), method: method_name(&webhook.operation_id), fields }
            })
            .collect();
        Self { title: text("title").to_owned(), version: text("version").to_owned(), webhooks }
    }

    /// The webhook whose deliveries carry `event`.
    pub fn webhook(&self, event: &str) -> Option<&WebhookShape> {
        self.webhooks.iter().find(|w| w.event == event)
    }

    /// `OpenVidu Meet 3.8.0`.
    pub fn name(&self) -> String {
        format!("{} {}", self.title, self.version)
    }
}

/// Reads a body's fields out of the bundled document.
struct Walk<'a> {
    document: &'a Value,
    fields: &'a mut BTreeMap<String, Field>,
    /// The components being read (a schema that contains itself is read once).
    seen: Vec<String>,
}

/// Schemas with their `$ref`s followed and their `allOf`s merged: what typify makes one type of.
#[derive(Default)]
struct Flat<'a> {
    types: BTreeSet<&'a str>,
    nullable: bool,
    values: Option<Vec<String>>,
    /// Each property with every schema given for it (an `allOf` member may narrow one).
    properties: Vec<(&'a str, Vec<&'a Value>)>,
    required: BTreeSet<&'a str>,
    items: Vec<&'a Value>,
    union: bool,
}

impl<'a> Walk<'a> {
    fn resolve(&self, schema: &'a Value) -> Option<(&'a Value, Option<String>)> {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.strip_prefix("#/components/schemas/")?;
                let pointer = format!("/components/schemas/{}", pointer_escape(name));
                Some((self.document.pointer(&pointer)?, Some(name.into())))
            }
            None => Some((schema, None)),
        }
    }

    fn flatten(&self, schema: &'a Value, flat: &mut Flat<'a>, depth: usize) {
        let Some((schema, _)) = self.resolve(schema) else { return };
        if depth > 32 {
            return;
        }
        flat.nullable |= schema.get("nullable").and_then(Value::as_bool).unwrap_or(false);
        match schema.get("type") {
            Some(Value::String(t)) => {
                flat.types.insert(t);
            }
            Some(Value::Array(types)) => flat.types.extend(types.iter().filter_map(Value::as_str)),
            _ => {}
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            let values: Vec<String> = values
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect();
            flat.values = Some(values);
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                match flat.properties.iter_mut().find(|(n, _)| n == name) {
                    Some((_, schemas)) => schemas.push(property),
                    None => flat.properties.push((name, vec![property])),
                }
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            flat.required.extend(required.iter().filter_map(Value::as_str));
        }
        if let Some(items) = schema.get("items") {
            flat.items.push(items);
        }
        if schema.get("oneOf").is_some() || schema.get("anyOf").is_some() {
            flat.union = true;
        }
        for member in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            self.flatten(member, flat, depth + 1);
        }
    }

    /// The Rust type of a value that fits all of `schemas`, whether it is nullable, and an
    /// enum's values; records its fields under `path` (for a struct, or an array of them).
    fn ty(&mut self, schemas: &[&'a Value], path: &str) -> (String, bool, Vec<String>) {
        let names: Vec<String> = schemas.iter().filter_map(|s| self.resolve(s).and_then(|(_, name)| name)).collect();
        if names.iter().any(|name| self.seen.contains(name)) {
            // A schema inside itself: a struct whose fields were read further up.
            return ("struct".into(), false, Vec::new());
        }
        let mut flat = Flat::default();
        for schema in schemas {
            self.flatten(schema, &mut flat, 0);
        }
        let nullable = flat.nullable || flat.types.contains("null");
        let types: Vec<&str> = flat.types.iter().copied().filter(|t| *t != "null").collect();
        if let Some(values) = flat.values {
            return ("enum".into(), nullable, values);
        }
        let ty = if flat.union || types.len() > 1 {
            "union".to_owned()
        } else if !flat.properties.is_empty() {
            let depth = self.seen.len();
            self.seen.extend(names);
            for (property, schemas) in &flat.properties {
                let required = flat.required.contains(property);
                self.field(schemas, &join(path, property), required);
            }
            self.seen.truncate(depth);
            "struct".to_owned()
        } else {
            match types.first().copied() {
                Some("string") => "String".to_owned(),
                Some("integer") => "i64".to_owned(),
                Some("number") => "f64".to_owned(),
                Some("boolean") => "bool".to_owned(),
                Some("array") if flat.items.is_empty() => "Vec<serde_json::Value>".to_owned(),
                Some("array") => format!("Vec<{}>", self.ty(&flat.items, &format!("{path}[]")).0),
                Some("object") => "map".to_owned(),
                _ => "serde_json::Value".to_owned(),
            }
        };
        (ty, nullable, Vec::new())
    }

    fn field(&mut self, schemas: &[&'a Value], path: &str, required: bool) {
        let (ty, nullable, values) = self.ty(schemas, path);
        self.fields.insert(path.to_owned(), Field { ty, optional: nullable || !required, values });
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// What changed from `old` to `new`, webhook by webhook in `new`'s order (then the removed
/// ones), each field once: under a field that was added, removed or changed its type, its own
/// fields are not listed again.
pub fn diff(old: &Shape, new: &Shape) -> Vec<Change> {
    let mut changes = Vec::new();
    for webhook in &new.webhooks {
        let change = |field: Option<&str>, effect, what: String| Change {
            webhook: webhook.event.clone(),
            field: field.map(str::to_owned),
            effect,
            what,
        };
        let Some(before) = old.webhook(&webhook.event) else {
            changes.push(change(
                None,
                Effect::Compatible,
                format!(
                    "webhook added: a new method `{}`; until it is implemented its deliveries are acknowledged \
                     with a warning",
                    webhook.method
                ),
            ));
            continue;
        };
        if before.method != webhook.method {
            changes.push(change(
                None,
                Effect::Breaking,
                format!(
                    "its method is renamed `{}` → `{}`: an implementation of `{}` no longer compiles",
                    before.method, webhook.method, before.method
                ),
            ));
        }
        // Fields whose own fields are covered by their change.
        let mut covered: Vec<String> = Vec::new();
        let under = |covered: &[String], path: &str| {
            covered.iter().any(|c| path.strip_prefix(c.as_str()).is_some_and(|rest| rest.starts_with(['.', '['])))
        };
        let paths: BTreeSet<&String> = before.fields.keys().chain(webhook.fields.keys()).collect();
        for path in paths {
            if under(&covered, path) {
                continue;
            }
            let at = Some(path.as_str());
            match (before.fields.get(path), webhook.fields.get(path)) {
                (None, Some(added)) => {
                    covered.push(path.clone());
                    changes.push(change(at, Effect::Compatible, format!("field added: {}", added.described())));
                }
                (Some(removed), None) => {
                    covered.push(path.clone());
                    changes.push(change(
                        at,
                        Effect::Breaking,
                        format!("field removed (it was {}): code that reads it no longer compiles", removed.rust()),
                    ));
                }
                (Some(was), Some(is)) => {
                    if was.ty != is.ty {
                        covered.push(path.clone());
                        changes.push(change(
                            at,
                            Effect::Breaking,
                            format!(
                                "type changed: {} → {}: code that reads it no longer compiles",
                                was.described(),
                                is.described()
                            ),
                        ));
                        continue;
                    }
                    if was.optional != is.optional {
                        let what = if is.optional { "made optional" } else { "made required" };
                        changes.push(change(
                            at,
                            Effect::Breaking,
                            format!("{what}: {} → {}: code that reads it no longer compiles", was.rust(), is.rust()),
                        ));
                    }
                    let removed: Vec<&str> =
                        was.values.iter().filter(|v| !is.values.contains(v)).map(String::as_str).collect();
                    let added: Vec<&str> =
                        is.values.iter().filter(|v| !was.values.contains(v)).map(String::as_str).collect();
                    if !removed.is_empty() {
                        changes.push(change(
                            at,
                            Effect::Breaking,
                            format!(
                                "enum values removed: {}: code that names one no longer compiles, and a stored \
                                 delivery that has one no longer fits the typed body",
                                removed.join(", ")
                            ),
                        ));
                    }
                    if !added.is_empty() {
                        changes.push(change(
                            at,
                            Effect::PossiblyBreaking,
                            format!(
                                "enum values added: {}: an exhaustive `match` on it needs an arm for each",
                                added.join(", ")
                            ),
                        ));
                    }
                }
                (None, None) => {}
            }
        }
    }
    for webhook in old.webhooks.iter().filter(|w| new.webhook(&w.event).is_none()) {
        changes.push(Change {
            webhook: webhook.event.clone(),
            field: None,
            effect: Effect::Breaking,
            what: format!(
                "webhook removed: an implementation of `{}` no longer compiles; its deliveries go to `fallback`",
                webhook.method
            ),
        });
    }
    changes
}

/// One line that counts the changes: `3 changes (1 breaking, 1 may break)`, or `no changes`.
pub fn summary(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes to the webhooks".into();
    }
    let count = |effect| changes.iter().filter(|c| c.effect == effect).count();
    let mut parts = Vec::new();
    for (effect, label) in [(Effect::Breaking, "breaking"), (Effect::PossiblyBreaking, "may break")] {
        if count(effect) > 0 {
            parts.push(format!("{} {label}", count(effect)));
        }
    }
    let noun = if changes.len() == 1 { "change" } else { "changes" };
    if parts.is_empty() {
        format!("{} {noun} to the webhooks, none breaking", changes.len())
    } else {
        format!("{} {noun} to the webhooks ({})", changes.len(), parts.join(", "))
    }
}
