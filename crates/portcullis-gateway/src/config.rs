//! Configuration: a TOML file (`--config`) with every key overridable from the environment.
//!
//! | TOML key | environment | meaning | default |
//! |---|---|---|---|
//! | `strict_scopes` | `STRICT_SCOPES` | strict-scope mode | `true` |
//! | `listen` | `PORTCULLIS_LISTEN` | listen address | `127.0.0.1:8080` |
//! | `upstream` | `PORTCULLIS_UPSTREAM` | `http://` URL requests are forwarded to | required (demo: a built-in echo) |
//! | `jwt_issuer` | `PORTCULLIS_JWT_ISSUER` | expected `iss` | none: JWTs are refused |
//! | `jwks_url` | `PORTCULLIS_JWKS_URL` | JWKS endpoint | `<issuer>/.well-known/jwks.json` |
//! | `jwt_audience` | `PORTCULLIS_JWT_AUDIENCE` | expected `aud`, comma separated | none checked |
//! | `authorized_parties` | `PORTCULLIS_AUTHORIZED_PARTIES` | allowed `azp`, comma separated | none checked |
//! | `database_url` | `PORTCULLIS_DATABASE_URL` | key store, `sqlite://…` or `postgres://…` | `sqlite://portcullis.db` |
//! | `audit` | `PORTCULLIS_AUDIT` | `jsonl:<path>`, `postgres` or `stdout` | `jsonl:audit.jsonl` |
//! | `audit_level` | `PORTCULLIS_AUDIT_LEVEL` | `decisions` or `all` | `decisions` |
//! | `audit_spool` | `PORTCULLIS_AUDIT_SPOOL` | where routine events wait while the sink is down | `<audit file>.spool`, else `audit.spool` |
//! | `policy` | `PORTCULLIS_POLICY` | a TOML file of `[[routes]]` | the `[[routes]]` of `--config` |
//! | `api_key_secret` | `PORTCULLIS_API_KEY_SECRET` | server secret for key hashing, at least 32 bytes | required outside `demo` |
//! | `clerk_webhook_secret` | `PORTCULLIS_CLERK_WEBHOOK_SECRET` | Svix secret of `POST /webhooks/clerk` | receiver off |
//! | `max_token_lifetime_secs` | `PORTCULLIS_MAX_TOKEN_LIFETIME_SECS` | the longest lifetime of the issuer's tokens: how long a revocation is kept | `86400` |
//! | `realm` | `PORTCULLIS_REALM` | realm of `WWW-Authenticate` | `portcullis` |
//! | `org_header` | `PORTCULLIS_ORG_HEADER` | a request header that, when sent, must name the principal's org | none |
//! | `upstream_timeout_secs` | `PORTCULLIS_UPSTREAM_TIMEOUT_SECS` | wait for the upstream's response head (504 after) | `30` |
//! | `client_timeout_secs` | `PORTCULLIS_CLIENT_TIMEOUT_SECS` | wait for a client's request head, also the next one on a kept-alive HTTP/1.1 connection (the connection is closed after); an HTTP/2 connection with no request in flight that long is shut down gracefully | `30` |
//! | `forward_credential` | `PORTCULLIS_FORWARD_CREDENTIAL` | also forward `Authorization` | `false` |
//! | `assertion_key` | `PORTCULLIS_ASSERTION_KEY` | Ed25519 PKCS#8 PEM file: forward a signed `x-portcullis-assertion` ([`assertion`](crate::assertion)) | off |
//! | `assertion_issuer` | `PORTCULLIS_ASSERTION_ISSUER` | its `iss` | `portcullis-gateway` |
//! | `assertion_audience` | `PORTCULLIS_ASSERTION_AUDIENCE` | its `aud` | the upstream URL |
//!
//! Two more are read by the binary itself: `PORTCULLIS_CONFIG` (the `--config` file) and
//! `PORTCULLIS_WORKER_THREADS` (runtime workers; default the CPUs the process may use).
//!
//! Every problem is reported with the key (and the environment name) it concerns.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use http::HeaderName;
use portcullis_core::{ConfigError, ScopePolicy, audit::AuditLevel, parse_bool};
use serde::Deserialize;

