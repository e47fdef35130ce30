//! One downstream connection: the common HTTP/1.1 request served here, everything else by
//! hyper.
//!
//! Most requests through an access-control gateway are HTTP/1.1 requests without a body, many
//! on each kept-alive connection. For them, the connection's task parses the head (with
//! `httparse`, as hyper does), calls the service and writes its response, with nothing in
//! between: no dispatcher, no body channel, no boxed request body. Everything else goes to
//! hyper's server, from the first request this module declines to the end of the connection,
//! with the bytes already read handed over unconsumed: HTTP/2, HTTP/1.0, requests with a body,
//! `Expect`, `Upgrade`, `CONNECT`, targets not in origin form, heads above 16 KiB or
//! 32 header lines, and anything malformed (hyper answers 400 or 431, as it always has).
//!
//! A request is served here only when no header gives it a body: no `Transfer-Encoding`, and
//! no `Content-Length` or `Content-Length: 0`. The bytes after its head are then the next
//! request for every reader of the stream, so there is no framing to disagree about.
//!
//! Responses are framed as hyper frames them: by `Content-Length` when the body's size is known
//! (or, failing that, the response says it), else chunked; no body after `HEAD` and for 1xx,
//! 204 and 304; a `date` header when the response has none. A body that fails, or does not
//! match its length, ends the connection without completing the response. The connection is
//! kept alive unless the request or the response says `Connection: close`, or the server is
//! stopping. A client that closes its connection while its request is served cancels the
//! request, as under hyper.
//!
//! A connection that takes longer than the client timeout to send a request head, or stays
//! idle that long between requests, is closed, as hyper's `header_read_timeout` does: one
//! timer per connection, re-armed only when it fires early, so that waiting for a request
//! costs a clock read, not a timer registration. A connection served by hyper is shut down
//! gracefully once no request has been in flight on it (until its response body ended) for
//! the client timeout: hyper's HTTP/2 has no idle timeout of its own.

use std::{
    convert::Infallible,
    future::{Future, poll_fn},
    io,
    mem::MaybeUninit,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use axum::{body::Body, extract::ConnectInfo};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use portcullis_core::clock;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Notify,
    time::{Instant, Sleep},
};
use tower::Service;

use crate::{
    proxy::Downstream,
    wire::{header_map, invalid, poll_read_more, range_in, tokens, within, write_all},
};

#[cfg(test)]
mod tests;

/// The largest request head served here; larger ones go to hyper.
const MAX_HEAD: usize = 16 * 1024;
/// The most header lines in a request served here; requests with more go to hyper.
const MAX_HEADERS: usize = 32;
/// Response data gathered before it is written.
const WRITE_BUFFER: usize = 64 * 1024;

/// What the connections serve: the composed gateway, or any service like it.
pub(crate) trait App:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: Service<
            Request<Body>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// What every connection of a server shares: the service, hyper's server for what this module
/// declines, the client timeout and the stop signal.
pub(crate) struct Shared<S> {
    service: S,
    hyper: auto::Builder<TokioExecutor>,
    client_timeout: Duration,
    stopping: AtomicBool,
    stop: Notify,
}

impl<S> Shared<S> {
    /// Connections to `service`, closed when they take longer than `client_timeout` to send a
    /// request head.
    pub(crate) fn new(service: S, client_timeout: Duration) -> Self {
        let mut hyper = auto::Builder::new(TokioExecutor::new());
        hyper
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(client_timeout);
        Self {
            service,
            hyper,
            client_timeout,
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
        }
    }

