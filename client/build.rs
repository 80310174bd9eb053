//! Generates the typed client from the same spec as the service (`../openapi/`, or
//! `MEET_WEBHOOKS_SPEC`, relative to the workspace root).

fn main() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = meet_webhooks_codegen::Config::new().base_dir(workspace).client_inner_type("crate::Signing");
    if let Err(error) = config.compile_client() {
        meet_webhooks_codegen::fail(&error);
    }
}
