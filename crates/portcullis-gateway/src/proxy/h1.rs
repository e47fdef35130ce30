//! Forwarding a request without a body over a downstream connection's own upstream connection.
//!
//! Most requests through an access-control gateway carry no body (`GET`, `HEAD`, `DELETE`).
//! For them the proxy writes the request head itself and reads the response head and body
//! straight from the socket, in the downstream connection's task: no connection task, no
//! channels between tasks. Requests with a body, and every case this module declines, go
//! through hyper's client.
//!
//! The response is read as RFC 9112 §6.3 says: no body after `HEAD`, 1xx, 204 and 304; a
//! `chunked` transfer coding is decoded (trailers are dropped); otherwise `Content-Length`
//! (every value the same, or the response is refused); otherwise the body runs to the end of the
//! connection. Interim 1xx responses are skipped; `101` is refused (upgrades are not
//! forwarded). A connection is reused only after a complete HTTP/1.1 response that did not ask
//! to close, with nothing after it. Anything malformed is an error: 502 before the head, an
//! aborted body after it. Heads are limited to 64 KiB and 100 headers.
//!
//! Each request has a deadline for its response head. A connection keeps one timer for all its
//! requests, re-armed only when it fires before the deadline of the request then waiting (as the
//! downstream connection loop does): a request costs a clock read, not a timer registration.

use std::{
    future::{Future, poll_fn},
    io,
    mem::MaybeUninit,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{
    HeaderName, HeaderValue, Method, Response, StatusCode, Version, header, request::Parts,
};
use http_body::{Frame, SizeHint};
use tokio::{
    net::TcpStream,
    time::{Instant, Sleep},
};

use crate::wire::{header_map, invalid, poll_read_more, range_in, tokens, within, write_all};

/// The largest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers in a response head.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line or trailer section.
const MAX_LINE: usize = 4 * 1024;

/// An open upstream connection between requests.
#[derive(Debug)]
pub(super) struct Connection {
    io: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
    /// Set for the deadline of a request, or an earlier one's.
    timer: Pin<Box<Sleep>>,
    _open: Open,
}

impl Connection {
    /// A connection over `io`, counted in `open` while it lives, for a first request due by
    /// `deadline`.
    pub(super) fn new(io: TcpStream, open: &Arc<AtomicUsize>, deadline: Instant) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self {
            io,
            read: BytesMut::new(),
            write: Vec::with_capacity(1024),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            _open: Open(open.clone()),
        }
    }
}

