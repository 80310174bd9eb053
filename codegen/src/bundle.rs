//! Bundling and down-leveling: the provider's multi-file OpenAPI 3.1 webhooks and REST API → one
//! OpenAPI 3.0.3 document that progenitor accepts.
//!
//! progenitor and openapiv3 read only OpenAPI 3.0, ignore `webhooks:`, and panic on file
//! references. So, in memory:
//!
//! - each entry of `webhooks:` (or `x-webhooks:`, or a bare webhooks map file) is read for its
//!   body, which becomes a component (the event name is the map key, which is also the `event`
//!   the provider sends); the REST API's `paths:`, when the root document has them, become the
//!   document's paths (the client's operations), sharing those components;
//! - parameters, request bodies, responses and path items that are `$ref`s are inlined;
//! - every referenced schema is hoisted into `components/schemas` under a stable name: the name
//!   the root document declares for it under `components/schemas`, else the last segment of the
//!   JSON pointer, else the file name in PascalCase (`recording-base.yaml` → `RecordingBase`).
//!   Generated type names derive from these, so this naming is part of the user's API;
//! - 3.1 schema forms become their 3.0 equivalents (`type: [T, 'null']` → `nullable`,
//!   `const` → one-value `enum`, `examples` → `example`, numeric `exclusiveMinimum`), and
//!   constraints that would make a future delivery fail to parse are loosened
//!   (`additionalProperties: false` is dropped: a provider adding a field must not break us).
//!
//! Only `webhooks:`, `paths:` and what they reference are read. The rest of a root document
//! (security, tags, unused components such as a broken `MeetWebhookEvent`) is never looked at.
//! A REST path that cannot be read is left out of the client with a warning that names it: the
//! webhooks must build whatever the REST part holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use heck::ToUpperCamelCase;
use serde_json::{Map, Value, json};

use crate::error::{Error, Location, Result, Warning};
use crate::load::{Files, Target, resolve};

/// How the bundle is shaped for its consumer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// Drop `enum`/`const` on strings so every enum becomes a `String`.
    pub relax_enums: bool,
}

/// One webhook of the spec.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The key under `webhooks:`, equal to the `event` field of the deliveries.
    pub event: String,
    pub operation_id: String,
    /// The HTTP method (always `post` for the provider).
    pub method: String,
    pub summary: Option<String>,
    pub description: Option<String>,
    /// Where the operation is in the spec.
    pub location: Location,
    /// The down-leveled JSON request body schema, if the operation has one.
    #[cfg_attr(not(feature = "generate"), allow(dead_code))]
    pub(crate) body: Option<Value>,
    /// The component of `components/schemas` that is the body (an inline body is made one,
    /// named `{OperationId}Body` as progenitor would name it); `None`: any JSON
    /// (`serde_json::Value`). The handler's body type is this component's type.
    pub(crate) body_component: Option<String>,
}

/// One operation of the REST API (`paths:`): a method of the generated client.
#[derive(Debug, Clone)]
pub struct Operation {
    pub operation_id: String,
    /// The HTTP method, lower case.
    pub method: String,
    /// The path under the API's base URL (`/recordings/{recordingId}`).
    pub path: String,
    pub summary: Option<String>,
    /// Where the operation is in the spec.
    pub location: Location,
}

/// The result of bundling.
#[derive(Debug)]
pub struct Bundle {
    /// The OpenAPI 3.0.3 document.
    pub document: Value,
    /// Every webhook, in spec order.
    pub webhooks: Vec<Webhook>,
    /// Every REST operation the client has, in spec order (none without `paths:`).
    pub operations: Vec<Operation>,
    /// Every file the spec pulled in, the root first.
    pub files: Vec<PathBuf>,
    /// Which part of the bundled document came from where (for error messages).
    #[cfg_attr(not(feature = "generate"), allow(dead_code))]
    pub(crate) origins: Vec<(String, Location)>,
    /// What had to be degraded or made up, where.
    pub warnings: Vec<Warning>,
}

#[cfg_attr(not(feature = "generate"), allow(dead_code))]
impl Bundle {
    /// Takes a REST path, and its operations, out of the client.
    pub(crate) fn drop_path(&mut self, path: &str) {
        if let Some(paths) = self.document.get_mut("paths").and_then(Value::as_object_mut) {
            paths.remove(path);
        }
        self.operations.retain(|operation| operation.path != path);
    }

    /// Maps a pointer into the bundled document back to the user's file.
    pub(crate) fn origin_of(&self, pointer: &str) -> Location {
        self.origins
            .iter()
            .filter(|(prefix, _)| pointer.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(prefix, at)| Location {
                file: at.file.clone(),
                pointer: format!("{}{}", at.pointer, &pointer[prefix.len()..]),
            })
            .unwrap_or_else(|| Location::new(&self.files[0], pointer))
    }
}

