//! Finding (and if need be building) the control plane's binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// The Kubernetes version the binaries are built at.
pub const K8S_VERSION: &str = "v1.36.5";

/// The binaries a control plane needs.
pub(crate) const BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
];

fn nonempty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The directory `hack/build-k8s.sh` builds into (same logic as the script).
fn cache_dir() -> PathBuf {
    if let Some(dir) = nonempty_env("AUTOHEAL_K8S_BIN") {
        return PathBuf::from(dir);
    }
    let cache = nonempty_env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(nonempty_env("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache")
        });
    cache.join("autoheal").join(format!("k8s-{K8S_VERSION}"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn missing_in(dir: &Path) -> Vec<&'static str> {
    BINARIES
        .into_iter()
        .filter(|name| !is_executable(&dir.join(name)))
        .collect()
}

/// The repository's `hack/build-k8s.sh`.
fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("hack")
        .join("build-k8s.sh")
}

/// Returns the directory holding etcd, kube-apiserver, kube-controller-manager and
/// kubectl, running `hack/build-k8s.sh` when some are missing or when
/// `$KUBEBUILDER_ASSETS` is set (the script links those binaries into the cache).
/// `$AUTOHEAL_K8S_BIN` overrides the directory. The result is remembered per process.
pub fn locate_binaries() -> Result<PathBuf> {
    static FOUND: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = found.as_ref() {
        return Ok(dir.clone());
    }
    let dir = cache_dir();
    let dir = if nonempty_env("KUBEBUILDER_ASSETS").is_none() && missing_in(&dir).is_empty() {
        dir
    } else {
        run_build_script(&dir)?
    };
    let missing = missing_in(&dir);
    if !missing.is_empty() {
        bail!("{} lacks {}", dir.display(), missing.join(", "));
    }
    *found = Some(dir.clone());
    Ok(dir)
}

fn run_build_script(dir: &Path) -> Result<PathBuf> {
    let script = build_script();
    if !script.exists() {
        bail!(
            "binaries missing from {} ({}) and {} does not exist; set AUTOHEAL_K8S_BIN or KUBEBUILDER_ASSETS",
            dir.display(),
            missing_in(dir).join(", "),
            script.display()
        );
    }
    // Several processes (test binaries, `cluster up`) may get here at once: build once.
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = crate::process::lock_file(&dir.join(".testkit.lock"))?;
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed = stdout.lines().rev().map(str::trim).find(|l| !l.is_empty());
    match printed {
        Some(line) => Ok(PathBuf::from(line)),
        None => bail!("{} printed no directory", script.display()),
    }
}
