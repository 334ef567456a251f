//! The dependency graph the code actually has, held to the one ARCHITECTURE.md writes down
//! ("Layers"): which workspace crate may depend on which, and which may link the HTTP stack.
//! A crate that gains a dependency its row does not name fails here, and so does a crate
//! missing from the table.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The crates that make up the HTTP stack; linking any of them, directly or through a
/// dependency, needs a "yes" in the table.
const HTTP_STACK: &[&str] = &["axum", "tower", "tower-http", "hyper", "http", "reqwest"];

/// Package id → (package name, ids of its normal dependencies).
type Graph = BTreeMap<String, (String, Vec<String>)>;

struct Row {
    allowed: BTreeSet<String>,
    http: bool,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The "Layers" table of ARCHITECTURE.md: crate → (workspace crates it may use, HTTP).
fn documented_layers() -> BTreeMap<String, Row> {
    let text = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md is readable");
    let section = text
        .split("\n## Layers\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"## Layers\" section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let names = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a Layers row has three cells: {line}");
        let first = names(cells[0]);
        let [name] = first.as_slice() else {
            panic!("a Layers row names one crate first: {line}")
        };
        let name = name.clone();
        let http = match cells[2] {
            "yes" => true,
            "no" => false,
            other => panic!("the HTTP cell of {name} is `yes` or `no`, not {other:?}"),
        };
        let allowed = if cells[1] == "every crate above" {
            rows.keys().cloned().collect()
        } else {
            names(cells[1]).into_iter().collect()
        };
        rows.insert(name, Row { allowed, http });
    }
    assert!(rows.len() > 5, "the Layers table was not found or is empty");
    rows
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// The resolved graph for this host, and the workspace members' ids.
fn resolved_graph() -> (Graph, BTreeSet<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", &host_triple()])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut graph = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().expect("resolve") {
        let id = node["id"].as_str().unwrap();
        let normal = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap().to_owned())
            .collect();
        graph.insert(id.to_owned(), (names[id].to_owned(), normal));
    }
    let members = metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    (graph, members)
}

/// Every package `id` links, itself excluded, with the path to the first one of each name.
fn closure(graph: &Graph, id: &str) -> BTreeMap<String, Vec<String>> {
    let mut reached: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut queue = VecDeque::from([(id.to_owned(), Vec::<String>::new())]);
    let mut seen = BTreeSet::from([id.to_owned()]);
    while let Some((current, path)) = queue.pop_front() {
        for dep in &graph[&current].1 {
            if seen.insert(dep.clone()) {
                let mut path = path.clone();
                path.push(graph[dep].0.clone());
                reached.entry(graph[dep].0.clone()).or_insert(path.clone());
                queue.push_back((dep.clone(), path));
            }
        }
    }
    reached
}

#[test]
fn the_crates_depend_only_as_architecture_md_allows() {
    let layers = documented_layers();
    let (graph, members) = resolved_graph();
    let member_names: BTreeSet<&str> = members.iter().map(|m| graph[m].0.as_str()).collect();
    let mut wrong = Vec::new();
    for name in &member_names {
        if !layers.contains_key(*name) {
            wrong.push(format!(
                "{name} is not in ARCHITECTURE.md's Layers table: place it there"
            ));
        }
    }
    for name in layers.keys() {
        if !member_names.contains(name.as_str()) {
            wrong.push(format!(
                "the Layers table names {name}, which is not a workspace crate"
            ));
        }
    }
    for id in &members {
        let (name, deps) = &graph[id];
        let Some(row) = layers.get(name) else {
            continue;
        };
        for dep in deps {
            let dep_name = &graph[dep].0;
            if member_names.contains(dep_name.as_str()) && !row.allowed.contains(dep_name) {
                wrong.push(format!(
                    "{name} depends on {dep_name}, which its Layers row does not allow"
                ));
            }
        }
        if !row.http {
            for (linked, path) in closure(&graph, id) {
                if HTTP_STACK.contains(&linked.as_str()) {
                    wrong.push(format!(
                        "{name} links the HTTP stack ({linked}, through {})",
                        path.join(" → ")
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_layering_check_sees_a_forbidden_edge() {
    // The check above must be able to fail: the HTTP crate, read against the row of a crate
    // that may not link it, is reported.
    let (graph, members) = resolved_graph();
    let http = members
        .iter()
        .find(|m| graph[*m].0 == "keh-http")
        .expect("keh-http is a workspace crate");
    let linked = closure(&graph, http);
    assert!(linked.contains_key("axum"), "{linked:?}");
    let store = members
        .iter()
        .find(|m| graph[*m].0 == "keh-store")
        .expect("keh-store is a workspace crate");
    let store_links = closure(&graph, store);
    assert!(store_links.contains_key("keh-platform"));
    assert!(store_links.contains_key("sqlx-core"));
}

/// Rust sources of the workspace outside tests, as (path, text).
fn sources(dir: &std::path::Path, into: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !matches!(name, "tests" | "target" | "node_modules") {
                sources(&path, into);
            }
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).expect("a source file");
            into.push((path, text));
        }
    }
}

/// Whether code in `text` names the `events` table in SQL: `FROM`, `JOIN` or `INTO` (SQL
/// here is written in capitals, so Rust's `from(events)` does not count), outside comments.
fn names_events_table(text: &str) -> bool {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .any(|w| matches!(w[0], "FROM" | "JOIN" | "INTO") && w[1] == "events")
}

#[test]
fn only_the_store_reads_or_writes_the_events_table() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["events", "projections", "services"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "too few sources found: {}", files.len());
    let store = root.join("services/store");
    let wrong: Vec<String> = files
        .iter()
        .filter(|(path, text)| !path.starts_with(&store) && names_events_table(text))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        wrong.is_empty(),
        "only keh-store may name the events table (add a function to keh_store::outbox): {wrong:?}"
    );
    assert!(names_events_table(
        "let q = \"SELECT 1 FROM events WHERE x\";"
    ));
    assert!(!names_events_table("SELECT 1 FROM read_model.events_seen"));
    assert!(!names_events_table("let facts = Fact::from(events);"));
    assert!(!names_events_table("// replays FROM events"));
}
