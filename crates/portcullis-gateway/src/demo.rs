//! `demo`: the gateway on the embedded default, with a local issuer and an echo upstream.
//!
//! Starts one small server on a free loopback port that plays both the identity provider (a
//! fresh RS256 key served as JWKS) and the upstream (it echoes what reached it, including the
//! identity headers), builds the gateway in front of it with a sample policy, creates an API
//! key, and prints `curl` commands.

use std::{net::SocketAddr, path::PathBuf, time::SystemTime};

use axum::{
    Json, Router,
    body::Body,
    http::{HeaderMap, Method, Uri},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use portcullis_core::{OrgId, Scope, ScopeSet, audit::AuditSink};
use serde_json::{Value, json};

use crate::{
    config::{AuditTarget, Config, JwtSettings, Secret},
    issuer::LocalIssuer,
    policy::{RawRoute, validate_routes},
    server::{Gateway, StartError},
};

/// The sample policy of the demo.
pub const SAMPLE_POLICY: &str = r#"
[[routes]]
path = "/api/v1/orgs/{org}/comps"
methods = ["GET"]
scopes = ["comps:read"]

[[routes]]
path = "/api/v1/orgs/{org}/comps"
methods = ["POST"]
scopes = ["comps:write"]

[[routes]]
path = "/api/v1/orgs/{org}/audit"
methods = ["GET"]
scopes = ["audit:read"]

[[routes]]
path = "/api/v1/orgs/{org}/reports/{report}"
methods = ["DELETE"]
scopes = ["reports:write"]
sensitive = true

[[routes]]
path = "/api/v1/me"
methods = ["GET"]

[[routes]]
path = "/public/status"
methods = ["GET"]
public = true
"#;

/// What `/` of the echo upstream answers: what reached it.
async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Json<Value> {
    let mut length = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut stream).await {
        length += chunk.len();
    }
    let forwarded: serde_json::Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| {
            name.as_str().starts_with("x-portcullis-") || name.as_str() == "x-request-id"
        })
        .map(|(name, value)| {
            (
                name.to_string(),
                Value::from(value.to_str().unwrap_or("(not UTF-8)")),
            )
        })
        .collect();
    Json(json!({
        "upstream": "portcullis demo echo",
        "method": method.as_str(),
        "path": uri.path(),
        "forwarded_identity": forwarded,
        "authorization_forwarded": headers.contains_key("authorization"),
        "body_bytes": length,
    }))
}

