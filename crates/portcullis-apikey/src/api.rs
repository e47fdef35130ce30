//! The management API: create, list and revoke the caller's organization's keys.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /api/v1/api-keys` `{"name","scopes":[…],"expires_in_days":N}` | 201 with `id`, `key` (the plaintext, this once), `prefix`, `name`, `scopes`, `org_id`, `created_at`, `expires_at` |
//! | `GET /api/v1/api-keys` | 200 `{"keys":[…]}` of the caller's org; never a plaintext or a hash |
//! | `DELETE /api/v1/api-keys/{id}` | 204; a key of another org is a 404 |
//!
//! Every route requires the scope `api_keys:manage` and acts only in the caller's organization.
//! A new key's scopes must be a subset of its creator's. Creation and revocation are sensitive
//! audit events, recorded before the action: when the sink cannot take them the answer is 503
//! and nothing happens. The router expects a [`Principal`] in the request's extensions: mount it
//! behind an authentication layer.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State, rejection::JsonRejection},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{delete, get},
};
use portcullis_authz::RequireScopesLayer;
use portcullis_core::{
    AuthError, Principal, RequestId, ScopeSet,
    audit::{AuditEvent, AuditSink, Outcome, rfc3339},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{ApiKeyRecord, ApiKeyVerifier, CreateError};

/// The scope every route of the management API requires.
pub const MANAGE_SCOPE: &str = "api_keys:manage";

/// The longest request body accepted, in bytes.
const MAX_BODY: usize = 16 * 1024;

/// The management API as an axum [`Router`]; see the [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use portcullis_apikey::{ApiKeyVerifier, KeyFormat, KeyHasher, MemoryStore, api};
/// use portcullis_core::audit::TracingAudit;
///
/// let keys = ApiKeyVerifier::new(KeyFormat::default(), KeyHasher::new(1, &[7; 32]).unwrap(), MemoryStore::new());
/// let app: axum::Router = api::router(keys, Arc::new(TracingAudit));
/// ```
pub fn router(keys: ApiKeyVerifier, audit: Arc<dyn AuditSink>) -> Router {
    Router::new()
        .route("/api/v1/api-keys", get(list).post(create))
        .route("/api/v1/api-keys/{id}", delete(revoke))
        .route_layer(RequireScopesLayer::all([MANAGE_SCOPE]))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ApiState { keys, audit })
}

#[derive(Clone)]
struct ApiState {
    keys: ApiKeyVerifier,
    audit: Arc<dyn AuditSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    scopes: Vec<String>,
    expires_in_days: u32,
}

#[derive(Serialize)]
struct KeyView<'a> {
    id: &'a str,
    prefix: &'a str,
    last4: &'a str,
    name: &'a str,
    scopes: &'a ScopeSet,
    org_id: &'a str,
    created_by: &'a str,
    created_at: String,
    expires_at: String,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
}

impl<'a> From<&'a ApiKeyRecord> for KeyView<'a> {
    fn from(r: &'a ApiKeyRecord) -> Self {
        Self {
            id: &r.id,
            prefix: &r.start,
            last4: &r.last4,
            name: &r.name,
            scopes: &r.scopes,
            org_id: r.org.as_str(),
            created_by: &r.created_by,
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            revoked_at: r.revoked_at.map(rfc3339),
            last_used_at: r.last_used_at.map(rfc3339),
        }
    }
}

/// An API error: status, code, description and the request id.
fn error(status: StatusCode, code: &str, description: &str, headers: &HeaderMap) -> Response {
    let body = json!({
        "error": code,
        "error_description": description,
        "request_id": RequestId::from_headers(headers).as_str(),
    });
    (status, Json(body)).into_response()
}

fn unavailable(headers: &HeaderMap, dependency: &'static str) -> Response {
    AuthError::unavailable(dependency).to_response("portcullis", &RequestId::from_headers(headers))
}

/// The caller's organization, or the refusal.
fn caller_org(principal: &Principal) -> Option<portcullis_core::OrgId> {
    principal.org_id().cloned()
}

fn no_org(headers: &HeaderMap) -> Response {
    AuthError::org_forbidden("the credential has no active organization")
        .to_response("portcullis", &RequestId::from_headers(headers))
}

