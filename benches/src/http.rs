//! A minimal HTTP/1.1 client for `POST /publish` over one keep-alive
//! connection: enough for two known servers on loopback, and far fewer
//! dependencies than a general client.

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`, also sent as the `Host` header.
    pub authority: String,
    /// The request path, e.g. `/publish`.
    pub path: String,
}

impl Target {
    /// Parses an `http://host:port/path` URL.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("{url}: no host");
        }
        Ok(Target {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// `Content-Length`.
    Exact(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body runs until the server closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// How the body ends.
    pub body: BodyLength,
    /// Whether the server closes the connection after this response.
    pub close: bool,
    /// Bytes taken by the head, blank line included.
    pub len: usize,
}

/// Parses a response head; `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line: {status_line:?}"))?;
    let mut body = BodyLength::UntilClose;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body = BodyLength::Exact(value.parse().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            body = BodyLength::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    if body == BodyLength::UntilClose {
        close = true;
    }
    Ok(Some(Head {
        status,
        body,
        close,
        len: end + 4,
    }))
}

/// Decodes a chunked body; `Ok(None)` while it is incomplete, else the body
/// and the bytes consumed (trailers included).
pub fn parse_chunked(buf: &[u8]) -> anyhow::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[at..at + eol]).context("bad chunk size")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).with_context(|| format!("bad chunk {hex:?}"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

/// One keep-alive connection that POSTs JSON bodies.
#[derive(Debug)]
pub struct Poster {
    target: Target,
    authorization: Option<String>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Poster {
    /// A client for `url`; it connects on first use.
    pub fn new(url: &str, bearer_token: Option<&str>) -> anyhow::Result<Poster> {
        Ok(Poster {
            target: Target::parse(url)?,
            authorization: bearer_token.map(|t| format!("Bearer {t}")),
            stream: None,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Opens the connection now rather than on first use (a server that
    /// runs out of descriptors later can still be published to).
    pub async fn connect(&mut self) -> anyhow::Result<()> {
        if self.stream.is_none() {
            self.stream = Some(self.open().await?);
        }
        Ok(())
    }

    async fn open(&self) -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(&self.target.authority)
            .await
            .with_context(|| format!("connecting to {}", self.target.authority))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// POSTs `body` as JSON; returns the status and the response body.
    pub async fn post(&mut self, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.target.path,
            self.target.authority,
            body.len()
        );
        if let Some(auth) = &self.authorization {
            head.push_str("Authorization: ");
            head.push_str(auth);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        if let Some(stream) = self.stream.take() {
            match self.exchange(stream, head.as_bytes(), body).await {
                Ok(reply) => return Ok(reply),
                // The server closed the idle keep-alive connection: retry once.
                Err(_) if self.buf.is_empty() => {}
                Err(e) => return Err(e),
            }
        }
        let stream = self.open().await?;
        self.exchange(stream, head.as_bytes(), body).await
    }

    async fn exchange(
        &mut self,
        mut stream: TcpStream,
        head: &[u8],
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.buf.clear();
        stream.write_all(head).await?;
        stream.write_all(body).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                bail!("the server closed the connection before responding");
            }
        };
        let reply = loop {
            let rest = &self.buf[head.len..];
            match head.body {
                BodyLength::Exact(n) if rest.len() >= n => break rest[..n].to_vec(),
                BodyLength::Chunked => {
                    if let Some((body, _)) = parse_chunked(rest)? {
                        break body;
                    }
                }
                _ => {}
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                if head.body == BodyLength::UntilClose {
                    break self.buf[head.len..].to_vec();
                }
                bail!("the server closed the connection mid-response");
            }
        };
        if !head.close {
            self.stream = Some(stream);
        }
        Ok((head.status, reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:8080/publish").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/publish");
        assert!(Target::parse("https://x/").is_err());
    }

    #[test]
    fn heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        let head = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").unwrap();
        assert_eq!(
            head,
            Some(Head {
                status: 200,
                body: BodyLength::Exact(5),
                close: false,
                len: 38
            })
        );
        let head = parse_head(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (head.status, head.body, head.close),
            (401, BodyLength::Chunked, true)
        );
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(parse_chunked(b"5\r\nhel").unwrap(), None);
        let (body, used) = parse_chunked(b"3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\nNEXT")
            .unwrap()
            .unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(used, 24);
    }
}
