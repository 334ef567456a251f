//! The Kubernetes manifests, offline: every overlay builds without warnings, validates
//! strictly against the Kubernetes 1.32 schemas, passes checkov, the YAML is lint-clean, the
//! rendered manifests agree with the binary (subcommands, environment variables, probes,
//! ports), memory limits sit above measured peaks, and the admission policies admit the
//! platform's pods and refuse unsafe ones.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use clap::CommandFactory;
use kubeestatehub::cli::Cli;
use serde_json::Value;

const OVERLAYS: [&str; 3] = ["development", "staging", "production"];
/// The custom resources the overlays use: no built-in schema, so the project keeps one each.
const CUSTOM_KINDS: [&str; 7] = [
    "HTTPRoute",
    "PodMonitor",
    "PrometheusRule",
    "ScaledObject",
    "Gateway",
    "Certificate",
    "VerticalPodAutoscaler",
];

pub(crate) fn repo() -> PathBuf {
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
pub(crate) fn documents(yaml: &str) -> Vec<Value> {
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

/// The generated ConfigMap whose name starts with `prefix` (generators append a hash).
fn config_map<'a>(docs: &'a [Value], prefix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no ConfigMap {prefix}"))
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
        assert!(ok, "kubernetes-validate {overlay}:\n{out}{errors}");
        // checkov's Kubernetes checks, offline; the skipped ones are justified in its config.
        let (ok, findings, errors) = run(Command::new(python_tool("checkov"))
            .arg("--config-file")
            .arg(repo().join("deploy/kustomize/.checkov.yaml"))
            .args(["--skip-download", "--quiet", "--compact", "-f"])
            .arg(&file));
        let _ = std::fs::remove_file(&file);
        assert!(ok, "checkov {overlay}:\n{findings}{errors}");
        assert!(
            findings.contains("Passed checks"),
            "checkov {overlay} ran no checks:\n{findings}{errors}"
        );
        // Custom resources have no built-in schema (the project keeps its own, checked
        // below); every other kind must have been checked.
        for line in out.lines().chain(errors.lines()) {
            let custom = CUSTOM_KINDS
                .iter()
                .any(|kind| line.contains(&format!("kind {kind} ")));
            assert!(!line.contains("WARN") || custom, "{overlay}: {line}");
        }
    }
    let (ok, out, errors) = run(Command::new(python_tool("yamllint"))
        .arg("-c")
        .arg(repo().join("deploy/kustomize/.yamllint.yaml"))
        .arg(repo().join("deploy/kustomize"))
        .arg(repo().join("deploy/compose"))
        .arg(repo().join("docker-compose.yml")));
    assert!(ok, "yamllint:\n{out}{errors}");
}

