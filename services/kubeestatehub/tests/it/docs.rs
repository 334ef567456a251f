//! The documentation stays true: the configuration reference names every variable the
//! command line reads, with its default; every relative link in the README and `docs/`
//! leads somewhere; every API path they name is a route of the OpenAPI document.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use kubeestatehub::cli::Cli;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every environment variable the command line reads (any subcommand), with its default
/// as `--help` prints it (`None`: no default, or an empty one).
fn variables_of_the_cli() -> BTreeMap<String, Option<String>> {
    fn walk(command: &clap::Command, into: &mut BTreeMap<String, Option<String>>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                let defaults: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                into.insert(
                    env.to_string_lossy().into_owned(),
                    (!defaults.is_empty()).then(|| defaults.join(",")),
                );
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, into);
        }
    }
    let mut variables = BTreeMap::new();
    walk(&Cli::command(), &mut variables);
    variables
}

/// The rows of the "Environment variables" table: variable → its default cell.
fn variables_of_the_reference(text: &str) -> BTreeMap<String, String> {
    let section = text
        .split("\n## Environment variables\n")
        .nth(1)
        .expect("docs/configuration.md has an \"## Environment variables\" section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].trim_matches('`').to_owned(), cells[1].to_owned())
        })
        .collect()
}

#[test]
fn the_configuration_reference_matches_the_command_line() {
    let cli = variables_of_the_cli();
    assert!(
        cli.len() > 30,
        "the CLI walk found too few variables: {cli:?}"
    );
    let text = std::fs::read_to_string(repo().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let documented = variables_of_the_reference(&text);
    let mut wrong = Vec::new();
    for (variable, default) in &cli {
        match (documented.get(variable), default) {
            (None, _) => wrong.push(format!("{variable} is read but not documented")),
            (Some(cell), Some(default)) if *cell != format!("`{default}`") => wrong.push(format!(
                "{variable}: the reference says the default is {cell}, the command line `{default}`"
            )),
            (Some(cell), None) if !cell.starts_with("(none") => wrong.push(format!(
                "{variable} has no default, but the reference says {cell}"
            )),
            _ => {}
        }
    }
    for variable in documented.keys() {
        if !cli.contains_key(variable) {
            wrong.push(format!(
                "{variable} is documented but the command line does not read it"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` links in `text`.
fn links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_owned()))
        .collect()
}

fn check_links(file: &Path, wrong: &mut Vec<String>) {
    let text = std::fs::read_to_string(file).expect("a documentation page");
    for target in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            file.parent().expect("a folder").join(path)
        };
        if !resolved.exists() {
            wrong.push(format!("{}: {target} does not exist", file.display()));
            continue;
        }
        if !fragment.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
            let page = std::fs::read_to_string(&resolved).expect("a linked page");
            if !anchors(&page).contains(fragment) {
                wrong.push(format!(
                    "{}: {target} names no heading of {}",
                    file.display(),
                    resolved.display()
                ));
            }
        }
    }
}

#[test]
fn every_relative_link_of_the_documentation_leads_somewhere() {
    let mut pages = vec![repo().join("README.md"), repo().join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(repo().join("docs")).expect("docs/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut wrong = Vec::new();
    for page in &pages {
        check_links(page, &mut wrong);
    }
    assert!(pages.len() > 8, "{pages:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The check can fail: a link to a page that does not exist is reported.
    let probe = std::env::temp_dir().join(format!("keh-docs-probe-{}.md", std::process::id()));
    std::fs::write(
        &probe,
        "[gone](no-such-page.md) [here](#nowhere)\n# Somewhere\n",
    )
    .expect("a probe page");
    let mut found = Vec::new();
    check_links(&probe, &mut found);
    let _ = std::fs::remove_file(&probe);
    assert_eq!(found.len(), 2, "{found:?}");
}

/// The API paths the documentation names in inline code (`GET /api/v1/listings?…`), without
/// their query strings.
fn documented_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 0 || span.contains('\n') {
            continue; // outside inline code, or a fenced block's edge
        }
        for word in span.split_whitespace() {
            if let Some(at) = word.find("/api/") {
                let path = word[at..].split(['?', '#']).next().unwrap_or_default();
                let path = path.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '}');
                paths.push(path.to_owned());
            }
        }
    }
    paths
}

/// Whether `mentioned` names `route`: the same segments, a `{…}` on either side matching
/// any one segment.
fn names_route(mentioned: &str, route: &str) -> bool {
    let a: Vec<&str> = mentioned.split('/').collect();
    let b: Vec<&str> = route.split('/').collect();
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || x.starts_with('{') || y.starts_with('{'))
}

#[test]
fn every_api_path_the_documentation_names_exists() {
    let document = kubeestatehub::openapi::document().expect("the OpenAPI document");
    let mut routes: Vec<String> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    // Served beside the documented API: the browsable documentation itself.
    routes.push("/api/v1/docs".to_owned());
    let mut pages = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).expect("docs/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut wrong = Vec::new();
    let mut seen = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("a page");
        for path in documented_paths(&text) {
            seen += 1;
            // Problem `type` URIs identify a kind of error; they are not routes.
            if path.starts_with("/api/v1/problems") {
                continue;
            }
            if !routes.iter().any(|route| names_route(&path, route)) {
                wrong.push(format!("{}: {path} is not a route", page.display()));
            }
        }
    }
    assert!(seen > 40, "only {seen} paths found in the documentation");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(!names_route("/api/docs", "/api/v1/docs"));
    assert!(names_route(
        "/api/v1/listings/{ListingKey}",
        "/api/v1/listings/{key}"
    ));
}
