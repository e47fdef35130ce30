//! `POST /webhooks/clerk`: Clerk's signed webhooks turned into revocations and audit events.
//!
//! The Svix signature is checked as [`signature`](crate::signature) describes (`svix-id`,
//! `svix-timestamp`, `svix-signature` with several `v1,` signatures, a `whsec_` secret, five
//! minutes of tolerance, constant-time comparison). On top of it every message id is accepted
//! once: a replay is refused, across replicas, since the ids live in the store.
//!
//! | event | effect | audit action |
//! |---|---|---|
//! | `session.created` | — | `session.started` |
//! | `session.ended`, `session.removed`, `session.revoked` | the session's tokens refused | `session.ended` |
//! | `user.deleted` | the user's tokens refused | `user.deactivated` |
//! | `user.updated` with `banned` or `locked` | the user's tokens refused (lifted when both are false again) | `user.deactivated` / `user.reactivated` |
//! | `organizationMembership.deleted` | the user's tokens for that org refused | `membership.removed` |
//! | `organizationMembership.created`, `.updated` | tokens for that (user, org) issued before the change refused | `membership.role_changed` (before and after) |
//!
//! Answers: 204 when handled (or ignored: other event types), 400 for a malformed or replayed
//! message or a stale timestamp, 401 for a bad signature, 503 when the store or the audit sink
//! cannot take it (Svix retries). Every refusal is audited as `webhook.rejected`.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use portcullis_core::{
    audit::{AuditActor, AuditChange, AuditEvent, AuditSink, Outcome},
    clock,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    list::Target,
    signature::{SignatureError, SigningSecret},
    store::RevocationStore,
};

/// The path the gateway mounts the receiver on.
pub const PATH: &str = "/webhooks/clerk";

/// The largest payload accepted (Clerk's events are a few KiB).
const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
struct ReceiverState {
    secret: Arc<SigningSecret>,
    store: RevocationStore,
    audit: Arc<dyn AuditSink>,
}

/// A bad signing secret.
#[derive(Debug)]
pub struct BadSecret;

impl std::fmt::Display for BadSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the webhook signing secret is not whsec_ followed by base64")
    }
}

impl std::error::Error for BadSecret {}

/// The receiver as an axum [`Router`] serving [`PATH`]; `secret` is the endpoint's `whsec_…`
/// signing secret.
pub fn router(
    secret: &str,
    store: RevocationStore,
    audit: Arc<dyn AuditSink>,
) -> Result<Router, BadSecret> {
    let secret = SigningSecret::new(secret).ok_or(BadSecret)?;
    Ok(Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ReceiverState {
            secret: Arc::new(secret),
            store,
            audit,
        }))
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    data: Value,
    #[serde(default)]
    timestamp: Option<i64>,
}

fn answer(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

fn clerk() -> AuditActor {
    AuditActor {
        kind: "identity_provider".into(),
        id: "clerk".into(),
        on_behalf_of: None,
        session: None,
    }
}

async fn reject(state: &ReceiverState, status: StatusCode, reason: &'static str) -> Response {
    let mut event = AuditEvent::new("webhook.rejected", Outcome::Failure).reason(reason);
    event.actor = Some(clerk());
    if state.audit.record(event).await.is_err() {
        tracing::error!(target: "portcullis::audit", "a rejected webhook could not be audited");
    }
    answer(status, reason)
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    let message_id = match state.secret.verify(&headers, &body, clock::unix_seconds()) {
        Ok(id) => id,
        Err(e) => {
            let (status, reason) = match e {
                SignatureError::BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature"),
                SignatureError::StaleTimestamp => (StatusCode::BAD_REQUEST, "stale_timestamp"),
                SignatureError::MissingHeader => (StatusCode::BAD_REQUEST, "malformed_webhook"),
            };
            return reject(&state, status, reason).await;
        }
    };
    if message_id.len() > 256 {
        return reject(&state, StatusCode::BAD_REQUEST, "malformed_webhook").await;
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) else {
        return reject(&state, StatusCode::BAD_REQUEST, "malformed_payload").await;
    };
    match state.store.first_delivery(message_id).await {
        Ok(true) => {}
        Ok(false) => return reject(&state, StatusCode::BAD_REQUEST, "replayed").await,
        Err(e) => {
            tracing::warn!(target: "portcullis::webhook", error = %e, "webhook store unavailable");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
        }
    }
    match apply(&state, &envelope).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(()) => {
            // Not applied: the retry Svix will make must not be taken for a replay.
            if let Err(e) = state.store.forget_delivery(message_id).await {
                tracing::warn!(target: "portcullis::webhook", error = %e, "a failed webhook's id could not be forgotten");
            }
            answer(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
        }
    }
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 256)
}

/// Clerk's roles carry an `org:` prefix; Portcullis's do not.
fn role(r: &str) -> String {
    r.strip_prefix("org:").unwrap_or(r).to_owned()
}

