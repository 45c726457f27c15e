//! A guard on request heads: a deadline, and limits on size and line count, answered
//! with the service's JSON errors (hyper's own answers to these have empty bodies).
//!
//! The deadline: poem's server has an idle timeout, but a client that
//! trickles one byte at a time is never idle and could hold a connection (and a file
//! descriptor) forever. This acceptor wraps each connection: from the first byte of a
//! request until the end of its headers (`\r\n\r\n`) it allows at most `timeout`; then
//! the connection is closed. Bodies have their own deadline (see `api::body`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct HeaderDeadlineAcceptor<A> {
    inner: A,
    timeout: Duration,
}

impl<A> HeaderDeadlineAcceptor<A> {
    pub fn new(inner: A, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<A: Acceptor> Acceptor for HeaderDeadlineAcceptor<A> {
    type Io = HeaderDeadline<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        Ok((HeaderDeadline::new(io, self.timeout), local, remote, scheme))
    }
}

/// Where the connection is in the request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request's headers, under the deadline.
    Headers,
    /// Headers done: the rest (a body) is the handlers' to time out.
    Body,
    /// A response went out: the next byte read starts the next request.
    Idle,
}

pub struct HeaderDeadline<Io> {
    io: Io,
    timeout: Duration,
    phase: Phase,
    /// Armed while a request's headers are being read.
    deadline: Option<Pin<Box<Sleep>>>,
    /// How much of `\r\n\r\n` the header bytes read so far end with.
    matched: usize,
    /// Size and line count of the request head read so far.
    head_bytes: usize,
    head_lines: usize,
}

/// The largest request head accepted (request line and headers).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// The most header lines accepted (hyper's own limit is 100, answered without a body).
pub const MAX_HEAD_LINES: usize = 64;

/// What the bytes read so far call for.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Continue,
    TooLarge,
}

fn canned(status: &str, message: &str) -> Vec<u8> {
    let body = format!("{{\"error\":\"{message}\"}}");
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const END: &[u8] = b"\r\n\r\n";

/// Where the head ends in `bytes` (just past its blank line), given that the bytes
/// before them ended with `matched` bytes of `\r\n\r\n`; and how much of it the bytes
/// end with, for the next read. Every byte of every request passes through here, so the
/// search is memchr's SIMD one rather than a byte-at-a-time state machine.
fn end_of_head(matched: usize, bytes: &[u8]) -> (Option<usize>, usize) {
    let step = |m: usize, b: u8| {
        if b == END[m] {
            m + 1
        } else {
            usize::from(b == END[0])
        }
    };
    if bytes.len() < END.len() {
        let mut m = matched;
        for (i, &b) in bytes.iter().enumerate() {
            m = step(m, b);
            if m == END.len() {
                return (Some(i + 1), 0);
            }
        }
        return (None, m);
    }
    // A blank line begun in the previous read ends within the first three bytes.
    let mut m = matched;
    for (i, &b) in bytes.iter().take(END.len() - 1).enumerate() {
        if m == 0 {
            break;
        }
        m = step(m, b);
        if m == END.len() {
            return (Some(i + 1), 0);
        }
    }
    if let Some(at) = memchr::memmem::find(bytes, END) {
        return (Some(at + END.len()), 0);
    }
    let tail = (1..END.len())
        .rev()
        .find(|&k| bytes.ends_with(&END[..k]))
        .unwrap_or(0);
    (None, tail)
}

impl<Io> HeaderDeadline<Io> {
    fn new(io: Io, timeout: Duration) -> Self {
        // A new connection starts waiting for headers: one that sends nothing is closed too.
        Self {
            io,
            timeout,
            phase: Phase::Headers,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            matched: 0,
            head_bytes: 0,
            head_lines: 0,
        }
    }

    fn scan(&mut self, bytes: &[u8]) -> Verdict {
        match self.phase {
            // Body bytes are not headers: they never arm the deadline.
            Phase::Body => return Verdict::Continue,
            Phase::Idle if !bytes.is_empty() => {
                // The first byte of the next request (keep-alive) starts its deadline.
                self.phase = Phase::Headers;
                self.deadline = Some(Box::pin(tokio::time::sleep(self.timeout)));
                self.matched = 0;
                self.head_bytes = 0;
                self.head_lines = 0;
            }
            Phase::Idle | Phase::Headers => {}
        }
        let (end, matched) = end_of_head(self.matched, bytes);
        let head = end.unwrap_or(bytes.len());
        self.head_bytes += head;
        self.head_lines += bytes[..head].iter().filter(|&&b| b == b'\n').count();
        if self.head_bytes > MAX_HEAD_BYTES || self.head_lines > MAX_HEAD_LINES + 1 {
            return Verdict::TooLarge;
        }
        self.matched = matched;
        if end.is_some() {
            self.phase = Phase::Body;
            self.deadline = None;
        }
        Verdict::Continue
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeaderDeadline<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.answer(
                    cx,
                    &canned("408 Request Timeout", "Request headers took too long"),
                );
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request headers too slow",
                )));
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            if this.scan(&buf.filled()[before..]) == Verdict::TooLarge {
                // The oversized head never reaches the HTTP parser: our answer, then EOF.
                buf.set_filled(before);
                this.answer(
                    cx,
                    &canned(
                        "431 Request Header Fields Too Large",
                        "Request header fields too large",
                    ),
                );
                return Poll::Ready(Ok(()));
            }
        }
        result
    }
}

