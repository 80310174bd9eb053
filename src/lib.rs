//! A verified webhook receiver for OpenVidu Meet, generated from the provider's OpenAPI spec.
//!
//! How the pieces fit:
//!
//! 1. **Spec → code.** `build.rs` runs `meet_webhooks_codegen` (the `codegen/` crate) on `openapi/openapi.yaml`: it
//!    bundles the provider's multi-file OpenAPI 3.1 webhooks into one 3.0 document, has
//!    progenitor generate the payload types, and adds a [`WebhookHandler`] trait with one
//!    `async fn` per webhook (named after the snake_case operationId). See [`generated`].
//! 2. **Verify.** [`middleware::verify_delivery`] admits only deliveries whose
//!    `X-Signature` is the HMAC-SHA256 of `"<X-Timestamp>.<raw body>"` under a configured key,
//!    within the timestamp window ([`verify`]).
//! 3. **Store.** [`app`] reads the body's `event` (and `data.roomId`), classifies it (a typed
//!    [`Event`], or the fallback for an event, field value or shape the spec does not know), and
//!    appends the raw delivery to the [`inbox`]; only once that commit is durable is the
//!    delivery answered 200. A retry of a stored delivery is a duplicate, across restarts.
//! 4. **Handle.** The inbox's dispatcher claims each stored delivery (a claim recorded in the
//!    inbox, so it runs once) and calls its [`WebhookHandler`] method ([`handling`]), in arrival
//!    order and one room at a time, retrying failures with backoff until they are dead (kept for
//!    `meet-webhooks inbox replay`).
//! 5. **Implement.** [`handler::ServiceHandler`] is the service's handler: fill in methods there.
//!    `cli` (feature `cli`) is the `meet-webhooks` binary.
//!
//! ```no_run
//! use meet_webhooks::{WebhookHandler, types, runtime::{DeliveryContext, HandlerResult}};
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
//! ```

// The generated code names its runtime as `::meet_webhooks::runtime`, as it would from any
// other crate that runs the generator; this makes that path work inside this crate too.
extern crate self as meet_webhooks;

pub mod app;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod defaults;
pub mod error;
mod framing;
pub mod generated;
pub mod handler;
pub mod handling;
pub mod inbox;
pub mod logging;
pub mod metrics;
pub mod middleware;
mod replay;
pub mod runtime;
mod server;
pub mod service;
pub mod verify;

pub use generated::{Event, WEBHOOKS, WebhookHandler, dispatch, types};

/// The reviewed snapshots of the generated receiver code (`codegen/tests/output/*.rs`, one per
/// spec fixture), each compiled here against this crate's runtime: a generator change that
/// breaks the code it writes fails `cargo test`, not only a build against that spec.
#[cfg(test)]
mod snapshots {
    macro_rules! snapshot {
        ($($module:ident: $file:literal),* $(,)?) => {
            $(
                #[allow(clippy::all, clippy::pedantic, missing_docs, unused_imports, dead_code)]
                mod $module {
                    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/codegen/tests/output/", $file));
                }
            )*
            /// Every snapshot is in the list above.
            #[test]
            fn every_receiver_snapshot_is_compiled() {
                let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/codegen/tests/output");
                let mut on_disk: Vec<String> = std::fs::read_dir(dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".rs") && !name.ends_with(".client.rs"))
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
            // The inbox knows deliveries, handlers and plain metrics, not the web or the verifier.
            ("src/inbox", &["clock", "defaults", "generated", "handling", "inbox", "metrics", "runtime"]),
            // The CLI parses arguments into the library's builder and commands (and says how the
            // receiver would classify a body: `Event`).
            (
                "src/cli",
                &[
                    "Event",
                    "WEBHOOKS",
                    "clock",
                    "defaults",
                    "generated",
                    "handler",
                    "inbox",
                    "logging",
                    "metrics",
                    "service",
                    "verify",
                ],
            ),
        ];
        assert!(uses("src/inbox/dispatch.rs").contains(&"clock".to_owned()), "the scan finds what a file uses");
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
