//! Signature verification, exactly as the provider signs: the signature crate's verifier
//! ([`meet_webhooks_signature::verify`]), re-exported where the receiver's users look for it.

pub use meet_webhooks_signature::verify::*;
pub use meet_webhooks_signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, TimestampUnit, sign};
