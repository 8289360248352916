//! Probe engine benchmark (`make bench-probe`): N local HTTP endpoints on distinct 127.x
//! addresses, served by child processes (5,000 each, one thread each); the probe engine runs in this process on ONE core
//! (a current-thread tokio runtime), so its CPU time and RSS are measured apart from the
//! endpoints'. Prints a table:
//!
//! - probes per second at saturation (intervals far below what one core can serve), and
//!   probes per CPU-second of the prober (= per core), for N = 1,000 and 10,000;
//! - p50 / p99 lateness of probes after their wake-up time (the slot rounded up to 10 ms) at
//!   1,000 and 5,000 probes/s;
//! - the prober's RSS with 10,000 instances probed every second;
//! - the throughput `wrk` gets from the same endpoints (the physical reference), when `wrk`
//!   is installed.
//!
//! Every phase runs twice, once with each HTTP client of the engine
//! ([`HttpClient::Handwritten`], the default, and [`HttpClient::Hyper`]), alternating which goes first, so both are compared in the same run on the same
//! endpoints. Freed memory is handed back to the kernel (`malloc_trim`) before each phase so
//! that the RSS of one phase does not carry the previous one's.
//!
//! Goals (issue 4): ≥ 20,000 probes/s on one core, p99 lateness < 10 ms at 5,000 probes/s,
//! RSS < 100 MB at 10,000 instances (for the default client); and for the hyper client:
//! ≥ 30,000 probes/s at N = 10,000, within 15 % of the hand-written client (the condition for
//! it to be the default).
//!
//! `cargo bench --bench probe [-- --quick]` (`--quick`: shorter phases).

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoheal::api::{HttpProbe, Probe, Scheme};
use autoheal::health::{EngineOptions, HttpClient, InstanceKey, ProbeEngine, ProbeTarget};
use autoheal::telemetry::{Metrics, ProbeKind, ResultClass};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PORT: u16 = 18080;
const MAX_N: usize = 10_000;

fn address(i: usize) -> IpAddr {
    // 127.77.0.1 .. : 250 addresses per /24, never .0 or .255.
    IpAddr::V4(Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

// ---- the endpoints (child process) --------------------------------------------------------

fn serve(from: usize, to: usize) {
    common::raise_nofile(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        for i in from..to {
            let addr = SocketAddr::new(address(i), PORT);
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("cannot bind {addr}: {e}");
                    std::process::exit(1);
                }
            };
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        // e.g. out of file descriptors: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        let mut buf = vec![0u8; 4096];
                        let mut have = 0usize;
                        loop {
                            let Ok(k) = s.read(&mut buf[have..]).await else {
                                return;
                            };
                            if k == 0 {
                                return;
                            }
                            have += k;
                            // Answer every complete request head in the buffer.
                            let mut start = 0;
                            while let Some(p) =
                                buf[start..have].windows(4).position(|w| w == b"\r\n\r\n")
                            {
                                start += p + 4;
                                if s.write_all(RESP).await.is_err() {
                                    return;
                                }
                            }
                            buf.copy_within(start..have, 0);
                            have -= start;
                            if have == buf.len() {
                                have = 0;
                            }
                        }
                    });
                }
            });
        }
        println!("ready");
        let _ = std::io::stdout().flush();
        // Run until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
    });
}

/// The endpoint processes: several, so that each stays within the open-files limit (a
/// listener and an accepted connection per endpoint).
struct Endpoints(Vec<Child>);

/// Endpoints per child process.
const PER_PROCESS: usize = 5_000;

