//! The built-in status page (`/`, polling `/api/status`) in headless
//! Chromium against a running daemon: the assets of the stream show up, an
//! open alert marks its asset and lists the transition, and its clearing is
//! shown too. The page must be self-contained (no external URL).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anomalyd::core::synth::{FaultKind, generate};

use crate::util::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium on `url` with `extra` (`--dump-dom` or
/// `--screenshot=...`); returns stdout. No network beyond loopback: every
/// other host name resolves to nothing.
fn headless(bin: &Path, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {extra:?} {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The opening tag of the first element carrying `attr` (e.g.
/// `data-asset="pump-001"`).
fn tag_with<'a>(dom: &'a str, attr: &str) -> Option<&'a str> {
    let at = dom.find(attr)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

fn status(port: u16) -> serde_json::Value {
    http_get(&format!("http://127.0.0.1:{port}/api/status"))
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| serde_json::from_str(&r.body).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn asset<'a>(doc: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    doc["assets"]
        .as_array()?
        .iter()
        .find(|a| a["asset"] == name)
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn status_page_shows_assets_and_a_raised_alert_in_chromium() {
    let Some(bin) = tool(CHROMIUM, "chromium") else {
        return;
    };
    let broker = Mosquitto::start();
    let vm = VictoriaMetrics::start();
    let port = free_port();
    let cfg = DaemonConfig::new(broker.port(), &vm.url(), port).to_toml();
    let mut daemon = Daemon::start(&cfg, port, &[]);
    daemon.wait_note("READY=1", Duration::from_secs(60));
    let url = format!("http://127.0.0.1:{port}/");

    // pump-001 runs into a bearing fault at row 300 and is still in it at
    // row 410; pump-002 is healthy.
    let faulty = generate(
        600,
        11,
        START_NS,
        1_000_000_000,
        Some((FaultKind::Bearing, 300..420)),
    );
    let healthy = generate(360, 12, START_NS, 1_000_000_000, None);
    publish_frames(broker.port(), "pump-001", &faulty.slice(0..410));
    publish_frames(broker.port(), "pump-002", &healthy);
    wait_until(
        Duration::from_secs(60),
        "pump-001 in alert, pump-002 scored",
        || {
            let doc = status(port);
            asset(&doc, "pump-001").is_some_and(|a| a["anomalous"] == true)
                && asset(&doc, "pump-002").is_some()
        },
    );

    let dom = headless(&bin, &url, &["--dump-dom"]);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "page never loaded api/status:\n{dom}"
    );
    let p1 =
        tag_with(&dom, "data-asset=\"pump-001\"").unwrap_or_else(|| panic!("no pump-001:\n{dom}"));
    assert!(p1.contains("data-state=\"alert\""), "{p1}");
    let p2 =
        tag_with(&dom, "data-asset=\"pump-002\"").unwrap_or_else(|| panic!("no pump-002:\n{dom}"));
    assert!(p2.contains("data-state=\"normal\""), "{p2}");
    let raised = tag_with(&dom, "data-alert-asset=\"pump-001\"").expect("alert row");
    assert!(raised.contains("data-alert-state=\"raised\""), "{raised}");
    assert!(dom.contains("ALERT"));
    assert!(dom.contains("data-mqtt=\"connected\""));
    assert!(dom.contains("data-model=\"pump\"") && dom.contains("data-provider=\"cpu\""));
    // A chart per asset: the score line and the threshold line.
    assert!(
        dom.matches("class=\"score\"").count() >= 2,
        "charts missing"
    );
    assert!(dom.matches("class=\"thr\"").count() >= 2);

    // A screenshot as a person would see it; kept where
    // $STATUS_PAGE_SCREENSHOT says, for a look.
    let shots = tempfile::tempdir().unwrap();
    let png = shots.path().join("page.png");
    headless(
        &bin,
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
        ],
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(png_size(&bytes), (1280, 900));
    if let Some(keep) = std::env::var_os("STATUS_PAGE_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }

    // The fault ends at row 420: the alert clears and the page says so.
    publish_frames(broker.port(), "pump-001", &faulty.slice(410..600));
    wait_until(Duration::from_secs(60), "pump-001 cleared", || {
        daemon.metric("anomalyd_alerts_cleared_total") == Some(1.0)
    });
    let dom = headless(&bin, &url, &["--dump-dom"]);
    let p1 = tag_with(&dom, "data-asset=\"pump-001\"").expect("pump-001");
    assert!(p1.contains("data-state=\"normal\""), "{p1}");
    let newest = tag_with(&dom, "data-alert-asset=\"pump-001\"").expect("alert row");
    assert!(
        newest.contains("data-alert-state=\"cleared\""),
        "newest first: {newest}"
    );
    assert!(dom.contains("data-alert-state=\"raised\""));

    assert!(daemon.terminate(Duration::from_secs(20)).success());
}

/// The page loads nothing from elsewhere: no scripts, styles, fonts or
/// images by URL (the SVG namespace is a name, not a fetch).
#[test]
fn status_page_is_self_contained() {
    let html = read_repo_file("src/ops/status_page.html");
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    for needle in [
        "http://",
        "https://",
        "//cdn",
        "@import",
        "<link rel=\"stylesheet\"",
        " src=",
    ] {
        assert!(
            !without_ns.contains(needle),
            "status page references {needle}"
        );
    }
    assert!(html.contains("fetch(\"api/status\""));
    // Data from MQTT is inserted as text only.
    assert!(!html.contains("innerHTML") && !html.contains("insertAdjacentHTML"));
}
