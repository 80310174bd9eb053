//! Generates the webhook types and handler trait from `openapi/openapi.yaml`
//! (or the spec `MEET_WEBHOOKS_SPEC` names) into `OUT_DIR/meet_webhooks.rs`.

fn main() {
    if let Err(error) = meet_webhooks_codegen::Config::new().compile() {
        eprintln!("error: cannot generate the webhook receiver from the spec:\n  {error}");
        std::process::exit(1);
    }
}
