//! The code generated from the spec in `openapi/` (or the one `MEET_WEBHOOKS_SPEC` names) by
//! `build.rs`: payload types (`types`), the webhooks (`WEBHOOKS`, `SPEC`), `Event`, the
//! `WebhookHandler` trait with one method per webhook, and `Receiver`, which serves a handler.
//! `cargo doc --open` shows what the current spec generated.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

meet_webhooks_runtime::include_webhooks!();
