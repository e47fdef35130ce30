//! `serve`: the layers composed in front of the upstream.
//!
//! ```text
//! AuditLayer (request id, every refusal recorded)
//!  ├─ policy route, public                    Proxy
//!  ├─ policy route                            Authenticate → OrgContext → RequireScopes → Guards → Proxy
//!  ├─ policy path, another method             Authenticate → 403 forbidden
//!  └─ axum router
//!     ├─ /healthz, /readyz                    no authentication
//!     ├─ /api/v1/api-keys…                    Authenticate → the management API (api_keys:manage)
//!     └─ anything else                        Authenticate → 403 forbidden
//! ```
//!
//! Policy routes are dispatched by [`Routes`] without axum's router;
//! each is one tower stack of a known type.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use portcullis_apikey::{
    ApiKeyVerifier, KeyFormat, KeyHasher, LastUseFlush, SqlStore, store::RevocationFeed,
};
use portcullis_audit::Audit;
use portcullis_audit::{
    AuditLayer, Auditor, AuditorConfig, AuditorTask, JsonlSink, JsonlWriter, PgAuditSink,
    StdoutWriter,
};
use portcullis_authn::{Authenticate, AuthenticateLayer};
use portcullis_authz::{GuardLayer, OrgContextLayer, RequireScopesLayer};
use portcullis_core::audit::AuditSink;
use portcullis_jwt::{Issuer, JwtVerifier};
use portcullis_revocation::{Revocable, RevocationList, RevocationStore, RevocationWatch};
use serde_json::json;
use tower::{Layer, ServiceBuilder};

use crate::{
    callout::HttpCallout,
    config::{AuditTarget, Config},
    proxy::Proxy,
    routes::{NoRoute, PathRoutes, RouteStack, Routes},
};

/// The composed gateway: the audit layer around the routes.
pub type App = Audit<Routes, Auditor>;

/// A failure to start, with what failed.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl From<portcullis_core::ConfigError> for StartError {
    fn from(e: portcullis_core::ConfigError) -> Self {
        Self(e.to_string())
    }
}

/// API keys first (by their prefix), else a JWT when an issuer is configured (refused when
/// none is), checked against the revocation list on every request.
pub type Credentials = (ApiKeyVerifier, Option<Revocable<JwtVerifier>>);

/// The key store and the audit emitter, as `serve`, `keys` and `review` use them.
#[derive(Debug)]
pub struct Stores {
    /// The key store.
    pub store: SqlStore,
    /// The verifier (and key manager) over it.
    pub keys: ApiKeyVerifier,
    /// The audit emitter.
    pub auditor: Auditor,
    /// Revocations, memberships and last-seen users, in the key store's database.
    pub revocations: RevocationStore,
    auditor_task: AuditorTask,
    pg_audit: Option<PgAuditSink>,
}

impl Stores {
    /// Open the configured store and audit sink. Without a key secret the store can be listed
    /// and revoked from, but keys cannot be created or verified.
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let store = SqlStore::connect(&config.database_url)
            .await
            .map_err(|e| StartError(format!("PORTCULLIS_DATABASE_URL: {e}")))?;
        let secret: Vec<u8> = match &config.api_key_secret {
            Some(s) => s.expose().as_bytes().to_vec(),
            // A random secret: nothing made with it can be used again.
            None => {
                let mut random = vec![0; 32];
                aws_lc_rs::rand::fill(&mut random).expect("the OS CSPRNG works");
                random
            }
        };
        let hasher = KeyHasher::new(1, &secret)?;
        let keys = ApiKeyVerifier::new(KeyFormat::default(), hasher, store.clone());
        let revocations = RevocationStore::open(
            store.clone(),
            RevocationList::new(),
            config.max_token_lifetime,
        )
        .await
        .map_err(|e| StartError(format!("PORTCULLIS_DATABASE_URL: revocations: {e}")))?;

