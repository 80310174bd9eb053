//! The HTTP server under the routes: actix-web's own parts (actix-server accepting, actix-http's
//! HTTP/1.1 dispatcher), assembled here rather than through `HttpServer` for three guards that
//! `HttpServer` has no place for:
//!
//! - **Every request head is timed.** actix times the head of a connection's *first* request
//!   only: after one complete request, a client could trickle the next head for ever and hold a
//!   connection (and a file handle) at no cost. [`Connection`] times each head from its first
//!   byte to its blank line, and cuts off a client that takes longer than `--request-timeout`
//!   (`408 head_timeout`, closed). Bodies have their own limit in the middleware; idle
//!   keep-alive connections are closed by actix after `--keep-alive` ([`defaults::KEEP_ALIVE`]).
//! - **Open connections are capped** (`--max-connections`); past the cap, new connections wait
//!   in the kernel's queue, and the log says so.
//! - **`Expect: 100-continue` is answered only for a body we would read**: a wrong content type
//!   or a declared length over `--body-limit` is refused before the client sends the body.
//! - **Nothing is read after an answer that closes the connection** (`connection: close`, which
//!   every refusal of a body sends). actix would otherwise go on reading, and throwing away,
//!   what a refused client sends for up to a second (its disconnect timeout) before closing.
//!   The client has the answer; what it still sends is not read, and the connection is closed.
//! - **A connection hands actix at most [`READ_SLICE`] before actix handles it**: actix reads
//!   on until 128 KiB wait in its buffer (at the peak of a flood of 400 large bodies, 47 MB of
//!   the 62 MB live were those buffers, measured with dhat); a slice at a time, the body's
//!   reader takes (or refuses) what came before more is read.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::body::BoxBody;
use actix_http::{HttpMessage, HttpService, Request, Response};
use actix_server::Server;
use actix_service::{ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use memchr::memmem::Finder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::defaults;
use crate::error::Rejection;
use crate::logging::{escaped, every};
use crate::middleware::{check_content_type, declared_length};

/// How the server treats connections.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub workers: usize,
    pub request_timeout: Duration,
    /// How long an idle kept-alive connection stays open.
    pub keep_alive: Duration,
    pub max_connections: usize,
    /// The webhook path and its body limit, for `Expect: 100-continue`.
    pub path: String,
    pub body_limit: usize,
    pub signals: bool,
}

/// Serves the `routes` (an actix-web `App` of them per worker) on `listener`.
pub(crate) fn serve(
    listener: TcpListener,
    limits: Limits,
    routes: impl Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static,
) -> io::Result<Server> {
    let local = listener.local_addr()?;
    let open = Arc::new(Open::new(limits.max_connections));
    let per_worker = limits.max_connections.div_ceil(limits.workers.max(1)).max(1);
    let mut builder = Server::build()
        .workers(limits.workers)
        .max_concurrent_connections(per_worker)
        // On SIGINT/SIGTERM: stop accepting, give in-flight deliveries this long, then exit.
        .shutdown_timeout(defaults::SHUTDOWN_TIMEOUT.as_secs());
    let shutdown = builder.graceful_shutdown_signal();
    let signals = limits.signals;
    builder = builder.listen("meet-webhooks", listener, move || {
        let (limits, open, shutdown) = (limits.clone(), open.clone(), shutdown.clone());
        let expect = {
            let (path, body_limit) = (limits.path.clone(), limits.body_limit);
            fn_service(move |req: Request| {
                let answer = expect_continue(&req, &path, body_limit).map(|()| req);
                std::future::ready(answer)
            })
        };
        let app = actix_web::App::new().configure(routes.clone());
        let http = HttpService::build()
            .keep_alive(limits.keep_alive)
            // The first request's head; `Connection` times every later one.
            .client_request_timeout(limits.request_timeout)
            .client_disconnect_timeout(Duration::from_secs(1))
            .local_addr(local)
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .expect(expect)
            .h1(map_config(app, |()| AppConfig::default()));
        fn_service(move |io: TcpStream| {
            let peer = io.peer_addr().ok();
            let connection = Connection::new(io, peer, limits.request_timeout, open.enter());
            std::future::ready(Ok::<_, actix_http::error::DispatchError>((connection, peer)))
        })
        .and_then(http)
    })?;
    if !signals {
        builder = builder.disable_signals();
    }
    Ok(builder.run())
}