    /// Stop every connection: an idle one closes now, a busy one after its response (which
    /// says `Connection: close`).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Serve the connection `io` from `peer` until it ends. Its requests carry the peer's address
/// as [`ConnectInfo<SocketAddr>`] and the connection's [`Downstream`].
pub(crate) async fn run<S: App>(io: TcpStream, peer: SocketAddr, shared: Arc<Shared<S>>) {
    let mut conn = Connection {
        io,
        read: BytesMut::with_capacity(4096),
        write: Vec::with_capacity(1024),
        extensions: extensions(peer),
    };
    // Registered once with this task's waker: `Shared::stop` wakes the task, which then finds
    // `stopping` set wherever it waits for a request.
    let mut stop = pin!(shared.stop.notified());
    poll_fn(|cx| {
        let _ = stop.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await;
    let mut timer = pin!(tokio::time::sleep(shared.client_timeout));
    loop {
        let (req, close) = match conn.next_request(&shared, timer.as_mut()).await {
            Next::Request(req, close) => (req, close),
            Next::Hyper => return hyper(conn, &shared).await,
            Next::Partial | Next::End => return,
        };
        let head = req.method() == Method::HEAD;
        // Pinned here, not moved into `serve`: the composed future is large.
        let call = pin!(shared.service.clone().call(req));
        let Some(res) = conn.serve(call).await else {
            // The client left: its request is dropped, as hyper drops it.
            return;
        };
        let close = close || shared.stopping();
        match conn.respond(res, head, close).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = poll_fn(|cx| Pin::new(&mut conn.io).poll_shutdown(cx)).await;
                return;
            }
            Err(e) => {
                tracing::trace!(error = %e, "connection ended with an error");
                return;
            }
        }
    }
}

struct Connection {
    io: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
    /// What every request of the connection carries, in a map with room for what the layers
    /// add: cloned, it keeps its room, so that no request grows its map.
    extensions: http::Extensions,
}

/// The peer's address as [`ConnectInfo<SocketAddr>`] and a new [`Downstream`], in a map with
/// room for five more (the audit handle, the principal and the org come after).
fn extensions(peer: SocketAddr) -> http::Extensions {
    #[derive(Clone)]
    struct Room<const N: usize>;
    let mut extensions = http::Extensions::new();
    extensions.insert(Room::<0>);
    extensions.insert(Room::<1>);
    extensions.insert(Room::<2>);
    extensions.insert(Room::<3>);
    extensions.insert(ConnectInfo(peer));
    extensions.insert(Downstream::new(peer));
    extensions.remove::<Room<0>>();
    extensions.remove::<Room<1>>();
    extensions.remove::<Room<2>>();
    extensions.remove::<Room<3>>();
    extensions
}

/// What the start of the read buffer holds, or what became of the connection.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request and matched at once: a box would cost an allocation"
)]
enum Next {
    /// A request without a body, and whether it asked to close the connection after it; its
    /// head is taken out of the buffer.
    Request(Request<Body>, bool),
    /// The head is not complete yet ([`parse`] only).
    Partial,
    /// Not for this module: hyper serves the rest of the connection, from the buffer as it is.
    Hyper,
    /// The connection ended, timed out or the server is stopping ([`Connection::next_request`]
    /// only).
    End,
}

impl Connection {
    /// The next request head: parsed from what has been read, else read, within the client
    /// timeout.
    async fn next_request<S>(&mut self, shared: &Shared<S>, mut timer: Pin<&mut Sleep>) -> Next {
        let mut deadline = None;
        loop {
            match parse(&mut self.read) {
                Next::Request(mut req, close) => {
                    *req.extensions_mut() = self.extensions.clone();
                    return Next::Request(req, close);
                }
                Next::Partial if self.read.len() < MAX_HEAD => {}
                _ => return Next::Hyper,
            }
            let deadline = *deadline
                .get_or_insert_with(|| Instant::from_std(clock::deadline(shared.client_timeout)));
            let read = poll_fn(|cx| {
                if shared.stopping() {
                    return Poll::Ready(None);
                }
                let read = poll_read_more(&mut self.io, &mut self.read, cx);
                within(timer.as_mut(), deadline, cx, read)
            })
            .await;
            match read {
                Some(Ok(n)) if n > 0 => {}
                _ => return Next::End,
            }
        }
    }

