//! The HTTP callout guard: asks a compliance service about each request of a route.
//!
//! The gateway `POST`s a JSON description of the authorized request —
//! `request_id`, `method`, `path`, `subject`, `subject_kind`, `actor`, `org`, `org_role`,
//! `scopes` — and passes the request on a 2xx answer. Any other status denies it (403
//! `guard_denied`, with the answer's `reason` field when it has one); a timeout or a connection
//! failure fails closed (503). The request's body is never sent.

use std::time::Duration;

use http::request::Parts;
use portcullis_authz::guard::{Guard, GuardFuture, GuardRefusal};
use portcullis_core::{Principal, RequestId};
use serde::Deserialize;

use crate::policy::CalloutGuard;

/// The longest guard answer read, in bytes.
const MAX_ANSWER: usize = 4096;
/// The longest reason passed on to the client.
const MAX_REASON: usize = 200;

/// A [`Guard`] that asks an HTTP service; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct HttpCallout {
    client: reqwest::Client,
    url: url::Url,
    name: String,
    timeout: Duration,
}

impl HttpCallout {
    /// A callout to `guard.url` with `guard.timeout`, sharing `client`'s connections.
    pub fn new(client: reqwest::Client, guard: &CalloutGuard) -> Self {
        Self {
            client,
            name: format!(
                "callout {}{}",
                guard.url.host_str().unwrap_or_default(),
                guard.url.path()
            ),
            url: guard.url.clone(),
            timeout: guard.timeout,
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    reason: Option<String>,
}

impl Guard for HttpCallout {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, request: &Parts, principal: &Principal) -> GuardFuture {
        let body = serde_json::json!({
            "request_id": RequestId::from_headers(&request.headers).as_str(),
            "method": request.method.as_str(),
            "path": request.uri.path(),
            "subject": principal.subject(),
            "subject_kind": principal.kind().as_str(),
            "actor": principal.actor().map(|a| &*a.subject),
            "org": principal.org_id().map(|o| o.as_str()),
            "org_role": principal.org_role(),
            "scopes": principal.scopes().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        });
        let call = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .json(&body);
        let timeout = self.timeout;
        let name = self.name.clone();
        Box::pin(async move {
            let answer = async {
                let mut res = call.send().await?;
                let status = res.status();
                let mut bytes = Vec::new();
                while bytes.len() < MAX_ANSWER {
                    match res.chunk().await? {
                        Some(chunk) => bytes.extend_from_slice(&chunk),
                        None => break,
                    }
                }
                Ok::<_, reqwest::Error>((status, bytes))
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok((status, _))) if status.is_success() => Ok(()),
                Ok(Ok((status, bytes))) => {
                    let reason = serde_json::from_slice::<Answer>(&bytes)
                        .ok()
                        .and_then(|a| a.reason)
                        .map(|r| sanitize(&r))
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| format!("refused by the compliance check ({status})"));
                    Err(GuardRefusal::deny(reason))
                }
                Ok(Err(e)) => {
                    tracing::warn!(target: "portcullis::guard", guard = %name, error = %e, "guard callout failed");
                    Err(GuardRefusal::Unavailable)
                }
                Err(_) => {
                    tracing::warn!(target: "portcullis::guard", guard = %name, "guard callout timed out");
                    Err(GuardRefusal::Unavailable)
                }
            }
        })
    }
}

/// Printable characters only, at most [`MAX_REASON`] bytes.
fn sanitize(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        out.push(c);
    }
    out
}