        let spool = AuditorConfig::new(&config.audit_spool);
        let start_err = |e: std::io::Error| {
            StartError(format!(
                "PORTCULLIS_AUDIT_SPOOL: cannot open {}: {e}",
                config.audit_spool.display()
            ))
        };
        let (auditor, auditor_task, pg_audit) = match &config.audit {
            AuditTarget::Jsonl(path) => {
                let sink = JsonlSink::open(path).map_err(|e| {
                    StartError(format!(
                        "PORTCULLIS_AUDIT: cannot open {}: {e}",
                        path.display()
                    ))
                })?;
                let (a, t) = Auditor::start(JsonlWriter::new(sink), spool).map_err(start_err)?;
                (a, t, None)
            }
            AuditTarget::Postgres => {
                let pg = PgAuditSink::connect(&config.database_url)
                    .await
                    .map_err(|e| StartError(format!("PORTCULLIS_AUDIT (postgres): {e}")))?;
                let (a, t) = Auditor::start(pg.clone(), spool).map_err(start_err)?;
                (a, t, Some(pg))
            }
            AuditTarget::Stdout => {
                let (a, t) = Auditor::start(StdoutWriter, spool).map_err(start_err)?;
                (a, t, None)
            }
        };
        Ok(Self {
            store,
            keys,
            revocations,
            auditor,
            auditor_task,
            pg_audit,
        })
    }

    /// Write what is pending (last uses, audit events) and stop the audit writer.
    pub async fn close(self) {
        if let Err(e) = self.keys.flush_last_use().await {
            tracing::warn!(error = %e, "last key uses could not be written");
        }
        if let Err(e) = self.revocations.flush_seen().await {
            tracing::warn!(error = %e, "last-seen times could not be written");
        }
        self.auditor.flush().await;
        let Self {
            auditor,
            auditor_task,
            keys,
            store,
            revocations,
            ..
        } = self;
        drop((auditor, keys, revocations));
        store.pool().close().await;
        if tokio::time::timeout(Duration::from_secs(10), auditor_task.join())
            .await
            .is_err()
        {
            tracing::error!("the audit writer did not stop within 10 s");
        }
    }
}

/// A running gateway's parts that outlive the router.
#[derive(Debug)]
pub struct Gateway {
    /// The composed application.
    pub app: App,
    /// Stores and audit.
    pub stores: Stores,
    /// How long a connection may take to send a request head, or stay idle between requests.
    pub client_timeout: Duration,
    jwt: Option<JwtVerifier>,
    _feed: Option<RevocationFeed>,
    _last_use: LastUseFlush,
    _revocation_watch: Option<RevocationWatch>,
    _maintenance: RevocationWatch,
}

impl Gateway {
    /// Build everything `config` describes; `upstream` replaces `config.upstream` (demo).
    pub async fn build(config: &Config, upstream: Option<&url::Url>) -> Result<Self, StartError> {
        if config.api_key_secret.is_none() {
            return Err(StartError(
                "PORTCULLIS_API_KEY_SECRET (`api_key_secret`): required to serve (at least 32 bytes, for example `openssl rand -base64 48`)".into(),
            ));
        }
        let upstream = upstream.or(config.upstream.as_ref()).ok_or_else(|| {
            StartError("PORTCULLIS_UPSTREAM (`upstream`): required to serve (or run `demo`)".into())
        })?;
        let stores = Stores::open(config).await?;
        // PostgreSQL: every replica hears revocations at once (`None` on SQLite).
        let feed = stores
            .store
            .watch_revocations(stores.keys.clone())
            .await
            .map_err(|e| StartError(format!("revocation feed: {e}")))?;
        let last_use = stores.keys.spawn_last_use_flush(Duration::from_secs(60));
        // PostgreSQL: every replica reloads the revocations when one changes them.
        let revocation_watch = stores
            .revocations
            .watch()
            .await
            .map_err(|e| StartError(format!("revocation feed: {e}")))?;
        let maintenance = stores
            .revocations
            .spawn_maintenance(Duration::from_secs(60));
        let jwt = match &config.jwt {
            None => None,
            Some(j) => {
                let mut issuer = Issuer::new(j.issuer.as_str()).jwks_url(j.jwks_url.as_str());
                for aud in &j.audience {
                    issuer = issuer.audience(aud.as_str());
                }
                for azp in &j.authorized_parties {
                    issuer = issuer.authorized_party(azp.as_str());
                }
                let jwt = JwtVerifier::builder()
                    .issuer(issuer)
                    .scope_policy(config.scope_policy.clone())
                    .build()?;
                // Warm the JWKS; a failure is not fatal (readiness reports it, requests get 503
                // and the verifier retries by itself).
                if let Err(e) = jwt.prefetch().await {
                    tracing::warn!(error = %e, "the JWKS could not be fetched yet");
                }
                Some(jwt)
            }
        };
        let credentials: Arc<Credentials> = Arc::new((
            stores.keys.clone(),
            jwt.clone()
                .map(|jwt| Revocable::with_store(jwt, stores.revocations.clone())),
        ));
        let proxy = Proxy::new(upstream, config.upstream_timeout, config.forward_credential)
            .assertions(config.assertions.clone())
            .realm(&config.realm);
        let app = compose(config, &credentials, &stores, proxy, jwt.clone())?;
        Ok(Self {
            app,
            stores,
            client_timeout: config.client_timeout,
            jwt,
            _feed: feed,
            _last_use: last_use,
            _revocation_watch: revocation_watch,
            _maintenance: maintenance,
        })
    }

    /// The JWT verifier, when an issuer is configured.
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }
}