use crate::{
    assertion::Assertions,
    policy::{RawRoute, Route, validate_routes},
};

/// A value that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    pub(crate) fn new(secret: impl Into<Box<str>>) -> Self {
        Self(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Where audit events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditTarget {
    /// A hash-chained JSON Lines file.
    Jsonl(PathBuf),
    /// The audit table of the PostgreSQL database of `database_url`.
    Postgres,
    /// One JSON object per line on standard output (not chained; for log shippers).
    Stdout,
}

/// JWT settings; present when an issuer is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// JWKS endpoint.
    pub jwks_url: String,
    /// Accepted `aud` values (none: not checked).
    pub audience: Vec<String>,
    /// Accepted `azp` values (none: not checked).
    pub authorized_parties: Vec<String>,
}

/// The validated configuration of a gateway.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Where requests go; `None` only in `demo`, which serves its own echo.
    pub upstream: Option<url::Url>,
    /// The scope policy (canonical scopes, role map, strictness).
    pub scope_policy: ScopePolicy,
    /// JWT settings.
    pub jwt: Option<JwtSettings>,
    /// Key store URL.
    pub database_url: String,
    /// Audit sink.
    pub audit: AuditTarget,
    /// Audit level.
    pub audit_level: AuditLevel,
    /// Audit spool file.
    pub audit_spool: PathBuf,
    /// Key hashing secret.
    pub api_key_secret: Option<Secret>,
    /// Svix secret of the Clerk webhook receiver.
    pub clerk_webhook_secret: Option<Secret>,
    /// How long a revocation is kept (the longest token lifetime, plus leeway).
    pub max_token_lifetime: Duration,
    /// The validated route policy.
    pub routes: Vec<Route>,
    /// Realm of `WWW-Authenticate`.
    pub realm: String,
    /// Optional org header.
    pub org_header: Option<HeaderName>,
    /// Upstream response-head timeout.
    pub upstream_timeout: Duration,
    /// How long an HTTP/1.1 connection may take to send a request head, or stay idle between
    /// requests.
    pub client_timeout: Duration,
    /// Forward `Authorization` upstream.
    pub forward_credential: bool,
    /// Signed identity assertions for the upstream.
    pub assertions: Option<Assertions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    strict_scopes: Option<bool>,
    listen: Option<String>,
    upstream: Option<String>,
    jwt_issuer: Option<String>,
    jwks_url: Option<String>,
    jwt_audience: Option<StringOrList>,
    authorized_parties: Option<StringOrList>,
    database_url: Option<String>,
    audit: Option<String>,
    audit_level: Option<String>,
    audit_spool: Option<String>,
    policy: Option<String>,
    api_key_secret: Option<String>,
    clerk_webhook_secret: Option<String>,
    realm: Option<String>,
    org_header: Option<String>,
    upstream_timeout_secs: Option<u64>,
    client_timeout_secs: Option<u64>,
    forward_credential: Option<bool>,
    max_token_lifetime_secs: Option<u64>,
    assertion_key: Option<String>,
    assertion_issuer: Option<String>,
    assertion_audience: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_list(self) -> Vec<String> {
        match self {
            Self::One(s) => split_list(&s),
            Self::Many(v) => v
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The key as the file names it and as the environment does, for error messages.
fn key(toml: &str, env: &str) -> String {
    format!("{env} (`{toml}`)")
}

/// A whole number of seconds, at least 1: from the environment, else the file, else `default`.
fn seconds(
    env: &impl Fn(&str) -> Option<String>,
    toml: &str,
    env_name: &str,
    file: Option<u64>,
    default: u64,
) -> Result<Duration, ConfigError> {
    let secs = match env(env_name) {
        Some(v) => v.parse::<u64>().map_err(|_| {
            ConfigError::new(
                key(toml, env_name),
                format!("`{v}` is not a number of seconds"),
            )
        })?,
        None => file.unwrap_or(default),
    };
    if secs == 0 {
        return Err(ConfigError::new(key(toml, env_name), "must be at least 1"));
    }
    Ok(Duration::from_secs(secs))
}

/// Read a TOML file, naming the file in errors.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(what, format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        ConfigError::new(
            what,
            format!("{}: {}", path.display(), e.to_string().trim_end()),
        )
    })
}

