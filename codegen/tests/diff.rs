//! `diff`: what changes for handler code from one spec to another, on the provider's real spec
//! stages (the fixtures) and on small specs that change one thing each.

use std::path::Path;

use meet_webhooks_codegen::{Change, Config, Effect, Shape, diff};

fn shape_of(spec: &Path) -> Shape {
    Shape::of(&Config::new().spec_env(None).spec(spec).bundle().unwrap())
}

fn fixture(name: &str) -> Shape {
    shape_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name))
}

/// A one-file spec whose webhooks are `webhooks` (YAML, indented for `webhooks:`).
fn spec(webhooks: &str) -> Shape {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("openapi: 3.1.0\ninfo: {{title: t, version: '1'}}\nwebhooks:\n{webhooks}");
    std::fs::write(dir.path().join("openapi.yaml"), text).unwrap();
    shape_of(&dir.path().join("openapi.yaml"))
}

/// A `recordingEnded` webhook (method `recording_ended_webhook`) whose body has `properties`
/// (YAML at the indentation of a property) and `required`.
fn ended(properties: &str, required: &str) -> String {
    let properties: String = properties.lines().map(|l| format!("                  {l}\n")).collect();
    format!(
        "  recordingEnded:\n    post:\n      operationId: recordingEndedWebhook\n      requestBody:\n        content:\n          \
         application/json:\n            schema:\n              type: object\n              required: [{required}]\n              \
         properties:\n{properties}      responses:\n        '200': {{description: ok}}\n"
    )
}

