//! What is trusted from one token issuer.

use std::{fmt, sync::Arc, time::Duration};

use portcullis_core::ConfigError;

use crate::jwks::{KeySet, parse_jwks};

/// Where an issuer's signing keys come from.
#[derive(Clone)]
pub(crate) enum KeySource {
    /// A JWKS URL.
    JwksUrl(Box<str>),
    /// The `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    Discovery,
    /// A fixed key set, never fetched.
    Static(Arc<KeySet>),
}

/// A trusted token issuer: its exact `iss`, where its keys are, and what its tokens must say.
///
/// Keys are cached per issuer, never by `kid` alone, so a key of one issuer can never verify a
/// token that names another.
///
/// ```
/// use portcullis_jwt::Issuer;
///
/// // A Clerk instance: keys at <issuer>/.well-known/jwks.json by default.
/// let clerk = Issuer::new("https://clerk.example.com")
///     .authorized_party("https://app.example.com");
///
/// // Any OpenID provider, through discovery, issuing RFC 9068 access tokens.
/// let oidc = Issuer::new("https://login.example.com")
///     .discovery()
///     .audience("https://api.example.com")
///     .token_type("at+jwt");
/// # let _ = (clerk, oidc);
/// ```
#[derive(Clone)]
#[must_use]
pub struct Issuer {
    pub(crate) issuer: Box<str>,
    pub(crate) source: KeySource,
    pub(crate) audiences: Vec<Box<str>>,
    pub(crate) authorized_parties: Vec<Box<str>>,
    pub(crate) token_types: Vec<Box<str>>,
    pub(crate) static_error: Option<ConfigError>,
}

impl Issuer {
    /// Trust tokens whose `iss` is exactly `issuer`, with keys from
    /// `<issuer>/.well-known/jwks.json` (Clerk's Frontend API JWKS).
    pub fn new(issuer: impl Into<Box<str>>) -> Self {
        let issuer = issuer.into();
        let jwks = format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'));
        Self {
            issuer,
            source: KeySource::JwksUrl(jwks.into()),
            audiences: Vec::new(),
            authorized_parties: Vec::new(),
            token_types: Vec::new(),
            static_error: None,
        }
    }

    /// Fetch keys from this JWKS URL.
    pub fn jwks_url(mut self, url: impl Into<Box<str>>) -> Self {
        self.source = KeySource::JwksUrl(url.into());
        self
    }

    /// Find the JWKS URL through OpenID discovery
    /// (`<issuer>/.well-known/openid-configuration`, whose `issuer` must match exactly).
    pub fn discovery(mut self) -> Self {
        self.source = KeySource::Discovery;
        self
    }

    /// Use this JWKS document and never fetch keys (local signing keys, tests).
    pub fn static_jwks(mut self, jwks: &str) -> Self {
        match parse_jwks(jwks.as_bytes(), Duration::MAX) {
            Ok(set) => self.source = KeySource::Static(Arc::new(set)),
            Err(e) => {
                self.static_error = Some(ConfigError::new(
                    format!("issuers.{}.jwks", self.issuer),
                    e.to_string(),
                ));
            }
        }
        self
    }

    /// Accept tokens whose `aud` contains `audience` (repeat for several). Without any, a token
    /// that carries an `aud` is refused (RFC 7519 §4.1.3).
    pub fn audience(mut self, audience: impl Into<Box<str>>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Accept tokens whose `azp` is `party` (repeat for several). With any configured, a token
    /// without `azp` is refused.
    pub fn authorized_party(mut self, party: impl Into<Box<str>>) -> Self {
        self.authorized_parties.push(party.into());
        self
    }

    /// Also accept this header `typ` (for example `at+jwt` for RFC 9068 access tokens). An absent
    /// `typ` and `JWT` are always accepted.
    pub fn token_type(mut self, typ: impl Into<Box<str>>) -> Self {
        self.token_types.push(typ.into());
        self
    }

    /// The issuer's `iss`.
    pub fn name(&self) -> &str {
        &self.issuer
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(e) = &self.static_error {
            return Err(e.clone());
        }
        let key = |k: &str| format!("issuers.{}.{k}", self.issuer);
        check_url(&key("issuer"), &self.issuer)?;
        if let KeySource::JwksUrl(url) = &self.source {
            check_url(&key("jwks_url"), url)?;
        }
        Ok(())
    }

    pub(crate) fn accepts_type(&self, typ: &str) -> bool {
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        typ.eq_ignore_ascii_case("JWT")
            || self.token_types.iter().any(|t| t.eq_ignore_ascii_case(typ))
    }
}

fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(value)
        .map_err(|e| ConfigError::new(key, format!("`{value}` is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback {
                tracing::warn!(target: "portcullis::jwks", key, url = value, "an issuer URL uses plain http: keys can be tampered with in transit");
            }
            Ok(())
        }
        other => Err(ConfigError::new(
            key,
            format!("scheme `{other}` is not http(s)"),
        )),
    }
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            KeySource::JwksUrl(u) => format!("jwks {u}"),
            KeySource::Discovery => "discovery".into(),
            KeySource::Static(set) => format!("{} static keys", set.len()),
        };
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("keys", &source)
            .field("audiences", &self.audiences)
            .field("authorized_parties", &self.authorized_parties)
            .field("token_types", &self.token_types)
            .finish()
    }
}