/// `Expect: 100-continue` on the webhook path: the body is invited only if it could be
/// accepted; otherwise the refusal goes out at once, and the connection is closed.
fn expect_continue(req: &Request, path: &str, body_limit: usize) -> Result<(), Response<BoxBody>> {
    if req.path() != path {
        return Ok(());
    }
    // The middleware's own first checks, before the body is invited.
    let headers = req.headers();
    let checked = check_content_type(headers).and_then(|()| declared_length(headers, body_limit));
    let Err(rejection) = checked else { return Ok(()) };
    let peer = req.peer_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    log::warn!(
        "rejected delivery from {peer} before its body (Expect: 100-continue): {} {} ({})",
        rejection.status().as_u16(),
        rejection.code(),
        escaped(&rejection.to_string())
    );
    crate::metrics::rejected(rejection.code());
    let mut response: Response<BoxBody> = rejection.response().into();
    response.head_mut().set_connection_type(actix_http::ConnectionType::Close);
    Err(response)
}

/// The count of open connections against the cap.
struct Open {
    count: AtomicUsize,
    cap: usize,
    /// When the cap was last reported (seconds since start), to say it once per interval.
    reported: AtomicU64,
}

impl Open {
    fn new(cap: usize) -> Self {
        Self { count: AtomicUsize::new(0), cap, reported: AtomicU64::new(0) }
    }

    fn enter(self: &Arc<Self>) -> Entered {
        let now = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        crate::metrics::open_connections(now);
        if now >= self.cap && every(&self.reported, Duration::from_secs(10)) {
            log::warn!(
                "{now} connections are open, the limit (--max-connections {}): new connections wait until some close",
                self.cap
            );
        }
        Entered(self.clone())
    }
}

/// One open connection, counted until dropped.
struct Entered(Arc<Open>);

impl Drop for Entered {
    fn drop(&mut self) {
        let now = self.0.count.fetch_sub(1, Ordering::Relaxed) - 1;
        crate::metrics::open_connections(now);
    }
}

/// Where a connection is in its current request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Between requests (or before the first): no clock runs.
    Idle,
    /// Part of a head arrived; the last four bytes read, to spot the blank line.
    Reading { last: u32 },
    /// The head is complete; the body and the answer are timed elsewhere.
    Read,
}

impl Head {
    /// Where the head is once `bytes` more were read: the first byte between requests starts
    /// one, the first blank line (`\r\n\r\n`, or `\n\n`) ends it. Only line feeds can end a
    /// blank line, so they are looked for (memchr) rather than every byte stepped through.
    fn after_read(self, bytes: &[u8]) -> Self {
        let last = match self {
            Head::Read => return self,
            Head::Idle if bytes.is_empty() => return self,
            Head::Idle => 0,
            Head::Reading { last } => last,
        };
        // The four bytes read up to `end` (exclusive): those before `bytes` count too.
        let window = |end: usize| bytes[end.saturating_sub(4)..end].iter().fold(last, |w, &b| (w << 8) | u32::from(b));
        let blank = memchr::memchr_iter(b'\n', bytes).any(|i| {
            let w = window(i + 1);
            w == u32::from_be_bytes(*b"\r\n\r\n") || w & 0xffff == u32::from(u16::from_be_bytes(*b"\n\n"))
        });
        if blank { Head::Read } else { Head::Reading { last: window(bytes.len()) } }
    }

    /// Where the head is once `bytes` were written: an answer (not an interim `100 Continue`)
    /// ends the request, and the next byte read starts the next head.
    fn after_write(self, bytes: &[u8]) -> Self {
        if bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 1") { self } else { Head::Idle }
    }
}

