//! Signed identity assertions: a short-lived JWT of the forwarded identity, so that an upstream
//! can verify who the gateway let through instead of trusting headers.
//!
//! When `assertion_key` (`PORTCULLIS_ASSERTION_KEY`) names an Ed25519 private key (PKCS#8 PEM,
//! as `openssl genpkey -algorithm ed25519` writes it), every forwarded request after a grant
//! carries `x-portcullis-assertion`: an EdDSA JWT with
//!
//! | claim | value |
//! |---|---|
//! | `iss` | `assertion_issuer` (default `portcullis-gateway`) |
//! | `aud` | `assertion_audience` (default the upstream URL) |
//! | `sub`, `sub_kind` | the subject and `user` / `service_account` |
//! | `org_id`, `org_role` | the organization and the role in it |
//! | `scope` | the scopes, space separated, sorted |
//! | `act` | `{"sub": …}` when someone acts for the subject |
//! | `iat`, `exp` | issued now, valid for 60 seconds |
//!
//! The public key is served, unauthenticated, as a JWKS at `/.well-known/portcullis/jwks.json`.
//! An assertion describes an identity, not a request (the `x-request-id` names the request), so
//! one is reused for the same identity for up to half its lifetime: signing stays off the hot
//! path.

use std::{path::Path, sync::Arc, time::Duration};

use aws_lc_rs::{
    digest,
    signature::{Ed25519KeyPair, KeyPair},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use http::HeaderValue;
use portcullis_core::{ConfigError, Principal, clock};
use serde_json::{Value, json};

/// The header that carries the assertion.
pub const ASSERTION: http::HeaderName = http::HeaderName::from_static("x-portcullis-assertion");

/// Where the public key is published.
pub const JWKS_PATH: &str = "/.well-known/portcullis/jwks.json";

/// How long an assertion is valid.
const LIFETIME: Duration = Duration::from_secs(60);

/// Signs identity assertions; see the [module docs](self).
#[derive(Clone)]
pub struct Assertions(Arc<Inner>);

struct Inner {
    key: Ed25519KeyPair,
    kid: String,
    header: String,
    issuer: String,
    audience: String,
    cache: quick_cache::sync::Cache<String, (HeaderValue, u64)>,
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertions")
            .field("kid", &self.0.kid)
            .field("issuer", &self.0.issuer)
            .field("audience", &self.0.audience)
            .finish_non_exhaustive()
    }
}

impl Assertions {
    /// Read the PKCS#8 PEM key at `path`; `key` names the setting in errors.
    pub fn from_pem_file(
        key: &str,
        path: &Path,
        issuer: String,
        audience: String,
    ) -> Result<Self, ConfigError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|_| ConfigError::new(key, format!("{} is not a PEM file", path.display())))?;
        Self::from_pkcs8(key, &der, issuer, audience)
    }

    /// Use an Ed25519 PKCS#8 key.
    pub fn from_pkcs8(
        key: &str,
        der: &[u8],
        issuer: String,
        audience: String,
    ) -> Result<Self, ConfigError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map_err(|_| ConfigError::new(key, "not an Ed25519 private key in PKCS#8"))?;
        let thumb = digest::digest(&digest::SHA256, pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&thumb.as_ref()[..12]);
        let header = URL_SAFE_NO_PAD.encode(
            json!({"alg": "EdDSA", "kid": kid, "typ": "portcullis-assertion+jwt"}).to_string(),
        );
        Ok(Self(Arc::new(Inner {
            key: pair,
            kid,
            header,
            issuer,
            audience,
            cache: quick_cache::sync::Cache::new(10_000),
        })))
    }

    /// The public key as a JWKS.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.0.kid,
            "x": URL_SAFE_NO_PAD.encode(self.0.key.public_key().as_ref()),
        }]})
    }

    /// The assertion for `principal` (whose [`identity_key`] is `identity`), signed now or
    /// reused while it has more than half its lifetime left.
    pub fn header_for(&self, principal: &Principal, identity: &str) -> HeaderValue {
        let now = clock::since_epoch().as_secs();
        if let Some((value, exp)) = self.0.cache.get(identity)
            && exp.saturating_sub(now) > LIFETIME.as_secs() / 2
        {
            return value;
        }
        let exp = now + LIFETIME.as_secs();
        let scopes: Vec<&str> = principal.scopes().iter().map(|s| s.as_str()).collect();
        let actor = principal.actor().map(|a| &*a.subject);
        let mut claims = json!({
            "iss": self.0.issuer,
            "aud": self.0.audience,
            "sub": principal.subject(),
            "sub_kind": principal.kind().as_str(),
            "scope": scopes.join(" "),
            "iat": now,
            "exp": exp,
        });
        if let Some(org) = principal.org_id() {
            claims["org_id"] = org.as_str().into();
        }
        if let Some(role) = principal.org_role() {
            claims["org_role"] = role.into();
        }
        if let Some(actor) = actor {
            claims["act"] = json!({ "sub": actor });
        }
        let message = format!(
            "{}.{}",
            self.0.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.0.key.sign(message.as_bytes());
        let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
        let value = HeaderValue::try_from(token).expect("base64url is a header value");
        self.0.cache.insert(identity.into(), (value.clone(), exp));
        value
    }
}

/// What identifies an assertion's content: kind, subject, org, role, scopes and actor.
pub fn identity_key(principal: &Principal) -> String {
    let scopes: Vec<&str> = principal.scopes().iter().map(|s| s.as_str()).collect();
    format!(
        "{}\0{}\0{}\0{}\0{}\0{}",
        principal.kind().as_str(),
        principal.subject(),
        principal.org_id().map_or("", |o| o.as_str()),
        principal.org_role().unwrap_or(""),
        scopes.join(" "),
        principal.actor().map_or("", |a| &*a.subject),
    )
}