impl Connection {
    /// Whether the upstream closed the connection (or sent something unasked) while it was
    /// idle. Free when nothing arrived: the reactor's readiness says so without a system call.
    pub(super) fn closed_while_idle(&mut self) -> bool {
        !matches!(
            self.io.try_read_buf(&mut self.read),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }
}

/// Counts a connection while it is open.
#[derive(Debug)]
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a request could not be sent, or its response head not read.
#[derive(Debug)]
pub(super) enum SendError {
    /// The connection was found closed before any of the response arrived: nothing was
    /// processed, so a request that may be repeated can go again on a new connection.
    Closed(io::Error),
    Failed(io::Error),
    /// No response head by the deadline.
    TimedOut,
}

/// Whether `parts` may be forwarded here: no body, as the request's headers say.
pub(super) fn eligible(parts: &Parts, body_ended: bool) -> bool {
    body_ended
        && !parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

/// Send the head of `parts` (origin-form URI, headers already prepared) and read the response
/// head by `deadline`. The body is read from the returned [`Body`], which hands the connection
/// to `reuse` once the response is complete and the connection may carry another request.
pub(super) async fn send<F>(
    mut conn: Connection,
    parts: &Parts,
    extra: &super::Extra,
    deadline: Instant,
    reuse: F,
) -> Result<Response<Body<F>>, SendError>
where
    F: FnOnce(Connection) + Unpin,
{
    if conn.timer.deadline() > deadline {
        conn.timer.as_mut().reset(deadline);
    }
    encode(parts, extra, &mut conn.write);
    let written = {
        let mut write = pin!(write_all(&conn.io, &conn.write));
        poll_fn(|cx| {
            let written = write.as_mut().poll(cx);
            within(conn.timer.as_mut(), deadline, cx, written)
        })
        .await
    };
    match written {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(SendError::Closed(e)),
        None => return Err(SendError::TimedOut),
    }
    let no_body_expected = parts.method == Method::HEAD;
    let mut received_any = false;
    loop {
        // Nothing to parse before the first read.
        let parsed = if conn.read.is_empty() {
            None
        } else {
            parse_head(&mut conn.read).map_err(SendError::Failed)?
        };
        if let Some((head, framing)) = parsed {
            let framing = if no_body_expected {
                Framing::Length(0)
            } else {
                framing
            };
            let reusable = head.reusable && !matches!(framing, Framing::Close);
            let (parts, ()) = head.response.into_parts();
            let mut body = Body {
                conn: Some(conn),
                framing,
                reusable,
                reuse: Some(reuse),
            };
            if framing == Framing::Length(0) {
                // Nothing to read: the connection is free now (the server may never poll an
                // empty body).
                body.finish();
            }
            return Ok(Response::from_parts(parts, body));
        }
        let read = poll_fn(|cx| {
            let read = poll_read_more(&mut conn.io, &mut conn.read, cx);
            within(conn.timer.as_mut(), deadline, cx, read)
        });
        match read.await.ok_or(SendError::TimedOut)? {
            Ok(0) if !received_any && conn.read.is_empty() => {
                return Err(SendError::Closed(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => {
                return Err(SendError::Failed(invalid(
                    "the upstream closed the connection in the response head",
                )));
            }
            Ok(_) => received_any = true,
            Err(e) if !received_any => return Err(SendError::Closed(e)),
            Err(e) => return Err(SendError::Failed(e)),
        }
    }
}

/// `GET /path HTTP/1.1`, the request's headers, the proxy's, an empty line.
fn encode(parts: &Parts, extra: &super::Extra, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Header values cannot hold CR or LF (`http` checks), so nothing can be smuggled in.
    let mut line = |name: &HeaderName, value: &HeaderValue| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in &parts.headers {
        line(name, value);
    }
    extra.each(line);
    out.extend_from_slice(b"\r\n");
}

struct Head {
    response: Response<()>,
    /// HTTP/1.1 without `Connection: close`.
    reusable: bool,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    Chunked(Chunk),
    /// At the end of the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty line.
    Trailers,
}

/// The next final (non-1xx) response head in `buf`, taken out of it; `None` when incomplete.
fn parse_head(buf: &mut BytesMut) -> io::Result<Option<(Head, Framing)>> {
    loop {
        // Room for the most headers, left uninitialised: nothing to set up for a short head.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(invalid("the upstream's response head is too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(invalid("the upstream sent too many headers"));
            }
            Err(_) => return Err(invalid("the upstream's response head is malformed")),
        };
        let code = parsed.code.unwrap_or_default();
        if code == 101 {
            return Err(invalid("the upstream switched protocols"));
        }
        if (100..200).contains(&code) {
            // Interim: skipped.
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code)
            .map_err(|_| invalid("the upstream's status code is invalid"))?;
        let version = if parsed.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let mut close = version != Version::HTTP_11;
        let mut chunked = None;
        let mut length: Option<u64> = None;
        // The values are sliced out of the head once it is frozen: no copy of each.
        let mut fields = Vec::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| invalid("the upstream sent an invalid header name"))?;
            if name == header::CONNECTION {
                close |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
            } else if name == header::TRANSFER_ENCODING {
                // The final coding decides; a later header line continues the list.
                if let Some(last) = tokens(h.value).last() {
                    chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
                }
            } else if name == header::CONTENT_LENGTH {
                for t in tokens(h.value) {
                    let n = std::str::from_utf8(t)
                        .ok()
                        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| invalid("the upstream's Content-Length is invalid"))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(invalid("the upstream sent conflicting Content-Lengths"));
                    }
                    length = Some(n);
                }
            }
            fields.push((name, range_in(buf, h.value)));
        }
        let head = buf.split_to(len).freeze();
        let mut map = header_map(&head, fields)
            .ok_or_else(|| invalid("the upstream sent an invalid header value"))?;
        let framing = if code == 204 || code == 304 {
            Framing::Length(0)
        } else {
            match (chunked, length) {
                (Some(true), _) => Framing::Chunked(Chunk::Size),
                (Some(false), _) => Framing::Close,
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::Close,
            }
        };
        if chunked.is_some() {
            // Both framings named: such a response may be an attack; never reuse after it.
            close |= length.is_some();
            map.remove(header::CONTENT_LENGTH);
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = map;
        return Ok(Some((
            Head {
                response,
                reusable: !close,
            },
            framing,
        )));
    }
}

