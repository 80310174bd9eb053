//! Generates a typed OpenVidu Meet webhook receiver, and a client of its REST API, from the
//! provider's OpenAPI spec, in a build script.
//!
//! The provider's spec is OpenAPI 3.1, spread over several files, and puts its webhooks under
//! `webhooks:` beside its REST API's `paths:`; progenitor reads only OpenAPI 3.0 paths in one
//! document. So [`Config`]:
//!
//! 1. reads the spec: a root document with `webhooks:` (3.1) or `x-webhooks:` (3.0), or a bare
//!    webhooks map file, following relative `$ref`s across files ([`bundle`](crate::Config::bundle));
//! 2. bundles and down-levels it into one OpenAPI 3.0.3 document in memory (each webhook's body
//!    and every referenced schema become named components; the REST API's paths are its paths);
//! 3. has progenitor generate the types and the REST client (`client`, one builder per
//!    operation) from it, and adds the receiving side: a `WebhookHandler` trait with one
//!    `async fn` per webhook (the snake_case operationId), an `Event` enum selected by the body's
//!    `event` field, `dispatch`, and `Receiver<H>`, which serves any `WebhookHandler` to the
//!    runtime by implementing its `Webhooks` trait;
//! 4. writes the result to `OUT_DIR` (only when it changed) and tells cargo to rerun when the
//!    spec, any file it references, or `MEET_WEBHOOKS_SPEC` changes.
//!
//! The body of a `build.rs` `main`:
//!
//! ```no_run
//! if let Err(e) = meet_webhooks_codegen::Config::new().compile() {
//!     meet_webhooks_codegen::fail(&e);
//! }
//! ```
//!
//! and the module that includes the result:
//!
//! ```ignore
//! // src/generated.rs
//! meet_webhooks_runtime::include_webhooks!();
//! ```
//!
//! The generated code stands on the `meet-webhooks-runtime` crate (`DeliveryContext`,
//! `Webhooks`, ...), named through [`Config::runtime_path`], by default `::meet_webhooks_runtime`.
//! The crate that includes it depends on that crate, and on `serde` (with its `derive`
//! feature) and `serde_json`, which the generated payload types derive from and name.

mod bundle;
pub mod diff;
#[cfg(feature = "generate")]
mod emit;
mod error;
#[cfg(feature = "generate")]
mod example;
#[cfg(feature = "generate")]
mod implemented;
mod load;

use std::path::{Path, PathBuf};

pub use bundle::{Bundle, Webhook};
pub use diff::{Change, Effect, Shape};
pub use error::{Error, Location, Result, Warning};

/// The environment variable that points the build at another spec, unless changed with
/// [`Config::spec_env`].
pub const SPEC_ENV: &str = "MEET_WEBHOOKS_SPEC";

/// The spec read when none is named.
const DEFAULT_SPEC: &str = "openapi/openapi.yaml";

/// Generated code and what it was made from.
#[cfg(feature = "generate")]
#[derive(Debug)]
pub struct Generated {
    /// Formatted Rust source, starting with an `@generated` banner.
    pub code: String,
    /// Every file the spec pulled in (the root first).
    pub files: Vec<PathBuf>,
    /// The webhooks, in spec order.
    pub webhooks: Vec<Webhook>,
    /// What handler code sees of them (embedded as `SPEC.shape`).
    pub shape: Shape,
    /// What the generator degraded or made up, and where ([`Config::compile`] prints them as
    /// cargo warnings).
    pub warnings: Vec<Warning>,
}

/// What to generate from which spec. Every setter documents its default.
#[derive(Debug, Clone)]
pub struct Config {
    spec: PathBuf,
    spec_env: Option<String>,
    base_dir: Option<PathBuf>,
    relax_enums: bool,
    runtime_path: String,
    handler_impl: Option<(PathBuf, String)>,
    out_file: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// The defaults: spec `openapi/openapi.yaml`, overridable by `MEET_WEBHOOKS_SPEC`, relative
    /// to the crate being built; typed enums; runtime `::meet_webhooks_runtime`.
    pub fn new() -> Self {
        Self {
            spec: PathBuf::from(DEFAULT_SPEC),
            spec_env: Some(SPEC_ENV.to_owned()),
            base_dir: None,
            relax_enums: false,
            runtime_path: "::meet_webhooks_runtime".to_owned(),
            handler_impl: None,
            out_file: None,
        }
    }

    /// The spec to read: a root OpenAPI document or a bare webhooks map file. Default
    /// `openapi/openapi.yaml`. A relative path is relative to [`Config::base_dir`].
    pub fn spec(mut self, path: impl Into<PathBuf>) -> Self {
        self.spec = path.into();
        self
    }

