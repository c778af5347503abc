//! The load generator's HTTP/1.1 connection: one per simulated client, kept alive, sending
//! `POST /api/v1/leases` and reading the reply. `bench allocate` shares the machine with what it
//! measures, so every microsecond of CPU it spends is taken from the servers and PostgreSQL.
//! The general client (reqwest: URL parsing, a connection pool, a timer and a task hand-off per
//! request) cost twice what this does (`scripts/bench-ab.sh 6e2cec8 65bbd30`: 28–29 against
//! 14–15 µs per allocation for the clients and the kernel, BENCHMARKS.md). This writes a
//! request head built once and reads a reply framed by `Content-Length`, which is how the
//! server answers. Plain `http://` only: `https://` targets go through the general client.

use std::io::Write;

use macpool_api::{API_PREFIX, Problem};
use macpool_client::ClientError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest reply head or body accepted: an allocation reply is well under a kilobyte.
const MAX_REPLY: usize = 1 << 20;

pub(crate) struct LoadConnection {
    address: String,
    /// Everything before the body's length: request line, host, token, content type.
    head: Vec<u8>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl LoadConnection {
    /// For a plain `http://host:port[/prefix]` base URL; `None` for any other (`https://`),
    /// and for a token that is not one header value (the general client then says why).
    pub(crate) fn for_base(base: &str, token: &str) -> Option<LoadConnection> {
        let rest = base.strip_prefix("http://")?;
        if token.bytes().any(|b| b.is_ascii_control()) || rest.contains(['\r', '\n']) {
            return None;
        }
        let (address, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let head = format!(
            "POST {prefix}{API_PREFIX}/leases HTTP/1.1\r\nHost: {address}\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: "
        );
        Some(LoadConnection {
            address: address.to_string(),
            head: head.into_bytes(),
            stream: None,
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(512),
        })
    }

    /// Opens the connection now (before the clock starts) rather than on the first request.
    pub(crate) async fn connect(&mut self) -> Result<(), String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.address))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// Sends one request with JSON `body` and returns the reply's body: the body of a 2xx
    /// reply, or the server's problem as an error. A broken connection is closed, so that the
    /// next request opens a new one.
    pub(crate) async fn post(&mut self, body: &[u8]) -> Result<&[u8], String> {
        let (head, start) = match self.exchange(body).await {
            Ok(read) => read,
            Err(e) => {
                self.stream = None;
                return Err(e);
            }
        };
        if head.close {
            self.stream = None;
        }
        let reply = &self.buf[start..start + head.length];
        if (200..300).contains(&head.status) {
            Ok(reply)
        } else {
            Err(match serde_json::from_slice::<Problem>(reply) {
                Ok(p) => ClientError::Problem(p).to_string(),
                Err(_) => format!("HTTP {}: {}", head.status, String::from_utf8_lossy(reply)),
            })
        }
    }

    /// Writes the request and reads one whole reply into `buf`; returns its head and where its
    /// body starts.
    async fn exchange(&mut self, body: &[u8]) -> Result<(ReplyHead, usize), String> {
        self.connect().await?;
        let stream = self.stream.as_mut().expect("connected above");
        self.request.clear();
        self.request.extend_from_slice(&self.head);
        write!(self.request, "{}\r\n\r\n", body.len()).expect("a Vec takes any write");
        self.request.extend_from_slice(body);
        stream
            .write_all(&self.request)
            .await
            .map_err(|e| format!("cannot send to {}: {e}", self.address))?;
        self.buf.clear();
        let start = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            read_more(stream, &mut self.buf, &self.address).await?;
        };
        let head = ReplyHead::parse(&self.buf[..start])?;
        if start + head.length > MAX_REPLY {
            return Err(format!("reply of {} bytes is too large", head.length));
        }
        while self.buf.len() < start + head.length {
            read_more(stream, &mut self.buf, &self.address).await?;
        }
        Ok((head, start))
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, address: &str) -> Result<(), String> {
    if buf.len() > MAX_REPLY {
        return Err("reply head is too large".into());
    }
    buf.reserve(4096);
    match stream.read_buf(buf).await {
        Ok(0) => Err(format!("{address} closed the connection mid-reply")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot read from {address}: {e}")),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the load generator needs from a reply's head.
#[derive(Debug, PartialEq)]
struct ReplyHead {
    status: u16,
    length: usize,
    close: bool,
}

impl ReplyHead {
    /// Parses `HTTP/1.1 NNN …` and the headers up to the blank line; a reply without
    /// `Content-Length` (chunked, or read to the end) is refused: the server never sends one.
    fn parse(head: &[u8]) -> Result<ReplyHead, String> {
        let text = std::str::from_utf8(head).map_err(|_| "reply head is not UTF-8".to_string())?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP/1.1 status line: {status_line:?}"))?;
        let mut length = None;
        let mut close = status_line.starts_with("HTTP/1.0");
        for line in lines.take_while(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("malformed reply header: {line:?}"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("bad Content-Length: {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let length = length.ok_or("reply without Content-Length (chunked replies are not read)")?;
        Ok(ReplyHead {
            status,
            length,
            close,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_heads_give_status_length_and_whether_the_server_closes() {
        for (head, status, length, close) in [
            (
                &b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 42\r\n\r\n"[..],
                201,
                42,
                false,
            ),
            (
                b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 7\r\n\r\n",
                503,
                7,
                true,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, 0, true),
        ] {
            let parsed = ReplyHead::parse(head);
            let want = ReplyHead {
                status,
                length,
                close,
            };
            assert_eq!(parsed, Ok(want), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn replies_it_cannot_frame_are_refused_not_misread() {
        for (head, why) in [
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "bad Content-Length",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed"),
        ] {
            let err = ReplyHead::parse(head).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn only_plain_http_bases_get_a_load_connection() {
        let c = LoadConnection::for_base("http://127.0.0.1:7780/mp/", "t0k").unwrap();
        assert_eq!(c.address, "127.0.0.1:7780");
        let head = String::from_utf8(c.head).unwrap();
        assert!(
            head.starts_with(&format!(
                "POST /mp{API_PREFIX}/leases HTTP/1.1\r\nHost: 127.0.0.1:7780\r\n"
            )),
            "{head}"
        );
        assert!(head.contains("Authorization: Bearer t0k\r\n"));
        assert!(LoadConnection::for_base("https://a:1", "t").is_none());
        assert!(LoadConnection::for_base("http://a:1", "t\r\nX-Evil: 1").is_none());
    }
}
