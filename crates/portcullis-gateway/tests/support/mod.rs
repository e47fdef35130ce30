//! The real binary, a real upstream and a real issuer, on loopback.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::IntoResponse,
    routing::{get, post},
};
use futures_util::StreamExt;
use portcullis_gateway::issuer::LocalIssuer;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const SECRET: &str = "a-test-secret-of-at-least-32-bytes-0123456789";

pub const POLICY: &str = r#"
[[routes]]
path = "/api/v1/orgs/{org}/comps"
methods = ["GET"]
scopes = ["comps:read"]

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
path = "/api/v1/orgs/{org}/files"
methods = ["POST", "GET"]
scopes = ["reports:write"]

[[routes]]
path = "/api/v1/orgs/{org}/slow"
methods = ["GET"]
scopes = ["comps:read"]

[[routes]]
path = "/public/status"
methods = ["GET"]
public = true

[[routes]]
path = "/api/v1/docs/{*path}"
methods = ["GET"]
scopes = ["comps:read"]
"#;

/// An identity provider: an RS256 key served as JWKS.
pub struct Issuer {
    pub url: String,
    key: LocalIssuer,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    pub async fn start() -> Self {
        let key = LocalIssuer::generate("k1");
        let jwks = key.jwks();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || async move { Json(jwks) }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, key, task }
    }

    /// A Clerk v1 session token of `sub` in `org` with `role`'s permissions of the default
    /// policy.
    pub fn token(&self, sub: &str, org: &str, perms: &[&str]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.sign(&json!({
            "iss": self.url, "sub": sub, "sid": format!("sess_{sub}"), "iat": now, "nbf": now,
            "exp": now + 600, "org_id": org, "org_role": "org:admin",
            "org_permissions": perms.iter().map(|p| format!("org:{p}")).collect::<Vec<_>>(),
        }))
    }

    /// A session token with every claim given.
    pub fn session_token(&self, sub: &str, sid: &str, org: &str, role: &str, iat: u64) -> String {
        self.sign(&json!({
            "iss": self.url, "sub": sub, "sid": sid, "iat": iat, "nbf": iat,
            "exp": iat + 600, "org_id": org, "org_role": format!("org:{role}"),
            "org_permissions": ["org:comps:read"],
        }))
    }

    /// Sign `claims` with the issuer's key.
    pub fn sign(&self, claims: &Value) -> String {
        self.key.sign(claims)
    }
}

/// What the upstream saw.
#[derive(Default)]
pub struct Seen {
    pub requests: AtomicUsize,
    pub last_headers: Mutex<Option<HeaderMap>>,
    pub uploaded: AtomicUsize,
}

/// A real upstream: echoes, counts, streams.
pub struct Upstream {
    pub url: String,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    State(seen): State<Arc<Seen>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Json<Value> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    *seen.last_headers.lock().unwrap() = Some(headers);
    Json(json!({"method": method.as_str(), "path": uri.path()}))
}

async fn upload(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: Body) -> Json<Value> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    *seen.last_headers.lock().unwrap() = Some(headers);
    let mut stream = body.into_data_stream();
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        n += chunk.unwrap().len();
    }
    seen.uploaded.store(n, Ordering::SeqCst);
    Json(json!({"received": n}))
}

/// `n` bytes, produced 64 KiB at a time.
async fn download(State(seen): State<Arc<Seen>>) -> impl IntoResponse {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::iter(
        (0..DOWNLOAD_BYTES / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    (StatusCode::OK, Body::from_stream(stream))
}

pub const DOWNLOAD_BYTES: usize = 50 * 1024 * 1024;

async fn slow(State(seen): State<Arc<Seen>>) -> &'static str {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    "slow answer"
}

/// A compliance service: denies paths that mention `blocked`, hangs on `hang`.
async fn guard(Json(request): Json<Value>) -> impl IntoResponse {
    let path = request["path"].as_str().unwrap_or_default().to_owned();
    if path.contains("hang") {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    if path.contains("blocked") {
        return (
            StatusCode::FORBIDDEN,
            Json(
                json!({"reason": format!("checklist incomplete for {}", request["subject"].as_str().unwrap_or("?"))}),
            ),
        );
    }
    (StatusCode::OK, Json(json!({})))
}

impl Upstream {
    pub async fn start() -> Self {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/api/v1/orgs/{org}/files", post(upload).get(download))
            .route("/api/v1/orgs/{org}/slow", get(slow))
            .route("/guard", post(guard))
            .fallback(echo)
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, seen, task }
    }

    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.seen.last_headers.lock().unwrap().clone().unwrap()
    }
}

