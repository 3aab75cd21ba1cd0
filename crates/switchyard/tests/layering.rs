//! The engine's modules form layers (written down in `src/lib.rs`): a module
//! uses only modules of lower layers, so there is no import cycle and each
//! module can be read knowing only what is below it. This test reads the
//! sources and checks every `crate::` path in code (comments and doc links
//! aside), the crate root's re-exports resolved to the module they come from.
#![allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md §7)

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Lowest first; the modules of one line do not use each other.
const LAYERS: &[&[&str]] = &[
    &[
        "error",
        "routing",
        "drain",
        "head_timer",
        "send_timer",
        "crypto",
    ],
    &["target"],
    &["options", "body"],
    &["hooks", "upstream"],
    &["balance"],
    &["retry"],
    &["proxy"],
    &["reply", "service", "server"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `proxy` for `proxy.rs` and
/// `proxy/send.rs`; `None` for the crate root.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// The code of a line: without its `//` comment (a `//` inside a string is
/// rare enough in these sources to be cut too, which only drops code).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// The identifiers right after each `crate::` in `text`.
fn crate_paths(text: &str) -> Vec<&str> {
    text.match_indices("crate::")
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The crate root's re-exports: name → the module it comes from.
fn reexports() -> BTreeMap<String, String> {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut map = BTreeMap::new();
    for line in lib.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("pub use ") else {
            continue;
        };
        let module = rest.split("::").next().unwrap().to_owned();
        let names = rest
            .rsplit_once("::")
            .map_or(rest, |(_, names)| names)
            .trim_end_matches(';');
        for name in names
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|n| n.split(" as ").last().unwrap().trim())
        {
            map.insert(name.to_owned(), module.clone());
        }
    }
    map
}

#[test]
fn modules_use_only_lower_layers() {
    let reexports = reexports();
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut wrong = Vec::new();
    let mut unplaced = Vec::new();
    for file in &all {
        let Some(module) = module_of(file) else {
            continue;
        };
        let Some(layer) = layer_of(&module) else {
            unplaced.push(module);
            continue;
        };
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for name in crate_paths(code(line)) {
                let used = reexports.get(name).map_or(name, String::as_str);
                if used == module || used == "fuzzing" {
                    continue;
                }
                match layer_of(used) {
                    Some(l) if l < layer => {}
                    _ => wrong.push(format!(
                        "{}:{}: {module} uses {used}",
                        file.strip_prefix(src()).unwrap().display(),
                        n + 1
                    )),
                }
            }
        }
    }
    unplaced.sort();
    unplaced.dedup();
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS (and from the list in lib.rs): {unplaced:?}"
    );
    assert!(
        wrong.is_empty(),
        "uses of a module of the same or a higher layer:\n{}",
        wrong.join("\n")
    );
}

/// The check is not vacuous: it sees the uses the layers allow.
#[test]
fn the_check_sees_uses() {
    let text = fs::read_to_string(src().join("proxy/send.rs")).unwrap();
    let used: Vec<&str> = text.lines().flat_map(|l| crate_paths(code(l))).collect();
    assert!(
        used.contains(&"upstream") && used.contains(&"retry"),
        "{used:?}"
    );
    assert_eq!(
        reexports().get("Forward").map(String::as_str),
        Some("reply")
    );
    assert!(layer_of("retry") < layer_of("proxy"));
}
