//! The audit interface: what every part of Portcullis hands its events to.
//!
//! [`AuditEvent`] is the one versioned event schema (see the design's audit section);
//! [`AuditSink`] is where events go. *Sensitive* events (key lifecycle, sensitive-route
//! decisions, role and membership changes) are recorded before the action proceeds, and the
//! action fails closed when they cannot be; *routine* events may be queued. Events carry public
//! ids only, never a secret.
//!
#![doc = include_str!("../docs/audit-mapping.md")]

use std::{borrow::Cow, fmt, future::Future, pin::Pin, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{CredentialId, OrgId, Principal, RequestId, Scope};

/// The version of the event schema.
pub const AUDIT_SCHEMA_VERSION: u16 = 1;

/// What happened, to whom, by whom, in which organization.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// The schema version.
    pub schema: u16,
    /// A UUIDv7: unique, time-ordered, the idempotency key of sinks.
    pub id: String,
    /// RFC 3339 UTC time with milliseconds.
    pub time: String,
    /// `authentication`, `authorization`, `iam_change` or `audit_system`, from the action.
    pub category: Cow<'static, str>,
    /// The dotted action: `authn.failed`, `api_key.created`, ...
    pub action: Cow<'static, str>,
    /// `success`, `failure` or `denied`.
    pub outcome: Outcome,
    /// Who acted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<AuditActor>,
    /// The organization acted in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<OrgId>,
    /// What was acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<AuditTarget>,
    /// The credential used, by public id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<AuditCredential>,
    /// The request, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<AuditRequest>,
    /// A short reason code or description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'static, str>>,
    /// Scopes the action required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_required: Vec<Scope>,
    /// Required scopes the principal lacked (on a scope refusal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_missing: Vec<Scope>,
    /// Whether the action is sensitive.
    #[serde(default)]
    pub sensitive: bool,
    /// An attribute the action changed (a role change's before and after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<AuditChange>,
}

/// The outcome of an audited action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// It happened.
    Success,
    /// It failed.
    Failure,
    /// It was refused.
    Denied,
}

impl Outcome {
    /// `success`, `failure` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// Who acted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditActor {
    /// `user` or `service_account`.
    pub kind: Cow<'static, str>,
    /// The subject id.
    pub id: String,
    /// Who acted on the subject's behalf (RFC 8693 `act`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// The session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// A change of one attribute (a role), before and after.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditChange {
    /// What changed (`org_role`).
    pub field: Cow<'static, str>,
    /// The value before (unknown or none: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// The value after (removed: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// What was acted on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditTarget {
    /// `api_key`, `user`, `session`, `route`, ...
    pub kind: Cow<'static, str>,
    /// Its id.
    pub id: String,
}

/// The credential, by kind and public id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditCredential {
    /// `jwt` or `api_key`.
    pub kind: Cow<'static, str>,
    /// The key id, or the JWT's `jti` (or `kid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The request an event belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditRequest {
    /// The request id (`x-request-id`).
    pub id: String,
    /// The method.
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The client's `User-Agent` (untrusted; at most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The peer address of the connection, where the server provides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
}

impl AuditEvent {
    /// A new event for `action` with `outcome`, stamped now.
    pub fn new(action: impl Into<Cow<'static, str>>, outcome: Outcome) -> Self {
        let action = action.into();
        let category = match action.split('.').next().unwrap_or_default() {
            "authn" | "session" => "authentication",
            "authz" | "org" => "authorization",
            "audit" => "audit_system",
            _ => "iam_change",
        };
        Self {
            schema: AUDIT_SCHEMA_VERSION,
            id: uuid::Uuid::now_v7().to_string(),
            time: rfc3339_now(),
            category: category.into(),
            action,
            outcome,
            actor: None,
            org_id: None,
            target: None,
            credential: None,
            request: None,
            reason: None,
            scopes_required: Vec::new(),
            scopes_missing: Vec::new(),
            sensitive: false,
            change: None,
        }
    }

    /// Attribute the event to `principal`: actor, organization and credential.
    #[must_use]
    pub fn by(mut self, principal: &Principal) -> Self {
        self.actor = Some(AuditActor {
            kind: principal.kind().as_str().into(),
            id: principal.subject().to_owned(),
            on_behalf_of: principal.actor().map(|a| a.subject.to_string()),
            session: principal.session_id().map(str::to_owned),
        });
        self.org_id = principal.org_id().cloned();
        self.credential = Some(match principal.credential() {
            CredentialId::Jwt { kid, jti } => AuditCredential {
                kind: "jwt".into(),
                id: jti.as_deref().or(kid.as_deref()).map(str::to_owned),
            },
            CredentialId::ApiKey { id } => AuditCredential {
                kind: "api_key".into(),
                id: Some(id.to_string()),
            },
        });
        self
    }

    /// The target of the event.
    #[must_use]
    pub fn target(mut self, kind: &'static str, id: impl Into<String>) -> Self {
        self.target = Some(AuditTarget {
            kind: kind.into(),
            id: id.into(),
        });
        self
    }