impl<Io: AsyncWrite + Unpin> HeaderDeadline<Io> {
    /// Best effort: the answer is small enough for the socket buffer; if it does not fit
    /// at once, the connection is closed without it.
    fn answer(&mut self, cx: &mut Context<'_>, response: &[u8]) {
        let mut sent = 0;
        while sent < response.len() {
            match Pin::new(&mut self.io).poll_write(cx, &response[sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => sent += n,
                _ => break,
            }
        }
        let _ = Pin::new(&mut self.io).poll_flush(cx);
        self.phase = Phase::Idle;
        self.deadline = None;
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for HeaderDeadline<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A response (or a 100 Continue) is going out: what is read next is not this
        // request's headers any more.
        self.phase = Phase::Idle;
        self.deadline = None;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the byte-at-a-time definition, for every way of cutting heads into reads.
    #[test]
    fn the_end_of_a_head_is_found_however_the_reads_split_it() {
        let samples: [&[u8]; 5] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\r\n\r\n",
            b"\r\n\r\n",
            b"a\r\r\n\n\r\n\rb\r\n\r\n",
            b"no end here\r\n\r",
        ];
        for sample in samples {
            let truth = sample.windows(4).position(|w| w == END).map(|at| at + 4);
            for a in 0..=sample.len() {
                for b in a..=sample.len() {
                    let (mut matched, mut found) = (0, None);
                    for (start, read) in [(0, &sample[..a]), (a, &sample[a..b]), (b, &sample[b..])]
                    {
                        if found.is_some() {
                            break;
                        }
                        let (end, m) = end_of_head(matched, read);
                        found = end.map(|e| start + e);
                        matched = m;
                    }
                    assert_eq!(found, truth, "{sample:?} cut at {a} and {b}");
                }
            }
        }
    }

    #[tokio::test]
    async fn oversized_heads_are_refused() {
        let mut d = HeaderDeadline::new((), Duration::from_secs(5));
        assert_eq!(d.scan(b"GET / HTTP/1.1\r\n"), Verdict::Continue);
        let many = "X-A: b\r\n".repeat(MAX_HEAD_LINES + 1);
        assert_eq!(d.scan(many.as_bytes()), Verdict::TooLarge);
        let mut d = HeaderDeadline::new((), Duration::from_secs(5));
        let long = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(d.scan(long.as_bytes()), Verdict::TooLarge);
    }

    #[tokio::test]
    async fn the_deadline_ends_at_the_blank_line_and_restarts_with_the_next_request() {
        let mut d = HeaderDeadline::new((), Duration::from_secs(5));
        assert!(d.deadline.is_some());
        d.scan(b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(d.deadline.is_some());
        d.scan(b"\r\n{\"body\": 1}");
        assert!(d.deadline.is_none());
        d.scan(b"more body without a blank line");
        assert!(d.deadline.is_none(), "body bytes never arm the deadline");
        d.phase = Phase::Idle; // a response went out
        d.scan(b"G");
        assert!(d.deadline.is_some());
        d.scan(b"ET / HTTP/1.1\r\n\r");
        assert!(d.deadline.is_some());
        d.scan(b"\n");
        assert!(d.deadline.is_none());
    }
}