    /// The environment variable that, when set, replaces [`Config::spec`]. Default
    /// `MEET_WEBHOOKS_SPEC`; `None` ignores the environment.
    pub fn spec_env(mut self, name: Option<&str>) -> Self {
        self.spec_env = name.map(str::to_owned);
        self
    }

    /// The directory relative spec paths start from. Default: `CARGO_MANIFEST_DIR` of the crate
    /// being built, else the working directory.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Turn every string `enum`/`const` into a plain `String`, so a new value from the provider
    /// still parses into the typed body instead of going to the fallback. Default `false`.
    ///
    /// Type names can change with it: a body whose only difference from a shared schema was a
    /// narrowed enum becomes that shared schema (`RecordingBase` instead of
    /// `RecordingEndedWebhookBodyData`).
    pub fn relax_enums(mut self, relax: bool) -> Self {
        self.relax_enums = relax;
        self
    }

    /// The path the generated code takes its runtime types from. Default
    /// `::meet_webhooks_runtime` (the `meet-webhooks-runtime` crate).
    pub fn runtime_path(mut self, path: impl Into<String>) -> Self {
        self.runtime_path = path.into();
        self
    }

    /// Where the crate implements `WebhookHandler`: the `impl WebhookHandler for <type_name>`
    /// block in `file` (relative to [`Config::base_dir`]) is read for the methods it
    /// implements, so the generated `SPEC.implemented` can tell handled webhooks from defaults
    /// (the service's `spec` command shows it). Default: not read (`None`).
    pub fn handler_impl(mut self, file: impl Into<PathBuf>, type_name: impl Into<String>) -> Self {
        self.handler_impl = Some((file.into(), type_name.into()));
        self
    }

    /// The file name written in `OUT_DIR`. Default `meet_webhooks.rs` (what
    /// `include_webhooks!` includes).
    pub fn out_file(mut self, name: impl Into<String>) -> Self {
        self.out_file = Some(name.into());
        self
    }