/// A response body read from the upstream connection.
pub(crate) struct Body<F> {
    conn: Option<Connection>,
    framing: Framing,
    reusable: bool,
    reuse: Option<F>,
}

impl<F> std::fmt::Debug for Body<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl<F: FnOnce(Connection) + Unpin> Body<F> {
    /// The body ended: the connection goes back when it can carry another request.
    fn finish(&mut self) {
        if let (Some(conn), Some(reuse)) = (self.conn.take(), self.reuse.take())
            && self.reusable
            && conn.read.is_empty()
        {
            reuse(conn);
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl<F: FnOnce(Connection) + Unpin> http_body::Body for Body<F> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match this.framing {
                Framing::Length(0) => Step::Done,
                Framing::Length(n) => match take(&mut conn.read, n) {
                    Some(data) => {
                        this.framing = Framing::Length(n - data.len() as u64);
                        Step::Data(data)
                    }
                    None => Step::Read,
                },
                Framing::Close => match take(&mut conn.read, u64::MAX) {
                    Some(data) => Step::Data(data),
                    None => Step::Read,
                },
                Framing::Chunked(chunk) => match decode(chunk, &mut conn.read) {
                    Ok((next, data)) => {
                        this.framing = Framing::Chunked(next);
                        match data {
                            Decoded::Data(data) => Step::Data(data),
                            Decoded::Progress => continue,
                            Decoded::More => Step::Read,
                            Decoded::End => Step::Done,
                        }
                    }
                    Err(e) => return this.fail(e),
                },
            };
            match step {
                Step::Data(data) => {
                    if this.framing == Framing::Length(0) {
                        // The server may not poll again once the size hint is met.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Step::Read => match ready!(poll_read_more(&mut conn.io, &mut conn.read, cx)) {
                    Ok(0) if this.framing == Framing::Close => {
                        this.reusable = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(0) => {
                        return this.fail(invalid("the upstream closed the connection mid-body"));
                    }
                    Ok(_) => {}
                    Err(e) => return this.fail(e),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) if self.conn.is_some() => SizeHint::with_exact(n),
            Framing::Length(_) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

enum Step {
    Data(Bytes),
    Read,
    Done,
}

/// Up to `max` buffered bytes, or `None` when none are buffered.
fn take(buf: &mut BytesMut, max: u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(max).map_or(buf.len(), |max| max.min(buf.len()));
    Some(buf.split_to(n).freeze())
}

enum Decoded {
    Data(Bytes),
    /// A step that yields nothing (a size line, a CRLF): decode again.
    Progress,
    /// Needs more bytes.
    More,
    End,
}

/// One step of the chunked coding (RFC 9112 §7.1) from `buf`.
fn decode(state: Chunk, buf: &mut BytesMut) -> io::Result<(Chunk, Decoded)> {
    match state {
        Chunk::Size => {
            let Some(line) = line(buf)? else {
                return Ok((state, Decoded::More));
            };
            // chunk-size [ chunk-ext ]: extensions are ignored.
            let size = line
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
                return Err(invalid("the upstream sent a malformed chunk size"));
            }
            let size = size.iter().fold(0u64, |n, b| {
                n * 16 + u64::from((*b as char).to_digit(16).unwrap_or(0))
            });
            let next = if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            };
            Ok((next, Decoded::Progress))
        }
        Chunk::Data(left) => match take(buf, left) {
            Some(data) => {
                let left = left - data.len() as u64;
                let next = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                Ok((next, Decoded::Data(data)))
            }
            None => Ok((state, Decoded::More)),
        },
        Chunk::DataEnd => match line(buf)? {
            Some(rest) if rest.is_empty() => Ok((Chunk::Size, Decoded::Progress)),
            Some(_) => Err(invalid("the upstream's chunk is longer than its size")),
            None => Ok((state, Decoded::More)),
        },
        Chunk::Trailers => match line(buf)? {
            Some(rest) if rest.is_empty() => Ok((state, Decoded::End)),
            Some(_) => Ok((state, Decoded::Progress)),
            None => Ok((state, Decoded::More)),
        },
    }
}

/// The next CRLF-terminated line in `buf`, taken out of it without its CRLF.
fn line(buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => {
            let line = buf.split_to(end + 1).freeze();
            Ok(Some(line.slice(..end - 1)))
        }
        Some(_) => Err(invalid("the upstream sent a line without CR")),
        None if buf.len() > MAX_LINE => Err(invalid("the upstream sent an overlong line")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, sync::Mutex, time::Duration};

    use http::HeaderMap;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// One scripted answer: written in these pieces (with a pause between them), then the
    /// connection is closed when `close` is set.
    struct Answer {
        pieces: Vec<&'static [u8]>,
        close: bool,
    }

    fn answer(bytes: &'static [u8]) -> Answer {
        Answer {
            pieces: vec![bytes],
            close: false,
        }
    }

    /// A raw HTTP/1 upstream that answers each request head with the next scripted answer and
    /// counts connections.
    async fn upstream(script: Vec<Answer>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let (mut io, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                tokio::spawn(async move {
                    loop {
                        // One request head in each write of the tests' client.
                        if super::super::tests::read_head(&mut io).await.is_none() {
                            return;
                        }
                        let Some(answer) = script.lock().unwrap().pop_front() else {
                            return;
                        };
                        for (i, piece) in answer.pieces.iter().enumerate() {
                            if i > 0 {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            io.write_all(piece).await.unwrap();
                        }
                        if answer.close {
                            return;
                        }
                    }
                });
            }
        });
        (addr, connections)
    }

    fn request(method: Method, path: &str) -> Parts {
        let (parts, ()) = http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    fn extra() -> super::super::Extra {
        super::super::Extra {
            host: HeaderValue::from_static("upstream"),
            forwarded_host: None,
            forwarded_for: Some(HeaderValue::from_static("10.0.0.1")),
            identity: None,
            assertion: None,
        }
    }

    type Returned = Arc<Mutex<Option<Connection>>>;

    /// A deadline no test reaches.
    fn in_a_while() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    async fn connect(addr: std::net::SocketAddr) -> Connection {
        let io = TcpStream::connect(addr).await.unwrap();
        Connection::new(io, &Arc::new(AtomicUsize::new(0)), in_a_while())
    }

    /// The status, headers and whole body of a response, and the connection if it came back for
    /// reuse.
    type Roundtrip = Result<
        (
            StatusCode,
            HeaderMap,
            Result<Bytes, io::Error>,
            Option<Connection>,
        ),
        SendError,
    >;

    /// Send `parts` on `conn`; the status, headers and whole body, and whether the connection
    /// came back for reuse.
    async fn roundtrip(conn: Connection, parts: &Parts) -> Roundtrip {
        roundtrip_by(conn, parts, in_a_while()).await
    }

    /// [`roundtrip`], with the response head due by `deadline`.
    async fn roundtrip_by(conn: Connection, parts: &Parts, deadline: Instant) -> Roundtrip {
        let returned: Returned = Arc::default();
        let back = returned.clone();
        let res = send(conn, parts, &extra(), deadline, move |conn| {
            *back.lock().unwrap() = Some(conn);
        })
        .await?;
        let (head, body) = res.into_parts();
        let body = body.collect().await.map(|c| c.to_bytes());
        let conn = returned.lock().unwrap().take();
        Ok((head.status, head.headers, body, conn))
    }

    #[tokio::test]
    async fn content_length_bodies_and_reuse() {
        let (addr, connections) = upstream(vec![
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-up: 1\r\n\r\nhello"),
            Answer {
                pieces: vec![
                    b"HTTP/1.1 201 Created\r\ncontent-length: 6\r\n\r\nwor",
                    b"ld!",
                ],
                close: false,
            },
        ])
        .await;
        let get = request(Method::GET, "/a?b=c");
        let (status, headers, body, conn) = roundtrip(connect(addr).await, &get).await.unwrap();
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::OK, Bytes::from("hello"))
        );
        assert_eq!(headers["x-up"], "1");
        let (status, _, body, conn) = roundtrip(conn.expect("reusable"), &get).await.unwrap();
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::CREATED, Bytes::from("world!"))
        );
        assert!(conn.is_some());
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_across_reads() {
        let (addr, _) = upstream(vec![Answer {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n5;ext=1\r\nhel",
                b"lo\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n",
                b"\r\n",
            ],
            close: false,
        }])
        .await;
        let (status, headers, body, conn) =
            roundtrip(connect(addr).await, &request(Method::GET, "/"))
                .await
                .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap(), Bytes::from("hello world"));
        assert!(
            !headers.contains_key(header::CONTENT_LENGTH),
            "the chunked coding wins"
        );
        assert!(conn.is_none(), "both framings named: not reused");
    }

    #[tokio::test]
    async fn bodies_without_length_run_to_the_end_of_the_connection() {
        let (addr, _) = upstream(vec![Answer {
            pieces: vec![b"HTTP/1.0 200 OK\r\n\r\nall of ", b"it"],
            close: true,
        }])
        .await;
        let (_, _, body, conn) = roundtrip(connect(addr).await, &request(Method::GET, "/"))
            .await
            .unwrap();
        assert_eq!(body.unwrap(), Bytes::from("all of it"));
        assert!(conn.is_none());
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_empty_bodies_free_the_connection() {
        let (addr, connections) = upstream(vec![
            answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
            answer(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"),
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"),
        ])
        .await;
        let (status, _, body, conn) = roundtrip(connect(addr).await, &request(Method::GET, "/"))
            .await
            .unwrap();
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::NO_CONTENT, Bytes::new())
        );
        // HEAD: a length, but no body follows.
        let (status, headers, body, conn) = roundtrip(conn.unwrap(), &request(Method::HEAD, "/"))
            .await
            .unwrap();
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::new()));
        assert_eq!(headers[header::CONTENT_LENGTH], "10");
        let (status, _, body, conn) = roundtrip(conn.unwrap(), &request(Method::GET, "/"))
            .await
            .unwrap();
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::NOT_MODIFIED, Bytes::new())
        );
        let (_, _, body, conn) = roundtrip(conn.unwrap(), &request(Method::GET, "/"))
            .await
            .unwrap();
        assert_eq!(body.unwrap(), Bytes::from("ok"));
        assert!(conn.is_none(), "the upstream asked to close");
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_reported_as_closed() {
        let (addr, _) = upstream(vec![Answer {
            pieces: vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
            close: true,
        }])
        .await;
        let get = request(Method::GET, "/");
        let (_, _, _, conn) = roundtrip(connect(addr).await, &get).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = roundtrip(conn.expect("it did not say it would close"), &get).await;
        assert!(matches!(again, Err(SendError::Closed(_))), "{again:?}");
    }

    #[tokio::test]
    async fn malformed_responses_are_errors() {
        for (bytes, what) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
                "conflicting lengths",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "negative length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1 2\r\n\r\n",
                "two numbers",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: ws\r\n\r\n",
                "an upgrade",
            ),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "a bad status"),
            (b"SMTP ready\r\n\r\n", "not HTTP"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n",
                "cut off in the head",
            ),
        ] {
            let script: &'static [u8] = bytes;
            let (addr, _) = upstream(vec![Answer {
                pieces: vec![script],
                close: true,
            }])
            .await;
            let res = roundtrip(connect(addr).await, &request(Method::GET, "/")).await;
            assert!(matches!(res, Err(SendError::Failed(_))), "{what}: {res:?}");
        }
        for (bytes, what) in [
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"[..],
                "a bad chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokay\r\n0\r\n\r\n",
                "a long chunk",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
                "cut off in the body",
            ),
        ] {
            let script: &'static [u8] = bytes;
            let (addr, _) = upstream(vec![Answer {
                pieces: vec![script],
                close: true,
            }])
            .await;
            let (_, _, body, conn) = roundtrip(connect(addr).await, &request(Method::GET, "/"))
                .await
                .unwrap();
            assert!(body.is_err(), "{what}");
            assert!(conn.is_none(), "{what}");
        }
    }

    #[test]
    fn heads_of_up_to_100_headers_are_read_whole() {
        let head = |n: usize| {
            let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
            for i in 1..n {
                head.extend_from_slice(format!("x-h{i}: value {i}\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\nok");
            BytesMut::from(&head[..])
        };
        // A few, many, and at the limit.
        for n in [2, 17, MAX_HEADERS] {
            let mut buf = head(n);
            let (head, framing) = parse_head(&mut buf).unwrap().unwrap();
            let headers = head.response.headers();
            assert_eq!(headers.len(), n);
            assert_eq!(headers["x-h1"], "value 1");
            assert_eq!(headers[format!("x-h{}", n - 1)], format!("value {}", n - 1));
            assert_eq!(framing, Framing::Length(2));
            assert_eq!(&buf[..], b"ok", "the body stays");
        }
        let err = parse_head(&mut head(MAX_HEADERS + 1)).err().unwrap();
        assert_eq!(err.to_string(), "the upstream sent too many headers");
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        static HUGE: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            while head.len() <= MAX_HEAD {
                head.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
            }
            head
        });
        let (addr, _) = upstream(vec![Answer {
            pieces: vec![HUGE.as_slice()],
            close: true,
        }])
        .await;
        let res = roundtrip(connect(addr).await, &request(Method::GET, "/")).await;
        assert!(matches!(res, Err(SendError::Failed(_))), "{res:?}");
    }

    #[test]
    fn the_request_head_is_written_as_http_1_1() {
        let mut parts = request(Method::DELETE, "/orgs/a/reports/7?force=1");
        parts.headers.insert(
            HeaderName::from_static("x-portcullis-org"),
            HeaderValue::from_static("org_a"),
        );
        let mut out = Vec::new();
        encode(&parts, &extra(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "DELETE /orgs/a/reports/7?force=1 HTTP/1.1\r\nx-portcullis-org: org_a\r\n\
             host: upstream\r\nx-forwarded-proto: http\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
        );
    }

    #[test]
    fn only_requests_without_a_body_are_eligible() {
        let mut parts = request(Method::GET, "/");
        assert!(eligible(&parts, true));
        assert!(!eligible(&parts, false), "a body the server still reads");
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(eligible(&parts, true));
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(!eligible(&parts, true));
        let mut chunked = request(Method::POST, "/");
        chunked.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(!eligible(&chunked, true));
    }

    #[tokio::test]
    async fn each_request_has_its_own_deadline_on_one_timer() {
        let late = || Answer {
            // The head completes 20 ms after its first line.
            pieces: vec![b"HTTP/1.1 200 OK\r\n", b"content-length: 0\r\n\r\n"],
            close: false,
        };
        let (addr, _) = upstream(vec![
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            late(),
            late(),
        ])
        .await;
        let get = request(Method::GET, "/");
        let io = TcpStream::connect(addr).await.unwrap();
        let first = Instant::now() + Duration::from_millis(50);
        let conn = Connection::new(io, &Arc::new(AtomicUsize::new(0)), first);
        let (status, _, _, conn) = roundtrip_by(conn, &get, first).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        // The first deadline passes (its timer fires) while the connection is idle.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let later = Instant::now() + Duration::from_secs(5);
        let (status, _, _, conn) = roundtrip_by(conn.expect("reusable"), &get, later)
            .await
            .unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "a timer that fired earlier is re-armed"
        );
        // A deadline before the timer's: the timer is brought forward.
        let soon = Instant::now() + Duration::from_millis(5);
        let res = roundtrip_by(conn.expect("reusable"), &get, soon).await;
        assert!(matches!(res, Err(SendError::TimedOut)), "{res:?}");
        assert!(Instant::now() < later, "answered by the earlier deadline");
    }
}