fn lines(changes: &[Change]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

#[test]
fn the_seed_to_three_recordings_adds_two_webhooks_and_breaks_nothing() {
    let changes = diff::diff(&fixture("v1-seed"), &fixture("v2-three-recordings"));
    assert_eq!(
        lines(&changes),
        [
            "compatible  recordingUpdated: webhook added: a new method `recording_updated_webhook`; until it is \
             implemented its deliveries are acknowledged with a warning",
            "compatible  recordingEnded: webhook added: a new method `recording_ended_webhook`; until it is \
             implemented its deliveries are acknowledged with a warning",
        ]
    );
    assert_eq!(diff::summary(&changes), "2 changes to the webhooks, none breaking");
}

#[test]
fn the_v1_to_v3_upgrade_says_what_each_type_becomes() {
    let changes = diff::diff(&fixture("v1-seed"), &fixture("v3-five-webhooks"));
    let text = lines(&changes);
    // Status was a free string; v3 makes it an enum of its values, required.
    assert!(
        text.contains(
            &"breaking    recordingStarted data.status: type changed: Option<String> → enum (starting | active): \
              code that reads it no longer compiles"
                .to_owned()
        ),
        "{text:#?}"
    );
    assert!(
        text.contains(
            &"breaking    recordingStarted data.roomId: made required: Option<String> → String: code that reads it no \
          longer compiles"
                .to_owned()
        )
    );
    assert!(text.contains(&"compatible  recordingStarted data.roomName: field added: String".to_owned()));
    let added: Vec<&str> = changes.iter().filter(|c| c.field.is_none()).map(|c| c.webhook.as_str()).collect();
    assert_eq!(added, ["recordingUpdated", "recordingEnded", "meetingStarted", "meetingEnded"]);
    assert!(changes.iter().filter(|c| c.field.is_none()).all(|c| c.effect == Effect::Compatible));
    // A webhook that is new has no field changes listed under it.
    assert!(!changes.iter().any(|c| c.webhook == "meetingStarted" && c.field.is_some()));
}

#[test]
fn the_same_spec_has_no_changes() {
    assert_eq!(diff::diff(&fixture("v3-five-webhooks"), &fixture("v3-five-webhooks")), []);
    assert_eq!(diff::summary(&[]), "no changes to the webhooks");
}

#[test]
fn enum_values_that_change_case_are_removed_and_added() {
    let old = spec(&ended("status: {type: string, enum: [COMPLETE, FAILED]}", "status"));
    let new = spec(&ended("status: {type: string, enum: [complete, FAILED, aborted]}", "status"));
    let changes = diff::diff(&old, &new);
    assert_eq!(
        lines(&changes),
        [
            "breaking    recordingEnded status: enum values removed: COMPLETE: code that names one no longer compiles, \
             and a stored delivery that has one no longer fits the typed body",
            "may break   recordingEnded status: enum values added: complete, aborted: an exhaustive `match` on it \
             needs an arm for each",
        ]
    );
}

#[test]
fn a_removed_struct_is_one_change_not_one_per_field() {
    let old = spec(&ended("data: {type: object, properties: {a: {type: string}, b: {type: integer}}}", "data"));
    let new = spec(&ended("other: {type: boolean}", "other"));
    assert_eq!(
        lines(&diff::diff(&old, &new)),
        [
            "breaking    recordingEnded data: field removed (it was struct): code that reads it no longer compiles",
            "compatible  recordingEnded other: field added: bool",
        ]
    );
}

#[test]
fn nullable_and_optional_fields_are_options() {
    let old = spec(&ended("a: {type: string}\nb: {type: string}\nc: {type: [string, 'null']}", "a, c"));
    let shape = old.webhook("recordingEnded").unwrap();
    let rust = |field: &str| shape.fields[field].rust();
    assert_eq!(
        (rust("a").as_str(), rust("b").as_str(), rust("c").as_str()),
        ("String", "Option<String>", "Option<String>")
    );
    let new = spec(&ended("a: {type: [string, 'null']}\nb: {type: string}\nc: {type: [string, 'null']}", "a, b, c"));
    assert_eq!(
        lines(&diff::diff(&old, &new)),
        [
            "breaking    recordingEnded a: made optional: String → Option<String>: code that reads it no longer \
             compiles",
            "breaking    recordingEnded b: made required: Option<String> → String: code that reads it no longer \
             compiles",
        ]
    );
}

#[test]
fn a_removed_webhook_and_a_renamed_method_break_handlers() {
    let old = spec(&ended("a: {type: string}", "a"));
    let renamed = spec(&ended("a: {type: string}", "a").replace("recordingEndedWebhook", "onRecordingEnded"));
    assert_eq!(
        lines(&diff::diff(&old, &renamed)),
        ["breaking    recordingEnded: its method is renamed `recording_ended_webhook` → `on_recording_ended`: an \
          implementation of `recording_ended_webhook` no longer compiles"]
    );
    let other = spec(&ended("a: {type: string}", "a").replace("recordingEnded:", "meetingEnded:"));
    let changes = diff::diff(&old, &other);
    assert_eq!(changes.last().unwrap().effect, Effect::Breaking);
    assert_eq!(
        changes.last().unwrap().to_string(),
        "breaking    recordingEnded: webhook removed: an implementation of `recording_ended_webhook` no longer \
         compiles; its deliveries go to `fallback`"
    );
}

#[test]
fn fields_merged_from_all_of_take_the_type_every_member_gives() {
    // The provider's pattern: a shared base declares `event: {type: string}`, the webhook's own
    // member adds only an example for it.
    let base = "  recordingEnded:\n    post:\n      operationId: recordingEndedWebhook\n      requestBody:\n        \
                content:\n          application/json:\n            schema:\n              allOf:\n                \
                - {type: object, required: [event], properties: {event: {type: string}}}\n                \
                - {properties: {event: {example: recordingEnded}}}\n      responses:\n        '200': {description: ok}\n";
    let shape = spec(base);
    assert_eq!(shape.webhook("recordingEnded").unwrap().fields["event"].rust(), "String");
}

#[test]
fn a_shape_reads_back_from_its_json() {
    let shape = fixture("v3-five-webhooks");
    let json = serde_json::to_string(&shape).unwrap();
    assert_eq!(serde_json::from_str::<Shape>(&json).unwrap(), shape);
}
