//! Generates the webhook types, the `WebhookHandler` trait and its `Receiver` from `openapi/`.

fn main() {
    let config = meet_webhooks_codegen::Config::new().handler_impl("src/lib.rs", "RecordingCounter");
    if let Err(error) = config.compile() {
        meet_webhooks_codegen::fail(&error);
    }
}
