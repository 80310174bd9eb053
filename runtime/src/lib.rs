//! The runtime of a verified, durable webhook receiver for OpenVidu Meet: everything a receiver
//! needs that does not depend on the provider's spec. The code generated from the spec (by
//! `meet-webhooks-codegen`, in a crate's `build.rs`) plugs into it, as tonic-build's code plugs
//! into tonic.
//!
//! # How the pieces fit
//!
//! 1. **Spec → code.** A crate's `build.rs` runs `meet_webhooks_codegen` on its `openapi/`
//!    folder. It writes payload types, a `WebhookHandler` trait with one `async fn` per webhook,
//!    and `Receiver<H>`, the adapter that serves any `WebhookHandler` by implementing this
//!    crate's [`Webhooks`]. [`include_webhooks!`] includes it.
//! 2. **Verify.** Every delivery's `X-Signature` must be the HMAC-SHA256 of
//!    `"<X-Timestamp>.<raw body>"` under a configured key, within the timestamp window
//!    ([`verify`]); anything else is refused before its body is looked at twice.
//! 3. **Store.** A verified body is classified (a typed event, or the fallback for an event,
//!    field value or shape the spec does not know) and appended to the [`inbox`]; only once
//!    that commit is durable is it answered 200. A retry of a stored delivery is a duplicate,
//!    across restarts.
//! 4. **Handle.** The inbox's dispatcher claims each stored delivery (a claim recorded in the
//!    inbox, so it runs once) and calls its handler method, one room at a time in the order the
//!    provider created the events (`creationDate`), retrying failures with backoff until they are dead (kept for `inbox replay`).
//! 5. **Run.** [`ServiceBuilder`] assembles it all; [`cli::main`] (feature `cli`) is the
//!    `meet-webhooks` command line around it.
//!
//! ```ignore
//! // In a crate whose build.rs runs meet_webhooks_codegen::Config::new().compile():
//! meet_webhooks_runtime::include_webhooks!();
//!
//! use meet_webhooks_runtime::{DeliveryContext, HandlerResult, ServiceBuilder};
//!
//! struct MyHandler;
//!
//! impl WebhookHandler for MyHandler {
//!     async fn recording_started_webhook(
//!         &self,
//!         ctx: &DeliveryContext,
//!         body: types::RecordingStartedWebhookBody,
//!     ) -> HandlerResult {
//!         println!("delivery {}: {:?}", ctx.delivery_id, body.data);
//!         Ok(())
//!     }
//! }
//!
//! let service = ServiceBuilder::new(Receiver::new(MyHandler), ["my-openvidu-api-key"]).build()?;
//! service.bind("127.0.0.1:5080".parse()?, None)?.run()?;
//! ```
//!
//! Nothing here changes the process on its own: the global logger ([`logging::init`]), the
//! metrics recorder ([`metrics::install`]) and the signal handlers ([`ServiceBuilder::signals`],
//! [`Bound::run`]) are set up only by the calls that say so.

// The reviewed snapshots of generated code name this crate as `::meet_webhooks_runtime`, as
// they would from any other crate.
#[cfg(test)]
extern crate self as meet_webhooks_runtime;

#[cfg(feature = "cli")]
pub mod cli;
mod clock;
pub mod console;
pub mod defaults;
mod dispatch;
mod error;
mod framing;
pub mod inbox;
pub mod logging;
#[cfg(feature = "client")]
pub mod meet;
pub mod metrics;
mod middleware;
mod replay;
mod route;
mod server;
mod service;
pub mod verify;
mod webhooks;

pub use dispatch::{Dispatcher, DispatcherHandle, RetryPolicy};
pub use error::Rejection;
pub use service::{Bound, Running, Service, ServiceBuilder, ServiceError, Storage, read_key_file};
pub use webhooks::{
    DeliveryContext, HandlerError, HandlerResult, JsonBody, LaterEvent, OperationInfo, Payload, Presence, Spec,
    Unmatched, UnmatchedEvent, WebhookInfo, Webhooks, parse_body, unhandled_fallback, unimplemented_webhook,
};

/// What the generated client's code names, through this crate so that the crate including it
/// needs no dependency of its own on them. Not an API.
#[cfg(feature = "client")]
#[doc(hidden)]
pub mod __private {
    pub use progenitor_client;
    pub use reqwest;
}

