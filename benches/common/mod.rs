//! What the benchmark binaries share (included with `#[path]`): the kube-controller-manager
//! client limits of the two Kubernetes runs, and knobs read from the environment.

#![allow(dead_code)]

use std::time::Duration;

/// kube-controller-manager's own defaults: what users get.
pub const KCM_DEFAULTS: [&str; 2] = ["--kube-api-qps=20", "--kube-api-burst=30"];

/// kube-controller-manager with its client limits raised to autoheal's own defaults
/// (`--kube-api-qps`/`--kube-api-burst` of `autoheal run`): the fair race.
pub fn kcm_raised() -> [String; 2] {
    use autoheal::controller::client::ClientOptions;
    [
        format!("--kube-api-qps={}", ClientOptions::DEFAULT_QPS),
        format!("--kube-api-burst={}", ClientOptions::DEFAULT_BURST),
    ]
}

/// An unsigned number from the environment, `default` when unset or unparsable.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Median of the successful runs, in seconds; `None` when fewer than half succeeded.
pub fn median_secs(values: &[Result<Duration, String>]) -> Option<f64> {
    let mut ok: Vec<f64> = values
        .iter()
        .filter_map(|v| v.as_ref().ok())
        .map(Duration::as_secs_f64)
        .collect();
    // Fewer than half the runs succeeded: no median (the failed ones are the slow ones).
    if ok.is_empty() || ok.len() * 2 < values.len() {
        return None;
    }
    ok.sort_by(f64::total_cmp);
    let m = ok.len() / 2;
    Some(if ok.len() % 2 == 1 {
        ok[m]
    } else {
        (ok[m - 1] + ok[m]) / 2.0
    })
}

/// Where `make bench-refresh --kcm-variants` leaves its runs for `make bench`'s table.
pub fn refresh_results_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-refresh.json")
}

/// The commit (with " (with uncommitted changes)" when the tree is dirty), the number of
/// CPUs and the date, for a report's header.
pub fn stamp() -> (String, usize, String) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = if git(&["status", "--porcelain"]).is_some_and(|s| s.is_empty()) {
        ""
    } else {
        " (with uncommitted changes)"
    };
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    (format!("{commit}{dirty}"), nproc, date)
}

/// Lets this process hold `want` open files: the 10,000 scenario's podsims listen on one
/// socket per Pod and hold the operator's probe connections (≈ 20,000 descriptors, the
/// machine's default hard limit; past it every file and socket this process opens fails).
/// Root may raise the hard limit; otherwise the soft limit goes up to the hard one.
pub fn raise_nofile(want: u64) {
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) == 0 && now.rlim_cur >= want {
            return; // never lower it
        }
        let lim = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(now.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) == 0 {
                cur.rlim_cur = cur.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
            }
        }
    }
}