fn compose(
    config: &Config,
    credentials: &Arc<Credentials>,
    stores: &Stores,
    proxy: Proxy,
    jwt: Option<JwtVerifier>,
) -> Result<App, StartError> {
    let realm = config.realm.as_str();
    let authenticate = AuthenticateLayer::new(credentials.clone()).realm(realm);
    let refused: Authenticate<NoRoute, _> = authenticate.layer(NoRoute::new(realm));
    let guard_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| StartError(format!("guard HTTP client: {e}")))?;

    // Routes grouped by path, in the policy's order.
    let mut by_path: BTreeMap<&str, Vec<&crate::policy::Route>> = BTreeMap::new();
    for route in &config.routes {
        by_path.entry(route.path.as_str()).or_default().push(route);
    }
    let mut paths = Vec::with_capacity(by_path.len());
    for (path, routes) in by_path {
        let mut methods = Vec::new();
        let mut otherwise = None;
        for route in routes {
            let stack = if route.public {
                RouteStack::Public(proxy.clone())
            } else {
                let mut scopes = if route.any {
                    RequireScopesLayer::any(route.scopes.iter().cloned())
                } else {
                    RequireScopesLayer::all(route.scopes.iter().cloned())
                }
                .realm(realm);
                if route.sensitive {
                    scopes = scopes.sensitive();
                }
                let mut org = OrgContextLayer::new().realm(realm).path_template(path);
                if let Some(h) = &config.org_header {
                    org = org.header(h.clone());
                }
                let guard = route.guard.as_ref().map(|g| {
                    GuardLayer::new(HttpCallout::new(guard_client.clone(), g)).realm(realm)
                });
                RouteStack::Protected(Box::new(
                    ServiceBuilder::new()
                        .layer(authenticate.clone())
                        .layer(org)
                        .layer(scopes)
                        .option_layer(guard)
                        .service(proxy.clone()),
                ))
            };
            match &route.methods {
                None => otherwise = Some(stack),
                Some(list) => {
                    for m in list {
                        if !methods.iter().any(|(seen, _)| seen == m) {
                            methods.push((m.clone(), stack.clone()));
                        }
                    }
                }
            }
        }
        let otherwise = otherwise.unwrap_or_else(|| RouteStack::Refused(refused.clone()));
        paths.push((path.to_owned(), PathRoutes { methods, otherwise }));
    }

    let api = portcullis_apikey::api::router(
        stores.keys.clone(),
        Arc::new(stores.auditor.clone()) as Arc<dyn AuditSink>,
    )
    .layer(authenticate);
    let readiness = Readiness {
        store: stores.store.clone(),
        pg_audit: stores.pg_audit.clone(),
        auditor: stores.auditor.clone(),
        jwt,
    };
    let mut health = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(readiness));
    if let Some(assertions) = &config.assertions {
        let jwks = assertions.jwks();
        health = health.route(
            crate::assertion::JWKS_PATH,
            get(move || async move { Json(jwks) }),
        );
    }

    let mut router = api.merge(health);
    if let Some(secret) = &config.clerk_webhook_secret {
        let receiver = portcullis_revocation::webhook::router(
            secret.expose(),
            stores.revocations.clone(),
            Arc::new(stores.auditor.clone()) as Arc<dyn AuditSink>,
        )
        .map_err(|e| StartError(format!("PORTCULLIS_CLERK_WEBHOOK_SECRET: {e}")))?;
        router = router.merge(receiver);
    }
    let routes = Routes::new(paths, router.fallback_service(refused.clone()), refused)
        .map_err(|e| StartError(format!("routes: {e}")))?;
    Ok(AuditLayer::new(stores.auditor.clone())
        .level(config.audit_level)
        .layer(routes))
}

#[derive(Debug)]
struct Readiness {
    store: SqlStore,
    pg_audit: Option<PgAuditSink>,
    auditor: Auditor,
    jwt: Option<JwtVerifier>,
}

async fn ready(State(r): State<Arc<Readiness>>) -> impl IntoResponse {
    const WAIT: Duration = Duration::from_secs(2);
    let mut failing = Vec::new();
    let store_ok = tokio::time::timeout(WAIT, sqlx_ping(&r.store)).await;
    if !matches!(store_ok, Ok(true)) {
        failing.push("key_store");
    }
    let audit_ok = r.auditor.is_healthy()
        && match &r.pg_audit {
            None => true,
            Some(pg) => matches!(
                tokio::time::timeout(WAIT, sqlx::query("SELECT 1").execute(pg.pool())).await,
                Ok(Ok(_))
            ),
        };
    if !audit_ok {
        failing.push("audit_sink");
    }
    if let Some(jwt) = &r.jwt {
        let jwks_ok = jwt.is_ready()
            || matches!(tokio::time::timeout(WAIT, jwt.prefetch()).await, Ok(Ok(())));
        if !jwks_ok {
            failing.push("jwks");
        }
    }
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "failing": failing})),
        )
    }
}

async fn sqlx_ping(store: &SqlStore) -> bool {
    sqlx::query("SELECT 1").execute(store.pool()).await.is_ok()
}