    /// The request the event belongs to.
    #[must_use]
    pub fn request(mut self, id: &RequestId, method: &http::Method, path: &str) -> Self {
        self.request = Some(AuditRequest {
            id: id.to_string(),
            method: method.to_string(),
            path: path.to_owned(),
            user_agent: None,
            client_address: None,
        });
        self
    }

    /// The peer address of the connection, on an event with a request.
    #[must_use]
    pub fn client_address(mut self, address: Option<std::net::SocketAddr>) -> Self {
        if let (Some(request), Some(address)) = (&mut self.request, address) {
            request.client_address = Some(address.to_string());
        }
        self
    }

    /// The client's user agent (kept to 256 characters), on an event with a request.
    #[must_use]
    pub fn user_agent(mut self, user_agent: Option<&str>) -> Self {
        if let (Some(request), Some(ua)) = (&mut self.request, user_agent) {
            request.user_agent = Some(ua.chars().take(256).collect());
        }
        self
    }

    /// A reason.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Mark the event sensitive.
    #[must_use]
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

/// A sensitive event could not be recorded: the action must not happen (answer 503).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditUnavailable;

impl fmt::Display for AuditUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the audit sink cannot record events")
    }
}

impl std::error::Error for AuditUnavailable {}

/// A boxed future of recording a sensitive event.
pub type RecordFuture = Pin<Box<dyn Future<Output = Result<(), AuditUnavailable>> + Send>>;

/// Where audit events go.
pub trait AuditSink: Send + Sync + 'static {
    /// Record a sensitive event durably; the caller proceeds only on `Ok`.
    fn record_sensitive(&self, event: AuditEvent) -> RecordFuture;

    /// Record a routine event: it may be queued and written later. The future resolves once the
    /// event is accepted (queued or spooled); `Err` means it could not be, and the caller should
    /// refuse the request (503) rather than act unaudited.
    fn record(&self, event: AuditEvent) -> RecordFuture;
}

impl<A: AuditSink + ?Sized> AuditSink for Arc<A> {
    fn record_sensitive(&self, event: AuditEvent) -> RecordFuture {
        (**self).record_sensitive(event)
    }

    fn record(&self, event: AuditEvent) -> RecordFuture {
        (**self).record(event)
    }
}

/// The audit sink of a request, put into its extensions by the audit layer, so that a layer
/// deciding a sensitive action can record it before the action proceeds. `successes` asks the
/// authentication layer to hand the principal of a granted request back on the response.
#[derive(Clone)]
pub struct AuditHandle(pub Arc<dyn AuditSink>, pub AuditLevel);

/// Which events the audit layer records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditLevel {
    /// Every refusal and every sensitive decision (the default).
    #[default]
    Decisions,
    /// Also every granted request (`authn.succeeded`).
    All,
}

impl fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditHandle(..)")
    }
}

/// Marks a response refused on a route whose decisions are sensitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SensitiveRoute;

/// A sink that writes events as `tracing` events (target `portcullis::audit`), for development.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    fn record_sensitive(&self, event: AuditEvent) -> RecordFuture {
        self.record(event)
    }

    fn record(&self, event: AuditEvent) -> RecordFuture {
        match serde_json::to_string(&event) {
            Ok(json) => tracing::info!(target: "portcullis::audit", event = %json, "audit"),
            Err(e) => {
                tracing::error!(target: "portcullis::audit", error = %e, "unserializable audit event");
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2026-11-21T05:18:56.123Z`).
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (year, month, day, h, m, s) = civil(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    // Filled in place rather than with `format!`: this runs for every event.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, n: i64| {
        let mut n = n.clamp(0, 9999);
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, h);
    put(14, 2, m);
    put(17, 2, s);
    put(20, 3, i64::from(now.subsec_millis()));
    String::from_utf8(out.to_vec()).expect("ASCII digits")
}

/// Year, month, day, hour, minute, second of Unix seconds (UTC).
fn civil(unix_seconds: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Unix seconds as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(unix_seconds: i64) -> String {
    let (year, month, day, h, m, s) = civil(unix_seconds);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_238_336), "2026-11-21T05:18:56Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        let now = rfc3339_now();
        assert_eq!(now.len(), 24, "{now}");
        assert_eq!(
            &now[..19],
            &rfc3339(
                i64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs()
                )
                .unwrap()
            )[..19]
        );
        assert!(now.ends_with('Z') && now.as_bytes()[19] == b'.');
    }

    #[test]
    fn events_serialize_without_empty_fields() {
        let e = AuditEvent::new("api_key.created", Outcome::Success)
            .target("api_key", "key_1")
            .sensitive();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["action"], "api_key.created");
        assert_eq!(v["outcome"], "success");
        assert_eq!(v["target"]["id"], "key_1");
        assert!(v.get("actor").is_none());
        assert_eq!(v["schema"], 1);
        assert_eq!(v["category"], "iam_change");
        let e = AuditEvent::new("authn.failed", Outcome::Failure);
        assert_eq!(e.category, "authentication");
    }
}
