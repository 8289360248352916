//! Engine tests: real probes against small servers on 127.0.0.1, for both HTTP clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::api::{HttpProbe, Scheme, TcpProbe};

const CLIENTS: [HttpClient; 2] = [HttpClient::Hyper, HttpClient::Handwritten];

fn http_probe(port: u16, path: &str) -> Probe {
    Probe {
        http: Some(HttpProbe {
            port: port.into(),
            path: path.into(),
            scheme: Scheme::Http,
            expected_statuses: "200-399".into(),
        }),
        tcp: None,
        interval_seconds: 1,
        timeout_seconds: 1,
        healthy_threshold: 1,
        unhealthy_threshold: 1,
    }
}

fn engine(client: HttpClient) -> ProbeEngine {
    ProbeEngine::with_options(
        Metrics::new(),
        EngineOptions {
            interval_override: Some(Duration::from_millis(20)),
            http_client: client,
            ..Default::default()
        },
    )
}

/// Reads one request head from `s` (or `None` at EOF / error).
async fn read_head(s: &mut TcpStream, have: &mut Vec<u8>) -> Option<()> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(pos) = have.windows(4).position(|w| w == b"\r\n\r\n") {
            have.drain(..pos + 4);
            return Some(());
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => have.extend_from_slice(&buf[..n]),
        }
    }
}

/// A tiny keep-alive server answering each request with `answer` (written at once); counts
/// connections.
async fn server_with(
    answer: String,
) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            c2.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut have = Vec::new();
                while read_head(&mut s, &mut have).await.is_some() {
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns, task)
}

/// [`server_with`] answering `status` with a small body.
async fn server(status: u16) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    server_with(format!(
        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nhi"
    ))
    .await
}

fn key(name: &str) -> InstanceKey {
    ("ns".into(), name.into())
}

async fn next_change(changes: &mut (impl Stream<Item = InstanceKey> + Unpin)) -> InstanceKey {
    tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("a verdict change")
        .expect("the engine is alive")
}

#[tokio::test]
async fn http_probes_reuse_the_connection_and_report_changes() {
    for client in CLIENTS {
        let (addr, conns, _srv) = server(200).await;
        let engine = engine(client);
        let mut changes = engine.changes();
        let target = ProbeTarget {
            address: addr.ip(),
            probe: http_probe(addr.port(), "/healthz"),
        };
        engine.set_target(&key("a"), Some(target.clone()));
        assert_eq!(engine.verdict(&key("a")).unwrap().healthy, None);
        let k = next_change(&mut changes).await;
        assert_eq!(k, key("a"));
        let v = engine.verdict(&k).unwrap();
        assert_eq!(v.healthy, Some(true), "{client:?}");
        assert!(v.message.contains(&format!("HTTP 200 from {addr}/healthz")));
        // Same target again: no restart.
        engine.set_target(&key("a"), Some(target));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(engine.verdict(&key("a")).unwrap().healthy, Some(true));
        assert_eq!(conns.load(Ordering::SeqCst), 1, "{client:?}");
        engine.set_target(&key("a"), None);
        assert_eq!(engine.verdict(&key("a")), None);
        assert_eq!(engine.target_count(), 0);
    }
}