#[test]
fn the_manifests_agree_with_the_binary() {
    let mut cli = Cli::command();
    let subcommands: BTreeSet<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let mut documented: BTreeSet<String> = cli
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    // The OpenTelemetry variables are read by the SDK; `--help` lists them after the options.
    let help = cli.render_long_help().to_string();
    documented.extend(
        help.split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .filter(|word| word.starts_with("OTEL_"))
            .map(str::to_owned),
    );
    assert!(documented.contains("DATABASE_URL") && documented.contains("KEH_HTTP_ADDR"));
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        // The shared settings: every key is a documented variable, and the port is 8080.
        let config = config_map(&docs, "kubeestatehub-config");
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

/// The schema the project keeps for a custom resource kind.
fn custom_schema(kind: &str) -> Option<PathBuf> {
    let file = match kind {
        "HTTPRoute" => "httproute.json",
        "PodMonitor" => "podmonitor.json",
        "PrometheusRule" => "prometheusrule.json",
        "ScaledObject" => "scaledobject.json",
        "Gateway" => "gateway.json",
        "Certificate" => "certificate.json",
        "VerticalPodAutoscaler" => "verticalpodautoscaler.json",
        _ => return None,
    };
    Some(repo().join("deploy/kustomize/schemas").join(file))
}

#[test]
fn custom_resources_match_the_schemas_the_project_keeps_and_the_alerts_are_tested() {
    let mut kinds = BTreeSet::new();
    let mut rules = None;
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        let deployments: BTreeSet<&str> = docs
            .iter()
            .filter(|d| d["kind"] == "Deployment")
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect();
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if kind == "VerticalPodAutoscaler" {
                // Recommendations only: KEDA scales the consumers on CPU and memory, and a
                // VPA acting on the same signals would fight it.
                let target = &doc["spec"]["targetRef"];
                assert!(
                    target["kind"] == "Deployment"
                        && target["name"]
                            .as_str()
                            .is_some_and(|name| deployments.contains(name)),
                    "{overlay}: a VPA targets {target}, not a Deployment of the overlay"
                );
                assert_eq!(
                    doc["spec"]["updatePolicy"]["updateMode"], "Off",
                    "{overlay}: VPA {} must only recommend",
                    doc["metadata"]["name"]
                );
            }
            let Some(schema) = custom_schema(&kind) else {
                continue;
            };
            let file = std::env::temp_dir().join(format!("keh-cr-{}.json", uuid::Uuid::new_v4()));
            std::fs::write(&file, doc.to_string()).expect("write");
            let (ok, out, errors) = run(Command::new(python_tool("python"))
                .args([
                    "-c",
                    "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))",
                ])
                .arg(&schema)
                .arg(&file));
            let _ = std::fs::remove_file(&file);
            assert!(
                ok,
                "{overlay} {kind} {}:\n{out}{errors}",
                doc["metadata"]["name"]
            );
            if kind == "PrometheusRule" {
                rules = Some(doc["spec"].clone());
            }
            kinds.insert(kind);
        }
    }
    let expected: BTreeSet<String> = CUSTOM_KINDS.into_iter().map(str::to_owned).collect();
    assert_eq!(
        kinds, expected,
        "every custom resource kind is rendered by some overlay"
    );

    // The alert rules, as promtool sees them: valid, and each has a unit test.
    let rules = rules.expect("a PrometheusRule");
    let dir = std::env::temp_dir().join(format!("keh-rules-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    // JSON is YAML: promtool reads it as is.
    std::fs::write(dir.join("rules.yaml"), rules.to_string()).expect("rules");
    std::fs::copy(
        repo().join("deploy/kustomize/components/monitoring/rules.test.yaml"),
        dir.join("rules.test.yaml"),
    )
    .expect("rule tests");
    let promtool = std::env::var("KEH_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let (ok, out, errors) = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(dir.join("rules.yaml")));
    assert!(ok, "promtool check rules:\n{out}{errors}");
    let (ok, out, errors) = run(Command::new(&promtool)
        .arg("test")
        .arg("rules")
        .arg(dir.join("rules.test.yaml")));
    assert!(ok, "promtool test rules:\n{out}{errors}");
    let tests = std::fs::read_to_string(dir.join("rules.test.yaml")).expect("tests");
    let runbook =
        std::fs::read_to_string(repo().join("docs/operations.md")).expect("docs/operations.md");
    for rule in rules["groups"][0]["rules"].as_array().expect("rules") {
        let alert = rule["alert"].as_str().expect("alert");
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool test"
        );
        assert!(
            runbook.contains(&format!("**{alert}**")),
            "{alert} has no runbook entry in docs/operations.md"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("deploy/kustomize/components/monitoring/dashboard.json"),
        )
        .expect("dashboard"),
    )
    .expect("the Grafana dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 6));
}

#[test]
fn the_dockerfile_and_the_compose_file_pass_their_linters() {
    let (ok, out, errors) =
        run(Command::new(python_tool("hadolint")).arg(repo().join("Dockerfile")));
    assert!(ok, "hadolint:\n{out}{errors}");
    let (ok, out, errors) = run(Command::new("docker-compose")
        .arg("-f")
        .arg(repo().join("docker-compose.yml"))
        .args(["config", "-q"]));
    assert!(ok, "docker-compose config (1.29):\n{out}{errors}");
    // The monitoring profile: Prometheus and Grafana with the dashboard.
    let (ok, services, errors) = run(Command::new("docker-compose")
        .arg("-f")
        .arg(repo().join("docker-compose.yml"))
        .args(["--profile", "monitoring", "config", "--services"]));
    assert!(
        ok && services.contains("prometheus") && services.contains("grafana"),
        "{services}{errors}"
    );
    // promtool checks that the metrics token file exists: beside a copy of the
    // configuration, as compose mounts the generated one beside the real file.
    let promtool = std::env::var("KEH_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let dir = std::env::temp_dir().join(format!("keh-prometheus-{}", crate::harness::unique_id()));
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/metrics-token"), "token").unwrap();
    std::fs::copy(
        repo().join("deploy/compose/prometheus.yml"),
        dir.join("prometheus.yml"),
    )
    .unwrap();
    let (ok, out, errors) = run(Command::new(promtool)
        .args(["check", "config"])
        .arg(dir.join("prometheus.yml")));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "promtool check config:\n{out}{errors}");
}

#[test]
fn each_overlays_nats_configuration_is_valid_and_production_is_a_three_server_cluster() {
    let binary = [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .find(|b| Command::new(b).arg("--version").output().is_ok())
    .expect("nats-server (./dev test installs it)");
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        let config = config_map(&docs, "nats-config");
        let dir = std::env::temp_dir().join(format!("keh-nats-conf-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        for (name, text) in config["data"].as_object().expect("data") {
            std::fs::write(dir.join(name), text.as_str().expect("text")).expect("write");
        }
        let (ok, out, errors) = run(Command::new(binary)
            .arg("-c")
            .arg(dir.join("nats.conf"))
            .args(["-js", "-t"])
            .envs([
                ("POD_NAME", "nats-0"),
                ("NATS_PLATFORM_PASSWORD", "p"),
                ("NATS_SUBSCRIBER_PASSWORD", "s"),
            ]));
        assert!(ok, "{overlay}: nats-server -t:\n{out}{errors}");
        let nats_conf = config["data"]["nats.conf"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let _ = std::fs::remove_dir_all(&dir);
        let replicas = docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet" && d["metadata"]["name"] == "nats")
            .map(|d| d["spec"]["replicas"].as_i64().unwrap_or(1))
            .expect("nats");
        let stream_replicas =
            config_map(&docs, "kubeestatehub-config")["data"]["KEH_STREAM_REPLICAS"]
                .as_str()
                .map(str::to_owned)
                .expect("KEH_STREAM_REPLICAS");
        if overlay == "production" {
            assert_eq!(replicas, 3, "production runs three NATS servers");
            assert!(
                nats_conf.contains("cluster {") && nats_conf.contains("nats-2.nats-headless"),
                "{nats_conf}"
            );
            assert_eq!(stream_replicas, "3", "production streams are R3");
        } else {
            // Without a cluster, more than one server would be separate brokers.
            assert_eq!(replicas, 1, "{overlay}");
            assert_eq!(stream_replicas, "1", "{overlay}");
        }
    }
}

/// `"256Mi"`, `"1Gi"`, `"512M"` in MiB.
fn mebibytes(quantity: &str) -> f64 {
    let units: [(&str, f64); 4] = [
        ("Gi", 1024.0),
        ("Mi", 1.0),
        ("G", 1e9 / 1_048_576.0),
        ("M", 1e6 / 1_048_576.0),
    ];
    for (suffix, factor) in units {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<f64>().expect("a number") * factor;
        }
    }
    panic!("a memory quantity in Mi, Gi, M or G: {quantity}")
}

/// The peak RSS figures (MiB) of bench/RESULTS.md's headline table, by row label.
fn measured_peaks() -> Vec<(String, f64)> {
    let results =
        std::fs::read_to_string(repo().join("bench/RESULTS.md")).expect("bench/RESULTS.md");
    results
        .lines()
        .take_while(|line| !line.starts_with("Baselines"))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let label = cells.get(1)?;
            let value = cells.get(2)?.replace(',', "").parse::<f64>().ok()?;
            label
                .starts_with("peak RSS")
                .then(|| ((*label).to_owned(), value))
        })
        .collect()
}

/// Memory limits come from measurements: each role's limit leaves a quarter above the
/// peak `bench/run` measured for it at full size (the APIs are bounded by the peak of every
/// role in one process under load), so a pod is not killed at the size the benchmark runs.
#[test]
fn every_roles_memory_limit_is_above_its_measured_peak() {
    let peaks = measured_peaks();
    let peak = |label: &str| {
        peaks
            .iter()
            .find(|(row, _)| row.starts_with(label))
            .map(|(_, value)| *value)
            .unwrap_or_else(|| panic!("bench/RESULTS.md has no row \"{label}…\": {peaks:?}"))
    };
    let measured = [
        ("relay", peak("peak RSS, relay alone")),
        ("projector", peak("peak RSS, projector alone")),
        ("analytics", peak("peak RSS, analytics alone")),
        ("command-api", peak("peak RSS, all roles in one process")),
        ("query-api", peak("peak RSS, all roles in one process")),
    ];
    let mut short = Vec::new();
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        for (role, peak) in measured {
            let deployment = docs
                .iter()
                .find(|d| {
                    d["kind"] == "Deployment"
                        && d["metadata"]["name"]
                            .as_str()
                            .is_some_and(|n| n.ends_with(role))
                })
                .unwrap_or_else(|| panic!("{overlay}: no Deployment for {role}"));
            for container in deployment["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("containers")
            {
                let limit = container["resources"]["limits"]["memory"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{overlay}/{role}: no memory limit"));
                if mebibytes(limit) < peak * 1.25 {
                    short.push(format!(
                        "{overlay}/{role}: limit {limit} is not a quarter above the measured peak of {peak} MB"
                    ));
                }
            }
        }
    }
    assert!(short.is_empty(), "{}", short.join("\n"));
}

/// Each overlay's admission policies (Kubernetes' CEL, evaluated by cel-python) admit every
/// pod the overlay runs and refuse what they exist to refuse: a container without limits, a
/// privileged one or one that may escalate, a pod on the host's network.
#[test]
fn the_admission_policies_admit_the_platform_and_refuse_unsafe_pods() {
    for overlay in OVERLAYS {
        let file =
            std::env::temp_dir().join(format!("keh-{overlay}-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(&file, render(overlay)).expect("write");
        let (ok, out, errors) = run(Command::new(python_tool("python"))
            .arg(repo().join("services/kubeestatehub/tests/admission.py"))
            .arg(&file));
        let _ = std::fs::remove_file(&file);
        assert!(ok, "{overlay}: {errors}");
        let report: Value = serde_json::from_str(&out).expect("the checker's JSON");
        assert!(
            report["policies"].as_u64() >= Some(1),
            "{overlay}: {report}"
        );
        assert!(report["pods"].as_u64() >= Some(8), "{overlay}: {report}");
        assert_eq!(report["refused"], serde_json::json!([]), "{overlay}");
        assert_eq!(report["admitted"], serde_json::json!([]), "{overlay}");
    }
}

/// One release throughout: the image tag (development's is the locally built image), the
/// `app.kubernetes.io/version` label of every object and the migrate Job's name
/// (`migrate-VERSION`) all name the version of this binary, so a release that bumps one
/// and not the others fails here.
#[test]
fn the_release_is_named_the_same_everywhere() {
    let version = env!("CARGO_PKG_VERSION");
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay));
        let mut wrong = Vec::new();
        for doc in &docs {
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            let kind = doc["kind"].as_str().unwrap_or("?");
            if doc["metadata"]["labels"]["app.kubernetes.io/version"] != version {
                wrong.push(format!("{kind}/{name}: version label"));
            }
            let template = if kind == "CronJob" {
                &doc["spec"]["jobTemplate"]["spec"]["template"]
            } else {
                &doc["spec"]["template"]
            };
            for container in template["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let image = container["image"].as_str().unwrap_or("");
                // Development runs the image built on the developer's machine.
                let expected = if overlay == "development" {
                    "development"
                } else {
                    version
                };
                if image.contains("/kubeestatehub:") && !image.ends_with(&format!(":{expected}")) {
                    wrong.push(format!("{kind}/{name}: image {image}"));
                }
            }
        }
        assert!(
            docs.iter().any(
                |d| d["kind"] == "Job" && d["metadata"]["name"] == format!("migrate-{version}")
            ),
            "{overlay}: no Job migrate-{version}"
        );
        assert!(wrong.is_empty(), "{overlay}: {}", wrong.join("\n"));
    }
}
