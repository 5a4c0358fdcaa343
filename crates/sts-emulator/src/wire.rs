//! Header-name case on the wire.
//!
//! actix writes every response header name in lower case. HTTP says case does not matter, but
//! cos-python-sdk-v5 returns `dict(response.headers)`, so application code written against real
//! COS reads `response['ETag']` and `response['Content-Type']`; with lower-case names those
//! lookups fail. [`CaseIo`] wraps each connection and rewrites the names in response heads to
//! the case Tencent's services send (`ETag`, `Content-Type`, `Last-Modified`, … while
//! `x-cos-*` stay lower case). Bodies pass through untouched: the writer follows the HTTP/1.1
//! framing (Content-Length, chunked, 1xx/204/304, and HEAD answers, which the App marks with
//! [`NO_BODY_MARKER`], a header this layer removes).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Set by the App on answers that carry no body although they may declare a length (HEAD).
pub(crate) const NO_BODY_MARKER: &str = "x-stsgate-no-body";

/// Longest response head the rewriter buffers before giving up and passing bytes through.
const MAX_HEAD: usize = 64 * 1024;
/// Transformed bytes held before `poll_write` pushes back.
const HIGH_WATER: usize = 64 * 1024;

/// The names whose case Tencent's services are seen to use; others stay as actix writes them.
const CANONICAL: &[&str] = &[
    "Accept-Ranges",
    "Access-Control-Allow-Headers",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Origin",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
    "Cache-Control",
    "Connection",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Range",
    "Content-Type",
    "Date",
    "ETag",
    "Expires",
    "Last-Modified",
    "Server",
    "Transfer-Encoding",
    "Vary",
];

#[derive(Debug)]
enum Chunk {
    /// Reading a chunk-size line.
    Size(Vec<u8>),
    /// Bytes of chunk data left, then its CRLF.
    Data(u64),
    /// The CRLF after chunk data: bytes left.
    DataEnd(u8),
    /// Trailer lines after the last chunk; the current line so far.
    Trailer(Vec<u8>),
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Body(u64),
    Chunked(Chunk),
    /// Unknown framing: everything passes through from here on.
    Raw,
}

/// Rewrites response heads in an HTTP/1.1 byte stream (the write half of a connection).
#[derive(Debug)]
pub(crate) struct HeadRewriter {
    state: State,
}

