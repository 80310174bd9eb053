//! Generates one receiver module per spec variant in `variants/`, in one crate, so that
//! `cargo test` compiles them all at once.
//!
//! A variant is a folder: `expect.json` says what it is derived from (`base`, a folder of
//! `tests/fixtures`, or none) and what the build must report; every other file replaces the
//! base's file of the same path, a file ending in `.append` is appended to it, and
//! `payloads/*.json` are deliveries that must parse into their typed bodies (`*.fallback.json`:
//! must not).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let fixtures = root.join("../../tests/fixtures");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", root.join("variants").display());
    println!("cargo:rerun-if-changed={}", fixtures.display());

    let mut names: Vec<String> = std::fs::read_dir(root.join("variants"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut modules = String::new();
    let mut table = String::new();
    for name in &names {
        let variant = root.join("variants").join(name);
        let expect: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(variant.join("expect.json")).unwrap()).unwrap();
        let spec = out.join("specs").join(name);
        let _ = std::fs::remove_dir_all(&spec);
        if let Some(base) = expect["base"].as_str() {
            copy(&fixtures.join(base), &spec);
        }
        overlay(&variant, &spec);
        for deleted in expect["delete"].as_array().into_iter().flatten() {
            std::fs::remove_file(spec.join(deleted.as_str().unwrap())).unwrap();
        }
        let config = meet_webhooks_codegen::Config::new()
            .spec_env(None)
            .base_dir(&spec)
            .spec(expect["spec"].as_str().unwrap_or("openapi.yaml"));
        let generated = config.generate().unwrap_or_else(|e| panic!("variant {name}: {e}"));
        let module = name.replace('-', "_");
        std::fs::write(out.join(format!("{module}.rs")), &generated.code).unwrap();
        let warnings: Vec<String> =
            generated.warnings.iter().map(|w| w.to_string().replace(&format!("{}/", spec.display()), "")).collect();
        writeln!(
            modules,
            "#[allow(clippy::all, clippy::pedantic, missing_docs, unused_imports, dead_code)]\n\
             pub mod {module} {{ include!(concat!(env!(\"OUT_DIR\"), \"/{module}.rs\")); }}"
        )
        .unwrap();
        writeln!(
            table,
            "    Variant {{ name: {name:?}, dir: {dir:?}, warnings: &{warnings:?}, webhooks: {module}::WEBHOOKS, operations: {module}::OPERATIONS, \
             title: {module}::SPEC.title, version: {module}::SPEC.version, \
             parse: |event, body| {module}::Event::parse(event, body).map(|e| e.webhook().event) }},",
            dir = variant.display().to_string(),
        )
        .unwrap();
    }
    let code = format!("{modules}\n/// Every variant, by name.\npub const VARIANTS: &[Variant] = &[\n{table}];\n");
    std::fs::write(out.join("corpus.rs"), code).unwrap();
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The variant's files over the base: replaced, or appended to (`.append`).
fn overlay(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "expect.json" || name == "payloads" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            overlay(&entry.path(), &to.join(&name));
        } else if let Some(base) = name.strip_suffix(".append") {
            let mut text = std::fs::read_to_string(to.join(base)).unwrap();
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap());
            std::fs::write(to.join(base), text).unwrap();
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}