#[tokio::test]
async fn failure_classes_are_kept_apart() {
    for client in CLIENTS {
        let engine = engine(client);
        let mut changes = engine.changes();
        // 503
        let (addr503, _, _s) = server(503).await;
        engine.set_target(
            &key("bad"),
            Some(ProbeTarget {
                address: addr503.ip(),
                probe: http_probe(addr503.port(), "/"),
            }),
        );
        // refused: a port bound (so that no other listener gets it meanwhile) but never
        // listened on
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let free = reserved.local_addr().unwrap();
        engine.set_target(
            &key("refused"),
            Some(ProbeTarget {
                address: free.ip(),
                probe: http_probe(free.port(), "/"),
            }),
        );
        // hang: accepts, never answers
        let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hang_addr = hang.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (s, _) = hang.accept().await.unwrap();
                held.push(s);
            }
        });
        engine.set_target(
            &key("hang"),
            Some(ProbeTarget {
                address: hang_addr.ip(),
                probe: http_probe(hang_addr.port(), "/"),
            }),
        );
        // reset: accepts, reads the request, closes without answering
        let reset = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reset_addr = reset.local_addr().unwrap();
        let _reset = tokio::spawn(async move {
            loop {
                let (mut s, _) = reset.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = read_head(&mut s, &mut Vec::new()).await;
                });
            }
        });
        engine.set_target(
            &key("reset"),
            Some(ProbeTarget {
                address: reset_addr.ip(),
                probe: http_probe(reset_addr.port(), "/"),
            }),
        );
        // malformed answer
        let (garbage_addr, _, _g) = server_with("SMTP ready\r\n\r\n".into()).await;
        engine.set_target(
            &key("garbage"),
            Some(ProbeTarget {
                address: garbage_addr.ip(),
                probe: http_probe(garbage_addr.port(), "/"),
            }),
        );
        // tcp ok
        let (tcp_addr, _, _s2) = server(200).await;
        let mut tcp = http_probe(0, "/");
        tcp.http = None;
        tcp.tcp = Some(TcpProbe {
            port: tcp_addr.port().into(),
        });
        engine.set_target(
            &key("tcp"),
            Some(ProbeTarget {
                address: tcp_addr.ip(),
                probe: tcp,
            }),
        );
        let mut seen = std::collections::HashSet::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while seen.len() < 6 {
                seen.insert(changes.next().await.unwrap().1);
            }
        })
        .await
        .expect("all six decided");
        let v = |n: &str| engine.verdict(&key(n)).unwrap();
        assert_eq!(
            v("bad").failure,
            Some(ResultClass::HttpStatus),
            "{client:?}"
        );
        assert!(
            v("bad").message.starts_with("HTTP 503 from"),
            "{:?}",
            v("bad")
        );
        assert_eq!(
            v("refused").failure,
            Some(ResultClass::Refused),
            "{client:?}"
        );
        assert!(v("refused").message.contains("connection refused"));
        assert_eq!(v("hang").failure, Some(ResultClass::Timeout), "{client:?}");
        assert!(v("hang").message.contains("timeout after 1s"));
        assert_eq!(
            v("reset").failure,
            Some(ResultClass::Reset),
            "{client:?}: {:?}",
            v("reset")
        );
        assert_eq!(
            v("garbage").failure,
            Some(ResultClass::Error),
            "{client:?}: {:?}",
            v("garbage")
        );
        assert!(v("garbage").message.contains("malformed HTTP answer"));
        assert_eq!(v("tcp").healthy, Some(true));
        for n in ["bad", "refused", "hang", "reset", "garbage"] {
            assert_eq!(v(n).healthy, Some(false), "{client:?} {n}");
        }
    }
}

/// A server that answers the first request of each connection with an interim answer and
/// the final one written together (one `write_all`, so one packet on loopback).
async fn interim_then_final(interim: &str, final_answer: &str) -> ProbeVerdict {
    let answer = format!("{interim}{final_answer}");
    let mut verdicts = Vec::new();
    for client in CLIENTS {
        let (addr, _, _srv) = server_with(answer.clone()).await;
        let engine = engine(client);
        let mut changes = engine.changes();
        let mut probe = http_probe(addr.port(), "/healthz");
        probe.http.as_mut().unwrap().expected_statuses = "200".into();
        engine.set_target(
            &key("a"),
            Some(ProbeTarget {
                address: addr.ip(),
                probe,
            }),
        );
        next_change(&mut changes).await;
        let v = engine.verdict(&key("a")).unwrap();
        verdicts.push((client, v));
    }
    let (_, first) = verdicts[0].clone();
    for (client, v) in verdicts {
        assert_eq!(
            (v.healthy, v.failure),
            (first.healthy, first.failure),
            "{client:?}: {v:?}"
        );
    }
    first
}

