//! The simulated containers: HTTP listeners on a Pod's IP and ports.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Behavior;

/// How the listeners of one Pod behave right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Listen and answer 200.
    Ok,
    /// Listen and answer 503.
    Fail,
    /// Listen, accept, never answer.
    Hang,
    /// Do not listen (connection refused); open connections are closed.
    Closed,
}

impl Mode {
    pub(crate) fn of(behavior: Behavior) -> Mode {
        match behavior {
            Behavior::Healthy | Behavior::SlowStart(_) => Mode::Ok,
            Behavior::Fail => Mode::Fail,
            Behavior::Hang => Mode::Hang,
            Behavior::Refuse | Behavior::Crash => Mode::Closed,
        }
    }

    /// How listeners in this mode answer.
    pub(crate) fn answers(self) -> crate::Answers {
        match self {
            Mode::Ok => crate::Answers::Ok,
            Mode::Fail => crate::Answers::Fail,
            Mode::Hang => crate::Answers::Hang,
            Mode::Closed => crate::Answers::Refused,
        }
    }

    fn listens(self) -> bool {
        self != Mode::Closed
    }
}

/// The listeners of one running Pod. Dropping it stops listening and closes every
/// connection.
pub(crate) struct PodServer {
    mode: watch::Sender<Mode>,
    tasks: Vec<JoinHandle<()>>,
}

impl PodServer {
    /// Starts serving `ports` on `ip`. Listeners that can be bound are bound before this
    /// returns (so the Pod answers as soon as its status says Running); the others are
    /// retried in the background.
    pub(crate) async fn start(ip: IpAddr, ports: &[u16], mode: Mode, pod: &str) -> PodServer {
        let (tx, _) = watch::channel(mode);
        let mut tasks = Vec::new();
        for &port in ports {
            let addr = SocketAddr::new(ip, port);
            let listener = if mode.listens() {
                match TcpListener::bind(addr).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::warn!(pod, %addr, "cannot listen yet (will retry): {e}");
                        None
                    }
                }
            } else {
                None
            };
            let rx = tx.subscribe();
            let pod = pod.to_string();
            tasks.push(tokio::spawn(listen(addr, listener, rx, pod)));
        }
        PodServer { mode: tx, tasks }
    }

    /// Changes how the listeners behave (takes effect immediately); returns whether it
    /// changed.
    pub(crate) fn set_mode(&self, mode: Mode) -> bool {
        self.mode
            .send_if_modified(|m| std::mem::replace(m, mode) != mode)
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Dropping `self.mode` (the sender) ends every connection task.
    }
}

/// Accept loop for one address; (re)binds and drops the listener as the mode requires.
async fn listen(
    addr: SocketAddr,
    mut listener: Option<TcpListener>,
    mut mode: watch::Receiver<Mode>,
    pod: String,
) {
    loop {
        let current = *mode.borrow_and_update();
        if !current.listens() {
            listener = None;
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(l) = &listener else {
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::debug!(pod, %addr, "cannot listen (retrying): {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        r = mode.changed() => if r.is_err() { return },
                    }
                }
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, mode.clone(), pod.clone()));
                }
                Err(e) => {
                    tracing::debug!(pod, %addr, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            r = mode.changed() => if r.is_err() { return },
        }
    }
}

/// Serves HTTP/1.1 on one connection until the client goes away, the Pod stops
/// listening, or the Pod's server is dropped.
async fn serve_connection(stream: TcpStream, mut mode: watch::Receiver<Mode>, pod: String) {
    let service_mode = mode.clone();
    let service = service_fn(move |_req: Request<Incoming>| {
        let current = *service_mode.borrow();
        let pod = pod.clone();
        async move {
            let (status, body) = match current {
                Mode::Ok => (StatusCode::OK, format!("ok: {pod}\n")),
                Mode::Fail => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("fail: {pod} (podsim behavior=fail)\n"),
                ),
                Mode::Hang | Mode::Closed => std::future::pending().await,
            };
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            Ok::<_, Infallible>(resp)
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = mode.wait_for(|m| !m.listens()) => {}
    }
}