/// Includes the code `meet_webhooks_codegen` generated in this crate's `build.rs`
/// (`OUT_DIR/meet_webhooks.rs`): `types`, `WebhookHandler`, `Receiver`, `Event`, `WEBHOOKS`,
/// `SPEC`. Call it at the top of a module of its own (`mod generated { ... }`) or the crate root.
#[macro_export]
macro_rules! include_webhooks {
    () => {
        include!(concat!(env!("OUT_DIR"), "/meet_webhooks.rs"));
    };
}

/// The reviewed snapshots of the generated code (`codegen/tests/output/*.rs`, one per spec
/// fixture), each compiled here against this crate: a generator change that breaks the code it
/// writes fails `cargo test`, not only a build against that spec. The unit tests use `v3` as
/// their spec. (Generated code stands on the `client` feature.)
#[cfg(all(test, feature = "client"))]
mod snapshots {
    macro_rules! snapshot {
        ($($module:ident: $file:literal),* $(,)?) => {
            $(
                #[allow(clippy::all, clippy::pedantic, missing_docs, unused_imports, dead_code)]
                pub(crate) mod $module {
                    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../codegen/tests/output/", $file));
                }
            )*
            /// Every snapshot is in the list above.
            #[test]
            fn every_receiver_snapshot_is_compiled() {
                let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../codegen/tests/output");
                let mut on_disk: Vec<String> = std::fs::read_dir(dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".rs"))
                    .collect();
                on_disk.sort();
                let mut compiled = vec![$($file.to_owned()),*];
                compiled.sort();
                assert_eq!(on_disk, compiled);
            }
        };
    }

    snapshot! {
        v0: "v0-x-webhooks.rs",
        v1: "v1-seed.rs",
        v2: "v2-three-recordings.rs",
        v3: "v3-five-webhooks.rs",
    }
}

/// Which module may lean on which: the layering the module docs describe, checked on the
/// sources so that a shortcut shows up in review.
#[cfg(test)]
mod layering {
    /// The `crate::` modules a source file names.
    fn uses(path: &str) -> Vec<String> {
        let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
        let mut used: Vec<String> = text
            .split("crate::")
            .skip(1)
            .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
            .filter(|module: &String| !module.is_empty())
            .collect();
        used.sort();
        used.dedup();
        used
    }

    fn files(dir: &str) -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        let mut stack = vec![root.join(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                found.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
        found
    }

    #[test]
    fn each_layer_names_only_what_is_below_it() {
        let rules: &[(&str, &[&str])] = &[
            // The verifier lives in the signature crate (pure: no HTTP, no storage); this module
            // only re-exports it.
            ("src/verify.rs", &[]),
            // The inbox knows deliveries and plain metrics: not handlers, the web or the verifier.
            ("src/inbox", &["clock", "defaults", "inbox", "metrics"]),
            // The dispatcher hands what the inbox holds to the generated code (once its delivery's
            // accepted line is logged).
            ("src/dispatch.rs", &["clock", "defaults", "inbox", "logging", "metrics", "webhooks"]),
            // The CLI parses arguments into the library's builder and commands (and the Meet
            // API's settings, for the handler).
            (
                "src/cli",
                &[
                    "clock", "defaults", "dispatch", "inbox", "logging", "meet", "metrics", "service", "verify",
                    "webhooks",
                ],
            ),
            // The Meet API's settings and calls know nothing of the receiver.
            ("src/meet.rs", &[]),
        ];
        assert!(uses("src/dispatch.rs").contains(&"clock".to_owned()), "the scan finds what a file uses");
        // Nothing in the runtime names generated code: it reaches a spec only through `Webhooks`.
        for source in files("src") {
            let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&source)).unwrap();
            for generated in ["crate::generated", "WebhookHandler>", "crate::types", "crate::WEBHOOKS"] {
                assert!(!text.contains(generated) || source == "src/lib.rs", "{source} names {generated}");
            }
        }
        for (path, allowed) in rules {
            let sources = if path.ends_with(".rs") { vec![(*path).to_owned()] } else { files(path) };
            for source in sources {
                for module in uses(&source) {
                    assert!(allowed.contains(&module.as_str()), "{source} uses crate::{module}");
                }
            }
        }
    }
}
