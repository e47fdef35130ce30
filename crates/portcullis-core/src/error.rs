//! Authentication and authorization failures, and the responses they become.

use std::{fmt, sync::Arc};

use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::Scope;

/// The realm named in `WWW-Authenticate` when none is configured.
pub const DEFAULT_REALM: &str = "portcullis";

/// The request header whose value is echoed as `request_id` in error bodies.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Why a request was refused.
///
/// Every variant becomes the response of the table in the design (RFC 6750 `WWW-Authenticate`,
/// a small JSON body with a `request_id`); descriptions are short fixed strings that never echo
/// the credential or a parser's message. The layers insert the refusal into the response's
/// extensions, so that an outer layer (auditing, metrics) can read why.
///
/// ```
/// use axum_core::response::IntoResponse;
/// use portcullis_core::AuthError;
///
/// let res = AuthError::invalid_token("the access token expired").into_response();
/// assert_eq!(res.status(), 401);
/// let challenge = res.headers()["www-authenticate"].to_str().unwrap();
/// assert_eq!(
///     challenge,
///     r#"Bearer realm="portcullis", error="invalid_token", error_description="the access token expired""#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential was sent (401, no `error` attribute).
    MissingCredential,
    /// The `Authorization` header is malformed: two credentials, another scheme, bad characters
    /// (401 `invalid_request`).
    InvalidRequest {
        /// Short fixed description.
        description: &'static str,
    },
    /// The credential is bad, expired, revoked or cannot be verified (401 `invalid_token`).
    InvalidToken {
        /// Short fixed description.
        description: &'static str,
    },
    /// The session's second factor is missing or too old for this route (401
    /// `insufficient_user_authentication`, RFC 9470).
    InsufficientUserAuthentication {
        /// The most minutes since the second factor that the route accepts.
        max_age_minutes: u32,
    },
    /// The organization named by the request is not the principal's active one (403).
    OrgForbidden {
        /// Short fixed description.
        description: &'static str,
    },
    /// The principal lacks a scope the route requires (403 `insufficient_scope`).
    InsufficientScope {
        /// The scopes the route requires.
        required: Arc<[Scope]>,
        /// Whether all of `required` are needed, or any one of them.
        all: bool,
    },
    /// No route of the gateway's policy allows this method and path (403 `forbidden`):
    /// deny by default.
    NoRoute,
    /// A guard (a compliance check after authorization) refused the request (403
    /// `guard_denied`, with the guard's `reason` in the body).
    GuardDenied {
        /// The guard's name, for logs and audit.
        guard: Arc<str>,
        /// The guard's reason, sent to the client: guards must not put secrets in it.
        reason: Arc<str>,
    },
    /// A dependency (JWKS, key store, audit sink) is unavailable: fail closed (503).
    Unavailable {
        /// Which dependency, for logs and audit; not sent to the client.
        dependency: &'static str,
        /// Seconds the client should wait (`Retry-After`).
        retry_after: u32,
    },
    /// A layer or extractor did not find what an earlier layer must have put in the request's
    /// extensions: the layers are wired wrongly (500). Never caused by a client.
    Misconfigured {
        /// What was missing (`Principal`, `OrgId`), for logs; not sent to the client.
        missing: &'static str,
    },
}

impl AuthError {
    /// A malformed `Authorization` header.
    pub const fn invalid_request(description: &'static str) -> Self {
        Self::InvalidRequest { description }
    }

    /// A bad, expired, revoked or unverifiable credential.
    pub const fn invalid_token(description: &'static str) -> Self {
        Self::InvalidToken { description }
    }

    /// An organization mismatch.
    pub const fn org_forbidden(description: &'static str) -> Self {
        Self::OrgForbidden { description }
    }

    /// A dependency outage, with a `Retry-After` of 5 seconds.
    pub const fn unavailable(dependency: &'static str) -> Self {
        Self::Unavailable {
            dependency,
            retry_after: 5,
        }
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingCredential
            | Self::InvalidRequest { .. }
            | Self::InvalidToken { .. }
            | Self::InsufficientUserAuthentication { .. } => StatusCode::UNAUTHORIZED,
            Self::OrgForbidden { .. }
            | Self::InsufficientScope { .. }
            | Self::NoRoute
            | Self::GuardDenied { .. } => StatusCode::FORBIDDEN,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Misconfigured { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingCredential => "unauthorized",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::InvalidToken { .. } => "invalid_token",
            Self::InsufficientUserAuthentication { .. } => "insufficient_user_authentication",
            Self::OrgForbidden { .. } => "org_forbidden",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::NoRoute => "forbidden",
            Self::GuardDenied { .. } => "guard_denied",
            Self::Unavailable { .. } => "temporarily_unavailable",
            Self::Misconfigured { .. } => "internal_error",
        }
    }