impl Endpoints {
    fn start(n: usize) -> Endpoints {
        let exe = std::env::current_exe().unwrap();
        let mut children = Vec::new();
        for from in (0..n).step_by(PER_PROCESS) {
            let to = (from + PER_PROCESS).min(n);
            let mut child = Command::new(&exe)
                .args(["--serve", &from.to_string(), &to.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("starting an endpoint process");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "ready", "endpoint process failed to start");
            children.push(child);
        }
        Endpoints(children)
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---- the prober --------------------------------------------------------------------------

fn probe() -> Probe {
    Probe {
        http: Some(HttpProbe {
            port: PORT.into(),
            path: "/healthz".into(),
            scheme: Scheme::Http,
            expected_statuses: "200-399".into(),
        }),
        tcp: None,
        interval_seconds: 1,
        timeout_seconds: 2,
        healthy_threshold: 2,
        unhealthy_threshold: 3,
    }
}

/// One phase, with each client.
struct Pair {
    hyper: Run,
    hand: Run,
}

struct Run {
    probes_per_sec: f64,
    per_cpu_sec: f64,
    failures: u64,
    failure_classes: String,
    p50_ms: f64,
    p99_ms: f64,
    rss_mb: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Hands freed heap memory back to the kernel, so that RSS measures what is in use.
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Probes `n` endpoints every `interval` for `warmup + measure` on a current-thread runtime,
/// with the HTTP client `client`.
fn run(
    client: HttpClient,
    n: usize,
    interval: Duration,
    warmup: Duration,
    measure: Duration,
) -> Run {
    trim_heap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let metrics = Metrics::new();
        let samples: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
        let recording = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, r2) = (samples.clone(), recording.clone());
        let engine = ProbeEngine::with_options(
            metrics.clone(),
            EngineOptions {
                max_concurrency: 4096,
                interval_override: Some(interval),
                lateness_observer: Some(Arc::new(move |d| {
                    if r2.load(std::sync::atomic::Ordering::Relaxed) {
                        s2.lock().unwrap().push(d);
                    }
                })),
                http_client: client,
            },
        );
        let keys: Vec<InstanceKey> = (0..n)
            .map(|i| ("bench".to_string(), format!("i-{i}")))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            engine.set_target(
                k,
                Some(ProbeTarget {
                    address: address(i),
                    probe: probe(),
                }),
            );
        }
        tokio::time::sleep(warmup).await;
        let ok = || metrics.probe_results(ProbeKind::Http, ResultClass::Success);
        let bad = || {
            ResultClass::ALL
                .iter()
                .filter(|c| **c != ResultClass::Success)
                .map(|c| metrics.probe_results(ProbeKind::Http, *c))
                .sum::<u64>()
        };
        let (ok0, bad0, cpu0, t0) = (ok(), bad(), cpu_time(), Instant::now());
        recording.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(measure).await;
        recording.store(false, std::sync::atomic::Ordering::Relaxed);
        let (ok1, bad1, cpu1, wall) = (ok(), bad(), cpu_time(), t0.elapsed());
        let rss = rss_mb();
        let mut lat = std::mem::take(&mut *samples.lock().unwrap());
        lat.sort();
        for k in &keys {
            engine.set_target(k, None);
        }
        let done = (ok1 - ok0 + bad1 - bad0) as f64;
        // Classes over the whole run (warm-up included).
        let failure_classes = ResultClass::ALL
            .iter()
            .filter(|c| **c != ResultClass::Success)
            .filter_map(|c| {
                let n = metrics.probe_results(ProbeKind::Http, *c);
                (n > 0).then(|| format!("{}={n}", c.as_str()))
            })
            .collect::<Vec<_>>()
            .join(" ");
        Run {
            probes_per_sec: done / wall.as_secs_f64(),
            per_cpu_sec: done / (cpu1 - cpu0).as_secs_f64().max(1e-9),
            failures: bad1 - bad0,
            failure_classes,
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
            rss_mb: rss,
        }
    })
}

