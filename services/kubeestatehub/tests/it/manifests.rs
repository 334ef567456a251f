//! The Kubernetes manifests, offline: every overlay builds without warnings, validates
//! strictly against the Kubernetes 1.32 schemas, the YAML is lint-clean, and the rendered
//! manifests agree with the binary (subcommands, environment variables, probes, ports).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use clap::CommandFactory;
use kubeestatehub::cli::Cli;
use serde_json::Value;

const OVERLAYS: [&str; 3] = ["development", "staging", "production"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A tool of the project's Python environment (`./dev test` installs them).
fn python_tool(name: &str) -> PathBuf {
    let dir = std::env::var("KEH_PYTHON_TOOLS")
        .unwrap_or_else(|_| "/var/tmp/kubeestatehub-dev/venv/bin".to_owned());
    let path = PathBuf::from(dir).join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with ./dev test, which installs it",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> (bool, String, String) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `kubectl kustomize` of an overlay; warnings are failures.
fn render(overlay: &str) -> String {
    let path = repo().join("deploy/kustomize/overlays").join(overlay);
    let (ok, yaml, errors) = run(Command::new("kubectl").arg("kustomize").arg(&path));
    assert!(
        ok && !errors.contains("Warning"),
        "kubectl kustomize {overlay}: {errors}"
    );
    yaml
}

/// The rendered documents as JSON (through the environment's PyYAML).
fn documents(yaml: &str) -> Vec<Value> {
    let file = std::env::temp_dir().join(format!("keh-manifests-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&file, yaml).expect("write");
    let (ok, json, errors) = run(Command::new(python_tool("python")).args([
        "-c",
        "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
    ])
    .arg(&file));
    let _ = std::fs::remove_file(&file);
    assert!(ok, "{errors}");
    serde_json::from_str(&json).expect("json")
}

#[test]
fn every_overlay_builds_and_validates_against_kubernetes_1_32() {
    for overlay in OVERLAYS {
        let yaml = render(overlay);
        let file =
            std::env::temp_dir().join(format!("keh-{overlay}-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(&file, &yaml).expect("write");
        let (ok, out, errors) = run(Command::new(python_tool("kubernetes-validate"))
            .args(["-k", "1.32.0", "--strict", "--quiet"])
            .arg(&file));
        let _ = std::fs::remove_file(&file);
        assert!(ok, "kubernetes-validate {overlay}:\n{out}{errors}");
        // Custom resources have no built-in schema; every other kind must have been checked.
        for line in out.lines().chain(errors.lines()) {
            assert!(
                !line.contains("WARN") || line.contains("HTTPRoute"),
                "{overlay}: {line}"
            );
        }
    }
    let (ok, out, errors) = run(Command::new(python_tool("yamllint"))
        .arg("-c")
        .arg(repo().join("deploy/kustomize/.yamllint.yaml"))
        .arg(repo().join("deploy/kustomize"))
        .arg(repo().join("docker-compose.yml")));
    assert!(ok, "yamllint:\n{out}{errors}");
}

#[test]
fn the_manifests_agree_with_the_binary() {
    let cli = Cli::command();
    let subcommands: BTreeSet<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let documented: BTreeSet<String> = cli
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    assert!(documented.contains("DATABASE_URL") && documented.contains("KEH_HTTP_ADDR"));
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        // The shared settings: every key is a documented variable, and the port is 8080.
        let config = docs
            .iter()
            .find(|d| {
                d["kind"] == "ConfigMap"
                    && d["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("kubeestatehub-config"))
            })
            .expect("the shared ConfigMap");
        for key in config["data"].as_object().expect("data").keys() {
            assert!(
                documented.contains(key),
                "{overlay}: {key} is not a variable `kubeestatehub --help` documents"
            );
        }
        assert_eq!(config["data"]["KEH_HTTP_ADDR"], "0.0.0.0:8080");
        let mut roles = BTreeSet::new();
        for doc in &docs {
            let pod = match doc["kind"].as_str() {
                Some("Deployment" | "StatefulSet" | "Job") => &doc["spec"]["template"]["spec"],
                Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => continue,
            };
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            // Restricted Pod Security, and no API token for anyone.
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{overlay} {name}"
            );
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{overlay} {name}"
            );
            assert_eq!(
                pod["automountServiceAccountToken"], false,
                "{overlay} {name}"
            );
            for container in pod["containers"].as_array().expect("containers") {
                let security = &container["securityContext"];
                assert_eq!(
                    security["allowPrivilegeEscalation"], false,
                    "{overlay} {name}"
                );
                assert_eq!(
                    security["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{overlay} {name}"
                );
                assert!(
                    container["resources"]["requests"].is_object()
                        && container["resources"]["limits"].is_object(),
                    "{overlay} {name}: requests and limits"
                );
                let image = container["image"].as_str().unwrap_or_default();
                if !image.contains("kubeestatehub") {
                    continue;
                }
                let subcommand = container["args"][0].as_str().unwrap_or_default();
                assert!(
                    subcommands.contains(subcommand),
                    "{overlay} {name}: `{subcommand}` is not a subcommand"
                );
                roles.insert(subcommand.to_owned());
                for variable in container["env"].as_array().into_iter().flatten() {
                    let variable = variable["name"].as_str().unwrap_or_default();
                    assert!(
                        documented.contains(variable),
                        "{overlay} {name}: {variable} is not documented by --help"
                    );
                }
                if subcommand == "migrate" {
                    continue;
                }
                // Probes on the role's own listener, on paths every role serves.
                assert_eq!(
                    container["ports"][0]["containerPort"], 8080,
                    "{overlay} {name}"
                );
                for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                    let get = &container[probe]["httpGet"];
                    assert_eq!(get["port"], "http", "{overlay} {name} {probe}");
                    let path = get["path"].as_str().unwrap_or_default();
                    assert!(
                        ["/api/v1/health/live", "/api/v1/health/ready"].contains(&path),
                        "{overlay} {name} {probe}: {path}"
                    );
                }
            }
        }
        let expected: BTreeSet<String> = [
            "command-api",
            "query-api",
            "relay",
            "projector",
            "analytics",
            "migrate",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(roles, expected, "{overlay}: every role is deployed");
        let namespace = docs
            .iter()
            .find(|d| d["kind"] == "Namespace")
            .expect("namespace");
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
    }
}
