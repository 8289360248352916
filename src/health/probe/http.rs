//! HTTP(S) probing on hyper's HTTP/1.1 client connection API (selected with
//! [`HttpClient::Hyper`](super::HttpClient); the hand-written client stays the default, see
//! `handwritten`), and what both HTTP clients share: the accepted statuses ([`StatusSet`]),
//! the request path, and the judgement of a status.
//!
//! Each target keeps at most one connection: a [`hyper::client::conn::http1::SendRequest`]
//! and its [`Connection`], made with [`hyper::client::conn::http1::Builder::handshake`] over
//! the engine's own [`Conn`] (plain TCP or the no-verify TLS stream of [`super::tls`]) wrapped
//! in [`TokioIo`]. The connection is not spawned: the probe task drives it while it waits for
//! the answer and reads the body, so a probe costs one task and no channel hop, and an idle
//! kept-alive connection costs nothing between probes.
//!
//! - The connection is kept for the next probe when the answer allows it (HTTP/1.1, a
//!   `Content-Length` body of at most 64 KiB, read in full, no `Connection: close`, no
//!   `Transfer-Encoding`). Before reusing it the probe waits until hyper reports it ready; a
//!   connection the server closed meanwhile is replaced by a new one, and a request that fails
//!   on a reused connection for any reason but a malformed answer is retried once on a new
//!   connection, within the same timeout.
//! - Interim (1xx) answers are skipped by hyper, including when the final answer arrived in
//!   the same packet.
//! - Errors are classed as the hand-written client did: connection refused → `Refused` (at
//!   connect), reset or closed before an answer → `Reset`, a malformed answer or anything else
//!   → `Error`; the deadline (`Timeout`) is applied by the scheduler.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::Poll;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, HeaderValue, TRANSFER_ENCODING};
use hyper::http::{Request, Version};
use hyper_util::rt::TokioIo;

use super::conn::{Conn, connect};
#[cfg(test)]
use super::plan::{StatusSet, request_uri, sanitize_path};
use super::plan::{TargetPlan, USER_AGENT};
use super::{ProbeResult, ResultClass};

/// Largest answer head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body read to keep the connection.
const MAX_REUSE_BODY: u64 = 64 * 1024;

/// The hyper connection builder of an engine (shared by every target).
pub(super) fn builder() -> Builder {
    let mut b = Builder::new();
    b.max_header_size(MAX_HEAD);
    b
}

/// The request body type: probes send `GET` without a body.
type Body = Empty<Bytes>;

/// A kept-alive hyper connection.
struct HyperConn {
    send: SendRequest<Body>,
    conn: Connection<TokioIo<Conn>, Body>,
    /// `None` while the connection runs; `Some(None)` once it closed cleanly, `Some(Some(e))`
    /// once it failed with `e` (a finished [`Connection`] is not polled again).
    ended: Option<Option<hyper::Error>>,
}

/// The connection ended before the future driven with it completed.
struct Ended;

/// Polls `fut` to completion while driving `conn` (the connection's reads and writes happen
/// when it is polled). If the connection ends first and `fut` cannot complete, `Ended`.
async fn drive<F: Future>(
    conn: &mut Connection<TokioIo<Conn>, Body>,
    ended: &mut Option<Option<hyper::Error>>,
    fut: F,
) -> Result<F::Output, Ended> {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if ended.is_none() {
            match Pin::new(&mut *conn).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => {
                    *ended = Some(r.err());
                    // The connection delivered what it had (an answer or its error) to the
                    // request and body channels before finishing.
                    if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                        return Poll::Ready(Ok(out));
                    }
                }
            }
        }
        Poll::Ready(Err(Ended))
    })
    .await
}

/// Why an exchange failed.
enum Failure {
    /// An error from hyper (sending, or waiting for the answer head).
    Hyper(hyper::Error),
    /// The connection ended before the answer, with this error if any.
    Ended(Option<hyper::Error>),
}

impl Failure {
    /// Whether a failure on a reused connection is worth a retry on a new one (the server
    /// closed the kept-alive connection); a malformed answer is not.
    fn retryable(&self) -> bool {
        match self {
            Failure::Hyper(e) | Failure::Ended(Some(e)) => !e.is_parse(),
            Failure::Ended(None) => true,
        }
    }

    fn result(self, plan: &TargetPlan) -> ProbeResult {
        match self {
            Failure::Hyper(e) | Failure::Ended(Some(e)) => hyper_failure(plan, &e),
            Failure::Ended(None) => closed_early(plan),
        }
    }
}

fn closed_early(plan: &TargetPlan) -> ProbeResult {
    ProbeResult {
        class: ResultClass::Reset,
        evidence: format!("connection closed by {} before an answer", plan.addr),
    }
}

/// The I/O error under a hyper error, if any.
fn io_source(e: &hyper::Error) -> Option<&io::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Classes a hyper error as the hand-written client classed the same event.
fn hyper_failure(plan: &TargetPlan, e: &hyper::Error) -> ProbeResult {
    let d = &plan.description;
    let (class, evidence) = if let Some(io) = io_source(e) {
        if is_reset(io) {
            (
                ResultClass::Reset,
                format!("connection reset by {} ({io})", plan.addr),
            )
        } else {
            (ResultClass::Error, format!("probe of {d} failed: {io}"))
        }
    } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return closed_early(plan);
    } else if e.is_parse() {
        (
            ResultClass::Error,
            format!("malformed HTTP answer from {d}: {e}"),
        )
    } else {
        (ResultClass::Error, format!("probe of {d} failed: {e}"))
    };
    ProbeResult { class, evidence }
}

