//! The probe's HTTP answer handling: a local TCP server answers each connection with
//! arbitrary bytes, then closes; both HTTP clients (hyper and hand-written) must classify
//! each probe (two in a row, so the kept-alive path runs too) as a success or a failure
//! class, never panic, and never wait for the timeout (the server always closes).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Unstructured;
use autoheal::api::types::ResultClass;
use autoheal::api::{HttpProbe, Probe, Scheme};
use autoheal::health::probe::OneTarget;
use autoheal::health::{HttpClient, ProbeTarget};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

struct Case {
    client: HttpClient,
    expected: String,
    read_request_first: bool,
    half_close: bool,
    answers: Vec<Vec<u8>>,
}

fn case(u: &mut Unstructured<'_>) -> arbitrary::Result<Case> {
    let client = if u.arbitrary()? {
        HttpClient::Hyper
    } else {
        HttpClient::Handwritten
    };
    let expected = match u.int_in_range(0u8..=3)? {
        0 => "200-399".to_string(),
        1 => "200,204".to_string(),
        2 => "100-599".to_string(),
        _ => u.arbitrary()?,
    };
    let read_request_first = u.arbitrary()?;
    let half_close = u.arbitrary()?;
    let n = u.int_in_range(1..=2)?;
    let mut answers = Vec::new();
    for k in 0..n {
        answers.push(if k + 1 == n {
            u.bytes(u.len())?.to_vec()
        } else {
            let len = u.arbitrary_len::<u8>()?;
            u.bytes(len)?.to_vec()
        });
    }
    Ok(Case {
        client,
        expected,
        read_request_first,
        half_close,
        answers,
    })
}

async fn serve(listener: TcpListener, answers: Vec<Vec<u8>>, read_first: bool, half_close: bool) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut k = 0;
    while let Ok((mut s, _)) = listener.accept().await {
        let answer = answers[k % answers.len()].clone();
        k += 1;
        tasks.spawn(async move {
            let mut buf = [0u8; 4096];
            if read_first {
                let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
            }
            let _ = s.write_all(&answer).await;
            if half_close {
                let _ = s.shutdown().await;
                // Drain what the client still sends, until it closes (bounded).
                let _ = tokio::time::timeout(Duration::from_millis(300), async {
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(c) = case(&mut Unstructured::new(data)) else {
        return;
    };
    runtime().block_on(async {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve(
            listener,
            c.answers.clone(),
            c.read_request_first,
            c.half_close,
        ));
        let target = ProbeTarget {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            probe: Probe {
                http: Some(HttpProbe {
                    port: i32::from(port),
                    path: "/healthz".into(),
                    scheme: Scheme::Http,
                    expected_statuses: c.expected.clone(),
                }),
                tcp: None,
                interval_seconds: 10,
                timeout_seconds: 2,
                healthy_threshold: 1,
                unhealthy_threshold: 1,
            },
        };
        let mut prober = OneTarget::new(&target, c.client);
        for _ in 0..2 {
            let r = prober.probe().await;
            assert_ne!(
                r.class,
                ResultClass::Timeout,
                "hung on {:?}: {r:?}",
                c.client
            );
            assert!(!r.evidence.is_empty());
            if r.class == ResultClass::Success || r.class == ResultClass::HttpStatus {
                assert!(
                    c.answers
                        .iter()
                        .any(|a| a.windows(5).any(|w| w == b"HTTP/")),
                    "an answer without a status line judged {r:?}"
                );
            }
        }
        drop(prober);
        server.abort();
        let _ = server.await;
    });
});