/// Apply one verified event. The audit event of a revocation is written durably first; when
/// that fails the webhook is answered 503 and Svix delivers it again.
async fn apply(state: &ReceiverState, envelope: &Envelope) -> Result<(), ()> {
    let data = &envelope.data;
    let at = data
        .get("updated_at")
        .and_then(Value::as_i64)
        .or(envelope.timestamp)
        .map_or_else(clock::unix_seconds, |ms| ms / 1000);
    let store = &state.store;
    let event = |action: &'static str, user: Option<&str>| {
        let mut e = AuditEvent::new(action, Outcome::Success).sensitive();
        e.actor = Some(clerk());
        if let Some(user) = user {
            e = e.target("user", user);
        }
        e.reason = Some(envelope.kind.clone().into());
        e
    };
    let record = |e: AuditEvent| async move {
        state.audit.record_sensitive(e).await.map_err(|_| {
            tracing::error!(target: "portcullis::audit", "a webhook event could not be audited");
        })
    };
    match envelope.kind.as_str() {
        "session.created" => {
            let mut e = event("session.started", text(data, &["user_id"]));
            if let (Some(actor), Some(sid)) = (e.actor.as_mut(), text(data, &["id"])) {
                actor.session = Some(sid.to_owned());
            }
            record(e).await
        }
        "session.ended" | "session.removed" | "session.revoked" => {
            let Some(sid) = text(data, &["id"]) else {
                return Ok(());
            };
            let mut e = event("session.ended", text(data, &["user_id"]));
            e.target = None;
            e = e.target("session", sid);
            record(e).await?;
            revoke(store, Target::Session(sid.to_owned()), None, &envelope.kind).await
        }
        "user.deleted" => {
            let Some(user) = text(data, &["id"]) else {
                return Ok(());
            };
            record(event("user.deactivated", Some(user))).await?;
            revoke(store, Target::User(user.to_owned()), None, "user.deleted").await
        }
        "user.updated" => {
            let Some(user) = text(data, &["id"]) else {
                return Ok(());
            };
            let banned = data.get("banned").and_then(Value::as_bool).unwrap_or(false);
            let locked = data.get("locked").and_then(Value::as_bool).unwrap_or(false);
            if banned || locked {
                let reason = if banned { "user.banned" } else { "user.locked" };
                let mut e = event("user.deactivated", Some(user));
                e.reason = Some(reason.into());
                record(e).await?;
                revoke(store, Target::User(user.to_owned()), None, reason).await
            } else {
                let target = Target::User(user.to_owned());
                // Only a ban or a lock is lifted; a deleted user stays refused.
                let banned_before = store
                    .list()
                    .get(&target)
                    .is_some_and(|r| r.reason != "user.deleted");
                if banned_before {
                    record(event("user.reactivated", Some(user))).await?;
                    applied(store.lift(&target).await)?;
                }
                Ok(())
            }
        }
        "organizationMembership.deleted" => {
            let Some((user, org)) = member(data) else {
                return Ok(());
            };
            let before = store.remove_member(user, org).await.map_err(failed)?;
            let before = before.or_else(|| text(data, &["role"]).map(role));
            record(role_change(
                event("membership.removed", Some(user)),
                org,
                before,
                None,
            ))
            .await?;
            revoke(store, membership(user, org), None, &envelope.kind).await
        }
        "organizationMembership.created" | "organizationMembership.updated" => {
            let (Some((user, org)), Some(new_role)) = (member(data), text(data, &["role"])) else {
                return Ok(());
            };
            let new_role = role(new_role);
            let before = store
                .set_role(user, org, &new_role, at)
                .await
                .map_err(failed)?;
            let e = event("membership.role_changed", Some(user));
            record(role_change(e, org, before, Some(new_role))).await?;
            // Tokens issued up to the second of the change may carry the old role.
            revoke(store, membership(user, org), Some(at + 1), "role_changed").await
        }
        other => {
            tracing::debug!(target: "portcullis::webhook", kind = other, "webhook event ignored");
            Ok(())
        }
    }
}

/// The user and organization of a membership event.
fn member(data: &Value) -> Option<(&str, &str)> {
    Some((
        text(data, &["public_user_data", "user_id"])?,
        text(data, &["organization", "id"])?,
    ))
}

fn membership(user: &str, org: &str) -> Target {
    Target::Membership {
        user: user.to_owned(),
        org: org.to_owned(),
    }
}

/// Revoke `target` (see [`RevocationStore::revoke`]), or log the store's failure.
async fn revoke(
    store: &RevocationStore,
    target: Target,
    not_before: Option<i64>,
    reason: &str,
) -> Result<(), ()> {
    applied(store.revoke(target, not_before, reason).await)
}

/// A store change done, or logged as failed (the delivery is then answered 503 and retried).
fn applied<T>(result: Result<T, portcullis_apikey::StoreError>) -> Result<(), ()> {
    result.map(drop).map_err(failed)
}

fn failed(e: portcullis_apikey::StoreError) {
    tracing::warn!(target: "portcullis::webhook", error = %e, "revocation store unavailable");
}

/// `event` in `org`, with the member's role before and after.
fn role_change(
    mut event: AuditEvent,
    org: &str,
    before: Option<String>,
    after: Option<String>,
) -> AuditEvent {
    event.org_id = portcullis_core::OrgId::new(org).ok();
    event.change = Some(AuditChange {
        field: "org_role".into(),
        before,
        after,
    });
    event
}
