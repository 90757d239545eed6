//! The engine stays apart from the relay's edges and transport: neither it
//! nor anything it depends on (normal dependencies, transitively) is an HTTP
//! server, gRPC, or one of the crates that carry requests. Read from
//! `cargo metadata`, so a dependency that pulls one in by the back door fails
//! here too.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// Crates the engine must not reach: the web framework and server, gRPC and
/// HTTP/2, and the workspace crates of the edges and the agent transport.
const FORBIDDEN: &[&str] = &[
    "axum",
    "tonic",
    "hyper",
    "hyper-util",
    "h2",
    "borealis-relay",
    "borealis-serve",
    "borealis-protocol",
    "borealis-egress",
    "borealis-agent",
];

/// Names of every package `root` depends on, transitively, through normal
/// (not dev or build) dependencies, from `cargo metadata`'s resolve graph.
fn normal_dependencies(metadata: &Value, root: &str) -> BTreeSet<String> {
    let packages: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> =
        metadata["resolve"]["nodes"].as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap(), n)).collect();
    let start = packages.iter().find(|(_, name)| **name == root).map(|(id, _)| *id).expect("the root package");
    let (mut seen, mut todo) = (BTreeSet::new(), vec![start]);
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|kind| kind["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(packages[pkg].to_owned()) {
                todo.push(pkg);
            }
        }
    }
    seen
}

fn metadata() -> Value {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON")
}

#[test]
fn the_engine_depends_on_no_server_grpc_or_transport_crate() {
    let metadata = metadata();
    let engine = normal_dependencies(&metadata, "borealis-engine");
    assert!(
        engine.contains("borealis-store") && engine.contains("tokio"),
        "the walk found the engine's own: {engine:?}"
    );
    let reached: Vec<&&str> = FORBIDDEN.iter().filter(|name| engine.contains(**name)).collect();
    assert!(reached.is_empty(), "borealis-engine depends on {reached:?}; it must stay apart from the edges");
}

#[test]
fn the_check_sees_what_the_relay_depends_on() {
    // The same walk from the relay reaches what the engine must not: the
    // check can fail.
    let relay = normal_dependencies(&metadata(), "borealis-relay");
    for name in ["axum", "tonic", "hyper", "borealis-engine", "borealis-protocol"] {
        assert!(relay.contains(name), "the relay's dependencies include {name}: {relay:?}");
    }
}
