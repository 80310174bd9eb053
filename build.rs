//! Generates the webhook types and handler trait from `openapi/openapi.yaml`
//! (or the spec `MEET_WEBHOOKS_SPEC` names) into `OUT_DIR/meet_webhooks.rs`.

fn main() {
    let config = meet_webhooks_codegen::Config::new().handler_impl("src/handler.rs", "ServiceHandler");
    if let Err(error) = config.compile() {
        eprintln!("error: cannot generate the webhook receiver from the spec:\n  {error}");
        std::process::exit(1);
    }
}
