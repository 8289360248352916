//! Helm and the other tools `hack/build-tools.sh` builds, and rendering the chart.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The chart's directory.
pub fn chart() -> PathBuf {
    root().join("charts/autoheal")
}

/// A tool built by `hack/build-tools.sh` (once; later calls find it cached).
pub fn tool(name: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_build_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(root().join("hack/build-tools.sh"))
        .arg(name)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("running hack/build-tools.sh");
    assert!(out.status.success(), "hack/build-tools.sh {name} failed");
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("hack/build-tools.sh prints its directory")
        .to_string();
    PathBuf::from(dir).join(name)
}

pub fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| tool("helm"))
}

/// `helm ARGS` against `kubeconfig` (when given), with Helm's own state in a temp dir.
pub fn helm(kubeconfig: Option<&Path>, args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("autoheal-chart-helm-{}", std::process::id()));
    let mut cmd = Command::new(helm_bin());
    cmd.args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null());
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        None => cmd.env_remove("KUBECONFIG"),
    };
    cmd.output().expect("running helm")
}

/// Panics with helm's stderr unless it succeeded; returns stdout.
pub fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template RELEASE charts/autoheal -n NS ARGS…`.
pub fn render(release: &str, ns: &str, args: &[&str]) -> String {
    let chart = chart();
    let mut all = vec!["template", release, chart.to_str().unwrap(), "-n", ns];
    all.extend_from_slice(args);
    ok(&format!("helm {all:?}"), helm(None, &all))
}