    /// The short description sent to the client.
    pub fn description(&self) -> &'static str {
        match self {
            Self::MissingCredential => "authentication is required",
            Self::InvalidRequest { description }
            | Self::InvalidToken { description }
            | Self::OrgForbidden { description } => description,
            Self::InsufficientUserAuthentication { .. } => {
                "a recent second factor verification is required"
            }
            Self::InsufficientScope { .. } => "the credential lacks a required scope",
            Self::NoRoute => "no route of the policy allows this request",
            Self::GuardDenied { .. } => "a compliance check refused this request",
            Self::Unavailable { .. } => "a dependency is unavailable; retry later",
            Self::Misconfigured { .. } => "the server is misconfigured",
        }
    }

    /// Build the response, naming `realm` in the challenge and echoing `request_id`.
    ///
    /// Any response body that can be made from [`Bytes`] works, so the layers keep the inner
    /// service's body type.
    pub fn to_response<B: From<Bytes>>(&self, realm: &str, request_id: &str) -> http::Response<B> {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.code().into());
        body.insert("error_description".into(), self.description().into());
        if let Self::InsufficientScope { required, all } = self {
            body.insert(
                "required".into(),
                required
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .into(),
            );
            body.insert("match".into(), if *all { "all" } else { "any" }.into());
        }
        if let Self::GuardDenied { reason, .. } = self {
            body.insert("reason".into(), (**reason).into());
        }
        body.insert("request_id".into(), request_id.into());
        let bytes = serde_json::to_vec(&body).expect("a JSON map serializes");

        let mut res = http::Response::new(B::from(Bytes::from(bytes)));
        *res.status_mut() = self.status();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = self
            .challenge(realm)
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        if let Self::Unavailable { retry_after, .. } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        res.extensions_mut().insert(self.clone());
        if let Self::Misconfigured { missing } = self {
            tracing::error!(
                target: "portcullis::rejection",
                missing,
                "no {missing} in the request's extensions: is the layer that provides it in front?"
            );
        }
        tracing::debug!(
            target: "portcullis::rejection",
            status = self.status().as_u16(),
            error = self.code(),
            description = self.description(),
            request_id,
            "request refused"
        );
        res
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3, RFC 9470), where the status has one.
    fn challenge(&self, realm: &str) -> Option<String> {
        let realm = quote(realm);
        let with_error = |error: &str, description: &str| {
            format!(
                r#"Bearer realm="{realm}", error="{error}", error_description="{}""#,
                quote(description)
            )
        };
        Some(match self {
            Self::MissingCredential => format!(r#"Bearer realm="{realm}""#),
            Self::InvalidRequest { description } => with_error("invalid_request", description),
            Self::InvalidToken { description } => with_error("invalid_token", description),
            Self::InsufficientUserAuthentication { max_age_minutes } => format!(
                r#"{}, max_age={}"#,
                with_error("insufficient_user_authentication", self.description()),
                u64::from(*max_age_minutes) * 60
            ),
            Self::InsufficientScope { required, .. } => {
                let scope = required.iter().map(|s| s.as_str()).collect::<Vec<_>>();
                format!(
                    r#"Bearer realm="{realm}", error="insufficient_scope", scope="{}""#,
                    scope.join(" ")
                )
            }
            Self::OrgForbidden { .. }
            | Self::NoRoute
            | Self::GuardDenied { .. }
            | Self::Unavailable { .. }
            | Self::Misconfigured { .. } => {
                return None;
            }
        })
    }
}

/// Keep only characters that are safe inside a quoted-string.
fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .collect()
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.description())
    }
}

impl std::error::Error for AuthError {}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        self.to_response(DEFAULT_REALM, &RequestId::generate())
    }
}