/// A client connection whose every request head must arrive within `limit` of its first byte.
///
/// It sees only bytes, not requests: a head starts with the first byte read after an answer
/// (or at the start) and ends at the first blank line (`\r\n\r\n`, or `\n\n`); an answer starts
/// with the first bytes written that are not an interim `100 Continue`.
pub(crate) struct Connection {
    io: TcpStream,
    peer: Option<SocketAddr>,
    limit: Duration,
    head: Head,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// An answer that closes the connection was written: reads end here.
    closing: bool,
    /// Bytes read since the last time the reader was told to wait.
    unyielded: usize,
    _entered: Entered,
}

impl Connection {
    fn new(io: TcpStream, peer: Option<SocketAddr>, limit: Duration, entered: Entered) -> Self {
        Self { io, peer, limit, head: Head::Idle, deadline: None, closing: false, unyielded: 0, _entered: entered }
    }

    fn observe_read(&mut self, bytes: &[u8]) {
        let before = self.head;
        self.head = before.after_read(bytes);
        match self.head {
            Head::Reading { .. } if !matches!(before, Head::Reading { .. }) => {
                self.deadline = Some(Box::pin(tokio::time::sleep(self.limit)));
            }
            Head::Reading { .. } => {}
            Head::Idle | Head::Read => self.deadline = None,
        }
    }

    fn observe_write(&mut self, bytes: &[u8]) {
        self.closing = self.closing || closes(bytes);
        self.head = self.head.after_write(bytes);
        if self.head == Head::Idle {
            self.deadline = None;
        }
    }

    /// The head took too long: say so if the socket takes it at once, and fail the read so
    /// that actix closes the connection.
    fn cut_off(&mut self) -> io::Error {
        static REPORTED: AtomicU64 = AtomicU64::new(0);
        let rejection = Rejection::HeadTimeout { ms: self.limit.as_millis() };
        let body = rejection.body();
        let answer = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            rejection.status().as_u16(),
            rejection.status().canonical_reason().unwrap_or_default(),
            body.len()
        );
        let _ = self.io.try_write(&[answer.as_bytes(), &body].concat());
        crate::metrics::rejected(rejection.code());
        if every(&REPORTED, Duration::from_secs(1)) {
            let peer = self.peer.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
            log::warn!(
                "cut off a connection from {peer}: 408 head_timeout ({rejection}) (at most one such line a second)"
            );
        }
        self.deadline = None;
        io::Error::new(io::ErrorKind::TimedOut, "the request head did not arrive in time")
    }
}

/// Most bytes read before actix is made to handle them: what a connection buffers.
const READ_SLICE: usize = 16 * 1024;

