//! Reading spec files and resolving `$ref`s between them.
//!
//! A `$ref` is resolved relative to the file that holds it, as OpenAPI says: `./a.yaml`,
//! `../b/c.yaml#/Name`, `#/components/schemas/X` (same file). Every file read is remembered so
//! the build script can tell cargo to rerun when any of them changes.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Location, Result};

/// The root document in `dir`: the one YAML or JSON file there with `openapi:` and `webhooks:`
/// (or `x-webhooks:`).
pub(crate) fn find_root(dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Read { file: dir.to_path_buf(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
        .collect();
    files.sort();
    let roots: Vec<&PathBuf> = files
        .iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            yaml_serde::from_str::<yaml_serde::Value>(&text).is_ok_and(|doc| {
                doc.get("openapi").is_some() && (doc.get("webhooks").is_some() || doc.get("x-webhooks").is_some())
            })
        })
        .collect();
    let names = |files: &[&PathBuf]| {
        files
            .iter()
            .map(|f| f.file_name().unwrap_or_default().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match roots.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::Config(format!(
            "{}: no OpenAPI document with webhooks here (looked at: {}); name the spec with MEET_WEBHOOKS_SPEC",
            dir.display(),
            names(&files.iter().collect::<Vec<_>>())
        ))),
        several => Err(Error::Config(format!(
            "{}: several root documents ({}); name the one to use with MEET_WEBHOOKS_SPEC",
            dir.display(),
            names(several)
        ))),
    }
}

/// The target of a `$ref`: a file and a pointer into it. Two refs that name the same target by
/// different routes (`./x.yaml` from one folder, `../a/x.yaml` from another) get the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Target {
    pub file: PathBuf,
    pub pointer: String,
}

impl Target {
    pub fn location(&self) -> Location {
        Location::new(&self.file, self.pointer.clone())
    }
}

#[derive(Default)]
pub(crate) struct Files {
    docs: BTreeMap<PathBuf, Value>,
}

impl Files {
    /// Every file read so far (for `rerun-if-changed`).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.docs.keys().map(PathBuf::as_path)
    }

    /// Reads and parses a file once; later calls return the cached document.
    pub fn load(&mut self, file: &Path) -> Result<&Value> {
        if !self.docs.contains_key(file) {
            let text =
                std::fs::read_to_string(file).map_err(|source| Error::Read { file: file.to_path_buf(), source })?;
            let yaml: yaml_serde::Value = yaml_serde::from_str(&text)
                .map_err(|e| Error::Yaml { file: file.to_path_buf(), message: e.to_string() })?;
            let json = yaml_to_json(yaml, &Location::new(file, ""))?;
            self.docs.insert(file.to_path_buf(), json);
        }
        Ok(&self.docs[file])
    }

    /// The value a target points at.
    pub fn get(&mut self, target: &Target, at: &Location, reference: &str) -> Result<Value> {
        let doc = self.load(&target.file).map_err(|e| match e {
            Error::Read { source, .. } => Error::DanglingRef {
                at: at.clone(),
                reference: reference.to_owned(),
                why: format!("cannot read {}: {source}", target.file.display()),
            },
            other => other,
        })?;
        doc.pointer(&target.pointer).cloned().ok_or_else(|| Error::DanglingRef {
            at: at.clone(),
            reference: reference.to_owned(),
            why: format!("{} has nothing at #{}", target.file.display(), target.pointer),
        })
    }
}

/// Resolves `reference`, found in `file`, to a target.
pub(crate) fn resolve(reference: &str, at: &Location) -> Result<Target> {
    let (path, fragment) = match reference.split_once('#') {
        Some((path, fragment)) => (path, fragment),
        None => (reference, ""),
    };
    if path.contains("://") {
        return Err(Error::unsupported(
            at,
            format!("$ref {reference:?} is a URL; only relative file references are supported"),
        ));
    }
    if !fragment.is_empty() && !fragment.starts_with('/') {
        return Err(Error::unsupported(
            at,
            format!("$ref {reference:?} has an anchor; only JSON pointers (#/...) are supported"),
        ));
    }
    let file = if path.is_empty() {
        at.file.clone()
    } else {
        let dir = at.file.parent().unwrap_or(Path::new(""));
        normalize(&dir.join(path))
    };
    Ok(Target { file, pointer: fragment.to_owned() })
}

/// `a/b/../c/./d` → `a/c/d`, without touching the file system (symlinks are not followed, so
/// the path stays the one the user wrote, which is what error messages should show).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // Nothing is above the root.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                // Above the starting point of a relative path: keep the `..`.
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

/// YAML allows keys that JSON does not (`200:` is an integer); OpenAPI means them as strings.
fn yaml_to_json(value: yaml_serde::Value, at: &Location) -> Result<Value> {
    use yaml_serde::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| Error::unsupported(at, format!("number {f} has no JSON representation")))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items.into_iter().enumerate().map(|(i, item)| yaml_to_json(item, &at.child(i))).collect::<Result<_>>()?,
        ),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (key, item) in map {
                let key = match key {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => {
                        return Err(Error::unsupported(at, format!("mapping key {other:?} is not a string")));
                    }
                };
                let child = yaml_to_json(item, &at.child(&key))?;
                out.insert(key, child);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => yaml_to_json(tagged.value, at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_to_the_holding_file() {
        let at = Location::new(Path::new("spec/webhooks/webhooks.yaml"), "/a");
        let t = resolve("../recordings/schemas/base.yaml#/Name", &at).unwrap();
        assert_eq!(t.file, PathBuf::from("spec/recordings/schemas/base.yaml"));
        assert_eq!(t.pointer, "/Name");
        let t = resolve("#/components/schemas/X", &at).unwrap();
        assert_eq!(t.file, PathBuf::from("spec/webhooks/webhooks.yaml"));
        let t = resolve("./x.yaml", &at).unwrap();
        assert_eq!(t.file, PathBuf::from("spec/webhooks/x.yaml"));
        assert_eq!(t.pointer, "");
    }

    #[test]
    fn rejects_urls_and_anchors() {
        let at = Location::new(Path::new("a.yaml"), "");
        assert!(resolve("https://example.com/x.yaml", &at).is_err());
        assert!(resolve("x.yaml#anchor", &at).is_err());
    }

    #[test]
    fn integer_keys_become_strings() {
        let y: yaml_serde::Value = yaml_serde::from_str("200: {description: ok}").unwrap();
        let j = yaml_to_json(y, &Location::new(Path::new("a.yaml"), "")).unwrap();
        assert_eq!(j["200"]["description"], "ok");
    }
}
