//! The Grafana dashboard and the Prometheus rules the repository ships name
//! only metrics the server exports; the rules pass promtool; a real
//! Prometheus scrapes /metrics and answers queries on the order counters.

use crate::harness::{Setup, eventually, http_client, spawn_app};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn ops(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ops")
        .join(path)
}

/// Every `oversell_*` name in a text, histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("oversell_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|b| server::metrics::ALL.contains(b))
            })
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(ops("prometheus"))
        .output()
        .expect("promtool is installed (Debian package prometheus; scripts/bootstrap --test installs it)")
}

#[tokio::test]
async fn the_dashboard_and_rules_name_only_metrics_the_server_exports() {
    let dashboard = std::fs::read_to_string(ops("grafana/oversell-guard.json")).expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<&str> = json["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 12, "the panels carry their queries");
    let rules = std::fs::read_to_string(ops("prometheus/alerts.yml")).expect("rules");

    let app = spawn_app(Setup::embedded()).await;
    let item = app.create_item(2, None).await;
    let buyer = app.buyer().await;
    assert_eq!(buyer.order(item.id, 1, "m").await.status, 201);
    let exported = crate::harness::metrics_text(&app.base).await;

    for (source, names) in [
        ("grafana", metric_names(&exprs.join("\n"))),
        ("rules", metric_names(&rules)),
    ] {
        assert!(!names.is_empty(), "{source} names metrics");
        for name in names {
            assert!(
                server::metrics::ALL.contains(&name.as_str()),
                "{source} names {name}, which is not a server metric"
            );
            assert!(
                exported.contains(&format!("# TYPE {name} ")),
                "{source} names {name}, absent from /metrics"
            );
        }
    }
    for panel in [
        "Lua reservation success",
        "Database conflict",
        "Browser intercept",
        "Three-layer A/B",
        "Hottest items",
        "Payment deadline",
    ] {
        assert!(
            dashboard.contains(panel),
            "the dashboard has the {panel} panel, as /dashboard does"
        );
    }
}

#[test]
fn the_alerting_rules_pass_promtool() {
    let check = promtool(&["check", "rules", "alerts.yml"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

/// A Prometheus of the test's own scrapes this server every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_order_counters() {
    let app = spawn_app(Setup::embedded()).await;
    let target = app.base.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: oversell-guard\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .expect("config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus is installed (scripts/bootstrap --test installs it)");

    let item = app.create_item(5, None).await;
    let buyer = app.buyer().await;
    for n in 0..3 {
        assert_eq!(
            buyer.order(item.id, 1, &format!("prom-{n}")).await.status,
            201
        );
    }
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=sum(oversell_orders_total%7Boutcome%3D%22created%22%7D)"
    );
    let seen = eventually(Duration::from_secs(30), || {
        let query = query.clone();
        async move {
            let Ok(response) = http_client().get(&query).send().await else {
                return false;
            };
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            body["data"]["result"][0]["value"][1] == "3"
        }
    })
    .await;
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(seen, "Prometheus's query API returns the 3 created orders");
}