    fn base(&self) -> PathBuf {
        let base = self
            .base_dir
            .clone()
            .or_else(|| std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from))
            .unwrap_or_default();
        // Normalized like every spec path, so that the banner can show the spec relative to it.
        load::normalize(&base)
    }

    /// The spec this configuration names, after the environment override: a file, or a folder
    /// to find the root document in (see [`Config::spec_file`]).
    pub fn spec_path(&self) -> PathBuf {
        let chosen = self
            .spec_env
            .as_deref()
            .and_then(std::env::var_os)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.spec.clone());
        load::normalize(&self.base().join(chosen))
    }

    /// Whether the spec is the default one (not named by [`Config::spec`] or the environment).
    fn spec_path_is_default(&self) -> bool {
        let from_env = self.spec_env.as_deref().and_then(std::env::var_os).is_some_and(|v| !v.is_empty());
        self.spec == Path::new(DEFAULT_SPEC) && !from_env
    }

    /// The root document read. [`Config::spec_path`] when it is a file; when it is a folder, or
    /// the default `openapi/openapi.yaml` does not exist, the one document in that folder that
    /// has `openapi:` and webhooks (the provider names its root `openvidu-meet-api.yaml`).
    pub fn spec_file(&self) -> Result<PathBuf> {
        let path = self.spec_path();
        let dir = if path.is_dir() {
            path
        } else if !path.exists() && self.spec_path_is_default() {
            // The default names a folder: the crate's `openapi/`, whatever its root is called.
            let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if !folder.is_dir() {
                return Err(Error::Config(format!(
                    "no spec: {} does not exist; put the provider's OpenAPI folder there, or name the spec with \
                     {SPEC_ENV} or Config::spec",
                    folder.display()
                )));
            }
            folder
        } else {
            return Ok(path);
        };
        load::find_root(&dir)
    }

    /// The spec as one OpenAPI 3.0.3 document (what progenitor is given).
    pub fn bundle(&self) -> Result<Bundle> {
        bundle::bundle(&self.spec_file()?, &bundle::Options { relax_enums: self.relax_enums })
    }

    /// Generates the module: types, `WEBHOOKS`, `SPEC`, `Event`, `WebhookHandler`, `dispatch`,
    /// `Receiver`.
    #[cfg(feature = "generate")]
    pub fn generate(&self) -> Result<Generated> {
        let mut bundle = self.bundle()?;
        let runtime: syn::Path = syn::parse_str(&self.runtime_path)
            .map_err(|e| Error::Config(format!("runtime path {:?} is not a Rust path: {e}", self.runtime_path)))?;
        let spec = bundle.files[0].clone();
        let generated = emit::run_progenitor(&mut bundle, &spec, &runtime)?;
        let implemented = self.handler_impl.as_ref().map(|(file, type_name)| {
            let file = self.base().join(file);
            (implemented::methods(&file, type_name), type_name.as_str(), file)
        });
        let tokens =
            emit::server(&bundle, &generated, &runtime, implemented.as_ref().map(|(m, t, _)| (m.as_slice(), *t)))?;
        let mut result = self.finish(bundle, tokens)?;
        if let Some((methods, type_name, file)) = implemented {
            // A webhook the provider withdrew: rustc will say the method is not a member of the
            // trait; this says why.
            for method in methods.iter().filter(|m| {
                !matches!(m.as_str(), "unimplemented" | "fallback")
                    && !result.webhooks.iter().any(|w| emit::method_name(&w.operation_id) == **m)
            }) {
                result.warnings.push(Warning {
                    at: Location { file: file.clone(), pointer: String::new() },
                    message: format!(
                        "`impl WebhookHandler for {type_name}` has `{method}`, but the spec has no such webhook (any more): remove it, or handle those deliveries in `fallback`"
                    ),
                });
            }
            result.files.push(file);
        }
        Ok(result)
    }

    #[cfg(feature = "generate")]
    fn finish(&self, bundle: Bundle, tokens: proc_macro2::TokenStream) -> Result<Generated> {
        let spec = bundle.files[0].clone();
        let file: syn::File = syn::parse2(tokens).map_err(|e| Error::Progenitor {
            spec: spec.clone(),
            message: format!("generated code does not parse: {e}"),
        })?;
        let shown = spec.strip_prefix(self.base()).unwrap_or(&spec);
        let code = format!(
            "// @generated by meet-webhooks-codegen from {}. Do not edit: change the spec and rebuild.\n\n{}",
            shown.display(),
            prettyplease::unparse(&file)
        );
        let shape = Shape::of(&bundle);
        Ok(Generated { code, files: bundle.files, webhooks: bundle.webhooks, shape, warnings: bundle.warnings })
    }

    /// For `build.rs`: generates the module into `OUT_DIR`, and prints a cargo warning
    /// for each [`Warning`].
    #[cfg(feature = "generate")]
    pub fn compile(&self) -> Result<()> {
        self.emit_rerun_env();
        let generated = self.generate()?;
        for warning in &generated.warnings {
            // One line each: cargo shows a `cargo:warning` line by line.
            println!("cargo:warning={}", warning.to_string().replace(['\n', '\r'], " "));
        }
        // Said before rustc's errors in the generated code, which would not name the cause.
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(|dir| PathBuf::from(dir).join("Cargo.toml"));
        if let Some(text) = manifest.and_then(|m| std::fs::read_to_string(m).ok()) {
            for missing in missing_dependencies(&text) {
                println!(
                    "cargo:warning=the generated code needs `{missing}` as a dependency of this crate (serde with its \
                     `derive` feature, and serde_json): add it to Cargo.toml"
                );
            }
        }
        self.write(generated, "meet_webhooks.rs")
    }

    #[cfg(feature = "generate")]
    fn emit_rerun_env(&self) {
        if let Some(var) = &self.spec_env {
            println!("cargo:rerun-if-env-changed={var}");
        }
        // A root document added to (or renamed in) the spec's folder is found again.
        let path = self.spec_path();
        if let Some(dir) = if path.is_dir() { Some(path.as_path()) } else { path.parent() } {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
    }

    #[cfg(feature = "generate")]
    fn write(&self, generated: Generated, default_name: &str) -> Result<()> {
        for file in &generated.files {
            println!("cargo:rerun-if-changed={}", file.display());
        }
        let out_dir = std::env::var_os("OUT_DIR")
            .map(PathBuf::from)
            .ok_or_else(|| Error::Config("OUT_DIR is not set: compile() is meant to run in build.rs".into()))?;
        let path = out_dir.join(self.out_file.as_deref().unwrap_or(default_name));
        if let Some(line) = tell_changes(&path, &generated.shape)? {
            println!("cargo:warning={line}");
        }
        write_if_changed(&path, &generated.code)
    }
}

/// For `build.rs`: prints why the spec does not build, and exits with status 1.
pub fn fail(error: &Error) -> ! {
    eprintln!("error: the webhook spec does not build:\n  {error}");
    std::process::exit(1);
}

