//! The module-cycle check (ARCHITECTURE.md, Conventions): no file module
//! of a workspace crate (`crates/*`, and this harness's own `src/`) may
//! depend on itself through others. `borealis_tests::module_graph` builds the
//! graph from the sources; the checker itself is tested on small trees first.

use std::path::{Path, PathBuf};

use borealis_tests::TempDir;
use borealis_tests::module_graph::{Graph, check_crate};

/// Each workspace crate (as `crates/NAME`, and `tests`) with its `src/`.
fn workspace_crates() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("src").is_dir())
        .map(|dir| (format!("crates/{}", dir.file_name().unwrap().to_string_lossy()), dir.join("src")))
        .collect();
    found.sort();
    found.push(("tests".to_owned(), root.join("tests/src")));
    found
}

/// Writes `files` (path relative to `src/`, text) into a fresh tree.
fn tree(tag: &str, files: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new(tag);
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn an_acyclic_tree_passes() {
    let dir = tree(
        "modgraph-acyclic",
        &[
            ("lib.rs", "mod a;\nmod b;\nmod c;\npub use a::Thing;\npub fn run() { b::go(); }\n"),
            ("a.rs", "pub struct Thing;\n"),
            // A parent naming its children, the children naming a sibling.
            ("b/mod.rs", "mod inner;\npub fn go() { inner::work(); self::inner::work() }\n"),
            ("b/inner.rs", "use crate::a::Thing;\npub fn work() { let _ = Thing; crate::c::helper(); }\n"),
            // Tests in an inline module name their own file, and strings,
            // comments and `pub(crate)` name nothing.
            (
                "c.rs",
                "pub(crate) fn helper() { let _ = \"crate::b::go\"; } // crate::b::go\n\
                 /* super::b */\n#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test] fn t() { helper(); super::helper(); }\n}\n",
            ),
        ],
    );
    let graph = Graph::read(dir.path());
    assert_eq!(graph.check(), Ok(()), "{:#?}", graph.edges);
    let edges =
        |from: &str| -> Vec<String> { graph.edges.get(from).map(|e| e.keys().cloned().collect()).unwrap_or_default() };
    assert_eq!(edges("crate"), ["crate::a", "crate::b"]);
    assert_eq!(edges("crate::b"), ["crate::b::inner"]);
    assert_eq!(edges("crate::b::inner"), ["crate::a", "crate::c"]);
    assert!(edges("crate::c").is_empty(), "{:?}", edges("crate::c"));
    assert!(edges("crate::a").is_empty());
}

#[test]
fn a_cyclic_tree_fails_naming_the_cycle() {
    let dir = tree(
        "modgraph-cyclic",
        &[
            ("lib.rs", "pub mod api;\npub mod runs;\npub struct Config;\n"),
            ("api.rs", "use crate::runs::{self, api::create};\npub struct Problem;\npub fn routes() { create(); }\n"),
            ("runs/mod.rs", "pub mod api;\npub mod engine;\n"),
            ("runs/api.rs", "pub fn create() -> crate::api::Problem { crate::api::Problem }\n"),
            // A child naming its parent: through `super::`, and an item the
            // crate root defines.
            ("runs/engine.rs", "pub fn go() { let _ = super::super::Config; }\n"),
        ],
    );
    let report = check_crate(dir.path()).unwrap_err();
    assert!(report.starts_with("1 module cycle(s)"), "{report}");
    assert!(report.contains("crate::api, crate::runs::api"), "{report}");
    assert!(report.contains("crate::api -> crate::runs::api  (api.rs:1 `crate::runs::api::create`)"), "{report}");
    assert!(report.contains("crate::runs::api -> crate::api  (runs/api.rs:1 `crate::api::Problem`)"), "{report}");
    // engine -> crate is an edge, but the crate root names nothing back.
    assert!(!report.contains("engine"), "{report}");

    // The root naming what a child re-exports from its parent closes a cycle
    // through `super::`, and an import followed to where it comes from.
    let dir = tree(
        "modgraph-super",
        &[
            ("lib.rs", "mod session;\npub use session::Session;\n"),
            ("session.rs", "mod forward;\npub struct Session;\npub fn serve() { forward::run(); }\n"),
            ("session/forward.rs", "use super::Session;\npub fn run() { let _: Option<Session> = None; }\n"),
        ],
    );
    let report = check_crate(dir.path()).unwrap_err();
    assert!(report.contains("crate::session, crate::session::forward"), "{report}");
    assert!(report.contains("a cycle: crate::session -> crate::session::forward -> crate::session"), "{report}");
}

#[test]
fn a_binary_crate_is_read_from_its_main_rs() {
    let dir = tree(
        "modgraph-main",
        &[
            ("main.rs", "mod run;\npub struct Cli;\nfn main() { run::go(); }\n"),
            ("run.rs", "pub fn go() { let _ = crate::Cli; }\n"),
        ],
    );
    let report = check_crate(dir.path()).unwrap_err();
    assert!(report.contains("a cycle: crate -> crate::run -> crate"), "{report}");
    // Beside a `lib.rs`, `main.rs` is a crate of its own.
    std::fs::write(dir.path().join("lib.rs"), "pub mod run;\npub struct Cli;\n").unwrap();
    assert_eq!(check_crate(dir.path()), Ok(()));
}

#[test]
fn no_crate_has_a_module_cycle() {
    let crates = workspace_crates();
    assert!(crates.iter().any(|(name, _)| name == "crates/relay"), "{crates:?}");
    let failures: Vec<String> = crates
        .iter()
        .filter_map(|(name, src)| check_crate(src).err().map(|report| format!("{name}: {report}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
