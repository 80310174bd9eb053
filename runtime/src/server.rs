//! The HTTP server under the routes: actix-web's own parts (actix-server accepting, actix-http's
//! HTTP/1.1 dispatcher), assembled here rather than through `HttpServer` for three guards that
//! `HttpServer` has no place for:
//!
//! - **Every request head is timed, and handed on whole.** actix times the head of a
//!   connection's *first* request only, and reads up to 128 KiB of a head in progress. Each
//!   connection's bytes pass through a [`Framer`] that hands actix one whole request at a time;
//!   [`Connection`] times each head from its first byte, whatever came before it on the
//!   connection, and cuts off a client that takes longer than `--request-timeout` (`408
//!   head_timeout`) or sends more than [`HEAD_LIMIT`] of it (`431 head_too_large`), closing
//!   the connection. Bodies have their own limit in the middleware; idle keep-alive connections
//!   are closed by actix after `--keep-alive` ([`defaults::KEEP_ALIVE`]).
//! - **Open connections are capped** (`--max-connections`); past the cap, new connections wait
//!   in the kernel's queue (as long as the cap: see `service::listen`), and the log says so.
//! - **`Expect: 100-continue` is answered only for a body we would read**: a wrong content type
//!   or a declared length over `--body-limit` is refused before the client sends the body.
//! - **Nothing is read after an answer that closes the connection** (`connection: close`, which
//!   every refusal of a body sends). actix would otherwise go on reading, and throwing away,
//!   what a refused client sends for up to a second (its disconnect timeout) before closing.
//!   The client has the answer; what it still sends is not read, and the connection is closed.
//! - **A connection hands actix at most [`READ_SLICE`] before actix handles it**: actix reads
//!   on until 128 KiB wait in its buffer, which under a flood of large bodies was most of the
//!   process's memory; a slice at a time, the body's reader takes (or refuses) what came before
//!   more is read.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::body::BoxBody;
use actix_http::{HttpMessage, HttpService, Request, Response};
use actix_server::Server;
use actix_service::{ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::defaults;
use crate::error::Rejection;
use crate::framing::{Framer, HEAD_LIMIT, Refused};
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
            // `Connection` times every head, the first from the connection's start.
            .client_request_timeout(Duration::ZERO)
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

/// A client connection whose every request head must arrive within `limit` of its first byte,
/// handed to actix a request at a time ([`Framer`]).
pub(crate) struct Connection {
    io: TcpStream,
    peer: Option<SocketAddr>,
    limit: Duration,
    framer: Framer,
    /// When the head being waited for must be here.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// An answer that closes the connection was written: reads end here.
    closing: bool,
    /// Bytes handed on since the last time the reader was told to wait.
    unyielded: usize,
    _entered: Entered,
}

impl Connection {
    fn new(io: TcpStream, peer: Option<SocketAddr>, limit: Duration, entered: Entered) -> Self {
        let framer = Framer::default();
        Self { io, peer, limit, framer, deadline: None, closing: false, unyielded: 0, _entered: entered }
    }

    /// Works out what may be handed on, and runs the head's clock: from the first byte of a head
    /// that is waited for, whatever came before it.
    fn advance(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Err(Refused::HeadTooLarge) = self.framer.advance() {
            return Err(self.refuse(Rejection::HeadTooLarge { limit: HEAD_LIMIT }));
        }
        if !self.framer.head_started() {
            self.deadline = None;
            return Ok(());
        }
        let limit = self.limit;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Err(self.refuse(Rejection::HeadTimeout { ms: self.limit.as_millis() }));
        }
        Ok(())
    }

    fn observe_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) {
        let written = self.framer.written(bytes);
        self.closing |= written.closes;
        if written.answered {
            // The next request may be handed on now: the reader is asked again.
            cx.waker().wake_by_ref();
        }
    }

    /// Refuses the head being waited for: says so if the socket takes it at once, and fails
    /// the read so that actix closes the connection.
    fn refuse(&mut self, rejection: Rejection) -> io::Error {
        static REPORTED: AtomicU64 = AtomicU64::new(0);
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
                "cut off a connection from {peer}: {} {} ({rejection}) (at most one such line a second)",
                rejection.status().as_u16(),
                rejection.code()
            );
        }
        self.deadline = None;
        self.closing = true;
        io::Error::new(io::ErrorKind::InvalidData, rejection.to_string())
    }
}

/// Most bytes handed to actix before it is made to handle them: actix reads on until 128 KiB
/// wait in its buffer; a slice at a time, the body's reader takes (or refuses) what came first.
const READ_SLICE: usize = 16 * 1024;

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.closing {
                // The end of the stream, as far as actix is concerned: it closes the connection.
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = this.advance(cx) {
                return Poll::Ready(Err(e));
            }
            if this.framer.giving() > 0 {
                if this.unyielded >= READ_SLICE {
                    this.unyielded = 0;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let bytes = this.framer.take(out.remaining().min(READ_SLICE - this.unyielded));
                this.unyielded += bytes.len();
                out.put_slice(bytes);
                return Poll::Ready(Ok(()));
            }
            // Nothing more is read until the current request is answered: the write wakes us.
            let Some(spare) = this.framer.spare() else {
                this.unyielded = 0;
                return Poll::Pending;
            };
            let mut read = ReadBuf::new(spare);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    this.framer.filled(n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    this.unyielded = 0;
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.observe_write(cx, &buf[..n]);
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
        if let Poll::Ready(Ok(mut n)) = written {
            for buf in bufs {
                if n == 0 {
                    break;
                }
                this.observe_write(cx, &buf[..n.min(buf.len())]);
                n = n.saturating_sub(buf.len());
            }
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
        // actix is done writing: nothing more is read either.
        self.closing = true;
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

    use tokio::io::{AsyncRead, ReadBuf};

    use super::{Connection, Open, READ_SLICE};

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
        client.write_all(b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-length: 65536\r\n\r\n").unwrap();
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
}