impl Default for HeadRewriter {
    fn default() -> Self {
        Self {
            state: State::Head(Vec::new()),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What follows a response head.
fn framing(head: &[u8]) -> (Vec<u8>, State) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out = Vec::with_capacity(head.len());
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length = None;
    let mut chunked = false;
    let mut no_body = matches!(status, 100..=199 | 204 | 304);
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
            continue;
        };
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            NO_BODY_MARKER => {
                no_body = true;
                continue;
            }
            "content-length" => length = value.trim().parse::<u64>().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
        let name = CANONICAL
            .iter()
            .find(|c| c.eq_ignore_ascii_case(&lower))
            .copied()
            .unwrap_or(name);
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let next = if no_body {
        State::Head(Vec::new())
    } else if chunked {
        State::Chunked(Chunk::Size(Vec::new()))
    } else {
        match length {
            Some(0) => State::Head(Vec::new()),
            Some(n) => State::Body(n),
            None => State::Raw,
        }
    };
    (out, next)
}

impl HeadRewriter {
    /// Feeds bytes actix wrote; appends what goes on the wire to `out`.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut BytesMut) {
        while !input.is_empty() {
            match &mut self.state {
                State::Raw => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Head(buf) => {
                    // The end of the head may straddle two writes.
                    let already = buf.len();
                    buf.extend_from_slice(input);
                    match find(buf, b"\r\n\r\n") {
                        Some(at) => {
                            let head_len = at + 4;
                            let consumed = head_len - already;
                            let (rewritten, next) = framing(&buf[..head_len]);
                            out.extend_from_slice(&rewritten);
                            self.state = next;
                            input = &input[consumed..];
                        }
                        None if buf.len() > MAX_HEAD => {
                            out.extend_from_slice(buf);
                            self.state = State::Raw;
                            return;
                        }
                        None => return,
                    }
                }
                State::Body(remaining) => {
                    let n = (*remaining).min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    *remaining -= n as u64;
                    input = &input[n..];
                    if *remaining == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Chunked(chunk) => {
                    let (used, next) = step_chunked(chunk, input);
                    out.extend_from_slice(&input[..used]);
                    input = &input[used..];
                    if let Some(next) = next {
                        self.state = next;
                    }
                }
            }
        }
    }
}

/// Advances the chunked-body parser over `input`; returns bytes used and, when the body ended
/// (or is not understood), the next state.
fn step_chunked(chunk: &mut Chunk, input: &[u8]) -> (usize, Option<State>) {
    match chunk {
        Chunk::Size(line) => {
            let Some(nl) = input.iter().position(|&b| b == b'\n') else {
                line.extend_from_slice(input);
                return (input.len(), None);
            };
            line.extend_from_slice(&input[..nl]);
            let text = String::from_utf8_lossy(line);
            let size = text
                .trim()
                .split(';')
                .next()
                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
            *chunk = match size {
                Some(0) => Chunk::Trailer(Vec::new()),
                Some(n) => Chunk::Data(n),
                None => return (nl + 1, Some(State::Raw)),
            };
            (nl + 1, None)
        }
        Chunk::Data(remaining) => {
            let n = (*remaining).min(input.len() as u64) as usize;
            *remaining -= n as u64;
            if *remaining == 0 {
                *chunk = Chunk::DataEnd(2);
            }
            (n, None)
        }
        Chunk::DataEnd(left) => {
            let n = (*left as usize).min(input.len());
            *left -= n as u8;
            if *left == 0 {
                *chunk = Chunk::Size(Vec::new());
            }
            (n, None)
        }
        Chunk::Trailer(line) => {
            let Some(nl) = input.iter().position(|&b| b == b'\n') else {
                line.extend_from_slice(input);
                return (input.len(), None);
            };
            line.extend_from_slice(&input[..nl]);
            let blank = line.iter().all(|&b| b == b'\r');
            line.clear();
            if blank {
                (nl + 1, Some(State::Head(Vec::new())))
            } else {
                (nl + 1, None)
            }
        }
    }
}

/// A connection whose response heads go through a [`HeadRewriter`].
pub(crate) struct CaseIo<T> {
    inner: T,
    rewriter: HeadRewriter,
    pending: BytesMut,
}

impl<T> CaseIo<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            rewriter: HeadRewriter::default(),
            pending: BytesMut::new(),
        }
    }
}

impl<T: AsyncWrite + Unpin> CaseIo<T> {
    /// Writes pending bytes; `Ready(Ok)` once all are written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.pending.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CaseIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CaseIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        if this.pending.len() >= HIGH_WATER {
            // `drain` left the inner writer's waker registered.
            return Poll::Pending;
        }
        this.rewriter.feed(buf, &mut this.pending);
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> String {
        let mut r = HeadRewriter::default();
        let mut out = BytesMut::new();
        for c in chunks {
            r.feed(c, &mut out);
        }
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn rewrites_heads_not_bodies() {
        let body = "\r\netag: x\r\n\r\n"; // looks like a header, is data
        let wire = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\netag: \"a\"\r\nx-cos-request-id: r\r\n\r\n{body}\
             HTTP/1.1 404 Not Found\r\ncontent-type: application/xml\r\ncontent-length: 0\r\n\r\n",
            body.len()
        );
        let expected = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"a\"\r\nx-cos-request-id: r\r\n\r\n{body}\
             HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: 0\r\n\r\n",
            body.len()
        );
        assert_eq!(run(&[wire.as_bytes()]), expected);
        // Byte by byte gives the same.
        let bytes: Vec<&[u8]> = wire.as_bytes().chunks(1).collect();
        assert_eq!(run(&bytes), expected);
    }

    #[test]
    fn head_answers_and_interim_responses_have_no_body() {
        let wire = "HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-stsgate-no-body: 1\r\netag: e\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(
            run(&[wire.as_bytes()]),
            "HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: e\r\n\r\n\
             HTTP/1.1 204 No Content\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn chunked_bodies_are_followed() {
        let wire = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            5\r\netag:\r\n3;x=y\r\n\r\n\r\r\n0\r\n\r\n\
            HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let expected = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\netag:\r\n3;x=y\r\n\r\n\r\r\n0\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(run(&[wire.as_bytes()]), expected);
        let bytes: Vec<&[u8]> = wire.as_bytes().chunks(3).collect();
        assert_eq!(run(&bytes), expected);
    }

    #[test]
    fn unknown_framing_passes_through() {
        let wire = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nanything\r\netag: 1\r\n\r\n";
        assert_eq!(
            run(&[wire.as_bytes()]),
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nanything\r\netag: 1\r\n\r\n"
        );
    }
}