async fn create(
    State(state): State<ApiState>,
    principal: Principal,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Response {
    let Some(org) = caller_org(&principal) else {
        return no_org(&headers);
    };
    let Json(req) = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the request body is larger than 16 KiB",
                &headers,
            );
        }
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "expected {\"name\", \"scopes\", \"expires_in_days\"}",
                &headers,
            );
        }
    };
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "name must be 1 to 100 printable characters",
            &headers,
        );
    }
    let Ok(scopes) = ScopeSet::parse(&req.scopes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "scopes must be feature:action names",
            &headers,
        );
    };
    if scopes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a key needs at least one scope",
            &headers,
        );
    }
    if !scopes.is_subset(principal.scopes()) {
        let request_id = RequestId::from_headers(&headers);
        let denied = AuditEvent::new("api_key.create", Outcome::Denied)
            .by(&principal)
            .reason("scope_escalation")
            .request(&request_id, &method, uri.path())
            .sensitive();
        if state.audit.record(denied).await.is_err() {
            return unavailable(&headers, "audit sink");
        }
        let body = json!({
            "error": "insufficient_scope",
            "error_description": "a key cannot have scopes its creator lacks",
            "required": scopes.iter().filter(|s| !principal.scopes().contains(s)).collect::<Vec<_>>(),
            "request_id": request_id.as_str(),
        });
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    let max = state.keys.max_lifetime_days(&org);
    if req.expires_in_days == 0 || req.expires_in_days > max {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("expires_in_days must be between 1 and {max}"),
            &headers,
        );
    }
    let request_id = RequestId::from_headers(&headers);
    // The key (and its id) exist only in memory until the event is recorded.
    let prepared = state
        .keys
        .prepare(&org, name, scopes, principal.subject(), req.expires_in_days);
    let event = AuditEvent::new("api_key.created", Outcome::Success)
        .by(&principal)
        .target("api_key", &*prepared.record.id)
        .request(&request_id, &method, uri.path())
        .sensitive();
    if state.audit.record_sensitive(event).await.is_err() {
        return unavailable(&headers, "audit sink");
    }
    let created = match state.keys.store_prepared(prepared).await {
        Ok(created) => created,
        Err(CreateError::Store(e)) => {
            tracing::warn!(target: "portcullis::api_keys", error = %e, "storing a new key failed");
            return unavailable(&headers, "key store");
        }
        Err(CreateError::Lifetime { .. }) => unreachable!("checked above"),
    };
    let r = &created.record;
    let body = json!({
        "id": &*r.id,
        "key": created.key.expose(),
        "prefix": &*r.start,
        "name": &*r.name,
        "scopes": &r.scopes,
        "org_id": r.org.as_str(),
        "created_at": rfc3339(r.created_at),
        "expires_at": rfc3339(r.expires_at),
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn list(State(state): State<ApiState>, principal: Principal, headers: HeaderMap) -> Response {
    let Some(org) = caller_org(&principal) else {
        return no_org(&headers);
    };
    match state.keys.list(&org).await {
        Ok(keys) => {
            let keys: Vec<KeyView<'_>> = keys.iter().map(KeyView::from).collect();
            Json(json!({ "keys": keys })).into_response()
        }
        Err(e) => {
            tracing::warn!(target: "portcullis::api_keys", error = %e, "listing keys failed");
            unavailable(&headers, "key store")
        }
    }
}

async fn revoke(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(org) = caller_org(&principal) else {
        return no_org(&headers);
    };
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such key in this organization",
            &headers,
        )
    };
    if id.len() > 64 {
        return not_found();
    }
    let exists = match state.keys.list(&org).await {
        Ok(keys) => keys.iter().any(|k| *k.id == *id),
        Err(_) => return unavailable(&headers, "key store"),
    };
    if !exists {
        return not_found();
    }
    let request_id = RequestId::from_headers(&headers);
    let event = AuditEvent::new("api_key.revoked", Outcome::Success)
        .by(&principal)
        .target("api_key", id.clone())
        .request(&request_id, &method, uri.path())
        .sensitive();
    if state.audit.record_sensitive(event).await.is_err() {
        return unavailable(&headers, "audit sink");
    }
    match state.keys.revoke(&org, &id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => not_found(),
        Err(_) => unavailable(&headers, "key store"),
    }
}