impl Config {
    /// Load `file` (if any), apply the process environment, and validate.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, |name| std::env::var(name).ok())
    }

    /// Like [`Config::load`] with `env` standing for the environment.
    pub fn load_with(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut f: FileConfig = match file {
            Some(path) => read_toml(path, "--config")?,
            None => FileConfig::default(),
        };
        // The environment overrides the file.
        let get = |env_name: &str, file_value: Option<String>| {
            env(env_name).filter(|v| !v.is_empty()).or(file_value)
        };
        let strict = match env("STRICT_SCOPES").filter(|v| !v.is_empty()) {
            Some(v) => parse_bool("STRICT_SCOPES", &v)?,
            None => f.strict_scopes.unwrap_or(true),
        };
        let scope_policy = ScopePolicy::builder().strict(strict).build()?;

        let listen_key = key("listen", "PORTCULLIS_LISTEN");
        let listen =
            get("PORTCULLIS_LISTEN", f.listen.take()).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            ConfigError::new(
                &*listen_key,
                format!("`{listen}` is not an address such as 127.0.0.1:8080"),
            )
        })?;

        let upstream = get("PORTCULLIS_UPSTREAM", f.upstream.take())
            .map(|u| parse_upstream(&u))
            .transpose()?;

        let issuer = get("PORTCULLIS_JWT_ISSUER", f.jwt_issuer.take());
        let jwks_url = get("PORTCULLIS_JWKS_URL", f.jwks_url.take());
        let audience = env("PORTCULLIS_JWT_AUDIENCE")
            .map(|v| split_list(&v))
            .or_else(|| f.jwt_audience.take().map(StringOrList::into_list))
            .unwrap_or_default();
        let parties = env("PORTCULLIS_AUTHORIZED_PARTIES")
            .map(|v| split_list(&v))
            .or_else(|| f.authorized_parties.take().map(StringOrList::into_list))
            .unwrap_or_default();
        let jwt = match issuer {
            Some(issuer) => {
                let issuer_key = key("jwt_issuer", "PORTCULLIS_JWT_ISSUER");
                check_url(&issuer_key, &issuer)?;
                let jwks_url = jwks_url.unwrap_or_else(|| {
                    format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'))
                });
                check_url(&key("jwks_url", "PORTCULLIS_JWKS_URL"), &jwks_url)?;
                Some(JwtSettings {
                    issuer,
                    jwks_url,
                    audience,
                    authorized_parties: parties,
                })
            }
            None if jwks_url.is_some() => {
                return Err(ConfigError::new(
                    key("jwt_issuer", "PORTCULLIS_JWT_ISSUER"),
                    "a JWKS URL is set but no issuer: set the expected `iss`",
                ));
            }
            None => None,
        };

        let database_url = get("PORTCULLIS_DATABASE_URL", f.database_url.take())
            .unwrap_or_else(|| "sqlite://portcullis.db".into());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres:")
            || database_url.starts_with("postgresql:"))
        {
            return Err(ConfigError::new(
                key("database_url", "PORTCULLIS_DATABASE_URL"),
                "must start with sqlite: or postgres:",
            ));
        }
        let is_postgres = !database_url.starts_with("sqlite:");

        let audit_key = key("audit", "PORTCULLIS_AUDIT");
        let audit =
            get("PORTCULLIS_AUDIT", f.audit.take()).unwrap_or_else(|| "jsonl:audit.jsonl".into());
        let audit = match audit.as_str() {
            "postgres" if is_postgres => AuditTarget::Postgres,
            "postgres" => {
                return Err(ConfigError::new(
                    &*audit_key,
                    "`postgres` writes to the database of PORTCULLIS_DATABASE_URL, which is not PostgreSQL",
                ));
            }
            "stdout" => AuditTarget::Stdout,
            other => match other.strip_prefix("jsonl:") {
                Some(path) if !path.is_empty() => AuditTarget::Jsonl(path.into()),
                _ => {
                    return Err(ConfigError::new(
                        &*audit_key,
                        format!("`{other}` is not one of jsonl:<path>, postgres, stdout"),
                    ));
                }
            },
        };
        let audit_level = match get("PORTCULLIS_AUDIT_LEVEL", f.audit_level.take()).as_deref() {
            None | Some("decisions") => AuditLevel::Decisions,
            Some("all") => AuditLevel::All,
            Some(other) => {
                return Err(ConfigError::new(
                    key("audit_level", "PORTCULLIS_AUDIT_LEVEL"),
                    format!("`{other}` is not one of decisions, all"),
                ));
            }
        };
        let audit_spool = get("PORTCULLIS_AUDIT_SPOOL", f.audit_spool.take())
            .map(PathBuf::from)
            .unwrap_or_else(|| match &audit {
                AuditTarget::Jsonl(path) => {
                    let mut spool = path.clone().into_os_string();
                    spool.push(".spool");
                    spool.into()
                }
                _ => "audit.spool".into(),
            });

        let api_key_secret = get("PORTCULLIS_API_KEY_SECRET", f.api_key_secret.take())
            .map(|s| {
                if s.len() < portcullis_apikey::MIN_SECRET_LEN {
                    Err(ConfigError::new(
                        key("api_key_secret", "PORTCULLIS_API_KEY_SECRET"),
                        format!(
                            "too short: at least {} bytes (for example `openssl rand -base64 48`)",
                            portcullis_apikey::MIN_SECRET_LEN
                        ),
                    ))
                } else {
                    Ok(Secret(s.into()))
                }
            })
            .transpose()?;
        let clerk_webhook_secret = get(
            "PORTCULLIS_CLERK_WEBHOOK_SECRET",
            f.clerk_webhook_secret.take(),
        )
        .map(|s| {
            if portcullis_revocation::signature::SigningSecret::new(&s).is_some() {
                Ok(Secret(s.into()))
            } else {
                Err(ConfigError::new(
                    key("clerk_webhook_secret", "PORTCULLIS_CLERK_WEBHOOK_SECRET"),
                    "must be the endpoint's signing secret: whsec_ and base64",
                ))
            }
        })
        .transpose()?;

        let realm = get("PORTCULLIS_REALM", f.realm.take()).unwrap_or_else(|| "portcullis".into());
        if !realm
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ')
        {
            return Err(ConfigError::new(
                key("realm", "PORTCULLIS_REALM"),
                "printable ASCII without quotes or backslashes",
            ));
        }
        let org_header = get("PORTCULLIS_ORG_HEADER", f.org_header.take())
            .map(|h| {
                HeaderName::try_from(h.as_str()).map_err(|_| {
                    ConfigError::new(
                        key("org_header", "PORTCULLIS_ORG_HEADER"),
                        format!("`{h}` is not a header name"),
                    )
                })
            })
            .transpose()?;
        let upstream_timeout = seconds(
            &env,
            "upstream_timeout_secs",
            "PORTCULLIS_UPSTREAM_TIMEOUT_SECS",
            f.upstream_timeout_secs,
            30,
        )?;
        let client_timeout = seconds(
            &env,
            "client_timeout_secs",
            "PORTCULLIS_CLIENT_TIMEOUT_SECS",
            f.client_timeout_secs,
            30,
        )?;
        let max_token_lifetime = match env("PORTCULLIS_MAX_TOKEN_LIFETIME_SECS") {
            Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError::new(
                    key(
                        "max_token_lifetime_secs",
                        "PORTCULLIS_MAX_TOKEN_LIFETIME_SECS",
                    ),
                    format!("`{v}` is not a positive number of seconds"),
                )
            })?,
            None => f.max_token_lifetime_secs.unwrap_or(86_400),
        };
        let forward_credential = match env("PORTCULLIS_FORWARD_CREDENTIAL") {
            Some(v) => parse_bool("PORTCULLIS_FORWARD_CREDENTIAL", &v)?,
            None => f.forward_credential.unwrap_or(false),
        };

        let assertions = match get("PORTCULLIS_ASSERTION_KEY", f.assertion_key.take()) {
            None => None,
            Some(path) => {
                let issuer = get("PORTCULLIS_ASSERTION_ISSUER", f.assertion_issuer.take())
                    .unwrap_or_else(|| "portcullis-gateway".into());
                let audience = get("PORTCULLIS_ASSERTION_AUDIENCE", f.assertion_audience.take())
                    .or_else(|| {
                        upstream
                            .as_ref()
                            .map(|u| u.as_str().trim_end_matches('/').to_owned())
                    })
                    .unwrap_or_else(|| "portcullis-upstream".into());
                Some(Assertions::from_pem_file(
                    &key("assertion_key", "PORTCULLIS_ASSERTION_KEY"),
                    Path::new(&path),
                    issuer,
                    audience,
                )?)
            }
        };

        let raw_routes = match get("PORTCULLIS_POLICY", f.policy.take()) {
            Some(path) => {
                let policy: PolicyFile =
                    read_toml(Path::new(&path), &key("policy", "PORTCULLIS_POLICY"))?;
                policy.routes
            }
            None => std::mem::take(&mut f.routes),
        };
        let routes = validate_routes(raw_routes, &scope_policy)?;

        Ok(Self {
            listen,
            upstream,
            scope_policy,
            jwt,
            database_url,
            audit,
            audit_level,
            audit_spool,
            api_key_secret,
            clerk_webhook_secret,
            // The verifier's leeway is added: a token may be accepted that long after `exp`.
            max_token_lifetime: Duration::from_secs(max_token_lifetime + 60),
            routes,
            realm,
            org_header,
            upstream_timeout,
            client_timeout,
            forward_credential,
            assertions,
        })
    }
}

