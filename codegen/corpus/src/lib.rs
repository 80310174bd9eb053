//! The generator's corpus: spec variants of our own, derived from the provider's real specs in
//! `tests/fixtures`, each using a construct a valid OpenAPI 3.1 webhooks document may use.
//! `build.rs` generates a receiver module from each; this crate compiling is the proof that
//! each generates code that compiles, and the tests below parse each variant's payloads into
//! their typed bodies and check what the build reported.

use meet_webhooks_runtime::{OperationInfo, Unmatched, WebhookInfo};

/// One generated variant.
pub struct Variant {
    pub name: &'static str,
    /// Its folder in `variants/` (payloads, `expect.json`).
    pub dir: &'static str,
    /// The build's warnings, paths relative to the spec.
    pub warnings: &'static [&'static str],
    pub webhooks: &'static [WebhookInfo],
    /// The REST client's operations.
    pub operations: &'static [OperationInfo],
    pub title: &'static str,
    pub version: &'static str,
    /// `Event::parse`: the typed webhook's event name, or why not.
    pub parse: fn(&str, &[u8]) -> Result<&'static str, Unmatched>,
}

include!(concat!(env!("OUT_DIR"), "/corpus.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn expect(variant: &Variant) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(Path::new(variant.dir).join("expect.json")).unwrap()).unwrap()
    }

    #[test]
    fn the_corpus_has_at_least_twenty_variants_each_with_a_payload() {
        assert!(VARIANTS.len() >= 20, "{} variants", VARIANTS.len());
        for variant in VARIANTS {
            let payloads = std::fs::read_dir(Path::new(variant.dir).join("payloads")).map(Iterator::count).unwrap_or(0);
            assert!(payloads > 0, "{}: no payload", variant.name);
        }
    }

    #[test]
    fn every_payload_parses_into_its_typed_body_and_every_fallback_does_not() {
        for variant in VARIANTS {
            let mut files: Vec<_> = std::fs::read_dir(Path::new(variant.dir).join("payloads"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for file in files {
                let body = std::fs::read(&file).unwrap();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let event = json["event"].as_str().unwrap();
                let parsed = (variant.parse)(event, &body);
                let name = file.file_name().unwrap().to_string_lossy();
                if name.ends_with(".fallback.json") {
                    assert!(parsed.is_err(), "{}/{name}: should go to the fallback", variant.name);
                } else {
                    assert_eq!(parsed, Ok(event), "{}/{name}", variant.name);
                }
            }
        }
    }

    #[test]
    fn each_variant_reports_what_it_degraded_and_names_what_it_was_told() {
        for variant in VARIANTS {
            let expect = expect(variant);
            let wanted: Vec<&str> =
                expect["warnings"].as_array().into_iter().flatten().map(|w| w.as_str().unwrap()).collect();
            assert_eq!(variant.warnings.len(), wanted.len(), "{}: {:#?}", variant.name, variant.warnings);
            for (got, wanted) in variant.warnings.iter().zip(&wanted) {
                assert!(got.starts_with(wanted), "{}: {got:?} should start with {wanted:?}", variant.name);
            }
            if let Some(operations) = expect["operations"].as_array() {
                let got: Vec<&str> = variant.operations.iter().map(|o| o.operation_id).collect();
                let wanted: Vec<&str> = operations.iter().map(|o| o.as_str().unwrap()).collect();
                assert_eq!(got, wanted, "{}: the client's operations", variant.name);
            }
            if let Some(methods) = expect["methods"].as_object() {
                for (event, method) in methods {
                    let webhook = variant.webhooks.iter().find(|w| w.event == event);
                    assert_eq!(webhook.map(|w| w.method), method.as_str(), "{}: {event}", variant.name);
                }
            }
            if let Some(title) = expect["title"].as_str() {
                assert_eq!((variant.title, variant.version), (title, expect["version"].as_str().unwrap()));
            }
            if let Some(count) = expect["webhooks"].as_u64() {
                assert_eq!(variant.webhooks.len() as u64, count, "{}", variant.name);
            }
        }
    }
}
