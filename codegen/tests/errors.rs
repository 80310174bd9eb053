//! A bad spec is a build error that names the file, the place in it (JSON pointer) and the
//! problem; never a panic from inside progenitor or typify.

use std::path::Path;

use meet_webhooks_codegen::{Config, Error, Generated};

/// Writes `files` into a fresh directory and generates from its `openapi.yaml`.
fn generate_all(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Generated, Error>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let result = Config::new().spec_env(None).base_dir(dir.path()).spec("openapi.yaml").generate();
    (dir, result)
}

fn generate(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<String, Error>) {
    let (dir, result) = generate_all(files);
    (dir, result.map(|g| g.code))
}

/// Paths in messages are the user's; strip the temporary directory to compare.
fn relative(dir: &tempfile::TempDir, text: &str) -> String {
    text.replace(&format!("{}/", dir.path().display()), "")
}

const ROOT: &str = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\nwebhooks:\n  $ref: ./webhooks.yaml\n";

fn webhook(schema: &str) -> String {
    format!(
        "recordingStarted:\n  post:\n    operationId: recordingStartedWebhook\n    requestBody:\n      content:\n        application/json:\n          schema:\n{}\n    responses:\n      '200': {{description: ok}}\n",
        schema.lines().map(|l| format!("            {l}")).collect::<Vec<_>>().join("\n")
    )
}

fn error_text(files: &[(&str, &str)]) -> String {
    let (dir, result) = generate(files);
    relative(&dir, &result.expect_err("the spec should be refused").to_string())
}

#[test]
fn invalid_yaml_names_the_file_and_line() {
    let text = error_text(&[("openapi.yaml", ROOT), ("webhooks.yaml", "recordingStarted:\n  post: [unclosed\n")]);
    assert!(text.starts_with("webhooks.yaml: invalid YAML"), "{text}");
    assert!(text.contains("line"), "{text}");
}

#[test]
fn a_dangling_file_ref_names_where_it_was_written() {
    let text = error_text(&[("openapi.yaml", ROOT), ("webhooks.yaml", &webhook("$ref: ./schemas/missing.yaml"))]);
    assert!(
        text.starts_with("webhooks.yaml#/recordingStarted/post/requestBody/content/application~1json/schema/$ref: $ref \"./schemas/missing.yaml\" points to nothing"),
        "{text}"
    );
}

#[test]
fn a_dangling_pointer_names_the_missing_part() {
    let text = error_text(&[
        ("openapi.yaml", ROOT),
        ("webhooks.yaml", &webhook("$ref: ./types.yaml#/Nope")),
        ("types.yaml", "Yes: {type: string}\n"),
    ]);
    assert!(text.contains("points to nothing (types.yaml has nothing at #/Nope)"), "{text}");
}

#[test]
fn a_cycle_of_refs_is_named() {
    let text = error_text(&[
        ("openapi.yaml", ROOT),
        ("webhooks.yaml", &webhook("$ref: ./a.yaml")),
        ("a.yaml", "$ref: ./b.yaml\n"),
        ("b.yaml", "$ref: ./a.yaml\n"),
    ]);
    assert!(text.contains("is part of a cycle of references: a.yaml# → b.yaml# → a.yaml#"), "{text}");
}

#[test]
fn a_cycle_of_path_item_refs_is_named() {
    let text = error_text(&[
        ("openapi.yaml", ROOT),
        ("webhooks.yaml", "recordingStarted:\n  $ref: ./item.yaml\n"),
        ("item.yaml", "$ref: ./webhooks.yaml#/recordingStarted\n"),
    ]);
    assert!(text.contains("cycle of references"), "{text}");
}

#[test]
fn a_recursive_schema_is_not_a_cycle() {
    let (_dir, result) = generate(&[
        ("openapi.yaml", ROOT),
        ("webhooks.yaml", &webhook("$ref: ./node.yaml")),
        (
            "node.yaml",
            "type: object\nproperties:\n  name: {type: string}\n  children:\n    type: array\n    items:\n      $ref: ./node.yaml\n",
        ),
    ]);
    let code = result.unwrap();
    assert!(code.contains("pub struct Node "), "{code}");
    assert!(code.contains("pub children: ::std::vec::Vec<Node>"), "{code}");
}