/// The handler method's name: the snake_case operationId, as progenitor spells it.
pub(crate) fn method_name(operation_id: &str) -> String {
    use heck::ToSnakeCase;
    operation_id.replace('\'', "").replace(|c: char| !(c.is_alphanumeric() || c == '_'), "-").to_snake_case()
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// What decides a response's Rust type: its media types and their schemas (not examples).
fn body_shape(content: &Value) -> Value {
    content
        .as_object()
        .into_iter()
        .flatten()
        .map(|(media_type, media)| (media_type.clone(), media.get("schema").cloned().unwrap_or(Value::Null)))
        .collect::<Map<String, Value>>()
        .into()
}

/// A response status progenitor counts as a success (`default` is both, as there).
fn is_success(status: &str) -> bool {
    status == "default" || status.starts_with('2')
}

/// A response status progenitor counts as an error.
fn is_error(status: &str) -> bool {
    status == "default" || status.starts_with('4') || status.starts_with('5')
}

/// Keys beside a `$ref` that only annotate it; OpenAPI 3.0 ignores them and so can we.
const ANNOTATIONS: [&str; 9] =
    ["description", "summary", "title", "example", "examples", "deprecated", "readOnly", "writeOnly", "$comment"];

/// The types JSON Schema has.
const TYPES: [&str; 7] = ["string", "number", "integer", "boolean", "array", "object", "null"];

/// 3.1 (JSON Schema 2020-12) keywords that only constrain the data and have no 3.0 form: dropped
/// with a warning (the receiver accepts more than the spec, never less).
const CONSTRAINTS_WITHOUT_3_0_FORM: [&str; 8] =
    ["if", "then", "else", "dependentSchemas", "unevaluatedItems", "patternProperties", "prefixItems", "not"];

/// Keywords that only constrain or annotate: safe to drop for a receiver that must accept
/// whatever the provider sends. (`pattern` too: typify would check it with the `regress`
/// crate, which a receiver need not depend on.)
const DROPPED: [&str; 16] = [
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$comment",
    "$defs",
    "definitions",
    "$vocabulary",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
    "unevaluatedProperties",
    "propertyNames",
    "contains",
    "dependentRequired",
    "pattern",
];

/// `minContains`/`maxContains` only make sense with `contains`, dropped above.
const DROPPED_WITH_CONTAINS: [&str; 2] = ["minContains", "maxContains"];

/// Keywords that belong to one type, for splitting `type: [string, number]` into `oneOf`.
fn keyword_type(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "minLength" | "maxLength" => "string",
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" => "number",
        "items" | "minItems" | "maxItems" | "uniqueItems" => "array",
        "properties" | "required" | "additionalProperties" | "minProperties" | "maxProperties" => "object",
        _ => return None,
    })
}

pub(crate) fn bundle(spec: &Path, options: &Options) -> Result<Bundle> {
    let mut bundler = Bundler {
        files: Files::default(),
        options,
        declared: HashMap::new(),
        names: HashMap::new(),
        taken: HashMap::new(),
        schemas: Map::new(),
        nullable: std::collections::HashSet::new(),
        origins: Vec::new(),
        operation_ids: HashMap::new(),
        warnings: Vec::new(),
    };
    let root = bundler.files.load(spec)?.clone();
    let root_at = Location::new(spec, "");
    bundler.declare_component_names(&root, &root_at);

    let (webhooks, webhooks_at) = if let Some(w) = root.get("webhooks") {
        (w.clone(), root_at.child("webhooks"))
    } else if let Some(w) = root.get("x-webhooks") {
        (w.clone(), root_at.child("x-webhooks"))
    } else if root.get("openapi").is_some() || root.get("swagger").is_some() {
        return Err(Error::unsupported(
            &root_at,
            "the document has no `webhooks:` (OpenAPI 3.1) or `x-webhooks:` (3.0) map",
        ));
    } else {
        // A bare map of event name → path item, like the provider's webhooks/webhooks.yaml.
        (root.clone(), root_at.clone())
    };
    let (webhooks, webhooks_at) = bundler.deref(webhooks, webhooks_at)?;
    let Value::Object(webhooks) = webhooks else {
        return Err(Error::unsupported(&webhooks_at, "webhooks must be a map of event name to path item"));
    };

    let mut found = Vec::new();
    for (event, item) in webhooks {
        let (item, item_at) = bundler.deref(item, webhooks_at.child(&event))?;
        bundler.path_item(&item, &item_at, &event, &mut found)?;
    }

    // The REST API, when the root document has one: the client's operations.
    let mut paths = Map::new();
    let mut operations = Vec::new();
    if root.get("openapi").is_some()
        && let Some(rest) = root.get("paths")
    {
        let (rest, rest_at) = bundler.deref(rest.clone(), root_at.child("paths"))?;
        for (path, item) in rest.as_object().into_iter().flatten() {
            let at = rest_at.child(path);
            match bundler.rest_path_item(item, &at, path) {
                Ok((item, ops)) => {
                    bundler.origins.push((format!("/paths/{}", path.replace('~', "~0").replace('/', "~1")), at));
                    paths.insert(path.clone(), Value::Object(item));
                    operations.extend(ops);
                }
                Err(e) => bundler.warn(&at, format!("the client has no operations for `{path}`: {e}")),
            }
        }
    }

    // The provider writes `info: {$ref: ./shared/info.yaml}`.
    let info = match root.get("info") {
        Some(info) => Some(bundler.deref(info.clone(), root_at.child("info"))?.0),
        None => None,
    };
    let text = |key: &str, default: &str| {
        info.as_ref().and_then(|i| i.get(key)).and_then(Value::as_str).unwrap_or(default).to_owned()
    };
    let document = json!({
        "openapi": "3.0.3",
        "info": { "title": text("title", "Webhooks"), "version": text("version", "0.0.0") },
        "paths": paths,
        "components": { "schemas": bundler.schemas },
    });
    let mut files: Vec<PathBuf> = vec![spec.to_path_buf()];
    files.extend(bundler.files.paths().filter(|p| *p != spec).map(Path::to_path_buf));
    Ok(Bundle { document, webhooks: found, operations, files, origins: bundler.origins, warnings: bundler.warnings })
}