    /// The response of `call`; `None` when the client closes the connection first (hyper's
    /// "unexpected EOF on busy connection"), which cancels the request. Bytes that arrive
    /// meanwhile (a pipelined request) are kept, and end the watch for a close, as in hyper.
    async fn serve<F>(&mut self, mut call: Pin<&mut F>) -> Option<Response<Body>>
    where
        F: Future<Output = Result<Response<Body>, Infallible>>,
    {
        poll_fn(|cx| {
            if let Poll::Ready(res) = call.as_mut().poll(cx) {
                return Poll::Ready(match res {
                    Ok(res) => Some(res),
                    Err(never) => match never {},
                });
            }
            if self.read.is_empty()
                && let Poll::Ready(Ok(0) | Err(_)) =
                    poll_read_more(&mut self.io, &mut self.read, cx)
            {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Write `res`; whether the connection may carry another request.
    async fn respond(&mut self, res: Response<Body>, head: bool, close: bool) -> io::Result<bool> {
        let (parts, mut body) = res.into_parts();
        let framing = encode_head(
            &parts,
            head,
            close,
            body.size_hint().exact(),
            &mut self.write,
        );
        let keep_alive = !framing.close;
        let mut remaining = match framing.body {
            BodyFraming::None => {
                drop(body);
                self.flush().await?;
                return Ok(keep_alive);
            }
            BodyFraming::Length(n) => Some(n),
            BodyFraming::Chunked => None,
        };
        loop {
            // Gather what the body has ready; write when it has to be waited for.
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.flush().await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    // What was gathered goes out; the response stays incomplete.
                    let _ = self.flush().await;
                    return Err(io::Error::other(e));
                }
                // Trailers are not forwarded.
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            };
            match &mut remaining {
                Some(left) => {
                    *left = left
                        .checked_sub(data.len() as u64)
                        .ok_or_else(|| invalid("the response body is longer than its length"))?;
                }
                None => {
                    use std::io::Write as _;
                    write!(self.write, "{:x}\r\n", data.len())?;
                }
            }
            if self.write.len() + data.len() <= WRITE_BUFFER {
                self.write.extend_from_slice(&data);
            } else {
                self.flush().await?;
                write_all(&self.io, &data).await?;
            }
            if remaining.is_none() {
                self.write.extend_from_slice(b"\r\n");
            }
        }
        match remaining {
            Some(0) => {}
            Some(_) => return Err(invalid("the response body is shorter than its length")),
            None => self.write.extend_from_slice(b"0\r\n\r\n"),
        }
        self.flush().await?;
        Ok(keep_alive)
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.write.is_empty() {
            write_all(&self.io, &self.write).await?;
            self.write.clear();
        }
        Ok(())
    }
}

/// The request at the start of `buf`, if it is one served here.
fn parse(buf: &mut BytesMut) -> Next {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Next::Partial,
        Err(_) => return Next::Hyper,
    };
    if parsed.version != Some(1) {
        return Next::Hyper;
    }
    let method = match Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()) {
        Ok(method) if method != Method::CONNECT => method,
        _ => return Next::Hyper,
    };
    let Some(path) = parsed.path.filter(|p| p.starts_with('/')) else {
        return Next::Hyper;
    };
    // Where each piece is in `buf`, to be sliced out of it once it is frozen.
    let path = range_in(buf, path.as_bytes());
    let mut fields = Vec::with_capacity(parsed.headers.len());
    let mut close = false;
    for h in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Next::Hyper;
        };
        if name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && h.value != b"0")
            || name == header::EXPECT
            || name == header::UPGRADE
        {
            return Next::Hyper;
        }
        if name == header::CONNECTION {
            close |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        }
        fields.push((name, range_in(buf, h.value)));
    }
    let head = buf.split_to(len).freeze();
    let built = Uri::from_maybe_shared(head.slice(path))
        .ok()
        .zip(header_map(&head, fields));
    let Some((uri, map)) = built else {
        // Something `http` refuses: back as it was, for hyper to answer.
        let rest = std::mem::replace(buf, BytesMut::from(&head[..]));
        buf.extend_from_slice(&rest);
        return Next::Hyper;
    };
    let mut req = Request::new(Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Next::Request(req, close)
}

/// How a response goes out.
struct Framing {
    body: BodyFraming,
    /// The connection closes after it.
    close: bool,
}

enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Write the head of a response to `out`: status line, headers, the framing headers chosen
/// here, `date` when missing, `connection: close` when closing.
fn encode_head(
    parts: &http::response::Parts,
    head_request: bool,
    mut close: bool,
    exact: Option<u64>,
    out: &mut Vec<u8>,
) -> Framing {
    let status = parts.status;
    let bodiless_status = status.is_informational() || status == StatusCode::NO_CONTENT;
    let no_body = head_request || bodiless_status || status == StatusCode::NOT_MODIFIED;
    out.clear();
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut length = None;
    let mut date = false;
    for (name, value) in &parts.headers {
        if *name == header::CONTENT_LENGTH && !no_body {
            // Written below, from the body's size when it is known.
            length = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            continue;
        } else if *name == header::CONTENT_LENGTH && bodiless_status {
            // A HEAD answer keeps what a GET would have had, and a 304 what did not change; 1xx
            // and 204 have none.
            continue;
        } else if *name == header::TRANSFER_ENCODING {
            continue;
        } else if *name == header::CONNECTION {
            close |= tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close"));
            continue;
        } else if *name == header::DATE {
            date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let body = if no_body {
        BodyFraming::None
    } else if let Some(n) = exact.or(length) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
        BodyFraming::Length(n)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        BodyFraming::Chunked
    };
    if !date {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Framing { body, close }
}

/// The current time as an HTTP date, formatted once a second per thread.
fn http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    // The coarse clock: a tick late at most, where the header has a resolution of a second.
    let now = clock::since_epoch();
    let second = now.as_secs();
    DATE.with_borrow_mut(|(at, date)| {
        if *at != second || date.is_empty() {
            *at = second;
            *date = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + now);
        }
        out.extend_from_slice(date.as_bytes());
    });
}

/// The rest of the connection, from the request in `conn.read`, served by hyper.
async fn hyper<S: App>(conn: Connection, shared: &Shared<S>) {
    let Connection {
        io,
        read,
        extensions,
        ..
    } = conn;
    let service = shared.service.clone();
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().extend(extensions.clone());
        let active = Active::start(&tracked);
        let call = service.clone().call(req);
        async move {
            let res = call.await?;
            Ok::<_, Infallible>(res.map(|body| {
                Body::new(Tracked {
                    body,
                    _active: active,
                })
            }))
        }
    });
    let io = TokioIo::new(Prefixed {
        prefix: read.freeze(),
        io,
    });
    let mut connection = pin!(shared.hyper.serve_connection(io, service));
    let stop = shared.stop.notified();
    let mut stop = pin!(stop);
    stop.as_mut().enable();
    let result = if shared.stopping() {
        connection.as_mut().graceful_shutdown();
        connection.await
    } else {
        tokio::select! {
            result = connection.as_mut() => result,
            () = stop => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            () = activity.idle(shared.client_timeout) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
    };
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// The requests in flight on a connection served by hyper, and when the last one ended.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request ended, in milliseconds since `opened`.
    ended: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            ended: AtomicU64::new(0),
        }
    }

    fn since_opened(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Done once the connection has had no request in flight for `timeout`.
    async fn idle(&self, timeout: Duration) {
        let mut wake = self.opened + timeout;
        loop {
            tokio::time::sleep_until(wake).await;
            let ended = self.opened + Duration::from_millis(self.ended.load(Ordering::SeqCst));
            wake = if self.in_flight.load(Ordering::SeqCst) > 0 {
                // Busy: look again a timeout from now.
                Instant::now() + timeout
            } else if Instant::now() >= ended + timeout {
                return;
            } else {
                // Busy since: a timeout after the last request ended.
                ended + timeout
            };
        }
    }
}

/// A request in flight, from its call until its response body is dropped.
struct Active(Arc<Activity>);

impl Active {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(activity.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.ended.store(self.0.since_opened(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request [`Active`] until it is dropped.
struct Tracked {
    body: Body,
    _active: Active,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A stream that first yields bytes already read from it.
struct Prefixed {
    prefix: Bytes,
    io: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
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