fn wrk(connections: usize, duration: Duration) -> Option<f64> {
    let url = format!("http://{}:{PORT}/healthz", address(0));
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs()),
            &url,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let arg = |k: usize, default: usize| {
            args.get(i + k)
                .and_then(|s| s.parse().ok())
                .unwrap_or(default)
        };
        serve(arg(1, 0), arg(2, MAX_N));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (warm, measure) = if quick {
        (Duration::from_secs(2), Duration::from_secs(3))
    } else {
        (Duration::from_secs(3), Duration::from_secs(8))
    };
    common::raise_nofile(200_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rss_idle = rss_mb();
    eprintln!("starting {MAX_N} endpoints on 127.77.x.y:{PORT} ...");
    let _endpoints = Endpoints::start(MAX_N);

    // Each phase with both clients; which goes first alternates from phase to phase.
    let both = |name: &str, n: usize, interval: Duration, hyper_first: bool| {
        let mut order = [HttpClient::Handwritten, HttpClient::Hyper];
        if hyper_first {
            order.reverse();
        }
        let mut hyper = None;
        let mut hand = None;
        for client in order {
            eprintln!("{name}, {client:?} ...");
            let r = run(client, n, interval, warm, measure);
            match client {
                HttpClient::Hyper => hyper = Some(r),
                HttpClient::Handwritten => hand = Some(r),
            }
        }
        Pair {
            hyper: hyper.unwrap(),
            hand: hand.unwrap(),
        }
    };
    let sat1k = both(
        "saturation, N=1000",
        1_000,
        Duration::from_millis(10),
        false,
    );
    let sat10k = both(
        "saturation, N=10000",
        10_000,
        Duration::from_millis(100),
        true,
    );
    let lat1k = both(
        "lateness at 1,000 probes/s",
        1_000,
        Duration::from_secs(1),
        false,
    );
    let lat5k = both(
        "lateness at 5,000 probes/s",
        5_000,
        Duration::from_secs(1),
        true,
    );
    let big = both(
        "10,000 instances every second: RSS",
        10_000,
        Duration::from_secs(1),
        false,
    );
    eprintln!("wrk reference ...");
    let wrk_secs = if quick { 3 } else { 5 };
    let wrk100 = wrk(100, Duration::from_secs(wrk_secs));
    let wrk1 = wrk(1, Duration::from_secs(wrk_secs));

    let yes = |ok: bool| if ok { "yes" } else { "NO" };
    println!();
    println!(
        "probe engine benchmark — {MAX_N} HTTP endpoints on 127.77.x.y:{PORT} (child processes, one worker thread each); prober on ONE core (current-thread runtime); machine: {cores} cores, shared"
    );
    println!();
    println!(
        "| measurement | N | offered | client | probes/s (wall) | probes per CPU-second | failures | p50 lateness | p99 lateness | prober RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let row = |name: &str, n: usize, offered: &str, p: &Pair| {
        for (client, r) in [("hyper", &p.hyper), ("hand-written", &p.hand)] {
            println!(
                "| {name} | {n} | {offered} | {client} | {:.0} | {:.0} | {} | {:.2} ms | {:.2} ms | {:.1} MB |",
                r.probes_per_sec, r.per_cpu_sec, r.failures, r.p50_ms, r.p99_ms, r.rss_mb
            );
        }
    };
    row("saturation", 1_000, "100,000/s", &sat1k);
    row("saturation", 10_000, "100,000/s", &sat10k);
    row("lateness", 1_000, "1,000/s", &lat1k);
    row("lateness", 5_000, "5,000/s", &lat5k);
    row("10k instances", 10_000, "10,000/s", &big);
    for (name, r) in [
        ("saturation N=1000", &sat1k),
        ("saturation N=10000", &sat10k),
        ("lateness 1,000/s", &lat1k),
        ("lateness 5,000/s", &lat5k),
        ("10k instances", &big),
    ] {
        for (client, r) in [("hyper", &r.hyper), ("hand-written", &r.hand)] {
            if !r.failure_classes.is_empty() {
                println!(
                    "failure classes, {name}, {client} (whole run): {}",
                    r.failure_classes
                );
            }
        }
    }
    println!();
    match (wrk100, wrk1) {
        (Some(a), Some(b)) => println!(
            "wrk reference (1 thread, same endpoint server): {a:.0} req/s with 100 connections, {b:.0} req/s with 1 connection"
        ),
        _ => println!("wrk reference: wrk not installed (apt-get install wrk), skipped"),
    }
    println!("RSS of this process before any endpoint or target: {rss_idle:.1} MB");
    println!();
    let default = EngineOptions::default().http_client;
    let pick = |p: &Pair| -> (f64, f64, f64) {
        let r = match default {
            HttpClient::Hyper => &p.hyper,
            HttpClient::Handwritten => &p.hand,
        };
        (r.probes_per_sec, r.p99_ms, r.rss_mb)
    };
    let best = pick(&sat1k).0.max(pick(&sat10k).0);
    let ratio = sat10k.hyper.probes_per_sec / sat10k.hand.probes_per_sec;
    let ratio1k = sat1k.hyper.probes_per_sec / sat1k.hand.probes_per_sec;
    println!("| goal | target | reached | met |");
    println!("|---|---|---|---|");
    println!(
        "| probes/s on one core ({default:?}, the default) | ≥ 20,000 | {best:.0} | {} |",
        yes(best >= 20_000.0)
    );
    println!(
        "| hyper probes/s on one core at N=10,000 | ≥ 30,000 | {:.0} | {} |",
        sat10k.hyper.probes_per_sec,
        yes(sat10k.hyper.probes_per_sec >= 30_000.0)
    );
    println!(
        "| hyper / hand-written probes/s at N=10,000 (same run) | ≥ 85 % | {:.1} % | {} |",
        ratio * 100.0,
        yes(ratio >= 0.85)
    );
    println!(
        "| hyper / hand-written probes/s at N=1,000 (same run) | ≥ 85 % | {:.1} % | {} |",
        ratio1k * 100.0,
        yes(ratio1k >= 0.85)
    );
    let cpu = sat10k.hyper.per_cpu_sec / sat10k.hand.per_cpu_sec;
    println!(
        "| hyper / hand-written probes per CPU-second at N=10,000 | ≥ 85 % | {:.1} % | {} |",
        cpu * 100.0,
        yes(cpu >= 0.85)
    );
    println!(
        "| p99 lateness at 5,000 probes/s ({default:?}) | < 10 ms | {:.2} ms | {} |",
        pick(&lat5k).1,
        yes(pick(&lat5k).1 < 10.0)
    );
    println!(
        "| RSS at 10,000 instances ({default:?}) | < 100 MB | {:.1} MB | {} |",
        pick(&big).2,
        yes(pick(&big).2 < 100.0)
    );
}
