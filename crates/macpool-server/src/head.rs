//! Problems for the request heads hyper refuses itself. A URI of 64 KiB or more, more than 100
//! headers or a head past hyper's read buffer never reach the router: hyper answers 414 or 431
//! with an empty body and closes the connection. [`ProblemHeads`] wraps a connection and
//! replaces exactly those bodiless answers with problem+json ones; the head limits the API itself
//! sets (`MAX_URI_BYTES`, `MAX_HEADER_BYTES`, lower than hyper's) are problems already.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// hyper's automatic answers, as it writes them (status line first, no body).
const AUTOMATIC: [(&[u8], u16, &str, &str); 2] = [
    (
        b"HTTP/1.1 414 URI Too Long\r\n",
        414,
        "uri-too-long",
        "the request URI is longer than the server reads",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        431,
        "headers-too-large",
        "the request head (URI and headers) is larger than the server reads",
    ),
];

/// A connection whose bodiless 414 and 431 answers from hyper become problems.
pub struct ProblemHeads<T> {
    inner: T,
    /// A replacement being written, and how much of it is out.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> ProblemHeads<T> {
    pub fn new(inner: T) -> ProblemHeads<T> {
        ProblemHeads {
            inner,
            pending: None,
        }
    }
}

/// The problem answer that replaces `written`, if it is one of hyper's automatic ones.
pub fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    let (_, status, slug, detail) = AUTOMATIC
        .iter()
        .find(|(line, ..)| written.starts_with(line))?;
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&written[..head_end]).to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0") || written.len() != head_end + 4 {
        return None;
    }
    let body = serde_json::to_vec(&macpool_api::Problem::new(slug, *status, *detail))
        .expect("a problem serializes");
    let line = std::str::from_utf8(&written[..written.iter().position(|b| *b == b'\r')?]).ok()?;
    let mut out = format!(
        "{line}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend(body);
    Some(out)
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemHeads<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemHeads<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.is_none() {
            match replacement(buf) {
                Some(bytes) => self.pending = Some((bytes, 0)),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        // Write the whole replacement before telling hyper its (shorter) answer is out.
        let this = &mut *self;
        while let Some((bytes, done)) = &mut this.pending {
            if *done == bytes.len() {
                this.pending = None;
                return Poll::Ready(Ok(buf.len()));
            }
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        unreachable!("the loop returns once the replacement is out")
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections are [`ProblemHeads`] (for `axum::serve`).
pub struct Listener(pub tokio::net::TcpListener);

impl axum::serve::Listener for Listener {
    type Io = ProblemHeads<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (ProblemHeads::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The peer address of a [`Listener`] connection, as `ConnectInfo` (axum implements
/// `Connected` for `SocketAddr` only on its own `TcpListener`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// An acceptor (TLS) whose connections are [`ProblemHeads`] once decrypted.
#[derive(Clone)]
pub struct Acceptor<A>(pub A);

impl<A, I, S> axum_server::accept::Accept<I, S> for Acceptor<A>
where
    A: axum_server::accept::Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = ProblemHeads<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.0.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((ProblemHeads::new(stream), service))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_answers_are_replaced() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 23:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(hyper).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(out.contains("content-type: application/problem+json\r\n"));
        assert!(
            out.contains(r#""title":"Request headers too large""#),
            "{out}"
        );
        let ours = b"HTTP/1.1 414 URI Too Long\r\ncontent-type: application/problem+json\r\ncontent-length: 120\r\n\r\n";
        assert!(replacement(ours).is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