/// Where the gateway keeps its keys.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A database for one test: a SQLite file, or a fresh PostgreSQL schema.
pub async fn database(db: Db, dir: &Path, name: &str) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("keys.db").display()),
        Db::Postgres => portcullis_test_support::pg_schema(&format!("gw_{name}")).await,
    }
}

/// The gateway's environment for one test.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Setup {
    pub async fn new(db: Db, name: &str, issuer: &Issuer, upstream: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, POLICY).unwrap();
        let env = vec![
            ("PORTCULLIS_LISTEN".into(), "127.0.0.1:0".into()),
            ("PORTCULLIS_UPSTREAM".into(), upstream.into()),
            ("PORTCULLIS_JWT_ISSUER".into(), issuer.url.clone()),
            (
                "PORTCULLIS_DATABASE_URL".into(),
                database(db, dir.path(), name).await,
            ),
            (
                "PORTCULLIS_AUDIT".into(),
                format!("jsonl:{}", dir.path().join("audit.jsonl").display()),
            ),
            ("PORTCULLIS_API_KEY_SECRET".into(), SECRET.into()),
            ("PORTCULLIS_POLICY".into(), policy.display().to_string()),
        ];
        Self { dir, env }
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    pub fn audit_file(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// Every audit event written so far.
    pub fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit_file())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis-gateway"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .kill_on_drop(true);
        cmd
    }

    /// Run a subcommand to completion: (exit code, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command().args(args).output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// Create a key with the CLI; returns (key, id).
    pub async fn create_key(&self, org: &str, scopes: &str) -> (String, String) {
        let (code, out, err) = self
            .run(&[
                "keys",
                "create",
                "--org",
                org,
                "--name",
                "test job",
                "--scopes",
                scopes,
                "--expires-in-days",
                "30",
                "--by",
                "tester",
            ])
            .await;
        assert_eq!(code, 0, "keys create failed: {err}");
        let mut lines = out.lines();
        let key = lines.next().unwrap().to_owned();
        let record: Value = serde_json::from_str(&lines.collect::<Vec<_>>().join("\n")).unwrap();
        (key, record["id"].as_str().unwrap().to_owned())
    }

    pub async fn start(&self) -> Gateway {
        Gateway::start(self.command()).await
    }
}

/// A running gateway process.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub url: String,
    pub stderr: Arc<Mutex<String>>,
}

impl Gateway {
    pub async fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let Some(line) = lines.next_line().await.unwrap() else {
                    panic!("the gateway exited: {}", stderr.lock().unwrap());
                };
                stderr.lock().unwrap().push_str(&line);
                stderr.lock().unwrap().push('\n');
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    return rest.trim().parse::<SocketAddr>().unwrap();
                }
            }
        })
        .await
        .expect("the gateway starts within 30 s");
        let log = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
            }
        });
        Self {
            child,
            addr,
            url: format!("http://{addr}"),
            stderr,
        }
    }

    /// SIGTERM, and the exit code.
    pub async fn terminate(mut self) -> i32 {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        // Under 8 s: a drain that waits out the audit writer's 10-second limit fails here.
        let status = tokio::time::timeout(Duration::from_secs(8), self.child.wait())
            .await
            .expect("the gateway stops within 8 s")
            .unwrap();
        status.code().unwrap_or(-1)
    }

    /// Peak resident memory of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id().unwrap())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub use portcullis_test_support::node_peer;

/// Sign webhook messages with Svix's own JavaScript library: (id, timestamp, payload) → the
/// `svix-signature` of each.
pub async fn svix_sign(secret: &str, messages: &[(String, i64, String)]) -> Vec<String> {
    let request = json!({
        "secret": secret,
        "messages": messages.iter().map(|(id, ts, payload)| json!({"id": id, "timestamp": ts, "payload": payload})).collect::<Vec<_>>(),
    });
    node_peer("svix-sign.mjs", &request).await["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// One webhook delivery: POST it signed (or with `signature` instead) to `gateway`.
pub async fn deliver(
    gateway: &str,
    id: &str,
    timestamp: i64,
    payload: &str,
    signature: &str,
) -> reqwest::Response {
    client()
        .post(format!("{gateway}/webhooks/clerk"))
        .header("svix-id", id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .header("content-type", "application/json")
        .body(payload.to_owned())
        .send()
        .await
        .unwrap()
}
