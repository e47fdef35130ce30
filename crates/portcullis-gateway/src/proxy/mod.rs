//! The forwarding service: streams a request to the upstream and its response back.
//!
//! Before forwarding it removes every incoming `x-portcullis-*` header, the credential (unless
//! configured) and the hop-by-hop headers, then adds the identity of the [`Principal`] the
//! layers in front of it inserted:
//!
//! | header | value |
//! |---|---|
//! | `x-portcullis-subject` | the user id, or the key id of a service account |
//! | `x-portcullis-subject-kind` | `user` or `service_account` |
//! | `x-portcullis-actor` | who acts for the subject (RFC 8693 `act`), when someone does |
//! | `x-portcullis-org` | the organization the request acts in |
//! | `x-portcullis-org-role` | the role in it, without Clerk's `org:` prefix |
//! | `x-portcullis-scopes` | the granted scopes, sorted, space separated |
//! | `x-request-id` | the request id (set by the audit layer) |
//!
//! Bodies are streamed both ways, never buffered. An unreachable upstream is answered 502, one
//! that sends no response head in time 504; both are audited (`proxy.upstream_failed`).
//!
//! A request without a body that carries a [`Downstream`] (every connection [`crate::serve`]
//! accepts gives its requests one) is forwarded over an upstream connection of its downstream
//! connection's own, as long as that connection sends one request at a time: no pool to check
//! out from, no connection shared between clients, and the response read in the request's own
//! task (see the `h1` module). Requests with a body, requests that overlap on one
//! connection (HTTP/2), those without a `Downstream`, and connections beyond
//! [`MAX_DEDICATED`](Proxy::MAX_DEDICATED) go through hyper's client and its shared pool.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo};
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body::Body as _;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use portcullis_core::{
    Principal, RequestId,
    audit::{AuditEvent, AuditHandle, Outcome},
    clock,
};
use tokio::time::Instant;
use tower::Service;

use crate::assertion::{ASSERTION, Assertions};
use crate::wire::tokens;

mod h1;

/// The identity headers, in the order of the contract.
pub const SUBJECT: HeaderName = HeaderName::from_static("x-portcullis-subject");
/// `user` or `service_account`.
pub const SUBJECT_KIND: HeaderName = HeaderName::from_static("x-portcullis-subject-kind");
/// Who acts for the subject.
pub const ACTOR: HeaderName = HeaderName::from_static("x-portcullis-actor");
/// The organization.
pub const ORG: HeaderName = HeaderName::from_static("x-portcullis-org");
/// The role in the organization.
pub const ORG_ROLE: HeaderName = HeaderName::from_static("x-portcullis-org-role");
/// The scopes, space separated.
pub const SCOPES: HeaderName = HeaderName::from_static("x-portcullis-scopes");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Where and how to forward.
#[derive(Clone)]
pub struct Proxy {
    target: Arc<Target>,
}