/// Whether `bytes` start an answer whose head says `connection: close` (as actix writes it).
fn closes(bytes: &[u8]) -> bool {
    // Built once: `memmem::find` builds its searcher on every call, which cost more than the
    // search itself (about 1,400 instructions an answer, callgrind).
    static HEAD_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n\r\n"));
    static CLOSE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\nconnection: close\r\n"));
    if !bytes.starts_with(b"HTTP/1.") {
        return false;
    }
    let head = HEAD_END.find(bytes).map_or(bytes, |end| &bytes[..end + 2]);
    CLOSE.find(head).is_some()
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closing {
            // The end of the stream, as far as actix is concerned: it closes the connection.
            return Poll::Ready(Ok(()));
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(this.cut_off()));
        }
        if this.unyielded >= READ_SLICE {
            // actix reads on until 128 KiB wait in its buffer; a slice at a time, it passes
            // what it has on to the body's reader in between.
            this.unyielded = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if read.is_pending() {
            this.unyielded = 0;
        }
        if let Poll::Ready(Ok(())) = read {
            this.unyielded += buf.filled().len() - before;
            this.observe_read(&buf.filled()[before..]);
            // A new head's clock must wake this task even if no byte comes again.
            if let Some(deadline) = &mut this.deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(this.cut_off()));
            }
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.observe_write(&buf[..n]);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(first)) = (&written, bufs.iter().find(|b| !b.is_empty()))
            && *n > 0
        {
            this.observe_write(&first[..(*n).min(first.len())]);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
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
    use std::io::Write as _;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::io::{AsyncRead, ReadBuf};

    use super::{Connection, Head, Open, READ_SLICE};

    #[derive(Default)]
    struct Woken(AtomicBool);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_connection_hands_on_a_slice_at_a_time_and_asks_to_be_polled_again() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (io, _) = listener.accept().await.unwrap();
        let mut connection = Connection::new(io, None, Duration::from_secs(30), Arc::new(Open::new(8)).enter());
        client.write_all(&[b'x'; 64 * 1024]).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        // Read as actix does, 8 KiB at a time, until told to wait.
        let mut total = 0;
        let mut buf = [0u8; 8 * 1024];
        loop {
            let mut read = ReadBuf::new(&mut buf);
            let Poll::Ready(result) = Pin::new(&mut connection).poll_read(&mut cx, &mut read) else { break };
            result.unwrap();
            assert!(!read.filled().is_empty(), "the client's bytes are all there");
            total += read.filled().len();
            assert!(total < READ_SLICE + 8 * 1024, "{total} bytes read without a pause");
        }
        assert!(total >= READ_SLICE, "paused after {total} bytes, before a slice");
        assert!(woken.0.load(Ordering::SeqCst), "a pause that is not an empty socket wakes the reader");
        let mut again = ReadBuf::new(&mut buf);
        assert!(Pin::new(&mut connection).poll_read(&mut cx, &mut again).is_ready(), "the next poll reads on");
    }

    /// The blank line found a byte at a time, as the scan did before it looked for line feeds.
    fn byte_at_a_time(head: Head, bytes: &[u8]) -> Head {
        let mut head = head;
        for &byte in bytes {
            let last = match head {
                Head::Read => return head,
                Head::Idle => 0,
                Head::Reading { last } => last,
            };
            let last = (last << 8) | u32::from(byte);
            head = if last == u32::from_be_bytes(*b"\r\n\r\n") || last & 0xffff == 0x0a0a {
                Head::Read
            } else {
                Head::Reading { last }
            };
        }
        head
    }

    proptest! {
        #[test]
        fn looking_for_line_feeds_finds_what_a_byte_at_a_time_finds(
            bytes in proptest::collection::vec(prop::sample::select(vec![b'\r', b'\n', b'a']), 0..24),
            cuts in proptest::collection::vec(0usize..24, 0..4),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let (mut fast, mut slow, mut from) = (Head::Idle, Head::Idle, 0);
            for to in cuts.into_iter().chain([bytes.len()]) {
                fast = fast.after_read(&bytes[from..to]);
                slow = byte_at_a_time(slow, &bytes[from..to]);
                prop_assert_eq!(fast, slow, "after {:?}", &bytes[..to]);
                from = to;
            }
        }
    }

    #[test]
    fn a_head_runs_from_its_first_byte_to_its_blank_line_and_an_answer_ends_the_request() {
        let reading = |head: Head| matches!(head, Head::Reading { .. });
        // Whole, or in pieces that split the blank line.
        assert_eq!(Head::Idle.after_read(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"), Head::Read);
        let head = Head::Idle.after_read(b"POST / HTTP/1.1\r\nhost: x\r\n\r");
        assert!(reading(head), "{head:?}");
        assert_eq!(head.after_read(b"\n{\"body\"}"), Head::Read);
        assert_eq!(Head::Idle.after_read(b"GET / HTTP/1.0\nhost: x\n\n"), Head::Read, "bare line feeds");
        // The body's bytes, and more of them, change nothing; nor does a 100 Continue.
        assert_eq!(Head::Read.after_read(b"\r\n\r\nPOST"), Head::Read);
        assert_eq!(Head::Read.after_write(b"HTTP/1.1 100 Continue\r\n\r\n"), Head::Read);
        // The answer ends the request; nothing read yet means no head is being waited for.
        assert_eq!(Head::Read.after_write(b"HTTP/1.1 200 OK\r\n"), Head::Idle);
        assert_eq!(Head::Idle.after_read(b""), Head::Idle);
        assert!(reading(Head::Idle.after_read(b"P")));
    }
}