#[test]
fn a_duplicate_operation_id_names_both_places() {
    let twice = format!(
        "{}{}",
        webhook("type: object"),
        webhook("type: object").replace("recordingStarted:", "recordingEnded:")
    );
    let text = error_text(&[("openapi.yaml", ROOT), ("webhooks.yaml", &twice)]);
    assert_eq!(
        text,
        "webhooks.yaml#/recordingEnded/post/operationId: operationId \"recordingStartedWebhook\" names the same handler method as the operationId at webhooks.yaml#/recordingStarted/post/operationId"
    );
}

#[test]
fn a_missing_operation_id_is_taken_from_the_webhook_key_with_a_warning() {
    let (dir, result) = generate_all(&[
        ("openapi.yaml", ROOT),
        ("webhooks.yaml", &webhook("type: object").replace("    operationId: recordingStartedWebhook\n", "")),
    ]);
    let generated = result.unwrap();
    assert!(generated.code.contains("fn recording_started("), "{}", generated.code);
    let warnings: Vec<String> = generated.warnings.iter().map(|w| relative(&dir, &w.to_string())).collect();
    assert_eq!(
        warnings,
        [
            "webhooks.yaml#/recordingStarted/post: no operationId: the handler method is named after the webhook's key, `recording_started`"
        ]
    );
}

#[test]
fn a_type_list_becomes_one_of_and_constraints_without_a_3_0_form_are_dropped_with_a_warning() {
    let (dir, result) = generate_all(&[
        ("openapi.yaml", ROOT),
        (
            "webhooks.yaml",
            &webhook(
                "type: object\nproperties:\n  n:\n    type: [string, number, boolean, 'null']\nif: {required: [a]}\nthen: {required: [b]}",
            ),
        ),
    ]);
    let generated = result.unwrap();
    assert!(
        generated.code.contains("pub n: ::std::option::Option<RecordingStartedWebhookBodyN>"),
        "{}",
        generated.code
    );
    for variant in ["String(::std::string::String)", "Number(f64)", "Boolean(bool)"] {
        assert!(generated.code.contains(variant), "{variant}: {}", generated.code);
    }
    let warnings: Vec<String> = generated.warnings.iter().map(|w| relative(&dir, &w.to_string())).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("webhooks.yaml#/recordingStarted/post/requestBody/content/application~1json/schema/if: `if` has no OpenAPI 3.0 form: dropped"), "{warnings:?}");
}

#[test]
fn a_type_that_is_not_one_names_the_place() {
    let text = error_text(&[
        ("openapi.yaml", ROOT),
        ("webhooks.yaml", &webhook("type: object\nproperties:\n  n:\n    type: numbr")),
    ]);
    assert_eq!(
        text,
        "webhooks.yaml#/recordingStarted/post/requestBody/content/application~1json/schema/properties/n/type: \"numbr\" is not a JSON Schema type (one of string, number, integer, boolean, array, object, null)"
    );
}

#[test]
fn a_document_without_webhooks_says_so() {
    let text = error_text(&[("openapi.yaml", "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths: {}\n")]);
    assert_eq!(text, "openapi.yaml#: the document has no `webhooks:` (OpenAPI 3.1) or `x-webhooks:` (3.0) map");
}

#[test]
fn a_missing_spec_file_is_named() {
    let error = Config::new().spec_env(None).spec(Path::new("/nonexistent/openapi.yaml")).generate().unwrap_err();
    assert!(error.to_string().starts_with("/nonexistent/openapi.yaml: cannot read"), "{error}");
}

#[test]
fn a_crate_without_an_openapi_folder_is_told_where_to_put_one() {
    let dir = tempfile::tempdir().unwrap();
    let error = Config::new().spec_env(None).base_dir(dir.path()).generate().unwrap_err();
    let expected =
        format!("no spec: {}/openapi does not exist; put the provider's OpenAPI folder there", dir.path().display());
    assert!(error.to_string().starts_with(&expected), "{error}");
}

