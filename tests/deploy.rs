//! What `deploy/` ships for operators: the Grafana dashboard and the Prometheus alerts. Every
//! query parses (promtool), names only metrics the service exports, and each alert fires on
//! the series it is for and not on healthy ones (`promtool test rules`). Without promtool
//! (Debian's `prometheus` package) the promtool checks say so and pass, unless
//! `MEET_WEBHOOKS_REQUIRE_PROMTOOL=1` (CI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use meet_webhooks_runtime::metrics as m;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(deploy("grafana/meet-webhooks.json")).unwrap()).unwrap()
}

/// Every PromQL expression of the dashboard, its variables given values as Grafana would.
fn dashboard_queries() -> Vec<String> {
    let board = dashboard();
    board["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().replace("$__rate_interval", "5m").replace("$instance", ".*"))
        .collect()
}

/// The metric names a text uses (`meet_webhooks_…`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("meet_webhooks_") {
        let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// What the service exports: each metric (a histogram by its family's name too), and a
/// histogram's series.
fn exported() -> BTreeSet<String> {
    let counters_and_gauges = [
        m::DELIVERIES,
        m::HANDLER_FAILURES,
        m::INBOX_DEPTH,
        m::COMMIT_FAILURES,
        m::HANDLER_ATTEMPTS,
        m::UNHANDLED,
        m::VERIFIED,
        m::BUILD_INFO,
        m::KEYS,
        m::OPEN_CONNECTIONS,
    ];
    let histograms = [m::LATENCY, m::COMMIT_BATCH, m::COMMIT_LATENCY, m::HANDLER_SECONDS, m::HANDLER_LAG];
    let mut names: BTreeSet<String> = counters_and_gauges.iter().map(|s| s.to_string()).collect();
    for h in histograms {
        names.insert(h.to_owned());
        names.extend(["_bucket", "_sum", "_count"].iter().map(|suffix| format!("{h}{suffix}")));
    }
    names
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_of_panels_over_the_service_s_metrics() {
    let board = dashboard();
    assert!(board["schemaVersion"].as_u64().unwrap() >= 36, "a current schema");
    assert_eq!(board["uid"], "meet-webhooks");
    let variables: Vec<&str> =
        board["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(variables, ["datasource", "instance"], "a data source to pick, and replicas");
    let panels = board["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{title}: a unique id");
        assert!(["timeseries", "stat"].contains(&panel["type"].as_str().unwrap()), "{title}");
        let grid = &panel["gridPos"];
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "{title}: on the grid");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}: the chosen data source");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: a query");
        for target in targets {
            assert!(target["refId"].is_string() && target["expr"].is_string(), "{title}");
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$instance\""), "{title}: follows the replica variable: {expr}");
        }
    }
    // What the issue asks it to show.
    let all: String = dashboard_queries().join("\n");
    for shown in
        [m::DELIVERIES, m::HANDLER_LAG, m::HANDLER_SECONDS, m::INBOX_DEPTH, m::COMMIT_FAILURES, m::OPEN_CONNECTIONS]
    {
        assert!(all.contains(shown), "the dashboard shows {shown}");
    }
    assert!(all.contains("outcome!~\"accepted|fallback|duplicate|handled\""), "refusals by reason");
    assert!(all.contains("state=\"dead\""), "dead letters");
}

#[test]
fn the_dashboard_and_the_alerts_name_only_metrics_the_service_exports() {
    let rules = std::fs::read_to_string(deploy("prometheus/meet-webhooks.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/meet-webhooks.rules.test.yml")).unwrap();
    let exported = exported();
    for (what, text) in [("dashboard", dashboard_queries().join("\n")), ("rules", rules), ("rule tests", tests)] {
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{what}");
        let unknown: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(unknown.is_empty(), "the {what} name metrics the service does not export: {unknown:?}");
    }
}

/// promtool, or `None` (said) where it is missing and not required.
fn promtool() -> Option<&'static str> {
    if Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("MEET_WEBHOOKS_REQUIRE_PROMTOOL").is_none(),
        "MEET_WEBHOOKS_REQUIRE_PROMTOOL: promtool is needed (apt install prometheus)"
    );
    eprintln!("skipped: promtool is missing (apt install prometheus)");
    None
}

fn run(promtool: &str, args: &[&str], dir: &Path) {
    let out = Command::new(promtool).args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_are_valid_and_pass_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = deploy("prometheus");
    run(promtool, &["check", "rules", "meet-webhooks.rules.yml"], &dir);
    run(promtool, &["test", "rules", "meet-webhooks.rules.test.yml"], &dir);
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let Some(promtool) = promtool() else { return };
    // Each query as a recording rule: `check rules` parses it.
    let rules: Vec<serde_json::Value> = dashboard_queries()
        .into_iter()
        .enumerate()
        .map(|(i, expr)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML.
    std::fs::write(dir.path().join("dashboard.rules.yml"), file.to_string()).unwrap();
    run(promtool, &["check", "rules", "dashboard.rules.yml"], dir.path());
}

/// The systemd unit loads (`systemd-analyze verify`, where systemd is installed: the unit's
/// binary path points at this build), and hands the key to the made-up user it runs as through
/// a credential, which root reads: `DynamicUser=` cannot read a root-owned 0600 key file.
#[test]
fn the_systemd_unit_verifies_and_reads_its_key_through_a_credential() {
    let unit = std::fs::read_to_string(deploy("meet-webhooks.service")).unwrap();
    let line = |key: &str| unit.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key}"));
    assert_eq!(line("LoadCredential="), "keys:/etc/meet-webhooks/keys");
    assert!(line("ExecStart=").contains(" --key-file %d/keys "), "the credential's copy: {unit}");
    assert_eq!(line("DynamicUser="), "yes");
    let Some(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: the unit is not verified here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("meet-webhooks.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/meet-webhooks", env!("CARGO_BIN_EXE_meet-webhooks"))).unwrap();
    let out = Command::new(analyze).arg("verify").arg(&copy).current_dir(dir.path()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// A program on the PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()))
}
