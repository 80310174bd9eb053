//! The code generated from the webhook spec by `build.rs` (see `meet-webhooks-codegen`):
//! payload types (`types`), the list of webhooks (`WEBHOOKS`), `Event`, the `WebhookHandler`
//! trait with one method per webhook, and `dispatch`.
//!
//! Built from `openapi/openapi.yaml`, or the spec `MEET_WEBHOOKS_SPEC` names at build time.
//! `cargo doc --open` shows what the current spec generated.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/meet_webhooks.rs"));