struct Bundler<'a> {
    files: Files,
    options: &'a Options,
    /// Names the root document gives schemas under `components/schemas`, by target.
    declared: HashMap<Target, String>,
    /// Names already given to hoisted schemas, by target.
    names: HashMap<Target, String>,
    /// Which target holds each name.
    taken: HashMap<String, Target>,
    /// The output `components/schemas`, in the order they were first referenced.
    schemas: Map<String, Value>,
    /// Components that are unions which may be null: the null is said where they are used.
    nullable: std::collections::HashSet<String>,
    origins: Vec<(String, Location)>,
    /// Where each handler method's operationId is (by method name).
    operation_ids: HashMap<String, Location>,
    warnings: Vec<Warning>,
}

impl Bundler<'_> {
    fn declare_component_names(&mut self, root: &Value, root_at: &Location) {
        let Some(Value::Object(schemas)) = root.pointer("/components/schemas") else {
            return;
        };
        let at = root_at.child("components").child("schemas");
        for (name, schema) in schemas {
            let own = at.child(name);
            let target = Target { file: own.file.clone(), pointer: own.pointer.clone() };
            self.declared.insert(target, name.clone());
            // `MeetRoom: {$ref: ./schemas/meet-room.yaml}`: a webhook that refers to the file
            // directly still gets the declared name. A broken declaration is not our concern
            // unless a webhook uses it, so resolution errors are ignored here.
            if let Some(Ok(target)) = schema.get("$ref").and_then(Value::as_str).map(|r| resolve(r, &own)) {
                self.declared.entry(target).or_insert_with(|| name.clone());
            }
        }
    }

    /// Follows `$ref`s until a value that is not one (for objects that are inlined).
    fn deref(&mut self, mut value: Value, mut at: Location) -> Result<(Value, Location)> {
        let mut chain: Vec<Target> = Vec::new();
        while let Some(reference) = value.get("$ref") {
            let reference = ref_str(reference, &at)?;
            let target = resolve(&reference, &at)?;
            if chain.contains(&target) {
                return Err(cycle(&at, &reference, &chain, &target));
            }
            value = self.files.get(&target, &at.child("$ref"), &reference)?;
            at = target.location();
            chain.push(target);
        }
        Ok((value, at))
    }

    fn path_item(
        &mut self,
        item: &Value,
        at: &Location,
        event: &str,
        found: &mut Vec<Webhook>,
    ) -> Result<Map<String, Value>> {
        let Value::Object(item) = item else {
            return Err(Error::unsupported(at, "a webhook must be a path item (a map of operations)"));
        };
        let mut out = Map::new();
        for (key, value) in item {
            let child = at.child(key);
            if METHODS.contains(&key.as_str()) {
                let (operation, webhook) = self.operation(value, &child, event, key)?;
                out.insert(key.clone(), Value::Object(operation));
                found.push(webhook);
            } else if key == "parameters" {
                out.insert(key.clone(), self.parameters(value, &child)?);
            } else if key == "summary" || key == "description" {
                out.insert(key.clone(), value.clone());
            }
        }
        if !out.keys().any(|k| METHODS.contains(&k.as_str())) {
            return Err(Error::unsupported(at, format!("webhook {event:?} has no operation (post:)")));
        }
        Ok(out)
    }

    /// What a webhook and a REST operation keep alike: their names and texts as they are, their
    /// parameters down-leveled. `false` for any other key, which the caller decides on.
    fn kept_by_every_operation(
        &mut self,
        key: &str,
        value: &Value,
        at: &Location,
        out: &mut Map<String, Value>,
    ) -> Result<bool> {
        match key {
            "operationId" | "summary" | "description" | "deprecated" => {
                out.insert(key.to_owned(), value.clone());
            }
            "parameters" => {
                out.insert(key.to_owned(), self.parameters(value, at)?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A path item of the REST API, for the client: its operations and shared parameters.
    fn rest_path_item(
        &mut self,
        item: &Value,
        at: &Location,
        path: &str,
    ) -> Result<(Map<String, Value>, Vec<Operation>)> {
        let (item, at) = self.deref(item.clone(), at.clone())?;
        let Value::Object(item) = item else {
            return Err(Error::unsupported(&at, "a path item must be a map of operations"));
        };
        let mut out = Map::new();
        let mut operations = Vec::new();
        for (key, value) in &item {
            let child = at.child(key);
            if METHODS.contains(&key.as_str()) {
                let (operation, found) = self.rest_operation(value, &child, path, key)?;
                out.insert(key.clone(), Value::Object(operation));
                operations.push(found);
            } else if key == "parameters" {
                out.insert(key.clone(), self.parameters(value, &child)?);
            } else if key == "summary" || key == "description" {
                out.insert(key.clone(), value.clone());
            }
        }
        Ok((out, operations))
    }

    /// A REST operation, down-leveled for progenitor: JSON bodies typed, any other response
    /// media type kept as raw bytes (progenitor's `ByteStream`: a recording's `video/mp4`).
    fn rest_operation(
        &mut self,
        operation: &Value,
        at: &Location,
        path: &str,
        method: &str,
    ) -> Result<(Map<String, Value>, Operation)> {
        let (operation, at) = self.deref(operation.clone(), at.clone())?;
        let Value::Object(operation) = operation else {
            return Err(Error::unsupported(&at, "an operation must be a map"));
        };
        let Some(operation_id) =
            operation.get("operationId").and_then(Value::as_str).filter(|id| !id.trim().is_empty())
        else {
            return Err(Error::unsupported(&at, "the operation has no operationId, which names its client method"));
        };
        let mut out = Map::new();
        for (key, value) in &operation {
            let child = at.child(key);
            if self.kept_by_every_operation(key, value, &child, &mut out)? {
                continue;
            }
            match key.as_str() {
                "requestBody" => {
                    let (body, body_at) = self.deref(value.clone(), child)?;
                    let body = self.request_body(&body, &body_at)?;
                    if body.get("content").and_then(Value::as_object).is_some_and(|c| !c.is_empty()) {
                        out.insert(key.clone(), body);
                    } else {
                        self.warn(&body_at, "no application/json request body: the client method sends none");
                    }
                }
                "responses" => {
                    out.insert(key.clone(), self.rest_responses(value, &child)?);
                }
                // security (the client sends its key on every request), servers, tags,
                // callbacks, externalDocs, x-*: not part of the call.
                _ => {}
            }
        }
        out.entry("responses").or_insert_with(|| json!({ "default": { "description": "" } }));
        let found = Operation {
            operation_id: operation_id.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            summary: operation.get("summary").and_then(Value::as_str).map(str::to_owned),
            location: at,
        };
        Ok((out, found))
    }

    /// A REST operation's responses: JSON content typed as for webhooks; without JSON, the
    /// first other media type kept bare, so that progenitor hands its bytes over as they come.
    fn rest_responses(&mut self, value: &Value, at: &Location) -> Result<Value> {
        let (value, at) = self.deref(value.clone(), at.clone())?;
        let mut out = self.responses(&value, &at)?;
        for (status, response) in out.as_object_mut().into_iter().flatten() {
            if response.get("content").is_some() {
                continue;
            }
            let raw = value
                .get(status)
                .map(|r| self.deref(r.clone(), at.child(status)).map(|(r, _)| r))
                .transpose()?
                .and_then(|r| r.get("content").and_then(Value::as_object).and_then(|c| c.keys().next().cloned()));
            if let (Some(media_type), Value::Object(response)) = (raw, response) {
                response.insert("content".into(), json!({ media_type: {} }));
            }
        }
        // progenitor gives an operation one success type and one error type: where its
        // successes (or its errors) have different bodies, they become any JSON, said once.
        for (class, is_class) in [("successful", is_success as fn(&str) -> bool), ("error", is_error)] {
            let bodies: Vec<(String, Value)> = out
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(status, _)| is_class(status))
                .filter_map(|(status, r)| r.get("content").map(|c| (status.clone(), body_shape(c))))
                .collect();
            if bodies.windows(2).all(|pair| pair[0].1 == pair[1].1) {
                continue;
            }
            let statuses: Vec<&str> = bodies.iter().map(|(status, _)| status.as_str()).collect();
            self.warn(
                &at,
                format!(
                    "the {class} responses ({}) have different bodies, and a client method has one type for them: \
                     the client reads them as serde_json::Value",
                    statuses.join(", ")
                ),
            );
            for (status, _) in &bodies {
                if let Some(content) =
                    out.get_mut(status).and_then(|r| r.get_mut("content")).and_then(Value::as_object_mut)
                {
                    for media in content.values_mut() {
                        if media.get("schema").is_some() {
                            media["schema"] = json!({});
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn operation(
        &mut self,
        operation: &Value,
        at: &Location,
        event: &str,
        method: &str,
    ) -> Result<(Map<String, Value>, Webhook)> {
        let Value::Object(operation) = operation else {
            return Err(Error::unsupported(at, "an operation must be a map"));
        };
        let operation_id = match operation.get("operationId") {
            Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
            _ => {
                // The webhook's key names it instead: `recordingDeleted` → `recording_deleted`.
                let base = if method == "post" { event.to_owned() } else { format!("{event}-{method}") };
                let mut derived = base.clone();
                let mut n = 2;
                while self.operation_ids.contains_key(&method_name(&derived)) {
                    derived = format!("{base}{n}");
                    n += 1;
                }
                let method = method_name(&derived);
                self.warn(
                    at,
                    format!("no operationId: the handler method is named after the webhook's key, `{method}`"),
                );
                derived
            }
        };
        // `recordingEnded` and `recording-ended` would be one handler method.
        if let Some(first) = self.operation_ids.get(&method_name(&operation_id)) {
            return Err(Error::DuplicateOperationId {
                at: at.child("operationId"),
                operation_id,
                first: first.clone(),
            });
        }
        self.operation_ids.insert(method_name(&operation_id), at.child("operationId"));

        let mut out = Map::new();
        let mut body = None;
        let mut body_at = at.child("requestBody");
        for (key, value) in operation {
            let child = at.child(key);
            if self.kept_by_every_operation(key, value, &child, &mut out)? {
                continue;
            }
            match key.as_str() {
                "requestBody" => {
                    let (request_body, request_at) = self.deref(value.clone(), child)?;
                    let request_body = self.request_body(&request_body, &request_at)?;
                    body = request_body.pointer("/content/application~1json/schema").cloned();
                    body_at = request_at.child("content").child("application/json").child("schema");
                    out.insert(key.clone(), request_body);
                }
                "responses" => {
                    out.insert(key.clone(), self.responses(value, &child)?);
                }
                // callbacks, security, servers, tags, externalDocs, x-*: not part of the payload.
                _ => {}
            }
        }
        if body.is_none() {
            // Nothing typed to hand over; the handler gets the JSON as it came.
            self.warn(at, "no application/json request body: the handler gets the body as serde_json::Value");
            body = Some(json!({}));
            out.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/json": { "schema": {} } } }),
            );
        }
        let body_component = self.body_component(body.as_ref(), &body_at, &operation_id, &mut out);
        out.insert("operationId".into(), Value::String(operation_id.clone()));
        out.entry("responses").or_insert_with(|| json!({ "200": { "description": "OK" } }));
        let text = |key: &str| operation.get(key).and_then(Value::as_str).map(str::to_owned);
        let webhook = Webhook {
            event: event.to_owned(),
            operation_id,
            method: method.to_owned(),
            summary: text("summary"),
            description: text("description"),
            location: at.clone(),
            body,
            body_component,
        };
        Ok((out, webhook))
    }

    /// Names the body's type here rather than leave it to progenitor: an inline schema
    /// becomes the component `{OperationId}Body` (the operation then refers to it), a
    /// reference names its component, an empty schema is any JSON (`None`).
    fn body_component(
        &mut self,
        body: Option<&Value>,
        at: &Location,
        operation_id: &str,
        operation: &mut Map<String, Value>,
    ) -> Option<String> {
        let schema = body?.as_object()?;
        if schema.is_empty() {
            return None;
        }
        if let (1, Some(name)) = (
            schema.len(),
            schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")),
        ) {
            return Some(name.to_owned());
        }
        let target = Target { file: at.file.clone(), pointer: at.pointer.clone() };
        let name = self.unique(format!("{operation_id}-body").to_upper_camel_case(), &target);
        self.schemas.insert(name.clone(), Value::Object(schema.clone()));
        self.origins.push((format!("/components/schemas/{name}"), at.clone()));
        if let Some(slot) =
            operation.get_mut("requestBody").and_then(|b| b.pointer_mut("/content/application~1json/schema"))
        {
            *slot = json!({ "$ref": format!("#/components/schemas/{name}") });
        }
        Some(name)
    }

    fn parameters(&mut self, value: &Value, at: &Location) -> Result<Value> {
        let Value::Array(parameters) = value else {
            return Err(Error::unsupported(at, "parameters must be a list"));
        };
        let mut out = Vec::new();
        for (i, parameter) in parameters.iter().enumerate() {
            let (parameter, at) = self.deref(parameter.clone(), at.child(i))?;
            let Value::Object(parameter) = parameter else {
                return Err(Error::unsupported(&at, "a parameter must be a map"));
            };
            let mut kept = Map::new();
            for (key, value) in parameter {
                match key.as_str() {
                    "schema" => {
                        kept.insert(key.clone(), self.schema(&value, &at.child("schema"))?);
                    }
                    "content" => {
                        kept.insert(key.clone(), self.content(&value, &at.child("content"))?);
                    }
                    // `examples` may hold refs to example objects: not needed for code.
                    "examples" => {}
                    _ => {
                        kept.insert(key, value);
                    }
                }
            }
            out.push(Value::Object(kept));
        }
        Ok(Value::Array(out))
    }

    fn request_body(&mut self, body: &Value, at: &Location) -> Result<Value> {
        let Value::Object(body) = body else {
            return Err(Error::unsupported(at, "a request body must be a map"));
        };
        let mut out = Map::new();
        for (key, value) in body {
            match key.as_str() {
                "content" => {
                    out.insert(key.clone(), self.content(value, &at.child(key))?);
                }
                "description" | "required" => {
                    out.insert(key.clone(), value.clone());
                }
                _ => {}
            }
        }
        Ok(Value::Object(out))
    }

    fn responses(&mut self, value: &Value, at: &Location) -> Result<Value> {
        let Value::Object(responses) = value else {
            return Err(Error::unsupported(at, "responses must be a map"));
        };
        let mut out = Map::new();
        for (status, response) in responses {
            if status.starts_with("x-") {
                continue;
            }
            let (response, at) = self.deref(response.clone(), at.child(status))?;
            let mut kept = Map::new();
            kept.insert("description".into(), response.get("description").cloned().unwrap_or_else(|| json!("")));
            if let Some(content) = response.get("content") {
                let content = self.content(content, &at.child("content"))?;
                if content.as_object().is_some_and(|c| !c.is_empty()) {
                    kept.insert("content".into(), content);
                }
            }
            out.insert(status.clone(), Value::Object(kept));
        }
        Ok(Value::Object(out))
    }

    fn content(&mut self, value: &Value, at: &Location) -> Result<Value> {
        let Value::Object(content) = value else {
            return Err(Error::unsupported(at, "content must be a map of media types"));
        };
        // Only JSON is delivered. `application/json; charset=utf-8` and `application/x+json`
        // are JSON too; progenitor knows them only as `application/json`.
        let mut out = Map::new();
        for (media_type, media) in content {
            let essence = media_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            if !(essence == "application/json" || essence.ends_with("+json")) || out.contains_key("application/json") {
                continue;
            }
            let at = at.child(media_type);
            let mut kept = Map::new();
            if let Some(schema) = media.get("schema") {
                kept.insert("schema".into(), self.schema(schema, &at.child("schema"))?);
            }
            if let Some(example) = media.get("example") {
                kept.insert("example".into(), example.clone());
            }
            out.insert("application/json".to_owned(), Value::Object(kept));
        }
        Ok(Value::Object(out))
    }

    /// Down-levels one schema; `$ref`s are hoisted into `components/schemas`.
    fn schema(&mut self, value: &Value, at: &Location) -> Result<Value> {
        let map = match value {
            Value::Object(map) => map,
            // JSON Schema allows `true` (anything) as a schema.
            Value::Bool(true) => return Ok(json!({})),
            Value::Bool(false) => {
                self.warn(
                    at,
                    "the schema `false` (nothing is valid) has no OpenAPI 3.0 form: typed as serde_json::Value",
                );
                return Ok(json!({}));
            }
            _ => return Err(Error::unsupported(at, "a schema must be a map")),
        };
        let Some(reference) = map.get("$ref") else {
            return Ok(Value::Object(self.schema_keywords(map, at)?));
        };
        let name = self.hoist(&ref_str(reference, at)?, &at.child("$ref"))?;
        let reference = if self.nullable.contains(&name) {
            json!({ "nullable": true, "allOf": [{ "$ref": format!("#/components/schemas/{name}") }] })
        } else {
            json!({ "$ref": format!("#/components/schemas/{name}") })
        };
        let siblings: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| *k != "$ref" && !ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if siblings.is_empty() {
            return Ok(reference);
        }
        // 3.1 lets keywords beside a `$ref` add to it; 3.0 ignores them. `allOf` keeps both.
        let mut out = self.schema_keywords(&siblings, at)?;
        match out.get_mut("allOf") {
            Some(Value::Array(all_of)) => all_of.insert(0, reference),
            _ => {
                out.insert("allOf".into(), json!([reference]));
            }
        }
        Ok(Value::Object(out))
    }

    fn schema_keywords(&mut self, map: &Map<String, Value>, at: &Location) -> Result<Map<String, Value>> {
        if let Some(Value::Array(types)) = map.get("type") {
            let others: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
            if others.len() > 1 {
                return self.type_list(map, types, at);
            }
        }
        if let (None, Some(Value::Array(values))) = (map.get("type"), map.get("enum")) {
            // An enum without a type whose values are of several types: typify would panic.
            let mut types: Vec<Value> = Vec::new();
            for value in values {
                let name = TYPES.iter().find(|t| fits(value, t) && **t != "integer").copied().unwrap_or("null");
                if !types.contains(&json!(name)) {
                    types.push(json!(name));
                }
            }
            let mut typed = map.clone();
            match types.iter().filter(|t| *t != "null").count() {
                0 => {}
                // An enum of strings (and null): typed, as openapiv3 and typify need it.
                1 => {
                    typed.insert("type".into(), Value::Array(types));
                    return self.schema_keywords(&typed, at);
                }
                _ => {
                    typed.insert("type".into(), Value::Array(types.clone()));
                    return self.type_list(&typed, &types, at);
                }
            }
        }
        if map.contains_key("$dynamicRef") {
            self.warn(at, "`$dynamicRef` has no OpenAPI 3.0 form: this value is serde_json::Value");
            return Ok(Map::new());
        }
        let mut out = Map::new();
        let relax = self.options.relax_enums;
        let numeric = matches!(single_type(map), Some("integer" | "number"));
        for (key, value) in map {
            let child = at.child(key);
            match key.as_str() {
                "type" => {
                    let (one, nullable) = match value {
                        Value::String(t) => (Some(t.as_str()), false),
                        Value::Array(types) => {
                            let one = types.iter().find(|t| *t != "null");
                            (one.and_then(Value::as_str), types.iter().any(|t| t == "null"))
                        }
                        _ => {
                            return Err(Error::unsupported(&child, "`type` must be a string or a list of strings"));
                        }
                    };
                    for name in match value {
                        Value::Array(types) => types.iter().collect(),
                        other => vec![other],
                    } {
                        if !name.as_str().is_some_and(|n| TYPES.contains(&n)) {
                            return Err(Error::unsupported(
                                &child,
                                format!("{name} is not a JSON Schema type (one of {})", TYPES.join(", ")),
                            ));
                        }
                    }
                    // `type: 'null'` (or `['null']`) alone: openapiv3 has no null type.
                    if let Some(one) = one.filter(|t| *t != "null") {
                        out.insert(key.clone(), Value::String(one.to_owned()));
                    }
                    if nullable || one == Some("null") {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                }
                "const" => {
                    if !(relax && value.is_string()) {
                        out.insert("enum".into(), json!([value]));
                    }
                }
                "enum" => {
                    let Value::Array(values) = value else {
                        return Err(Error::unsupported(&child, "`enum` must be a list"));
                    };
                    let non_null: Vec<Value> = values.iter().filter(|v| !v.is_null()).cloned().collect();
                    if non_null.len() != values.len() {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                    if relax && non_null.iter().all(Value::is_string) {
                        continue;
                    }
                    // `''` and `' '` (or `a-b` and `a_b`) would be the same Rust variant.
                    let mut variants: Vec<String> = non_null
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|v| method_name(v).to_upper_camel_case())
                        .collect();
                    let count = variants.len();
                    variants.sort();
                    variants.dedup();
                    if variants.len() < count || variants.iter().any(String::is_empty) {
                        self.warn(&child, "values of this enum would be the same Rust variant: typed as String");
                        continue;
                    }
                    out.insert(key.clone(), Value::Array(non_null));
                }
                "default" => {
                    let outside_enum = map.get("enum").and_then(Value::as_array).is_some_and(|e| !e.contains(value));
                    if single_type(map).is_some_and(|t| !fits(value, t)) || outside_enum {
                        self.warn(&child, format!("the default {value} does not fit the schema: dropped"));
                    } else {
                        out.insert(key.clone(), value.clone());
                    }
                }
                // Formats on strings become `String`: typify would name `uuid::Uuid` or
                // `chrono::DateTime`, crates a receiver need not depend on, and a value the
                // provider formats differently would send the whole delivery to the fallback.
                // Integer and number formats choose the Rust width (`int32` → `i32`).
                "format" => {
                    if numeric {
                        out.insert(key.clone(), value.clone());
                    }
                }
                "examples" => {
                    if let (Some(first), false) =
                        (value.as_array().and_then(|a| a.first()), map.contains_key("example"))
                    {
                        out.insert("example".into(), first.clone());
                    }
                }
                "properties" => {
                    let Value::Object(properties) = value else {
                        return Err(Error::unsupported(&child, "`properties` must be a map"));
                    };
                    let mut kept = Map::new();
                    // `a-b`, `a.b` and `a_b` would all be the Rust field `a_b`.
                    let mut fields: HashMap<String, &str> = HashMap::new();
                    for (name, schema) in properties {
                        if let Some(first) = fields.get(&method_name(name)) {
                            self.warn(
                                &child.child(name),
                                format!(
                                    "property {name:?} would be the same Rust field as {first:?}: left out of the typed body (it is still in the delivery's raw body)"
                                ),
                            );
                            continue;
                        }
                        fields.insert(method_name(name), name);
                        kept.insert(name.clone(), self.schema(schema, &child.child(name))?);
                    }
                    out.insert(key.clone(), Value::Object(kept));
                }
                "items" => match value {
                    // 2019-09 tuple form: an array of schemas.
                    Value::Array(_) => {
                        self.warn(
                            &child,
                            "a list of item schemas (a tuple) has no OpenAPI 3.0 form: items are serde_json::Value",
                        );
                    }
                    _ => {
                        out.insert(key.clone(), self.schema(value, &child)?);
                    }
                },
                "additionalProperties" => match value {
                    // Dropped on purpose: `false` would make typify deny unknown fields, and the
                    // provider adds fields before anyone regenerates.
                    Value::Bool(false) => {}
                    Value::Bool(true) => {
                        out.insert(key.clone(), value.clone());
                    }
                    schema => {
                        out.insert(key.clone(), self.schema(schema, &child)?);
                    }
                },
                "allOf" | "anyOf" | "oneOf" => {
                    let Value::Array(schemas) = value else {
                        return Err(Error::unsupported(&child, format!("`{key}` must be a list")));
                    };
                    let kept = schemas
                        .iter()
                        .enumerate()
                        .map(|(i, s)| self.schema(s, &child.child(i)))
                        .collect::<Result<Vec<_>>>()?;
                    out.insert(key.clone(), Value::Array(kept));
                }
                // typify tells the variants of a oneOf apart by their own schemas; a discriminator
                // adds nothing it needs, and the provider's own names a property that does not
                // exist.
                "discriminator" => {}
                "exclusiveMinimum" | "exclusiveMaximum" if value.is_number() => {
                    let bound = if key == "exclusiveMinimum" { "minimum" } else { "maximum" };
                    out.insert(bound.into(), value.clone());
                    out.insert(key.clone(), Value::Bool(true));
                }
                k if DROPPED.contains(&k) || DROPPED_WITH_CONTAINS.contains(&k) => {}
                k if CONSTRAINTS_WITHOUT_3_0_FORM.contains(&k) => {
                    self.warn(
                        &child,
                        format!("`{k}` has no OpenAPI 3.0 form: dropped (the typed body accepts more than the spec)"),
                    );
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(out)
    }

    /// `type: [string, number, 'null']` → `oneOf` of one schema per type, each with the keywords
    /// that belong to it (`minLength` to the string, `properties` to the object); the rest
    /// (`description`, `enum`, ...) stays around the `oneOf`. An integer is tried before a number.
    fn type_list(&mut self, map: &Map<String, Value>, types: &[Value], at: &Location) -> Result<Map<String, Value>> {
        let mut names: Vec<&str> = Vec::new();
        for t in types {
            match t.as_str() {
                Some(name) if TYPES.contains(&name) => names.push(name),
                _ => {
                    return Err(Error::unsupported(
                        &at.child("type"),
                        format!("{t} is not a JSON Schema type (one of {})", TYPES.join(", ")),
                    ));
                }
            }
        }
        names.sort_by_key(|n| TYPES.iter().position(|t| t == n).map(|i| if *n == "integer" { 0 } else { i + 1 }));
        let nullable = names.contains(&"null");
        let mut branches = Vec::new();
        for name in names.iter().filter(|n| **n != "null") {
            let mut branch = Map::new();
            branch.insert("type".into(), Value::String((*name).to_owned()));
            for (key, value) in map {
                let belongs = match keyword_type(key) {
                    Some("number") => matches!(*name, "number" | "integer"),
                    Some(t) => t == *name,
                    None => key == "format" || key == "enum" || key == "const",
                };
                if belongs && key != "type" {
                    // Values of an enum go to the branch of their own type.
                    let value = match (key.as_str(), value) {
                        ("enum", Value::Array(values)) => {
                            let fitting: Vec<Value> = values.iter().filter(|v| fits(v, name)).cloned().collect();
                            if fitting.is_empty() {
                                continue;
                            }
                            Value::Array(fitting)
                        }
                        ("const", v) if !fits(v, name) => continue,
                        (_, v) => v.clone(),
                    };
                    branch.insert(key.clone(), value);
                }
            }
            branches.push(Value::Object(branch));
        }
        let mut outer: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| {
                *k != "type" && keyword_type(k).is_none() && !matches!(k.as_str(), "format" | "enum" | "const")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        outer.insert("oneOf".into(), Value::Array(branches));
        let mut out = self.schema_keywords(&outer, at)?;
        if nullable {
            out.insert("nullable".into(), Value::Bool(true));
        }
        Ok(out)
    }

    fn warn(&mut self, at: &Location, message: impl Into<String>) {
        self.warnings.push(Warning { at: at.clone(), message: message.into() });
    }

    /// Hoists the schema a `$ref` points to into `components/schemas` and returns its name.
    fn hoist(&mut self, reference: &str, at: &Location) -> Result<String> {
        let mut target = resolve(reference, at)?;
        let mut reference = reference.to_owned();
        let mut at = at.clone();
        // A schema that is only a `$ref` is an alias: every name in the chain means one type.
        let mut chain: Vec<Target> = Vec::new();
        let value = loop {
            if let Some(name) = self.names.get(&target).cloned() {
                for t in chain {
                    self.names.insert(t, name.clone());
                }
                return Ok(name);
            }
            if chain.contains(&target) {
                return Err(cycle(&at, &reference, &chain, &target));
            }
            let value = self.files.get(&target, &at, &reference)?;
            chain.push(target.clone());
            match alias_of(&value) {
                Some(next) => {
                    at = target.location().child("$ref");
                    reference = next.to_owned();
                    target = resolve(&reference, &target.location())?;
                }
                None => break value,
            }
        };
        let name = chain.iter().find_map(|t| self.declared.get(t).cloned()).unwrap_or_else(|| derived_name(&target));
        let name = self.unique(name, &target);
        for t in &chain {
            self.names.insert(t.clone(), name.clone());
        }
        // Reserve the slot first so a recursive reference finds the name, and so components
        // come out in the order the spec first uses them.
        self.schemas.insert(name.clone(), Value::Null);
        let mut schema = self.schema(&value, &target.location())?;
        // typify names a nullable union and the union inside it alike: two types of one name.
        // The component is the union; its references say it may be null.
        if let Value::Object(map) = &mut schema
            && map.get("nullable") == Some(&Value::Bool(true))
            && (map.contains_key("oneOf") || map.contains_key("anyOf"))
        {
            map.remove("nullable");
            self.nullable.insert(name.clone());
        }
        self.schemas.insert(name.clone(), schema);
        self.origins.push((format!("/components/schemas/{name}"), target.location()));
        Ok(name)
    }

    fn unique(&mut self, name: String, target: &Target) -> String {
        let mut candidate = name.clone();
        let mut n = 2;
        while self.taken.get(&candidate).is_some_and(|t| t != target) {
            candidate = format!("{name}{n}");
            n += 1;
        }
        self.taken.insert(candidate.clone(), target.clone());
        candidate
    }
}

/// `Some(next)` if the schema is nothing but a `$ref` (plus annotations).
fn alias_of(value: &Value) -> Option<&str> {
    let map = value.as_object()?;
    let reference = map.get("$ref")?.as_str()?;
    map.keys().all(|k| k == "$ref" || ANNOTATIONS.contains(&k.as_str())).then_some(reference)
}

/// A stable name for a schema nobody named: `#/Name` → `Name`; `recording-base.yaml` →
/// `RecordingBase`.
fn derived_name(target: &Target) -> String {
    let segment = target.pointer.rsplit('/').next().unwrap_or_default();
    let base = if segment.is_empty() {
        target.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        segment.replace("~1", "/").replace("~0", "~")
    };
    let name = base.to_upper_camel_case();
    if name.is_empty() { "Schema".to_owned() } else { name }
}

fn ref_str(value: &Value, at: &Location) -> Result<String> {
    value.as_str().map(str::to_owned).ok_or_else(|| Error::unsupported(&at.child("$ref"), "`$ref` must be a string"))
}

fn cycle(at: &Location, reference: &str, chain: &[Target], target: &Target) -> Error {
    let mut steps: Vec<String> = chain.iter().map(|t| t.location().to_string()).collect();
    steps.push(target.location().to_string());
    Error::CyclicRef { at: at.clone(), reference: reference.to_owned(), cycle: steps.join(" → ") }
}

/// The one non-null `type` of a schema, if it has one.
fn single_type(map: &Map<String, Value>) -> Option<&str> {
    match map.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(types) => {
            let mut others = types.iter().filter(|t| *t != "null");
            let one = others.next()?.as_str();
            others.next().is_none().then_some(one).flatten()
        }
        _ => None,
    }
}

/// Whether a JSON value is of a JSON Schema type.
fn fits(value: &Value, type_name: &str) -> bool {
    match type_name {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => value.is_null(),
    }
}
