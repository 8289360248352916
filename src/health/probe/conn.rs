//! Connections of probes: opening them, and the [`Conn`] stream (plain TCP or TLS) that both
//! HTTP clients speak over.
//!
//! Connect errors are classed here for every probe kind: refused → `Refused`, reset or aborted
//! → `Reset`, timed out → `Timeout`, anything else → `Error`. A TLS handshake that the server
//! cuts short is `Reset`; any other handshake failure is `Error`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::plan::TargetPlan;
use super::{ProbeResult, ResultClass};

/// A probe connection: plain TCP or TLS.
pub(super) enum Conn {
    /// `http`.
    Plain(TcpStream),
    /// `https` (boxed: a TLS stream is large, and most probes are plain).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens a connection for an HTTP(S) probe (TCP, then TLS when the scheme is `https`).
pub(super) async fn connect(
    plan: &TargetPlan,
    tls: &tokio_rustls::TlsConnector,
) -> Result<Conn, ProbeResult> {
    let tcp = TcpStream::connect(plan.addr)
        .await
        .map_err(|e| connect_failure(plan, &e))?;
    let _ = tcp.set_nodelay(true);
    if !plan.tls {
        return Ok(Conn::Plain(tcp));
    }
    let name = rustls::pki_types::ServerName::IpAddress(plan.addr.ip().into());
    match tls.connect(name, tcp).await {
        Ok(s) => Ok(Conn::Tls(Box::new(s))),
        Err(e) => Err(ProbeResult {
            class: match e.kind() {
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => ResultClass::Reset,
                _ => ResultClass::Error,
            },
            evidence: format!("TLS handshake with {} failed: {e}", plan.addr),
        }),
    }
}

/// A TCP probe: a connect that succeeds passes; the connection is closed at once.
pub(super) async fn probe_tcp(plan: &TargetPlan) -> ProbeResult {
    match TcpStream::connect(plan.addr).await {
        Ok(_) => ProbeResult {
            class: ResultClass::Success,
            evidence: format!("TCP connect to {} succeeded", plan.description),
        },
        Err(e) => connect_failure(plan, &e),
    }
}

/// The result of a failed connect.
pub(super) fn connect_failure(plan: &TargetPlan, e: &io::Error) -> ProbeResult {
    let addr = plan.addr;
    let (class, evidence) = match e.kind() {
        io::ErrorKind::ConnectionRefused => (
            ResultClass::Refused,
            format!("connection refused by {addr}"),
        ),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            (ResultClass::Reset, format!("connection reset by {addr}"))
        }
        io::ErrorKind::TimedOut => (
            ResultClass::Timeout,
            format!("timeout connecting to {addr}"),
        ),
        _ => (ResultClass::Error, format!("cannot connect to {addr}: {e}")),
    };
    ProbeResult { class, evidence }
}