struct Target {
    /// The shared pool: for requests that overlap on one downstream connection.
    client: Client<HttpConnector, Body>,
    connector: HttpConnector,
    /// `http://authority`, what the connector connects to.
    origin: Uri,
    authority: Authority,
    /// The `Host` header sent upstream.
    host: HeaderValue,
    /// Upstream connections of their own that are open now.
    dedicated: Arc<AtomicUsize>,
    /// The upstream URL's path without its trailing `/` (empty for `/`).
    base_path: String,
    timeout: Duration,
    forward_credential: bool,
    assertions: Option<Assertions>,
    realm: Box<str>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("authority", &self.target.authority)
            .field("base_path", &self.target.base_path)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Forward to `upstream` (an `http://` URL), waiting at most `timeout` for a response head.
    pub fn new(upstream: &url::Url, timeout: Duration, forward_credential: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector.clone());
        let authority = match upstream.port() {
            Some(port) => format!("{}:{port}", upstream.host_str().unwrap_or_default()),
            None => upstream.host_str().unwrap_or_default().to_owned(),
        };
        let authority: Authority = authority
            .parse()
            .expect("a URL's host and port are an authority");
        Self {
            target: Arc::new(Target {
                client,
                connector,
                origin: Uri::builder()
                    .scheme(Scheme::HTTP)
                    .authority(authority.clone())
                    .path_and_query("/")
                    .build()
                    .expect("scheme and authority make a URI"),
                host: HeaderValue::from_str(authority.as_str())
                    .expect("an authority is a header value"),
                authority,
                dedicated: Arc::new(AtomicUsize::new(0)),
                base_path: upstream.path().trim_end_matches('/').to_owned(),
                timeout,
                forward_credential,
                assertions: None,
                realm: portcullis_core::DEFAULT_REALM.into(),
            }),
        }
    }

    /// Also forward a signed assertion of the identity (`x-portcullis-assertion`).
    pub fn assertions(mut self, assertions: Option<Assertions>) -> Self {
        self.configure().assertions = assertions;
        self
    }

    /// The realm named in the proxy's own refusals (default `portcullis`).
    pub fn realm(mut self, realm: &str) -> Self {
        self.configure().realm = realm.into();
        self
    }

    fn configure(&mut self) -> &mut Target {
        Arc::get_mut(&mut self.target).expect("configured before it is cloned")
    }

    async fn forward(self, req: Request<Body>) -> Response<Body> {
        let (parts, body, extra) = match self.upstream_request(req) {
            Ok(r) => r,
            Err(response) => return response,
        };
        let deadline = Instant::from_std(clock::deadline(self.target.timeout));
        let failure = match self.send(&parts, body, &extra, deadline).await {
            Ok(mut res) => {
                scrub(res.headers_mut(), Scrub::Response);
                return res;
            }
            Err(failure) => failure,
        };
        // What the answer and the audit event need is still in the request's parts: its id
        // (forwarded), the audit handle and the principal (in its extensions), and its path
        // (behind the upstream's base path).
        let request_id = RequestId::from_headers(&parts.headers);
        let path = parts.uri.path();
        let path = path.strip_prefix(&*self.target.base_path).unwrap_or(path);
        if let Some(AuditHandle(sink, _)) = parts.extensions.get::<AuditHandle>() {
            let mut event = AuditEvent::new("proxy.upstream_failed", Outcome::Failure)
                .reason(failure.code())
                .request(&request_id, &parts.method, path);
            if let Some(p) = parts.extensions.get::<Principal>() {
                event = event.by(p);
            }
            if sink.record(event).await.is_err() {
                tracing::error!(target: "portcullis::audit", "an upstream failure could not be audited");
            }
        }
        failure.response(&request_id)
    }

    /// How many upstream connections of their own downstream connections may hold at once;
    /// the others share a pool.
    pub const MAX_DEDICATED: usize = 1024;

    /// Send a request without a body over the downstream connection's own upstream
    /// connection when it has one free (or may open one), anything else through the pool; the
    /// response head by `deadline`.
    ///
    /// Only the reuse of an open connection is inline; opening one and the pool are boxed, so
    /// that the common request's future stays small.
    async fn send(
        &self,
        parts: &http::request::Parts,
        body: Body,
        extra: &Extra,
        deadline: Instant,
    ) -> Result<Response<Body>, Failure> {
        let Some(downstream) = parts
            .extensions
            .get::<Downstream>()
            .filter(|_| h1::eligible(parts, body.is_end_stream()))
        else {
            return Box::pin(self.pooled(parts, body, extra, deadline)).await;
        };
        match downstream.lease() {
            Lease::Busy => Box::pin(self.pooled(parts, body, extra, deadline)).await,
            Lease::Vacant(lease) => Box::pin(self.dedicated(lease, parts, extra, deadline)).await,
            Lease::Idle(lease, mut conn) => {
                if conn.closed_while_idle() {
                    drop(conn);
                    return Box::pin(self.dedicated(lease, parts, extra, deadline)).await;
                }
                let reuse = move |conn| lease.release(conn);
                match h1::send(conn, parts, extra, deadline, reuse).await {
                    Ok(res) => Ok(res.map(Body::new)),
                    // The upstream closed the idle connection (its keep-alive timeout, say) just
                    // as the request went out: one that may be repeated goes again on a new
                    // connection, as nginx does. (The failed lease left the slot vacant.)
                    Err(h1::SendError::Closed(_)) if parts.method.is_idempotent() => {
                        match downstream.lease() {
                            Lease::Vacant(lease) => {
                                Box::pin(self.dedicated(lease, parts, extra, deadline)).await
                            }
                            _ => Box::pin(self.pooled(parts, body, extra, deadline)).await,
                        }
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Open an upstream connection for the downstream connection of `lease` and send on it.
    async fn dedicated(
        &self,
        lease: SlotLease,
        parts: &http::request::Parts,
        extra: &Extra,
        deadline: Instant,
    ) -> Result<Response<Body>, Failure> {
        let target = &*self.target;
        if target.dedicated.load(Ordering::Relaxed) >= Self::MAX_DEDICATED {
            drop(lease);
            return self.pooled(parts, Body::empty(), extra, deadline).await;
        }
        let connect = target.connector.clone().call(target.origin.clone());
        let io = match tokio::time::timeout_at(deadline, connect).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(Failure::unreachable(&e)),
            Err(_) => return Err(Failure::Timeout),
        };
        let conn = h1::Connection::new(io.into_inner(), &target.dedicated, deadline);
        let reuse = move |conn| lease.release(conn);
        let res = h1::send(conn, parts, extra, deadline, reuse).await?;
        Ok(res.map(Body::new))
    }

    /// Through the shared pool, which takes a request of its own: the absolute URI, the
    /// request's headers (copied: `parts` keeps what a failure's answer needs) and the added
    /// ones. Its extensions stay behind: hyper's client reads none.
    async fn pooled(
        &self,
        parts: &http::request::Parts,
        body: Body,
        extra: &Extra,
        deadline: Instant,
    ) -> Result<Response<Body>, Failure> {
        let target = &*self.target;
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.version_mut() = parts.version;
        let mut headers = parts.headers.clone();
        extra.each(|name, value| {
            headers.insert(name.clone(), value.clone());
        });
        *req.headers_mut() = headers;
        let mut uri = parts.uri.clone().into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(target.authority.clone());
        *req.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        match tokio::time::timeout_at(deadline, target.client.request(req)).await {
            Ok(Ok(res)) => Ok(res.map(Body::new)),
            Ok(Err(e)) => Err(Failure::unreachable(&e)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// The request as it goes upstream: origin-form URI under the base path, headers scrubbed,
    /// and the headers the proxy adds; or the refusal of an identity that cannot be forwarded.
    #[allow(clippy::result_large_err)]
    fn upstream_request(
        &self,
        req: Request<Body>,
    ) -> Result<(http::request::Parts, Body, Extra), Response<Body>> {
        let (mut parts, body) = req.into_parts();
        let target = &*self.target;
        let path_and_query = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let path_and_query: PathAndQuery = if target.base_path.is_empty() {
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            format!("{}{path_and_query}", target.base_path)
                .parse()
                .expect("a base path and a valid path make a valid path")
        };
        let authority = parts.uri.authority().cloned();
        // Origin form; the pool makes it absolute.
        parts.uri = Uri::from(path_and_query);

        let headers = &mut parts.headers;
        let what = if target.forward_credential {
            Scrub::RequestKeepingCredential
        } else {
            Scrub::Request
        };
        let seen = scrub(headers, what);
        // What the gateway sets replaces what the client sent. The host the client asked for:
        // its Host header, else (HTTP/2) the authority of its URI.
        let forwarded_host = if seen.host {
            headers.remove(header::HOST)
        } else {
            authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        };
        if seen.forwarded_host {
            headers.remove(X_FORWARDED_HOST);
        }
        if seen.forwarded_proto {
            headers.remove(X_FORWARDED_PROTO);
        }
        let earlier = if seen.forwarded_for {
            headers.remove(X_FORWARDED_FOR)
        } else {
            None
        };
        let peer = match parts.extensions.get::<Downstream>() {
            Some(d) => Some(d.0.peer.clone()),
            None => parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .and_then(|ConnectInfo(peer)| HeaderValue::try_from(peer.ip().to_string()).ok()),
        };
        let forwarded_for = match (earlier, peer) {
            // Appended to what earlier proxies said.
            (Some(earlier), Some(peer)) => Some(
                earlier
                    .to_str()
                    .ok()
                    .and_then(|earlier| {
                        let ip = peer.to_str().unwrap_or_default();
                        HeaderValue::try_from(format!("{earlier}, {ip}")).ok()
                    })
                    .unwrap_or(peer),
            ),
            (earlier, peer) => peer.or(earlier),
        };
        let mut extra = Extra {
            host: target.host.clone(),
            forwarded_host,
            forwarded_for,
            identity: None,
            assertion: None,
        };
        if let Some(principal) = parts.extensions.get::<Principal>() {
            let identity = match principal.derived(Identity::of) {
                Some(_) => IdentityOf::Derived(principal.clone()),
                // The slot holds something else: make them for this request.
                None => IdentityOf::Fresh(Box::new(Identity::of(principal))),
            };
            if identity.get().headers.is_none() {
                // A subject or org that cannot be a header value: refuse rather than forward a
                // mangled identity.
                let request_id = RequestId::from_headers(headers);
                return Err(portcullis_core::AuthError::invalid_token(
                    "the credential's identity cannot be forwarded",
                )
                .to_response(&target.realm, &request_id));
            }
            if let Some(assertions) = &target.assertions {
                extra.assertion = Some(assertions.header_for(principal, &identity.get().key));
            }
            extra.identity = Some(identity);
        }
        Ok((parts, body, extra))
    }
}

/// The headers the proxy adds to a request, kept out of its header map until it is sent: the
/// pool inserts them, the `h1` path writes them after the request's own.
struct Extra {
    host: HeaderValue,
    forwarded_host: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    identity: Option<IdentityOf>,
    assertion: Option<HeaderValue>,
}

impl Extra {
    fn each(&self, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        f(&header::HOST, &self.host);
        if let Some(v) = &self.forwarded_host {
            f(&X_FORWARDED_HOST, v);
        }
        f(&X_FORWARDED_PROTO, &HTTP);
        if let Some(v) = &self.forwarded_for {
            f(&X_FORWARDED_FOR, v);
        }
        if let Some(identity) = &self.identity
            && let Some(headers) = &identity.get().headers
        {
            for (name, value) in headers {
                f(name, value);
            }
        }
        if let Some(v) = &self.assertion {
            f(&ASSERTION, v);
        }
    }
}

const HTTP: HeaderValue = HeaderValue::from_static("http");

/// A principal's identity headers: kept with the principal, or made for this request.
enum IdentityOf {
    Derived(Principal),
    Fresh(Box<Identity>),
}

impl IdentityOf {
    fn get(&self) -> &Identity {
        match self {
            Self::Derived(p) => p
                .derived(Identity::of)
                .expect("derived when this was made, so kept"),
            Self::Fresh(identity) => identity,
        }
    }
}

/// What the proxy keeps for one downstream connection: the peer's address as an
/// `x-forwarded-for` value, and the upstream connection reused between its requests.
///
/// [`crate::serve`] puts one in the extensions of every request of a connection. [`Proxy`]
/// opens the upstream connection on the first request and reuses it while the downstream
/// connection sends one request at a time. Dropping the last clone (the downstream connection
/// ended) closes the upstream connection.
#[derive(Clone)]
pub struct Downstream(Arc<DownstreamInner>);

struct DownstreamInner {
    peer: HeaderValue,
    upstream: Mutex<SlotState>,
}

impl Downstream {
    /// The state of a new connection from `peer`.
    pub fn new(peer: SocketAddr) -> Self {
        Self(Arc::new(DownstreamInner {
            peer: HeaderValue::try_from(peer.ip().to_string())
                .expect("an IP address is a header value"),
            upstream: Mutex::new(SlotState::Vacant),
        }))
    }
}

impl std::fmt::Debug for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downstream")
            .field("peer", &self.0.peer)
            .finish_non_exhaustive()
    }
}

enum SlotState {
    /// No upstream connection yet (or the last one failed).
    Vacant,
    Idle(h1::Connection),
    /// A request of this downstream connection is using it.
    Busy,
}

enum Lease {
    Vacant(SlotLease),
    Idle(SlotLease, h1::Connection),
    Busy,
}

impl Downstream {
    fn slot(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // Nothing panics while holding it; a poisoned lock still holds a valid state.
        (self.0.upstream.lock()).unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lease(&self) -> Lease {
        let mut state = self.slot();
        match std::mem::replace(&mut *state, SlotState::Busy) {
            SlotState::Busy => Lease::Busy,
            SlotState::Vacant => Lease::Vacant(SlotLease(Some(self.clone()))),
            SlotState::Idle(conn) => Lease::Idle(SlotLease(Some(self.clone())), conn),
        }
    }
}

/// The right to the slot's connection for one request. Dropped without [`release`] (the
/// request failed, timed out or was cancelled), it leaves the slot vacant: a connection in an
/// unknown state is not reused.
///
/// [`release`]: SlotLease::release
struct SlotLease(Option<Downstream>);

impl SlotLease {
    fn release(mut self, conn: h1::Connection) {
        if let Some(slot) = self.0.take() {
            *slot.slot() = SlotState::Idle(conn);
        }
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            *slot.slot() = SlotState::Vacant;
        }
    }
}

/// What the proxy forwards of a principal, made once per principal ([`Principal::derived`]).
struct Identity {
    /// The identity headers; `None` when a value cannot be a header (a subject with control
    /// characters).
    headers: Option<Vec<(HeaderName, HeaderValue)>>,
    /// The identity as the assertion cache knows it.
    key: Box<str>,
}

impl Identity {
    fn of(principal: &Principal) -> Self {
        let value = |s: &str| HeaderValue::from_str(s).ok();
        let build = || {
            let mut out = Vec::with_capacity(6);
            out.push((SUBJECT, value(principal.subject())?));
            out.push((
                SUBJECT_KIND,
                HeaderValue::from_static(principal.kind().as_str()),
            ));
            if let Some(actor) = principal.actor() {
                out.push((ACTOR, value(&actor.subject)?));
            }
            if let Some(org) = principal.org_id() {
                out.push((ORG, value(org.as_str())?));
            }
            if let Some(role) = principal.org_role() {
                out.push((ORG_ROLE, value(role)?));
            }
            let scopes: Vec<&str> = principal.scopes().iter().map(|s| s.as_str()).collect();
            out.push((SCOPES, value(&scopes.join(" "))?));
            Some(out)
        };
        Self {
            headers: build(),
            key: crate::assertion::identity_key(principal).into(),
        }
    }
}

/// Which headers the gateway sets itself [`scrub`] saw.
#[derive(Default)]
struct Scrubbed {
    host: bool,
    forwarded_host: bool,
    forwarded_proto: bool,
    /// An `x-forwarded-for` from an earlier proxy.
    forwarded_for: bool,
}

/// What must not travel on.
#[derive(Clone, Copy, PartialEq)]
enum Scrub {
    /// A request: hop-by-hop headers, `Upgrade`, every `x-portcullis-*` header (only the
    /// gateway sets them) and `Authorization`.
    Request,
    /// A request whose credential is forwarded (`PORTCULLIS_FORWARD_CREDENTIAL`).
    RequestKeepingCredential,
    /// A response: hop-by-hop headers.
    Response,
}

impl Scrub {
    fn doomed(self, name: &HeaderName) -> bool {
        HOP_BY_HOP.contains(name)
            || (self != Self::Response
                && (*name == header::UPGRADE || name.as_str().starts_with("x-portcullis-")))
    }
}

/// Remove what must not travel on (see [`Scrub`]), and the headers `Connection` names
/// (RFC 9110 §7.6.1).
///
/// One pass over the names finds them: the common message has none of them, or only
/// `Authorization`, and costs no further lookups.
fn scrub(headers: &mut HeaderMap, what: Scrub) -> Scrubbed {
    let mut authorization = false;
    let mut seen = Scrubbed::default();
    let mut others = false;
    for name in headers.keys() {
        if *name == header::AUTHORIZATION {
            authorization = true;
        } else if *name == header::HOST {
            seen.host = true;
        } else if *name == X_FORWARDED_FOR {
            seen.forwarded_for = true;
        } else if *name == X_FORWARDED_HOST {
            seen.forwarded_host = true;
        } else if *name == X_FORWARDED_PROTO {
            seen.forwarded_proto = true;
        } else if what.doomed(name) {
            others = true;
        }
    }
    if authorization && what == Scrub::Request {
        headers.remove(header::AUTHORIZATION);
    }
    if others {
        // The headers `Connection` names are hop-by-hop too (RFC 9110 §7.6.1). A message
        // usually has one `Connection` line and one doomed name (`Connection` itself): both are
        // handled without collecting anything.
        let (first, rest) = first_and_rest(headers.get_all(header::CONNECTION).iter().cloned());
        for value in first.iter().chain(&rest) {
            for name in tokens(value.as_bytes()).filter_map(|t| std::str::from_utf8(t).ok()) {
                // Looked up as a name, not made into one: nothing to allocate, and a token
                // that is no header name (`close`) finds nothing.
                headers.remove(name);
            }
        }
        let (first, rest) =
            first_and_rest(headers.keys().filter(|name| what.doomed(name)).cloned());
        for name in first.iter().chain(&rest) {
            headers.remove(name);
        }
    }
    seen
}

/// The first item and the others: the common single item without a `Vec` (an empty one does
/// not allocate).
fn first_and_rest<T>(mut items: impl Iterator<Item = T>) -> (Option<T>, Vec<T>) {
    (items.next(), items.collect())
}

impl From<h1::SendError> for Failure {
    fn from(e: h1::SendError) -> Self {
        match e {
            h1::SendError::Closed(e) | h1::SendError::Failed(e) => Self::unreachable(&e),
            h1::SendError::TimedOut => Self::Timeout,
        }
    }
}

#[derive(Clone, Copy)]
enum Failure {
    Unreachable,
    Timeout,
}

impl Failure {
    /// The upstream could not be reached, or its answer read, because of `error` (logged).
    fn unreachable(error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(target: "portcullis::proxy", error = %error, "upstream request failed");
        Self::Unreachable
    }

    fn code(self) -> &'static str {
        match self {
            Self::Unreachable => "upstream_unreachable",
            Self::Timeout => "upstream_timeout",
        }
    }

    fn response(self, request_id: &RequestId) -> Response<Body> {
        let (status, error, description) = match self {
            Self::Unreachable => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the upstream service is unavailable",
            ),
            Self::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the upstream service did not answer in time",
            ),
        };
        let body = serde_json::json!({
            "error": error,
            "error_description": description,
            "request_id": request_id.as_str(),
        });
        let mut res = Response::new(Body::from(Bytes::from(body.to_string())));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

impl Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use axum::{Router, serve::ListenerExt};
    use tower::ServiceExt;

    use super::*;

    /// An upstream that counts the connections it accepts. `…/slow` answers after 300 ms; after
    /// `close` is set, the next answer ends its connection (`Connection: close`).
    struct Upstream {
        url: url::Url,
        connections: Arc<AtomicUsize>,
        close: Arc<AtomicBool>,
    }

    impl Upstream {
        async fn start() -> Self {
            let connections = Arc::new(AtomicUsize::new(0));
            let close = Arc::new(AtomicBool::new(false));
            let closing = close.clone();
            let app = Router::new().fallback(move |uri: Uri| {
                let closing = closing.clone();
                async move {
                    if uri.path().ends_with("/slow") {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let mut res = Response::new(Body::from("ok"));
                    if closing.swap(false, Ordering::SeqCst) {
                        res.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    res
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let counted = connections.clone();
            let listener = listener.tap_io(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            });
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Self {
                url: url.parse().unwrap(),
                connections,
                close,
            }
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    fn request(path: &str, downstream: &Downstream) -> Request<Body> {
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        req.extensions_mut().insert(downstream.clone());
        req
    }

    async fn answer(proxy: &Proxy, req: Request<Body>) -> (StatusCode, Bytes) {
        let res = proxy.clone().oneshot(req).await.unwrap();
        let status = res.status();
        (
            status,
            axum::body::to_bytes(res.into_body(), 4096).await.unwrap(),
        )
    }

    fn client(port: u16) -> Downstream {
        Downstream::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[tokio::test]
    async fn a_downstream_connection_keeps_one_upstream_connection() {
        let upstream = Upstream::start().await;
        let proxy = Proxy::new(&upstream.url, Duration::from_secs(5), false);
        let (a, b) = (client(1001), client(1002));
        for _ in 0..10 {
            assert_eq!(
                answer(&proxy, request("/x", &a)).await,
                (StatusCode::OK, "ok".into())
            );
        }
        assert_eq!(upstream.connections(), 1, "ten requests, one connection");
        assert_eq!(answer(&proxy, request("/x", &b)).await.0, StatusCode::OK);
        assert_eq!(
            upstream.connections(),
            2,
            "another client, its own connection"
        );

        // The upstream ends a's connection: a's next request opens a new one, unnoticed.
        upstream.close.store(true, Ordering::SeqCst);
        assert_eq!(answer(&proxy, request("/x", &a)).await.0, StatusCode::OK);
        for _ in 0..3 {
            assert_eq!(answer(&proxy, request("/x", &a)).await.0, StatusCode::OK);
        }
        assert_eq!(upstream.connections(), 3);
        assert_eq!(answer(&proxy, request("/x", &b)).await.0, StatusCode::OK);
        assert_eq!(upstream.connections(), 3, "b's connection was not touched");
    }

    #[tokio::test]
    async fn overlapping_requests_of_one_connection_use_the_pool() {
        let upstream = Upstream::start().await;
        let proxy = Proxy::new(&upstream.url, Duration::from_secs(5), false);
        let a = client(1001);
        let slow = tokio::spawn({
            let (proxy, a) = (proxy.clone(), a.clone());
            async move { answer(&proxy, request("/slow", &a)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The slow request holds a's connection: this one goes through the pool.
        assert_eq!(answer(&proxy, request("/x", &a)).await.0, StatusCode::OK);
        assert_eq!(slow.await.unwrap().0, StatusCode::OK);
        assert_eq!(upstream.connections(), 2);
        // a's own connection is free again, and reused.
        assert_eq!(answer(&proxy, request("/x", &a)).await.0, StatusCode::OK);
        assert_eq!(upstream.connections(), 2);
        // Without a Downstream (a plain tower stack), the pool serves.
        let plain = Request::get("/x").body(Body::empty()).unwrap();
        assert_eq!(answer(&proxy, plain).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_timed_out_request_leaves_its_connection_behind() {
        let upstream = Upstream::start().await;
        let proxy = Proxy::new(&upstream.url, Duration::from_millis(100), false);
        let a = client(1001);
        assert_eq!(answer(&proxy, request("/x", &a)).await.0, StatusCode::OK);
        assert_eq!(
            answer(&proxy, request("/slow", &a)).await.0,
            StatusCode::GATEWAY_TIMEOUT
        );
        // Its state unknown (an answer may still come), that connection is not reused.
        assert_eq!(answer(&proxy, request("/x", &a)).await.0, StatusCode::OK);
        assert_eq!(upstream.connections(), 2);
    }

    #[tokio::test]
    async fn a_failure_is_audited_with_the_request_s_own_path_id_and_principal() {
        use portcullis_core::{OrgId, OrgMembership, PrincipalKind, audit::AuditLevel};

        let upstream = Upstream::start().await;
        let mut behind = upstream.url.clone();
        behind.set_path("/base/");
        let proxy = Proxy::new(&behind, Duration::from_millis(100), false);
        let sink = Arc::new(portcullis_test_support::RecordingSink::default());
        let principal = Principal::builder(PrincipalKind::User, "user_a")
            .org(OrgMembership::new(OrgId::new("org_a").unwrap()))
            .build();
        let a = client(1001);
        let failing = |with: Option<&Downstream>, id: &'static str| {
            let mut req = Request::get("/slow?q=1")
                .header("x-request-id", id)
                .body(Body::empty())
                .unwrap();
            if let Some(d) = with {
                req.extensions_mut().insert(d.clone());
            }
            req.extensions_mut()
                .insert(AuditHandle(sink.clone(), AuditLevel::Decisions));
            req.extensions_mut().insert(principal.clone());
            req
        };
        // Its own upstream connection, then (no Downstream) the pool: both time out.
        let (status, body) = answer(&proxy, failing(Some(&a), "rid-own")).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            String::from_utf8_lossy(&body).contains("rid-own"),
            "{body:?}"
        );
        let (status, _) = answer(&proxy, failing(None, "rid-pool")).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        let events = sink.events();
        assert_eq!(events.len(), 2);
        for (event, id) in events.iter().zip(["rid-own", "rid-pool"]) {
            assert_eq!(event.action, "proxy.upstream_failed");
            assert_eq!(event.reason.as_deref(), Some("upstream_timeout"));
            let request = event.request.as_ref().unwrap();
            // The path the client asked for, not the upstream's.
            assert_eq!(
                (
                    request.id.as_str(),
                    request.method.as_str(),
                    request.path.as_str()
                ),
                (id, "GET", "/slow")
            );
            assert_eq!(event.actor.as_ref().unwrap().id, "user_a");
        }
    }

    /// The next request head a raw test upstream reads (up to its empty line); `None` when the
    /// connection ends first.
    pub(super) async fn read_head(io: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut seen = Vec::new();
        let mut buf = [0; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        Some(seen)
    }

    /// An upstream that answers one request per connection, then closes it without saying so.
    async fn closing_upstream() -> (url::Url, Arc<AtomicUsize>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let (mut io, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = read_head(&mut io).await;
                let _ = io
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        });
        (url.parse().unwrap(), connections)
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
        let (url, connections) = closing_upstream().await;
        let proxy = Proxy::new(&url, Duration::from_secs(5), false);
        let a = client(1001);
        for _ in 0..3 {
            assert_eq!(
                answer(&proxy, request("/x", &a)).await,
                (StatusCode::OK, "ok".into())
            );
            // Let the upstream's close arrive, so that the next request finds it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);

        // A close that arrived while the connection was idle is seen before anything is sent,
        // so a request that may not be repeated gets a new connection too.
        let mut post = request("/x", &a);
        *post.method_mut() = http::Method::POST;
        assert_eq!(answer(&proxy, post).await.0, StatusCode::OK);
        assert_eq!(connections.load(Ordering::SeqCst), 4);
    }

    /// An upstream that answers each request with its head, on one connection per request.
    async fn echoing_upstream() -> url::Url {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (mut io, _) = listener.accept().await.unwrap();
                let seen = read_head(&mut io).await.unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    seen.len()
                );
                let _ = io.write_all(head.as_bytes()).await;
                let _ = io.write_all(&seen).await;
            }
        });
        url.parse().unwrap()
    }

    #[tokio::test]
    async fn the_forwarded_host_is_the_one_the_client_asked_for_or_none() {
        let url = echoing_upstream().await;
        let proxy = Proxy::new(&url, Duration::from_secs(5), false);
        let a = client(1001);
        let sent = |host: Option<&'static str>, uri: &'static str| {
            let mut req = request(uri, &a);
            if let Some(host) = host {
                req.headers_mut()
                    .insert(header::HOST, HeaderValue::from_static(host));
            }
            req.headers_mut()
                .insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
            req
        };
        let head = |body: Bytes| String::from_utf8(body.to_vec()).unwrap().to_lowercase();
        let (_, body) = answer(&proxy, sent(Some("gw.example"), "/x")).await;
        assert!(
            head(body.clone()).contains("x-forwarded-host: gw.example\r\n"),
            "{body:?}"
        );
        // HTTP/2: no Host header, the authority in the URI.
        let (_, body) = answer(&proxy, sent(None, "http://gw2.example/x")).await;
        assert!(
            head(body.clone()).contains("x-forwarded-host: gw2.example\r\n"),
            "{body:?}"
        );
        // Neither: the client's own claim is not passed on.
        let (_, body) = answer(&proxy, sent(None, "/x")).await;
        assert!(!head(body.clone()).contains("x-forwarded-host"), "{body:?}");
        assert!(!head(body).contains("evil"));
    }

    /// A header map of `fields`, in order.
    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in fields {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    /// The names of a header map, sorted.
    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn scrubbing_removes_hop_by_hop_spoofed_and_named_headers() {
        let mut request = headers(&[
            ("authorization", "Bearer x"),
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("x-portcullis-org", "org_evil"),
            ("x-forwarded-for", "10.0.0.1"),
            ("accept", "*/*"),
        ]);
        let mut response = request.clone();
        let seen = scrub(&mut request, Scrub::Request);
        assert!(seen.forwarded_for);
        assert_eq!(names(&request), ["accept", "x-forwarded-for"]);

        // A response loses only hop-by-hop headers and those `Connection` names.
        scrub(&mut response, Scrub::Response);
        assert_eq!(
            names(&response),
            [
                "accept",
                "authorization",
                "upgrade",
                "x-forwarded-for",
                "x-portcullis-org"
            ]
        );

        let mut kept = headers(&[("authorization", "Bearer x")]);
        scrub(&mut kept, Scrub::RequestKeepingCredential);
        assert!(kept.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn scrubbing_follows_every_connection_line_and_removes_every_doomed_name() {
        let mut request = headers(&[
            ("connection", "close"),
            ("connection", " X-First ,, x-second, not a name"),
            ("connection", "x-third"),
            ("x-first", "1"),
            ("x-second", "2"),
            ("x-third", "3"),
            ("x-portcullis-org", "org_evil"),
            ("x-portcullis-scopes", "everything"),
            ("x-portcullis-subject", "user_evil"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        scrub(&mut request, Scrub::Request);
        assert_eq!(names(&request), ["accept"]);

        // The common answer: `Connection: keep-alive`, which names no header present.
        let mut response = headers(&[("connection", "keep-alive"), ("content-length", "3")]);
        scrub(&mut response, Scrub::Response);
        assert_eq!(names(&response), ["content-length"]);
    }
}