/// A URL, or an error naming `key`. Scheme and plain-http warnings are the JWT verifier's, which
/// checks its URLs when it is built.
fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    url::Url::parse(value)
        .map(drop)
        .map_err(|e| ConfigError::new(key, format!("`{value}` is not a URL: {e}")))
}

fn parse_upstream(value: &str) -> Result<url::Url, ConfigError> {
    let key = key("upstream", "PORTCULLIS_UPSTREAM");
    let url = url::Url::parse(value)
        .map_err(|e| ConfigError::new(&*key, format!("`{value}` is not a URL: {e}")))?;
    if url.scheme() != "http" {
        return Err(ConfigError::new(
            &*key,
            "only http:// upstreams are supported (the gateway sits beside its upstream; terminate TLS in front of the gateway)",
        ));
    }
    if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            &*key,
            "must be http://host[:port][/base-path], without query or fragment",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, file).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load_with(Some(&path), |k| env.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_embedded_store_and_strict_scopes() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://portcullis.db");
        assert_eq!(c.audit, AuditTarget::Jsonl("audit.jsonl".into()));
        assert_eq!(c.audit_spool, PathBuf::from("audit.jsonl.spool"));
        assert!(c.scope_policy.is_strict());
        assert!(c.jwt.is_none() && c.upstream.is_none() && c.routes.is_empty());
        assert_eq!(c.upstream_timeout, Duration::from_secs(30));
        assert_eq!(c.client_timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let c = load(
            "listen = \"127.0.0.1:1\"\njwt_issuer = \"https://clerk.example.com\"\nstrict_scopes = true\n",
            &[
                ("PORTCULLIS_LISTEN", "127.0.0.1:2"),
                ("STRICT_SCOPES", "false"),
                ("PORTCULLIS_JWT_AUDIENCE", "a, b"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 2);
        assert!(!c.scope_policy.is_strict());
        let jwt = c.jwt.unwrap();
        assert_eq!(
            jwt.jwks_url,
            "https://clerk.example.com/.well-known/jwks.json"
        );
        assert_eq!(jwt.audience, ["a", "b"]);

        let c = load(
            "client_timeout_secs = 5\nupstream_timeout_secs = 7\n",
            &[("PORTCULLIS_CLIENT_TIMEOUT_SECS", "9")],
        )
        .unwrap();
        assert_eq!(c.client_timeout, Duration::from_secs(9));
        assert_eq!(c.upstream_timeout, Duration::from_secs(7));
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            ("listen = \"nowhere\"", &[], "PORTCULLIS_LISTEN"),
            (
                "",
                &[("PORTCULLIS_UPSTREAM", "https://x")],
                "PORTCULLIS_UPSTREAM",
            ),
            (
                "",
                &[("PORTCULLIS_UPSTREAM", "not a url")],
                "PORTCULLIS_UPSTREAM",
            ),
            ("", &[("PORTCULLIS_AUDIT", "kafka")], "PORTCULLIS_AUDIT"),
            ("", &[("PORTCULLIS_AUDIT", "postgres")], "PORTCULLIS_AUDIT"),
            (
                "",
                &[("PORTCULLIS_AUDIT_LEVEL", "most")],
                "PORTCULLIS_AUDIT_LEVEL",
            ),
            (
                "",
                &[("PORTCULLIS_DATABASE_URL", "mysql://x")],
                "PORTCULLIS_DATABASE_URL",
            ),
            (
                "",
                &[("PORTCULLIS_API_KEY_SECRET", "short")],
                "PORTCULLIS_API_KEY_SECRET",
            ),
            (
                "",
                &[("PORTCULLIS_CLERK_WEBHOOK_SECRET", "abc")],
                "PORTCULLIS_CLERK_WEBHOOK_SECRET",
            ),
            ("", &[("STRICT_SCOPES", "maybe")], "STRICT_SCOPES"),
            (
                "",
                &[("PORTCULLIS_CLIENT_TIMEOUT_SECS", "0")],
                "PORTCULLIS_CLIENT_TIMEOUT_SECS",
            ),
            (
                "client_timeout_secs = 0",
                &[],
                "PORTCULLIS_CLIENT_TIMEOUT_SECS",
            ),
            (
                "",
                &[("PORTCULLIS_UPSTREAM_TIMEOUT_SECS", "soon")],
                "PORTCULLIS_UPSTREAM_TIMEOUT_SECS",
            ),
            (
                "",
                &[("PORTCULLIS_JWKS_URL", "https://x/jwks")],
                "PORTCULLIS_JWT_ISSUER",
            ),
            ("lisen = \"127.0.0.1:1\"", &[], "--config"),
            (
                "",
                &[("PORTCULLIS_POLICY", "/does/not/exist.toml")],
                "PORTCULLIS_POLICY",
            ),
        ];
        for (file, env, named) in cases {
            let err = load(file, env).unwrap_err();
            assert!(
                err.key().contains(named),
                "{file:?} {env:?}: {err} does not name {named}"
            );
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let c = load(
            "",
            &[(
                "PORTCULLIS_API_KEY_SECRET",
                "0123456789abcdef0123456789abcdef-secret",
            )],
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn the_policy_file_replaces_the_configs_routes() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            "[[routes]]\npath = \"/a\"\nmethods = [\"GET\"]\nscopes = [\"comps:read\"]\n",
        )
        .unwrap();
        let c = load(
            "[[routes]]\npath = \"/b\"\npublic = true\n",
            &[("PORTCULLIS_POLICY", policy.to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].path, "/a");
    }
}