/// Run the demo until Ctrl-C.
pub async fn run(mut config: Config) -> Result<(), StartError> {
    let dir = std::env::var_os("PORTCULLIS_DEMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("portcullis-demo"));
    // A fresh store and audit trail each run.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| StartError(format!("cannot create {}: {e}", dir.display())))?;
    if std::env::var_os("PORTCULLIS_DATABASE_URL").is_none() {
        config.database_url = format!("sqlite://{}", dir.join("portcullis.db").display());
    }
    if std::env::var_os("PORTCULLIS_AUDIT").is_none() {
        config.audit = AuditTarget::Jsonl(dir.join("audit.jsonl"));
        config.audit_spool = dir.join("audit.jsonl.spool");
    }
    if config.api_key_secret.is_none() {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).expect("the OS CSPRNG works");
        config.api_key_secret = Some(Secret::new(URL_SAFE_NO_PAD.encode(secret)));
    }
    if config.routes.is_empty() {
        #[derive(serde::Deserialize)]
        struct Policy {
            routes: Vec<RawRoute>,
        }
        let policy: Policy = toml::from_str(SAMPLE_POLICY).expect("the sample policy parses");
        config.routes = validate_routes(policy.routes, &config.scope_policy)?;
    }

    // The identity provider and the upstream, on one free loopback port.
    let key = LocalIssuer::generate("demo-1");
    let jwks = key.jwks();
    let side = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| StartError(format!("cannot bind the demo's issuer: {e}")))?;
    let side_addr: SocketAddr = side.local_addr().expect("a bound socket has an address");
    let issuer = format!("http://{side_addr}");
    let side_app = Router::new()
        .route(
            "/.well-known/jwks.json",
            get(move || async move { Json(jwks) }),
        )
        .fallback(echo);
    tokio::spawn(async move {
        let _ = axum::serve(side, side_app).await;
    });
    config.jwt = Some(JwtSettings {
        issuer: issuer.clone(),
        jwks_url: format!("{issuer}/.well-known/jwks.json"),
        audience: Vec::new(),
        authorized_parties: Vec::new(),
    });
    let upstream: url::Url = issuer.parse().expect("a loopback URL parses");

    let gateway = Gateway::build(&config, Some(&upstream)).await?;
    let org_a = OrgId::new("org_a").expect("a valid org id");
    let key_scopes = ScopeSet::from_iter([Scope::new("comps:read").expect("a valid scope")]);
    // Made like `keys create` does: recorded in the audit trail first.
    let keys = &gateway.stores.keys;
    let prepared = keys.prepare(&org_a, "demo reporting job", key_scopes, "cli:demo", 30);
    gateway
        .stores
        .auditor
        .record_sensitive(crate::keys::operator_event(
            "api_key.created",
            "demo",
            &org_a,
            &prepared.record.id,
        ))
        .await
        .map_err(|_| StartError("the audit trail cannot record the demo key".into()))?;
    let api_key = keys
        .store_prepared(prepared)
        .await
        .map_err(|e| StartError(format!("creating the demo key: {e:?}")))?;

    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let policy = &config.scope_policy;
    let token = |sub: &str, org: &str, role: &str| {
        let perms: Vec<String> = policy
            .role_scopes(role)
            .map(|s| s.iter().map(|s| format!("org:{}", s.as_str())).collect())
            .unwrap_or_default();
        key.sign(&json!({
                "iss": issuer, "sub": sub, "sid": format!("sess_{sub}"), "iat": now, "nbf": now,
                "exp": now + 3600, "azp": "http://localhost:3000", "v": 1,
                "org_id": org, "org_slug": org.replace('_', "-"), "org_role": format!("org:{role}"),
                "org_permissions": perms,
        }))
    };
    let admin = token("user_admin", "org_a", "admin");
    let member = token("user_member", "org_a", "member");
    let other = token("user_other", "org_b", "admin");

    let base = format!("http://{}", config.listen);
    let orgs = format!("{base}/api/v1/orgs");
    let audit_file = match &config.audit {
        AuditTarget::Jsonl(path) => Some(path.clone()),
        _ => None,
    };
    println!("Portcullis gateway demo on {base}: tokens valid for an hour; Ctrl-C stops it.");
    println!("Issuer and echo upstream: {issuer}. Policy:{SAMPLE_POLICY}");
    println!("# 200: an admin of org_a reads comps (the echo shows the identity headers it got)");
    println!("curl -i {orgs}/org_a/comps -H 'Authorization: Bearer {admin}'\n");
    println!("# 200: the API key of org_a's reporting job (scope comps:read)");
    println!(
        "curl -i {orgs}/org_a/comps -H 'Authorization: Bearer {}'\n",
        api_key.key.expose()
    );
    println!(
        "# 403 insufficient_scope: a member of org_a reads the audit trail (needs audit:read)"
    );
    println!("curl -i {orgs}/org_a/audit -H 'Authorization: Bearer {member}'\n");
    println!("# 403 org_forbidden: an admin of org_b reads org_a's comps");
    println!("curl -i {orgs}/org_a/comps -H 'Authorization: Bearer {other}'\n");
    println!("# 403 forbidden: no route of the policy allows it (deny by default)");
    println!("curl -i {orgs}/org_a/secrets -H 'Authorization: Bearer {admin}'\n");
    println!("# 401: no credential, then a garbled one");
    println!("curl -i {orgs}/org_a/comps");
    println!("curl -i {orgs}/org_a/comps -H 'Authorization: Bearer not.a.token'\n");
    println!("# public route: forwarded without authentication");
    println!("curl -i {base}/public/status\n");
    println!("# the admin creates another key (shown once), then lists them");
    println!(
        "curl -i -X POST {base}/api/v1/api-keys -H 'Authorization: Bearer {admin}' -H 'content-type: application/json' -d '{{\"name\":\"ci\",\"scopes\":[\"comps:read\"],\"expires_in_days\":30}}'"
    );
    println!("curl -i {base}/api/v1/api-keys -H 'Authorization: Bearer {admin}'\n");
    if let Some(file) = audit_file {
        println!("# every refusal above is in the hash-chained audit trail:");
        println!(
            "cargo run -q -p portcullis-gateway -- audit verify {}\n",
            file.display()
        );
    }
    crate::serve(gateway, config.listen).await
}
