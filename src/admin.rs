//! The admin HTTP server of `autoheal run`: `/metrics`, `/healthz`, `/readyz`.
//!
//! ```ignore
//! let state = AdminState::new(metrics.clone());
//! // Either in one call (binds, logs the address, serves until the future is dropped):
//! tokio::spawn(admin::serve(addr, state.clone()));
//! // or in two steps, to learn the bound address first (tests pass port 0):
//! let server = AdminServer::bind(addr, state.clone()).await?;
//! let bound: SocketAddr = server.local_addr();
//! tokio::spawn(server.run());
//! // once every reflector store has synced:
//! state.set_ready(true);
//! ```
//!
//! - `GET /metrics`: the registry of [`Metrics`] in the Prometheus text format.
//! - `GET /healthz`: `200 ok` while the process serves requests (liveness).
//! - `GET /readyz`: `200 ok` once [`AdminState::set_ready`]`(true)` was called (the caches have
//!   synced), `503 not ready` before.
//!
//! On bind the server logs `admin endpoints listening` with the field `addr` (the bound
//! address) at info level.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::telemetry::Metrics;

/// What the admin endpoints report. Cheap to clone; clones share readiness.
#[derive(Clone, Debug)]
pub struct AdminState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

impl AdminState {
    /// Not ready until [`AdminState::set_ready`] says so.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sets readiness (`true` once the caches have synced).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The metrics served on `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// A bound admin server that has not started serving yet.
pub struct AdminServer {
    listener: TcpListener,
    state: AdminState,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port) and logs the bound address.
    pub async fn bind(addr: SocketAddr, state: AdminState) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on admin address {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(addr = %bound, "admin endpoints listening");
        Ok(Self { listener, state })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves requests until the future is dropped.
    pub async fn run(self) -> anyhow::Result<()> {
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // e.g. too many open files: back off briefly, keep serving.
                    tracing::warn!("admin server: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = self.state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

/// Binds `addr` and serves the admin endpoints until the future is dropped.
pub async fn serve(addr: SocketAddr, state: AdminState) -> anyhow::Result<()> {
    AdminServer::bind(addr, state).await?.run().await
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Whether the request's `Accept` header lists `application/openmetrics-text`.
fn accepts_openmetrics(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET is supported\n".into(),
        );
    }
    match req.uri().path() {
        // OpenMetrics to a client that asks for it (Prometheus does), else the classic text
        // format (curl, promtool): each body under its own content type.
        "/metrics" if accepts_openmetrics(req) => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::telemetry::prometheus_text(&state.metrics.encode()),
        ),
        "/healthz" | "/livez" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" if state.is_ready() => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "not ready: caches have not synced yet\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let state = AdminState::new(Metrics::new());
        let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), state.clone())
            .await
            .unwrap();
        let addr = server.local_addr();
        let task = tokio::spawn(server.run());
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        state.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"));
        assert!(metrics.contains("autoheal_probe_results_total"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
