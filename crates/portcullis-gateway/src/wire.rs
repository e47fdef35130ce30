//! HTTP/1.1 on the wire, as the downstream connection loop and the upstream client both need
//! it: socket reads and writes, waits against a deadline, and the elements of a header value.

use std::{
    io,
    ops::Range,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::{
    net::TcpStream,
    time::{Instant, Sleep},
};

/// Header map room beyond a parsed message's own headers, for those the gateway adds
/// (`x-request-id`) without growing the map.
const HEADROOM: usize = 4;

/// How much a read buffer grows by.
const READ_CHUNK: usize = 16 * 1024;

/// Write all of `buf`.
pub(crate) async fn write_all(io: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        io.writable().await?;
        match io.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read what has arrived into `buf`. Through `AsyncRead`, whose short read (the socket's buffer
/// drained) clears the readiness: a later `try_read` on an idle socket then costs no system
/// call.
pub(crate) fn poll_read_more(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// `poll` once it is ready; `None` once `deadline` has passed. One timer serves a connection's
/// successive waits: set for an earlier deadline, it is re-armed for this one when it fires, so
/// that a wait costs a clock read, not a timer registration.
pub(crate) fn within<T>(
    mut timer: Pin<&mut Sleep>,
    deadline: Instant,
    cx: &mut Context<'_>,
    poll: Poll<T>,
) -> Poll<Option<T>> {
    if let Poll::Ready(value) = poll {
        return Poll::Ready(Some(value));
    }
    while timer.as_mut().poll(cx).is_ready() {
        if Instant::now() >= deadline {
            return Poll::Ready(None);
        }
        timer.as_mut().reset(deadline);
    }
    Poll::Pending
}

/// The comma-separated elements of a header value, trimmed, empty ones skipped.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// An error for bytes that are not the HTTP they should be.
pub(crate) fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Where `part`, a slice of `buf`, lies in it: to be sliced out of `buf` once it is frozen.
pub(crate) fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let from = part.as_ptr() as usize - buf.as_ptr() as usize;
    from..from + part.len()
}

/// A header map of `fields`, each value the range of `head` it names (sliced, not copied),
/// with room for the headers the gateway adds; `None` when `http` refuses a value.
pub(crate) fn header_map(
    head: &Bytes,
    fields: Vec<(HeaderName, Range<usize>)>,
) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len() + HEADROOM);
    for (name, value) in fields {
        map.append(
            name,
            HeaderValue::from_maybe_shared(head.slice(value)).ok()?,
        );
    }
    Some(map)
}