#[test]
fn a_rest_path_that_cannot_be_read_is_left_out_of_the_client_and_named() {
    // `paths` refers to files that do not exist and uses $ref where OpenAPI forbids it; one
    // path is fine.
    let root = format!(
        "{ROOT}paths:\n  /rooms:\n    $ref: ./missing/rooms.yaml\n  /x:\n    get:\n      responses:\n        $ref: ./missing/responses.yaml\n  /ok:\n    get:\n      operationId: getOk\n      responses:\n        '200':\n          description: fine\n"
    );
    let (dir, result) = generate_all(&[("openapi.yaml", &root), ("webhooks.yaml", &webhook("type: object"))]);
    let generated = result.unwrap();
    let warnings: Vec<String> = generated.warnings.iter().map(|w| relative(&dir, &w.to_string())).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("openapi.yaml#/paths/~1rooms: the client has no operations for `/rooms`")),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|w| w.contains("the client has no operations for `/x`")), "{warnings:?}");
    assert!(generated.code.contains("pub fn get_ok("), "the readable path is in the client");
    assert!(!generated.code.contains("fn rooms"), "{}", generated.code);
}

#[test]
fn a_panic_inside_typify_becomes_an_error_at_the_body_schema() {
    // typify 0.8 panics rendering a default that does not fit the item type.
    let text = error_text(&[
        ("openapi.yaml", ROOT),
        (
            "webhooks.yaml",
            &webhook("type: object\nproperties:\n  a:\n    type: array\n    items: {type: string}\n    default: [1]"),
        ),
    ]);
    assert_eq!(
        text,
        "webhooks.yaml#/recordingStarted/post/requestBody/content/application~1json/schema: progenitor could not generate code for this schema: it panicked: The default value could not be rendered for this type"
    );
}

#[test]
fn a_failing_component_is_named() {
    let text = error_text(&[
        ("openapi.yaml", ROOT),
        ("webhooks.yaml", &webhook("$ref: ./types.yaml#/Level")),
        ("types.yaml", "Level: {type: integer, format: int8, default: 1000}\n"),
    ]);
    assert_eq!(
        text,
        "types.yaml#/Level: progenitor could not generate code for this schema: type error value does not conform to the given schema"
    );
}

#[test]
fn the_root_document_is_found_in_the_folder_whatever_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("openapi");
    std::fs::create_dir_all(&spec).unwrap();
    // The provider's root name, beside a file that is not a root.
    std::fs::write(spec.join("openvidu-meet-api.yaml"), ROOT).unwrap();
    std::fs::write(spec.join("webhooks.yaml"), webhook("type: object")).unwrap();
    let config = Config::new().spec_env(None).base_dir(dir.path());
    assert_eq!(config.spec_file().unwrap(), spec.join("openvidu-meet-api.yaml"));
    assert!(config.generate().unwrap().code.contains("fn recording_started_webhook("));
    // The folder itself may be named too.
    let named = Config::new().spec_env(None).base_dir(dir.path()).spec("openapi");
    assert_eq!(named.spec_file().unwrap(), spec.join("openvidu-meet-api.yaml"));

    // Two roots: which one is meant is for the user to say.
    std::fs::write(spec.join("other.json"), r#"{"openapi": "3.1.0", "webhooks": {}}"#).unwrap();
    let text = relative(&dir, &config.spec_file().unwrap_err().to_string());
    assert_eq!(
        text,
        "openapi: several root documents (openvidu-meet-api.yaml, other.json); name the one to use with MEET_WEBHOOKS_SPEC"
    );
    // A named file that does not exist is not looked for elsewhere.
    let missing = Config::new().spec_env(None).base_dir(dir.path()).spec("openapi/nope.yaml");
    assert!(missing.generate().unwrap_err().to_string().contains("nope.yaml: cannot read"));
}

#[test]
fn a_handler_method_for_a_withdrawn_webhook_is_named_in_a_warning() {
    let (dir, _) = generate(&[("openapi.yaml", ROOT), ("webhooks.yaml", &webhook("type: object"))]);
    std::fs::write(
        dir.path().join("handler.rs"),
        "impl WebhookHandler for H {\n    async fn recording_started_webhook(&self) {}\n    async fn meeting_ended_webhook(&self) {}\n    async fn fallback(&self) {}\n}\n",
    )
    .unwrap();
    let generated = Config::new()
        .spec_env(None)
        .base_dir(dir.path())
        .spec("openapi.yaml")
        .handler_impl("handler.rs", "H")
        .generate()
        .unwrap();
    let warnings: Vec<String> = generated.warnings.iter().map(|w| relative(&dir, &w.to_string())).collect();
    assert_eq!(
        warnings,
        [
            "handler.rs#: `impl WebhookHandler for H` has `meeting_ended_webhook`, but the spec has no such webhook (any more): remove it, or handle those deliveries in `fallback`"
        ]
    );
}
