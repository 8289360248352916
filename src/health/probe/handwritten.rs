//! The hand-written HTTP/1.1 client (on `httparse`), the engine's default
//! ([`HttpClient::Handwritten`](super::HttpClient)); the hyper client (`http`) is the
//! alternative, and the benchmark compares both in the same run. This one stays the default
//! because it needs about half the CPU per probe and a third of the memory per kept-alive
//! connection (no per-request header maps or body channels, a read buffer sized to the
//! answer instead of hyper's fixed 8 KiB read and write buffers).
//!
//! It writes a pre-built `GET` request and reads the answer head with `httparse`. The
//! connection is kept for the next probe when the answer allows it (HTTP/1.1, a
//! `Content-Length` body of at most 64 KiB read in full, no `Connection: close`, no
//! `Transfer-Encoding`). Interim (1xx) answers are skipped; the bytes already buffered after
//! one are parsed before the socket is read again, so a final answer that arrived in the same
//! packet as the interim one is not missed.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{Conn, connect};
use super::http::http_result;
use super::plan::TargetPlan;
use super::{ProbeResult, ResultClass};

/// Largest answer head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body read to keep the connection.
const MAX_REUSE_BODY: usize = 64 * 1024;
/// Buffers larger than this are released after a probe.
const MAX_KEPT_BUF: usize = 16 * 1024;

/// The kept-alive connection of one target, and its read buffer.
#[derive(Default)]
pub(super) struct Session {
    conn: Option<Conn>,
    buf: Vec<u8>,
}

impl Session {
    /// One HTTP probe, without the overall timeout (applied by the caller; if this future is
    /// dropped, the connection is dropped with it).
    pub(super) async fn probe(
        &mut self,
        plan: &TargetPlan,
        tls: &tokio_rustls::TlsConnector,
    ) -> ProbeResult {
        let result = self.probe_inner(plan, tls).await;
        if self.buf.capacity() > MAX_KEPT_BUF {
            self.buf = Vec::new();
        }
        result
    }

    async fn probe_inner(
        &mut self,
        plan: &TargetPlan,
        tls: &tokio_rustls::TlsConnector,
    ) -> ProbeResult {
        // Take the connection out: if this future is cancelled (timeout) it is dropped.
        if let Some(mut reused) = self.conn.take() {
            match exchange(plan, &mut reused, &mut self.buf).await {
                Ok((status, reusable)) => {
                    if reusable {
                        self.conn = Some(reused);
                    }
                    return http_result(plan, status);
                }
                Err(ExchangeError::Io(_)) | Err(ExchangeError::ClosedEarly) => {
                    // The server closed a kept-alive connection: retry on a new one.
                }
                Err(e) => return exchange_failure(plan, e),
            }
        }
        let mut fresh = match connect(plan, tls).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        match exchange(plan, &mut fresh, &mut self.buf).await {
            Ok((status, reusable)) => {
                if reusable {
                    self.conn = Some(fresh);
                }
                http_result(plan, status)
            }
            Err(e) => exchange_failure(plan, e),
        }
    }
}

enum ExchangeError {
    /// EOF before a complete answer head.
    ClosedEarly,
    Io(io::Error),
    Malformed(String),
}

fn exchange_failure(plan: &TargetPlan, e: ExchangeError) -> ProbeResult {
    let d = &plan.description;
    let (class, evidence) = match e {
        ExchangeError::ClosedEarly => (
            ResultClass::Reset,
            format!("connection closed by {} before an answer", plan.addr),
        ),
        ExchangeError::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => (
                ResultClass::Reset,
                format!("connection reset by {} ({e})", plan.addr),
            ),
            _ => (ResultClass::Error, format!("probe of {d} failed: {e}")),
        },
        ExchangeError::Malformed(why) => (
            ResultClass::Error,
            format!("malformed HTTP answer from {d}: {why}"),
        ),
    };
    ProbeResult { class, evidence }
}

/// Sends the request and reads the answer head (and the body when the connection can be
/// reused). Returns the status and whether the connection can be reused.
async fn exchange(
    plan: &TargetPlan,
    conn: &mut Conn,
    buf: &mut Vec<u8>,
) -> Result<(u16, bool), ExchangeError> {
    conn.write_all(&plan.request)
        .await
        .map_err(ExchangeError::Io)?;
    buf.clear();
    let mut chunk = [0u8; 2048];
    loop {
        // Parse what is buffered first (after an interim answer the final one may already be
        // there); read only when the head is incomplete.
        let parsed = if buf.is_empty() {
            None
        } else {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(head_len)) => Some(judge_head(&resp, head_len)),
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
                Ok(httparse::Status::Partial) => {
                    return Err(ExchangeError::Malformed("answer head too large".into()));
                }
                Err(e) => return Err(ExchangeError::Malformed(e.to_string())),
            }
        };
        match parsed {
            None => {
                let n = conn.read(&mut chunk).await.map_err(ExchangeError::Io)?;
                if n == 0 {
                    return Err(ExchangeError::ClosedEarly);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Some(Head::Interim(head_len)) => {
                // An interim answer: drop it and parse on.
                buf.drain(..head_len);
            }
            Some(Head::Final {
                status,
                head_len,
                body_len,
                reusable,
            }) => {
                let Some(body_len) = body_len else {
                    return Ok((status, false));
                };
                if status == 204 || status == 304 {
                    return Ok((status, reusable));
                }
                let mut have = buf.len() - head_len;
                while have < body_len {
                    let n = conn.read(&mut chunk).await.map_err(ExchangeError::Io)?;
                    if n == 0 {
                        return Ok((status, false));
                    }
                    have += n;
                }
                return Ok((status, reusable && have == body_len));
            }
        }
    }
}

/// A complete answer head.
enum Head {
    /// A 1xx answer of this many bytes.
    Interim(usize),
    /// The final answer.
    Final {
        status: u16,
        head_len: usize,
        /// The body length when it is known and small enough to read to keep the connection.
        body_len: Option<usize>,
        /// HTTP/1.1 without `Connection: close` or `Transfer-Encoding`.
        reusable: bool,
    },
}

fn judge_head(resp: &httparse::Response<'_, '_>, head_len: usize) -> Head {
    let status = resp.code.unwrap_or(0);
    if (100..200).contains(&status) {
        return Head::Interim(head_len);
    }
    let mut content_length: Option<usize> = None;
    let mut reusable = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if h.name.eq_ignore_ascii_case("connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                reusable = false;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            reusable = false;
        }
    }
    Head::Final {
        status,
        head_len,
        body_len: content_length.filter(|&n| n <= MAX_REUSE_BODY),
        reusable,
    }
}
