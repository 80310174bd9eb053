//! Generates the webhook types and handler trait from the spec in `openapi/` (or the one
//! `MEET_WEBHOOKS_SPEC` names) into `OUT_DIR/meet_webhooks.rs`.

fn main() {
    let config = meet_webhooks_codegen::Config::new().handler_impl("src/handler.rs", "ServiceHandler");
    if let Err(error) = config.compile() {
        meet_webhooks_codegen::fail(&error);
    }
}