/// The probe request.
fn request(plan: &TargetPlan) -> Request<Body> {
    let mut req = Request::new(Body::new());
    *req.uri_mut() = plan.uri.clone();
    let h = req.headers_mut();
    h.insert(HOST, plan.host.clone());
    h.insert(
        hyper::header::USER_AGENT,
        HeaderValue::from_static(USER_AGENT),
    );
    h.insert(ACCEPT, HeaderValue::from_static("*/*"));
    h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    req
}

/// Sends the request and reads the answer head (and the body when the connection can be
/// reused). Returns the status and whether the connection can be reused.
async fn exchange(plan: &TargetPlan, c: &mut HyperConn) -> Result<(u16, bool), Failure> {
    let answer = c.send.send_request(request(plan));
    let resp = match drive(&mut c.conn, &mut c.ended, answer).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(Failure::Hyper(e)),
        Err(Ended) => return Err(Failure::Ended(c.ended.take().flatten())),
    };
    let status = resp.status().as_u16();
    let headers = resp.headers();
    let content_length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let reusable = resp.version() == Version::HTTP_11
        && content_length.is_some_and(|n| n <= MAX_REUSE_BODY)
        && !headers.contains_key(TRANSFER_ENCODING)
        && !headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if !reusable {
        return Ok((status, false));
    }
    let mut body = resp.into_body();
    loop {
        match drive(&mut c.conn, &mut c.ended, body.frame()).await {
            Ok(None) => break,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Err(Ended) => {
                // The answer stands; only a reset while reading the body fails the probe.
                if let Some(Some(e)) = &c.ended
                    && io_source(e).is_some_and(is_reset)
                {
                    return Err(Failure::Hyper(c.ended.take().flatten().expect("checked")));
                }
                return Ok((status, false));
            }
        }
    }
    Ok((status, c.ended.is_none()))
}

/// The kept-alive hyper connection of one target (boxed: a hyper connection is large, and a
/// target without one should not pay for it).
#[derive(Default)]
pub(super) struct Session {
    conn: Option<Box<HyperConn>>,
}

impl Session {
    /// One HTTP probe, without the overall timeout (applied by the caller; if this future is
    /// dropped, the connection is dropped with it).
    pub(super) async fn probe(
        &mut self,
        plan: &TargetPlan,
        tls: &tokio_rustls::TlsConnector,
        builder: &Builder,
    ) -> ProbeResult {
        // Take the connection out: if this future is cancelled (timeout) it is dropped.
        if let Some(mut reused) = self.conn.take() {
            let HyperConn {
                send, conn, ended, ..
            } = &mut *reused;
            // Wait until the connection is idle again; if the server closed it, reconnect.
            let ready = drive(conn, ended, std::future::poll_fn(|cx| send.poll_ready(cx))).await;
            if matches!(ready, Ok(Ok(()))) {
                match exchange(plan, &mut reused).await {
                    Ok((status, reusable)) => {
                        if reusable {
                            self.conn = Some(reused);
                        }
                        return http_result(plan, status);
                    }
                    Err(e) if e.retryable() => {
                        // The server closed the kept-alive connection: retry on a new one.
                    }
                    Err(e) => return e.result(plan),
                }
            }
        }
        let io = match connect(plan, tls).await {
            Ok(c) => TokioIo::new(c),
            Err(r) => return r,
        };
        let (send, conn) = match builder.handshake(io).await {
            Ok(parts) => parts,
            Err(e) => return hyper_failure(plan, &e),
        };
        let mut fresh = Box::new(HyperConn {
            send,
            conn,
            ended: None,
        });
        match exchange(plan, &mut fresh).await {
            Ok((status, reusable)) => {
                if reusable {
                    self.conn = Some(fresh);
                }
                http_result(plan, status)
            }
            Err(e) => e.result(plan),
        }
    }
}

/// The result of an answer with `status`.
pub(super) fn http_result(plan: &TargetPlan, status: u16) -> ProbeResult {
    ProbeResult {
        class: if plan.expected.contains(status) {
            ResultClass::Success
        } else {
            ResultClass::HttpStatus
        },
        evidence: format!("HTTP {status} from {}", plan.description),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets() {
        let s = StatusSet::parse("200,204,300-308");
        assert!(s.contains(200) && s.contains(204) && s.contains(301));
        assert!(!s.contains(201) && !s.contains(503));
        assert_eq!(StatusSet::parse("garbage"), StatusSet::default());
        assert_eq!(StatusSet::parse("399-200"), StatusSet::default());
        assert!(StatusSet::parse(" 200 - 299 ").contains(250));
    }

    #[test]
    fn paths_cannot_inject_headers() {
        assert_eq!(
            sanitize_path("/a b\r\nX: y"),
            "/a%20b%0D%0AX:%20y".to_string()
        );
        assert_eq!(sanitize_path("healthz"), "/healthz");
    }

    #[test]
    fn every_sanitized_path_is_a_request_target() {
        assert_eq!(request_uri("/healthz?full=1"), "/healthz?full=1");
        assert_eq!(request_uri(&sanitize_path("/a b")), "/a%20b");
        assert_eq!(request_uri("/<x>`y`?q=\"z\""), "/%3Cx%3E%60y%60?q=%22z%22");
        let all: String = (0x21u8..0x7f).map(char::from).collect();
        let uri = request_uri(&sanitize_path(&all));
        assert!(uri.path().starts_with("/!"), "{uri}");
    }
}
