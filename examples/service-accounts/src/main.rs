//! A service account and an agent acting for a user, behind the Portcullis layers; see the
//! README.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use axum::{
    Json, Router,
    body::Body,
    routing::{delete, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{Request, StatusCode, request::Parts};
use http_body_util::BodyExt;
use portcullis::{
    AuthenticateLayer, OrgContextLayer, OrgId, Principal, RequireScopesLayer, Scope, ScopeSet,
    api_keys::{ApiKeyVerifier, KeyFormat, KeyHasher, MemoryStore},
    guard::{Guard, GuardFuture, GuardLayer, GuardRefusal},
    jwt::{Issuer, JwtVerifier},
};
use serde_json::{Value, json};
use tower::ServiceExt;

const ISSUER: &str = "https://clerk.example.com";

/// Agents may act for a user, but never delete: a guard can only deny.
struct NoDeletionsByAgents;

impl Guard for NoDeletionsByAgents {
    fn name(&self) -> &str {
        "no-deletions-by-agents"
    }

    fn check(&self, _request: &Parts, principal: &Principal) -> GuardFuture {
        let agent = principal.actor().map(|a| a.subject.to_string());
        Box::pin(async move {
            match agent {
                Some(agent) => Err(GuardRefusal::deny(format!(
                    "{agent} acts for a user and may not delete"
                ))),
                None => Ok(()),
            }
        })
    }
}

/// What the handlers answer: who is calling, and for whom.
async fn whoami(principal: Principal, org: OrgId) -> Json<Value> {
    Json(json!({
        "org": org,
        "subject": principal.subject(),
        "kind": principal.kind().as_str(),
        "name": principal.name(),
        "actor": principal.actor().map(|a| &*a.subject),
        "scopes": principal.scopes(),
    }))
}

/// The service: reports can be written by the job or by people (and their agents); deleting one
/// needs `reports:write` and no agent in the loop.
fn app(keys: ApiKeyVerifier, jwt: JwtVerifier) -> Router {
    Router::new()
        .route(
            "/orgs/{org}/reports",
            post(whoami).route_layer(RequireScopesLayer::all(["reports:write"])),
        )
        .route(
            "/orgs/{org}/reports/{id}",
            delete(whoami).route_layer(
                tower::ServiceBuilder::new()
                    .layer(RequireScopesLayer::all(["reports:write"]))
                    .layer(GuardLayer::new(NoDeletionsByAgents)),
            ),
        )
        .route_layer(OrgContextLayer::new())
        // API keys by their prefix, everything else as a JWT.
        .layer(AuthenticateLayer::new(Arc::new((keys, jwt))))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sign(key: &Ed25519KeyPair, claims: &Value) -> String {
    let header = b64(json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"})
        .to_string()
        .as_bytes());
    let message = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    format!("{message}.{}", b64(key.sign(message.as_bytes()).as_ref()))
}

/// Run the four calls; returns (status, body) of each.
async fn run() -> Vec<(&'static str, StatusCode, Value)> {
    // The identity provider's key (here a local one, served to the verifier as a static JWKS).
    let key = Ed25519KeyPair::generate().expect("key generation works");
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "k1",
        "x": b64(key.public_key().as_ref())}]});
    let jwt = JwtVerifier::builder()
        .issuer(Issuer::new(ISSUER).static_jwks(&jwks.to_string()))
        .build()
        .expect("valid configuration");

    // The service account: a key of org_a for the nightly job, shown once at creation.
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).expect("the OS CSPRNG works");
    let keys = ApiKeyVerifier::new(
        KeyFormat::default(),
        KeyHasher::new(1, &secret).expect("a 32-byte secret"),
        MemoryStore::new(),
    );
    let org_a = OrgId::new("org_a").expect("a valid org id");
    let job_key = keys
        .create(
            &org_a,
            "nightly report job",
            ScopeSet::from_iter([Scope::new("reports:write").expect("a scope")]),
            "user_alice",
            30,
        )
        .await
        .expect("the key is stored");

    // Alice's session token, and the token of an agent acting for her.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let alice = json!({
        "iss": ISSUER, "sub": "user_alice", "sid": "sess_1", "iat": now, "nbf": now,
        "exp": now + 600, "org_id": "org_a", "org_role": "org:member",
        "org_permissions": ["org:reports:read", "org:reports:write"],
    });
    let mut agent = alice.clone();
    agent["act"] = json!({"sub": "agent_mcp_7", "type": "agent"});
    let alice = sign(&key, &alice);
    let agent = sign(&key, &agent);

    let app = app(keys, jwt);
    let calls = [
        (
            "the job writes a report",
            "POST",
            "/orgs/org_a/reports",
            job_key.key.expose().to_owned(),
        ),
        (
            "an agent writes a report for alice",
            "POST",
            "/orgs/org_a/reports",
            agent.clone(),
        ),
        (
            "alice deletes a report",
            "DELETE",
            "/orgs/org_a/reports/r1",
            alice,
        ),
        (
            "an agent deletes a report for alice",
            "DELETE",
            "/orgs/org_a/reports/r1",
            agent,
        ),
    ];
    let mut answers = Vec::new();
    for (what, method, path, credential) in calls {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {credential}"))
            .body(Body::empty())
            .expect("a valid request");
        let res = app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let body = res.into_body().collect().await.expect("a body").to_bytes();
        answers.push((
            what,
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        ));
    }
    answers
}

#[tokio::main]
async fn main() {
    for (what, status, body) in run().await {
        println!("{what}: {status}\n  {body}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn service_accounts_and_agents_are_told_apart() {
        let answers = run().await;
        let (_, status, job) = &answers[0];
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(
            job["kind"],
            portcullis::PrincipalKind::ServiceAccount.as_str()
        );
        assert_eq!(job["name"], "nightly report job");
        assert!(job["subject"].as_str().unwrap().starts_with("key_"));

        let (_, status, agent) = &answers[1];
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(agent["subject"], "user_alice");
        assert_eq!(agent["actor"], "agent_mcp_7");

        assert_eq!(answers[2].1, StatusCode::OK, "alice may delete");
        let (_, status, refused) = &answers[3];
        assert_eq!(*status, StatusCode::FORBIDDEN, "her agent may not");
        assert_eq!(refused["error"], "guard_denied");
        assert_eq!(
            refused["reason"],
            "agent_mcp_7 acts for a user and may not delete"
        );
    }
}