/// A request id: the request's `x-request-id` when it is sane, else a fresh UUIDv7.
///
/// Kept as the header value it is sent as, so that echoing it costs no copy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The longest incoming request id that is echoed.
    pub const MAX_LEN: usize = 128;

    /// The request id of a request with these headers.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_value(headers.get(REQUEST_ID_HEADER))
    }

    /// The request id of a request whose `x-request-id` is `value`.
    pub fn from_value(value: Option<&HeaderValue>) -> Self {
        value.and_then(Self::echo).unwrap_or_else(Self::generate)
    }

    /// The id an incoming `x-request-id` names, when it is echoed: 1 to
    /// [`MAX_LEN`](Self::MAX_LEN) visible ASCII characters other than `"` and `\`.
    ///
    /// ```
    /// use http::HeaderValue;
    /// use portcullis_core::RequestId;
    ///
    /// let echoed = RequestId::echo(&HeaderValue::from_static("req-42")).unwrap();
    /// assert_eq!(echoed.as_str(), "req-42");
    /// assert!(RequestId::echo(&HeaderValue::from_static("two words")).is_none());
    /// ```
    pub fn echo(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let sane = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\');
        sane.then(|| Self(value.clone()))
    }

    /// A fresh UUIDv7.
    ///
    /// Ids are ordered within a thread (a counter per thread, not uuid's process-wide lock
    /// that every request would take), and stamped with the [coarse clock](crate::clock).
    pub fn generate() -> Self {
        use uuid::timestamp::context::{ContextV7, ThreadLocalContext};
        thread_local! {
            static CONTEXT: ContextV7 = const { ContextV7::new() };
        }
        let now = crate::clock::since_epoch();
        let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            ThreadLocalContext::new(&CONTEXT),
            now.as_secs(),
            now.subsec_nanos(),
        ));
        let mut buf = [0; uuid::fmt::Hyphenated::LENGTH];
        id.hyphenated().encode_lower(&mut buf);
        // One allocation that every clone (the forwarded header, the answer's, the audit
        // event's) shares: copied bytes would take a second one at the first clone.
        Self(
            HeaderValue::from_maybe_shared(Bytes::from_owner(buf))
                .expect("a hyphenated UUID is a header value"),
        )
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        // Visible ASCII, checked when it was made.
        std::str::from_utf8(self.0.as_bytes()).expect("a request id is ASCII")
    }

    /// The id as the `x-request-id` value it is sent as.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration value that is missing or invalid; the message names the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    key: Box<str>,
    message: Box<str>,
}

impl ConfigError {
    /// A problem with `key`.
    pub fn new(key: impl Into<Box<str>>, message: impl Into<Box<str>>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The configuration key (or environment variable) at fault.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(e: &AuthError) -> (StatusCode, Option<String>, serde_json::Value) {
        let res: http::Response<Bytes> = e.to_response("api", "rid-1");
        let www = res
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = serde_json::from_slice(res.body()).unwrap();
        (res.status(), www, body)
    }

    #[test]
    fn missing_credential_has_no_error_attribute() {
        let (status, www, body) = render(&AuthError::MissingCredential);
        assert_eq!(status, 401);
        assert_eq!(www.as_deref(), Some(r#"Bearer realm="api""#));
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["request_id"], "rid-1");
    }

    #[test]
    fn insufficient_scope() {
        let required: Arc<[Scope]> = vec![Scope::new("comps:read").unwrap()].into();
        let (status, www, body) = render(&AuthError::InsufficientScope {
            required,
            all: true,
        });
        assert_eq!(status, 403);
        assert_eq!(
            www.as_deref(),
            Some(r#"Bearer realm="api", error="insufficient_scope", scope="comps:read""#)
        );
        assert_eq!(body["required"], serde_json::json!(["comps:read"]));
    }

    #[test]
    fn unavailable_has_retry_after() {
        let res: http::Response<Bytes> = AuthError::unavailable("jwks").to_response("api", "r");
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "5");
        assert!(res.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert!(res.extensions().get::<AuthError>().is_some());
    }

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(RequestId::from_headers(&h).as_str(), "abc-123");
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("has\"quote"));
        assert_ne!(RequestId::from_headers(&h).as_str(), "has\"quote");
        assert_eq!(RequestId::from_headers(&HeaderMap::new()).len(), 36);
        let made = RequestId::generate();
        let uuid = uuid::Uuid::parse_str(made.as_str()).expect("a generated id is a UUID");
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(made.as_str(), uuid.hyphenated().to_string());
        assert_ne!(made, RequestId::generate());
    }
}