#[tokio::test]
async fn a_final_answer_in_the_packet_of_a_100_continue_passes() {
    let v = interim_then_final(
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    assert_eq!(v.healthy, Some(true), "{v:?}");
    assert_eq!(v.failure, None);
    assert!(v.message.starts_with("HTTP 200 from"), "{v:?}");
}

#[tokio::test]
async fn a_final_answer_in_the_packet_of_a_103_early_hints_passes() {
    let v = interim_then_final(
        "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    assert_eq!(v.healthy, Some(true), "{v:?}");
    assert_eq!(v.failure, None);
}

#[tokio::test]
async fn a_final_status_outside_expected_statuses_is_http_status() {
    let v = interim_then_final(
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
    )
    .await;
    assert_eq!(v.healthy, Some(false), "{v:?}");
    assert_eq!(v.failure, Some(ResultClass::HttpStatus));
    assert!(v.message.starts_with("HTTP 204 from"), "{v:?}");
}

#[tokio::test]
async fn a_connection_the_server_closes_is_replaced() {
    for client in CLIENTS {
        // Answers one request per connection, then closes it (without `Connection: close`).
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c2 = conns.clone();
        let _srv = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                c2.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if read_head(&mut s, &mut Vec::new()).await.is_some() {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        let engine = engine(client);
        let metrics = engine.inner.metrics.clone();
        engine.set_target(
            &key("a"),
            Some(ProbeTarget {
                address: addr.ip(),
                probe: http_probe(addr.port(), "/"),
            }),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ok = metrics.probe_results(ProbeKind::Http, ResultClass::Success);
        let failed: u64 = ResultClass::ALL
            .iter()
            .filter(|c| **c != ResultClass::Success)
            .map(|c| metrics.probe_results(ProbeKind::Http, *c))
            .sum();
        assert!(ok >= 3, "{client:?}: {ok} successes");
        assert_eq!(failed, 0, "{client:?}");
        assert!(conns.load(Ordering::SeqCst) as u64 >= ok, "{client:?}");
    }
}

#[tokio::test]
async fn connection_close_and_chunked_answers_are_not_reused() {
    for client in CLIENTS {
        for answer in [
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ] {
            let (addr, conns, _srv) = server_with(answer.into()).await;
            let engine = engine(client);
            let mut changes = engine.changes();
            engine.set_target(
                &key("a"),
                Some(ProbeTarget {
                    address: addr.ip(),
                    probe: http_probe(addr.port(), "/"),
                }),
            );
            next_change(&mut changes).await;
            assert_eq!(engine.verdict(&key("a")).unwrap().healthy, Some(true));
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(
                conns.load(Ordering::SeqCst) >= 3,
                "{client:?} {answer:?}: {} connections",
                conns.load(Ordering::SeqCst)
            );
        }
    }
}

/// A probe task spends nearly all its life waiting for its next slot; the probe's own future
/// (connection, TLS, answer) is allocated only while it runs. Held inline it made every task
/// 3,384 bytes (34 MB at 10,000 targets; heaptrack showed it as the largest retained item).
#[tokio::test]
async fn a_waiting_probe_task_holds_no_probe_future() {
    for client in CLIENTS {
        let engine = engine(client);
        let cx = TaskContext {
            engine: Arc::downgrade(&engine.inner),
            metrics: engine.inner.metrics.clone(),
            limit: engine.inner.limit.clone(),
            clients: engine.inner.clients.clone(),
            lateness_observer: None,
        };
        let target = ProbeTarget {
            address: "127.0.0.1".parse().unwrap(),
            probe: http_probe(8080, "/healthz"),
        };
        let task = run_target(
            cx,
            ("ns".into(), "i".into()),
            1,
            TargetPlan::new(&target, None),
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1536, "{client:?}: a probe task is {size} bytes");
    }
}
