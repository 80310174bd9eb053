//! The generated code for every spec fixture under `tests/fixtures/` is compared with the
//! reviewed copy in `codegen/tests/output/`, so a change to the generator or a fixture shows up
//! as a diff. Refresh with `EXPECTORATE=overwrite cargo test -p meet-webhooks-codegen`.
//!
//! `cargo test` also compiles every snapshot, in the `meet-webhooks-runtime` crate
//! (`runtime/src/lib.rs`, `mod snapshots`), against which its unit tests run. That they serve is
//! checked by building the service against each fixture (`MEET_WEBHOOKS_SPEC=... cargo test
//! --test integration`, run by `.ci/run`).

use std::path::{Path, PathBuf};

use meet_webhooks_codegen::Config;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn config(spec: &str) -> Config {
    Config::new().spec_env(None).base_dir(fixtures()).spec(spec)
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("openapi.yaml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_fixture_matches_its_snapshot() {
    let names = fixture_names();
    assert!(names.len() >= 4, "fixtures: {names:?}");
    for name in names {
        let spec = format!("{name}/openapi.yaml");
        let server = config(&spec).generate().unwrap_or_else(|e| panic!("{name}: {e}"));
        expectorate::assert_contents(format!("tests/output/{name}.rs"), &server.code);
    }
}

#[test]
fn the_bare_webhooks_file_generates_what_its_root_document_does() {
    let root = config("v1-seed/openapi.yaml").generate().unwrap();
    let bare = config("v1-seed/webhooks/webhooks.yaml").generate().unwrap();
    let without_banner = |code: &str| {
        code.split_once('\n')
            .unwrap()
            .1
            .replace("\"1.0.0\"", "\"0.0.0\"")
            .replace("\"OpenVidu Meet Webhooks\"", "\"Webhooks\"")
            // The same, inside the shape's JSON.
            .replace(r#"\"1.0.0\""#, r#"\"0.0.0\""#)
            .replace(r#"\"OpenVidu Meet Webhooks\""#, r#"\"Webhooks\""#)
    };
    assert_eq!(without_banner(&root.code), without_banner(&bare.code));
}

#[test]
fn webhooks_come_out_in_spec_order_with_their_operation_ids() {
    let generated = config("v3-five-webhooks/openapi.yaml").generate().unwrap();
    let events: Vec<(&str, &str)> =
        generated.webhooks.iter().map(|w| (w.event.as_str(), w.operation_id.as_str())).collect();
    assert_eq!(
        events,
        [
            ("recordingStarted", "recordingStartedWebhook"),
            ("recordingUpdated", "recordingUpdatedWebhook"),
            ("recordingEnded", "recordingEndedWebhook"),
            ("meetingStarted", "meetingStartedWebhook"),
            ("meetingEnded", "meetingEndedWebhook"),
        ]
    );
    for method in ["fn recording_started_webhook(", "fn meeting_ended_webhook(", "fn fallback(", "pub enum Event"] {
        assert!(generated.code.contains(method), "missing {method}");
    }
}

#[test]
fn type_names_stay_stable_across_spec_versions() {
    // What a user's handler names must survive regeneration from a newer spec.
    for (spec, names) in [
        ("v1-seed/openapi.yaml", &["RecordingStartedWebhookBody", "RecordingStartedWebhookBodyData"][..]),
        ("v2-three-recordings/openapi.yaml", &["RecordingStartedWebhookBody", "RecordingEndedWebhookBodyData"][..]),
        (
            "v3-five-webhooks/openapi.yaml",
            &[
                "RecordingStartedWebhookBody",
                "RecordingEndedWebhookBodyData",
                "RecordingEndedWebhookBodyDataStatus",
                "MeetRoom",
                "RecordingLayout",
            ][..],
        ),
    ] {
        let code = config(spec).generate().unwrap().code;
        for name in names {
            assert!(
                code.contains(&format!("pub struct {name} ")) || code.contains(&format!("pub enum {name} ")),
                "{spec}: no type {name}"
            );
        }
    }
}

#[test]
fn rerun_covers_every_referenced_file_and_nothing_else() {
    let generated = config("v3-five-webhooks/openapi.yaml").generate().unwrap();
    let root_dir = generated.files[0].parent().unwrap();
    let files: Vec<String> =
        generated.files.iter().map(|f| f.strip_prefix(root_dir).unwrap().display().to_string()).collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "components/parameters/room-id.yaml",
            "components/responses/room-responses.yaml",
            "components/schemas/meet-room-config.yaml",
            "components/schemas/meet-room.yaml",
            "openapi.yaml",
            "paths/rooms.yaml",
            "recordings/schemas/recording-base.yaml",
            "recordings/schemas/recording-layout.yaml",
            "webhooks/parameters/x-signature.yaml",
            "webhooks/parameters/x-timestamp.yaml",
            "webhooks/schemas/webhook-event.yaml",
            "webhooks/webhooks.yaml",
        ]
    );
    assert_eq!(files[0], "openapi.yaml", "the root comes first");
}

#[test]
fn the_bundle_is_openapi_3_0_with_webhook_bodies_as_components() {
    let bundle = config("v3-five-webhooks/openapi.yaml").bundle().unwrap();
    let doc = &bundle.document;
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["components"]["schemas"]["MeetingEndedWebhookBody"].is_object());
    // The REST paths are the document's paths, sharing the webhooks' components; a responses
    // map behind one `$ref` is inlined.
    assert_eq!(doc["paths"]["/rooms/{roomId}"]["get"]["operationId"], "getRoom");
    assert_eq!(
        doc["paths"]["/rooms/{roomId}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/MeetRoom"
    );
    let operations: Vec<&str> = bundle.operations.iter().map(|o| o.operation_id.as_str()).collect();
    assert_eq!(operations, ["getRooms", "getRoom"]);
    // `type: [number, 'null']` → nullable; `const` → enum; `additionalProperties: false` dropped.
    let base = &doc["components"]["schemas"]["RecordingBase"]["properties"];
    assert_eq!(base["endDate"]["type"], "number");
    assert_eq!(base["endDate"]["nullable"], true);
    let room = &doc["components"]["schemas"]["MeetRoom"];
    assert_eq!(room["properties"]["kind"]["enum"], serde_json::json!(["room"]));
    assert!(doc["components"]["schemas"]["MeetRoomConfig"].get("additionalProperties").is_none());
    // The broken MeetWebhookEvent is not needed, so it is not there.
    assert!(doc["components"]["schemas"].get("MeetWebhookEvent").is_none());
    // Every ref is internal now.
    let text = doc.to_string();
    assert!(!text.contains(".yaml"), "external refs left: {text}");
}

#[test]
fn relaxed_enums_are_strings() {
    let code = config("v3-five-webhooks/openapi.yaml").relax_enums(true).generate().unwrap().code;
    assert!(!code.contains("pub enum RecordingEndedWebhookBodyDataStatus"));
    assert!(!code.contains("pub enum MeetRoomStatus"));
    // Without the narrowed enum, `data` is exactly the base recording schema, and typify
    // names it so.
    assert!(code.contains("pub data: RecordingBase,"), "{code}");
    assert!(code.contains("pub status: ::std::string::String,"));
}

/// The shipped spec's client: every operation of `paths:`, each method documented with its
/// operation's summary and description (what `cargo doc` shows).
#[test]
fn the_shipped_spec_gives_a_documented_client_of_every_operation() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi");
    let generated = Config::new().spec_env(None).spec(shipped).generate().unwrap();
    assert_eq!(generated.code.matches("pub async fn call(").count(), 32, "a builder per operation");
    assert!(!generated.warnings.iter().any(|w| w.message.contains("the client has no operations")), "none left out");
    let method = generated.code.find("pub fn get_room(&self)").expect("getRoom's method");
    let doc = &generated.code[..method];
    let doc = &doc[doc.rfind("/**").unwrap()..];
    assert!(doc.contains("Get a room"), "{doc}");
    assert!(doc.contains("Retrieves the details of an OpenVidu Meet room by its room ID."), "{doc}");
}
