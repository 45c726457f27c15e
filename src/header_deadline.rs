//! A guard on request heads: a deadline, and limits on size and line count, answered
//! with the service's JSON errors (hyper's own answers to these have empty bodies).
//!
//! The deadline: poem's server has an idle timeout, but a client that
//! trickles one byte at a time is never idle and could hold a connection (and a file
//! descriptor) forever. This acceptor wraps each connection: from the first byte of a
//! request until the end of its headers (`\r\n\r\n`) it allows at most `timeout`; then
//! the connection is closed. Bodies have their own deadline (see `api::body`).
//!
//! All of this assumes HTTP/1, so cleartext HTTP/2 is refused here: hyper would otherwise
//! serve a connection that opens with the HTTP/2 preface ("prior knowledge"), whose frames
//! have no `\r\n\r\n`-terminated heads and carry many requests at once. Such a connection
//! gets GOAWAY `HTTP_1_1_REQUIRED` and is closed. (`Upgrade: h2c` needs no refusal: neither
//! hyper nor poem performs that upgrade, the request is answered over HTTP/1.1.)

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
    /// While the connection's first bytes are the start of the HTTP/2 preface: how many.
    preface: Option<usize>,
}

/// What a client speaking cleartext HTTP/2 with prior knowledge sends first (RFC 9113
/// §3.4); hyper's automatic protocol choice looks for exactly these 24 bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The answer to it: the server's connection preface (an empty SETTINGS frame), then
/// GOAWAY with last stream 0 and error HTTP_1_1_REQUIRED (0xd, RFC 9113 §7).
const H2_REFUSAL: [u8; 26] = [
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS: length 0, no flags, stream 0
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY: length 8, no flags, stream 0
    0, 0, 0, 0, // last stream id
    0, 0, 0, 0xd, // HTTP_1_1_REQUIRED
];

/// Where a connection's first bytes stand against the HTTP/2 preface.
#[derive(Debug, PartialEq, Eq)]
enum Preface {
    /// Its first `n` bytes so far, no more.
    Partial(usize),
    /// All of it: HTTP/2 with prior knowledge.
    Complete,
    /// Not the preface: HTTP/1.
    Departed,
}

/// Given that the connection began with `matched` bytes of the HTTP/2 preface, where the
/// `bytes` read next leave it.
fn preface_after(matched: usize, bytes: &[u8]) -> Preface {
    let n = bytes.len().min(H2_PREFACE.len() - matched);
    if bytes[..n] != H2_PREFACE[matched..matched + n] {
        Preface::Departed
    } else if matched + n == H2_PREFACE.len() {
        Preface::Complete
    } else {
        Preface::Partial(matched + n)
    }
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
            preface: Some(0),
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
            let read = &buf.filled()[before..];
            if let (Some(matched), false) = (this.preface, read.is_empty()) {
                this.preface = match preface_after(matched, read) {
                    Preface::Partial(n) => Some(n),
                    Preface::Departed => None,
                    Preface::Complete => {
                        // Never handed to hyper, which would serve it as HTTP/2.
                        buf.set_filled(before);
                        this.answer(cx, &H2_REFUSAL);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "cleartext HTTP/2 refused: HTTP/1.1 only",
                        )));
                    }
                };
            }
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

    /// A connection in memory: what is sent to the server arrives `chunk` bytes per read;
    /// what the server writes is kept.
    struct Wire {
        input: Vec<u8>,
        at: usize,
        chunk: usize,
        output: Vec<u8>,
    }

    impl AsyncRead for Wire {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self
                .chunk
                .min(self.input.len() - self.at)
                .min(buf.remaining());
            buf.put_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Wire {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.output.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Reads `input` through the guard as hyper's protocol detection does (24 bytes at a
    /// time at most): what got through, how reading ended, and what the guard wrote.
    async fn through_guard(input: &[u8], chunk: usize) -> (Vec<u8>, io::Result<()>, Vec<u8>) {
        let wire = Wire {
            input: input.to_vec(),
            at: 0,
            chunk,
            output: Vec::new(),
        };
        let mut guard = HeaderDeadline::new(wire, Duration::from_secs(5));
        let mut passed = Vec::new();
        let end = loop {
            let mut space = [0u8; 24];
            let mut buf = ReadBuf::new(&mut space);
            let read =
                std::future::poll_fn(|cx| Pin::new(&mut guard).poll_read(cx, &mut buf)).await;
            match read {
                Ok(()) if buf.filled().is_empty() => break Ok(()),
                Ok(()) => passed.extend_from_slice(buf.filled()),
                Err(e) => break Err(e),
            }
        };
        (passed, end, guard.io.output)
    }

    #[tokio::test]
    async fn the_http2_preface_is_refused_however_the_reads_split_it() {
        let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
        let h2 = [H2_PREFACE, &settings].concat();
        for chunk in 1..=h2.len() {
            let (passed, end, written) = through_guard(&h2, chunk).await;
            assert!(passed.len() < H2_PREFACE.len(), "chunk {chunk}: {passed:?}");
            assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
            assert_eq!(written, H2_REFUSAL, "chunk {chunk}");
        }
        // HTTP/1, even what starts like the preface, goes through untouched.
        let almost = [&H2_PREFACE[..23], b"X"].concat();
        for http1 in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PRI / HTTP/1.1\r\nHost: x\r\n\r\n",
            &almost,
        ] {
            for chunk in [1, 7, 24] {
                let (passed, end, written) = through_guard(http1, chunk).await;
                assert_eq!(passed, http1);
                assert!(end.is_ok() && written.is_empty());
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