#[cfg(feature = "generate")]
/// The crates the generated code names that a manifest does not mention as dependencies (a
/// line that starts with the name, or its `[dependencies.name]` table): a check of the text,
/// so that the usual mistake is named; a dependency spelled otherwise is not flagged.
fn missing_dependencies(manifest: &str) -> Vec<&'static str> {
    ["serde", "serde_json"]
        .into_iter()
        .filter(|name| {
            !manifest.lines().map(str::trim_start).any(|line| {
                line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '=', '.']))
                    || line.starts_with(&format!("[dependencies.{name}]"))
            })
        })
        .collect()
}

/// Keeps the shape of what `out` was generated from beside it; when the last build's differs,
/// writes what changed to `<out>.changes.txt` and returns the line that says so.
#[cfg(feature = "generate")]
fn tell_changes(out: &Path, shape: &Shape) -> Result<Option<String>> {
    let kept = out.with_extension("shape.json");
    let json = serde_json::to_string_pretty(shape).expect("a shape is JSON");
    let before = std::fs::read_to_string(&kept).ok().and_then(|text| serde_json::from_str::<Shape>(&text).ok());
    let mut line = None;
    if let Some(before) = before.filter(|before| before != shape) {
        let changes = diff::diff(&before, shape);
        let listed = out.with_extension("changes.txt");
        let mut text = format!("{} → {}: {}\n", before.name(), shape.name(), diff::summary(&changes));
        for change in &changes {
            text += &format!("{change}\n");
        }
        std::fs::write(&listed, text).map_err(|source| Error::Write { file: listed.clone(), source })?;
        line = Some(format!(
            "the spec changed since the last build ({} → {}): {}; see {}",
            before.name(),
            shape.name(),
            diff::summary(&changes),
            listed.display()
        ));
    }
    write_if_changed(&kept, &json)?;
    Ok(line)
}

/// Rewriting an unchanged file would make cargo recompile everything that includes it.
#[cfg(feature = "generate")]
fn write_if_changed(path: &Path, code: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == code) {
        return Ok(());
    }
    std::fs::write(path, code).map_err(|source| Error::Write { file: path.to_path_buf(), source })
}

#[cfg(all(test, feature = "generate"))]
mod tests {
    use super::{Shape, missing_dependencies, tell_changes};

    fn fixture(name: &str) -> Shape {
        let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
        Shape::of(&super::Config::new().spec_env(None).spec(spec).bundle().unwrap())
    }

    use std::path::Path;

    #[test]
    fn a_build_whose_spec_changed_says_so_in_one_line_and_lists_the_changes() {
        let out = tempfile::tempdir().unwrap();
        let generated = out.path().join("meet_webhooks.rs");
        // The first build has nothing to compare with; an unchanged spec says nothing.
        assert_eq!(tell_changes(&generated, &fixture("v1-seed")).unwrap(), None);
        assert_eq!(tell_changes(&generated, &fixture("v1-seed")).unwrap(), None);
        let line = tell_changes(&generated, &fixture("v2-three-recordings")).unwrap().expect("a line");
        let listed = out.path().join("meet_webhooks.changes.txt");
        assert_eq!(
            line,
            format!(
                "the spec changed since the last build (OpenVidu Meet Webhooks 1.0.0 → OpenVidu Meet Webhooks \
                 1.1.0): 2 changes to the webhooks, none breaking; see {}",
                listed.display()
            )
        );
        let text = std::fs::read_to_string(&listed).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with("compatible  recordingUpdated: webhook added"), "{text}");
        // The next build compares with this one.
        assert_eq!(tell_changes(&generated, &fixture("v2-three-recordings")).unwrap(), None);
    }

    #[test]
    fn a_manifest_without_serde_is_told_what_the_generated_code_needs() {
        assert_eq!(missing_dependencies("[dependencies]\nactix-web = \"4\"\n"), ["serde", "serde_json"]);
        assert_eq!(missing_dependencies("[dependencies]\nserde = { version = \"1\" }\n"), ["serde_json"]);
        assert_eq!(missing_dependencies("serde.workspace = true\nserde_json = \"1\"\n"), Vec::<&str>::new());
        assert_eq!(
            missing_dependencies("[dependencies.serde]\nversion = \"1\"\n[dependencies]\nserde_json=\"1\""),
            Vec::<&str>::new()
        );
        assert_eq!(
            missing_dependencies("serde_yaml = \"1\"\nserde_json = \"1\""),
            ["serde"],
            "serde_yaml is not serde"
        );
    }
}
