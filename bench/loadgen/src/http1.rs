//! A minimal HTTP/1.1 keep-alive client for the hot loop: one connection,
//! one request in flight, `content-length` bodies only (what the companion
//! sends). Kept small so the driver spends as little of the shared CPU as
//! possible.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    req: Vec<u8>,
}

/// A response: status and body.
pub struct Response<'a> {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: &'a [u8],
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    /// Connect to `127.0.0.1:port` (TCP_NODELAY).
    pub async fn connect(port: u16) -> io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            req: Vec::with_capacity(2048),
        })
    }

    /// POST a JSON `body` to `path` with the given extra header lines
    /// (each `name: value`), and read the response.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response<'_>> {
        self.req.clear();
        self.req.extend_from_slice(b"POST ");
        self.req.extend_from_slice(path.as_bytes());
        self.req.extend_from_slice(
            b" HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n",
        );
        for (k, v) in headers {
            self.req.extend_from_slice(k.as_bytes());
            self.req.extend_from_slice(b": ");
            self.req.extend_from_slice(v.as_bytes());
            self.req.extend_from_slice(b"\r\n");
        }
        self.req.extend_from_slice(b"content-length: ");
        self.req
            .extend_from_slice(body.len().to_string().as_bytes());
        self.req.extend_from_slice(b"\r\n\r\n");
        self.req.extend_from_slice(body);
        self.stream.write_all(&self.req).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> io::Result<Response<'_>> {
        self.buf.clear();
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(bad("response head too long"));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("head not utf-8"))?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status"))?;
        let mut len = None;
        for line in head.split("\r\n").skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
            }
        }
        let len = len.ok_or_else(|| bad("no content-length"))?;
        let total = head_end + len;
        while self.buf.len() < total {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in body",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(Response {
            status,
            body: &self.buf[head_end..total],
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
