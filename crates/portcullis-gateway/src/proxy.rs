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

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo};
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header,
    uri::{Authority, PathAndQuery, Scheme},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use portcullis_core::{
    Principal, RequestId,
    audit::{AuditEvent, AuditHandle, Outcome},
};
use tower::Service;

use crate::assertion::{ASSERTION, Assertions};

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

const REQUEST_ID: HeaderName = HeaderName::from_static(portcullis_core::REQUEST_ID_HEADER);
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
    client: Client<HttpConnector, Body>,
    authority: Authority,
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
            .build(connector);
        let authority = match upstream.port() {
            Some(port) => format!("{}:{port}", upstream.host_str().unwrap_or_default()),
            None => upstream.host_str().unwrap_or_default().to_owned(),
        };
        Self {
            target: Arc::new(Target {
                client,
                authority: authority
                    .parse()
                    .expect("a URL's host and port are an authority"),
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
        // What a failure's answer and audit event need; cheap reference-counted copies.
        let request_id = req.headers().get(REQUEST_ID).cloned();
        let audit = req.extensions().get::<AuditHandle>().cloned();
        let principal = req.extensions().get::<Principal>().cloned();
        let method = req.method().clone();
        let uri = req.uri().clone();
        let upstream_req = match self.upstream_request(req) {
            Ok(r) => r,
            Err(response) => return response,
        };
        let failure = match tokio::time::timeout(
            self.target.timeout,
            self.target.client.request(upstream_req),
        )
        .await
        {
            Ok(Ok(mut res)) => {
                strip_hop_by_hop(res.headers_mut());
                return res.map(Body::new);
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "portcullis::proxy", error = %e, "upstream request failed");
                Failure::Unreachable
            }
            Err(_) => Failure::Timeout,
        };
        let request_id = RequestId::from_value(request_id.as_ref());
        let path = uri.path();
        if let Some(AuditHandle(sink, _)) = audit {
            let mut event = AuditEvent::new("proxy.upstream_failed", Outcome::Failure)
                .reason(failure.code())
                .request(&request_id, &method, path);
            if let Some(p) = &principal {
                event = event.by(p);
            }
            if sink.record(event).await.is_err() {
                tracing::error!(target: "portcullis::audit", "an upstream failure could not be audited");
            }
        }
        failure.response(&request_id)
    }

    #[allow(clippy::result_large_err)]
    fn upstream_request(&self, req: Request<Body>) -> Result<Request<Body>, Response<Body>> {
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
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(target.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .expect("scheme, authority and path make a URI");

        let headers = &mut parts.headers;
        // Room for what is added below, so that the map grows once at most.
        headers.reserve(12);
        strip_hop_by_hop(headers);
        headers.remove(header::UPGRADE);
        if !target.forward_credential {
            headers.remove(header::AUTHORIZATION);
        }
        strip_portcullis(headers);
        if let Some(host) = headers.remove(header::HOST) {
            headers.insert(X_FORWARDED_HOST, host);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            let ip = peer.ip().to_string();
            let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {ip}"),
                None => ip,
            };
            if let Ok(v) = HeaderValue::try_from(value) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        if let Some(principal) = parts.extensions.get::<Principal>() {
            let fresh;
            let identity = match principal.derived(Identity::of) {
                Some(identity) => identity,
                // The slot holds something else: make them for this request.
                None => {
                    fresh = Identity::of(principal);
                    &fresh
                }
            };
            let Some(forwarded) = &identity.headers else {
                // A subject or org that cannot be a header value: refuse rather than forward a
                // mangled identity.
                let request_id = RequestId::from_headers(headers);
                return Err(portcullis_core::AuthError::invalid_token(
                    "the credential's identity cannot be forwarded",
                )
                .to_response(&target.realm, &request_id));
            };
            for (name, value) in forwarded {
                headers.insert(name.clone(), value.clone());
            }
            if let Some(assertions) = &target.assertions {
                headers.insert(ASSERTION, assertions.header_for(principal, &identity.key));
            }
        }
        Ok(Request::from_parts(parts, body))
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

/// Remove every `x-portcullis-*` header: only the gateway sets them.
pub fn strip_portcullis(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-portcullis-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

#[derive(Clone, Copy)]
enum Failure {
    Unreachable,
    Timeout,
}

impl Failure {
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
