//! Which `WebhookHandler` methods a crate implements, read from its source.
//!
//! Rust cannot tell at run time whether a trait method was overridden, so the build reads the
//! `impl WebhookHandler for <Type>` block instead. A file that does not parse (the user is in
//! the middle of an edit) yields nothing here: rustc reports the real error.

use std::path::Path;

pub(crate) fn methods(file: &Path, type_name: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(file) else { return Vec::new() };
    let Ok(parsed) = syn::parse_file(&text) else { return Vec::new() };
    let mut methods = Vec::new();
    for item in parsed.items {
        let syn::Item::Impl(block) = item else { continue };
        let Some((trait_path, _)) = &block.trait_ else { continue };
        let names_trait = trait_path.segments.last().is_some_and(|s| s.ident == "WebhookHandler");
        let names_type = matches!(block.self_ty.as_ref(), syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == type_name));
        if !(names_trait && names_type) {
            continue;
        }
        for item in block.items {
            if let syn::ImplItem::Fn(method) = item {
                methods.push(method.sig.ident.to_string());
            }
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_methods_of_the_named_impl_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("handler.rs");
        std::fs::write(
            &file,
            "struct A; struct B;\n\
             impl crate::generated::WebhookHandler for A { async fn recording_started_webhook(&self) {} fn fallback(&self) {} }\n\
             impl WebhookHandler for B { fn meeting_ended_webhook(&self) {} }\n\
             impl Other for A { fn x(&self) {} }\n",
        )
        .unwrap();
        assert_eq!(methods(&file, "A"), ["recording_started_webhook", "fallback"]);
        assert_eq!(methods(&file, "B"), ["meeting_ended_webhook"]);
        std::fs::write(&file, "impl WebhookHandler for A { fn broken(").unwrap();
        assert!(methods(&file, "A").is_empty());
    }
}
