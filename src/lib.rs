//! The meet-webhooks service: the handler this team fills in (`handler`), served by the
//! runtime (`meet-webhooks-runtime`) through the code `build.rs` generates from `openapi/`
//! (`generated`). `src/main.rs` runs it as the `meet-webhooks` command line.

pub mod generated;
pub mod handler;

pub use generated::{Event, OPERATIONS, Receiver, SPEC, WEBHOOKS, WebhookHandler, client, types};
