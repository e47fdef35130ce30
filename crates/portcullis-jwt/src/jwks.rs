//! JSON Web Key Sets: which keys are usable, and fetching them.

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus accepted, in bits: larger keys would make every verification costly.
pub const MAX_RSA_BITS: usize = 8192;
/// The largest JWKS or discovery document read, in bytes.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// The longest `kid` looked up.
pub(crate) const MAX_KID_LEN: usize = 256;

/// A signature algorithm Portcullis accepts: asymmetric only, never `none` or HMAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    /// Every accepted algorithm.
    pub const ALL: [Self; 6] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::ES256,
        Self::EdDSA,
    ];

    /// The algorithm of a JOSE `alg` name, matched exactly (`none`, `HS256`, `rs256` are not).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "ES256" => Self::ES256,
            "EdDSA" | "Ed25519" => Self::EdDSA,
            _ => return None,
        })
    }

    pub(crate) fn family(self) -> Family {
        match self {
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 => Family::Rsa,
            Self::ES256 => Family::P256,
            Self::EdDSA => Family::Ed25519,
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::ES256 => Algorithm::ES256,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Rsa,
    P256,
    Ed25519,
}

/// A verification key from a JWKS, bound to its algorithm family (and to its `alg`, when the JWK
/// names one).
pub(crate) struct VerifyKey {
    pub(crate) decoding: DecodingKey,
    family: Family,
    alg: Option<Alg>,
}

impl VerifyKey {
    /// Whether a token signed with `alg` may be checked with this key.
    pub(crate) fn accepts(&self, alg: Alg) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("family", &self.family)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one issuer, by `kid`.
#[derive(Debug)]
pub(crate) struct KeySet {
    keys: HashMap<Box<str>, Arc<VerifyKey>>,
    pub(crate) fetched_at: Instant,
    pub(crate) max_age: Duration,
}

impl KeySet {
    pub(crate) fn get(&self, kid: &str) -> Option<&Arc<VerifyKey>> {
        self.keys.get(kid)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether a key of this set is missing from `newer`.
    pub(crate) fn withdrawn_in(&self, newer: &Self) -> bool {
        self.keys.keys().any(|kid| newer.get(kid).is_none())
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Why a JWKS document gave no usable key set.
#[derive(Debug)]
pub(crate) enum JwksError {
    Http(String),
    Document(&'static str),
    NoUsableKeys,
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(e) => write!(f, "fetch failed: {e}"),
            Self::Document(e) => write!(f, "bad document: {e}"),
            Self::NoUsableKeys => f.write_str("the JWKS holds no usable signing key"),
        }
    }
}

/// Parse a JWKS document, keeping only keys fit to verify signatures: `kty` RSA (at least
/// [`MIN_RSA_BITS`]), EC P-256 or OKP Ed25519; `use` absent or `sig`; `key_ops` absent or with
/// `verify`; `alg` absent or one of [`Alg`]; a `kid`. Symmetric (`oct`) keys are never used.
pub(crate) fn parse_jwks(document: &[u8], max_age: Duration) -> Result<KeySet, JwksError> {
    let raw: RawJwks =
        serde_json::from_slice(document).map_err(|_| JwksError::Document("not a JWKS"))?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
            continue;
        };
        let Some(kid) = jwk
            .kid
            .clone()
            .filter(|k| !k.is_empty() && k.len() <= MAX_KID_LEN)
        else {
            continue;
        };
        match usable_key(&jwk) {
            Some(key) => {
                if keys
                    .insert(kid.clone().into_boxed_str(), Arc::new(key))
                    .is_some()
                {
                    tracing::warn!(target: "portcullis::jwks", kid, "two JWKS keys share a kid; using the last");
                }
            }
            None => {
                tracing::debug!(target: "portcullis::jwks", kid, kty = jwk.kty, "skipping a JWKS key unfit for signature verification");
            }
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKeys);
    }
    Ok(KeySet {
        keys,
        fetched_at: Instant::now(),
        max_age,
    })
}

fn usable_key(jwk: &RawJwk) -> Option<VerifyKey> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if jwk
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|o| o == "verify"))
    {
        return None;
    }
    let alg = match jwk.alg.as_deref() {
        None => None,
        Some(name) => Some(Alg::from_name(name)?),
    };
    let (family, decoding) = match jwk.kty.as_str() {
        "RSA" => {
            let (n, e) = (jwk.n.as_deref()?, jwk.e.as_deref()?);
            let modulus = URL_SAFE_NO_PAD.decode(n).ok()?;
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&rsa_bits(&modulus)) {
                return None;
            }
            (Family::Rsa, DecodingKey::from_rsa_components(n, e).ok()?)
        }
        "EC" if jwk.crv.as_deref() == Some("P-256") => {
            let (x, y) = (jwk.x.as_deref()?, jwk.y.as_deref()?);
            if URL_SAFE_NO_PAD.decode(x).ok()?.len() != 32
                || URL_SAFE_NO_PAD.decode(y).ok()?.len() != 32
            {
                return None;
            }
            (Family::P256, DecodingKey::from_ec_components(x, y).ok()?)
        }
        "OKP" if jwk.crv.as_deref() == Some("Ed25519") => {
            let x = jwk.x.as_deref()?;
            if URL_SAFE_NO_PAD.decode(x).ok()?.len() != 32 {
                return None;
            }
            (Family::Ed25519, DecodingKey::from_ed_components(x).ok()?)
        }
        _ => return None,
    };
    if alg.is_some_and(|a| a.family() != family) {
        return None;
    }
    Some(VerifyKey {
        decoding,
        family,
        alg,
    })
}

fn rsa_bits(modulus: &[u8]) -> usize {
    let trimmed: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    (trimmed.len() - 1) * 8 + (8 - trimmed[0].leading_zeros() as usize)
}

/// Fetch a document with a size limit; any non-2xx status is an error.
pub(crate) async fn fetch(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
    let mut res = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| JwksError::Http(without_url(e)))?;
    if !res.status().is_success() {
        return Err(JwksError::Http(format!("status {}", res.status())));
    }
    let max_age = res
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age);
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| JwksError::Http(without_url(e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(JwksError::Document("larger than 1 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// `max-age` of a `Cache-Control` value.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.eq_ignore_ascii_case("max-age")
            .then(|| v.trim().parse::<u64>().ok().map(Duration::from_secs))?
    })
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The `jwks_uri` of an OpenID provider, from `<issuer>/.well-known/openid-configuration`; the
/// document's `issuer` must be exactly `issuer`.
pub(crate) async fn discover(client: &reqwest::Client, issuer: &str) -> Result<String, JwksError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let (body, _) = fetch(client, &url).await?;
    let doc: Discovery = serde_json::from_slice(&body)
        .map_err(|_| JwksError::Document("not an OpenID configuration"))?;
    if doc.issuer != issuer {
        return Err(JwksError::Document(
            "the discovery document names another issuer",
        ));
    }
    let uri =
        url::Url::parse(&doc.jwks_uri).map_err(|_| JwksError::Document("jwks_uri is not a URL"))?;
    let loopback = match uri.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match uri.scheme() {
        "https" => Ok(doc.jwks_uri),
        // Plain http only on loopback: keys fetched in the clear could be swapped in transit.
        "http" if loopback => Ok(doc.jwks_uri),
        _ => Err(JwksError::Document("jwks_uri must be https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_are_exact() {
        for bad in [
            "none", "None", "NONE", "HS256", "rs256", "ES512", "ES256K", "",
        ] {
            assert!(Alg::from_name(bad).is_none(), "{bad}");
        }
        assert_eq!(Alg::from_name("EdDSA"), Some(Alg::EdDSA));
    }

    #[test]
    fn modulus_bits() {
        assert_eq!(rsa_bits(&[0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01]), 1);
        assert_eq!(rsa_bits(&[0; 4]), 0);
        assert_eq!(rsa_bits(&[0xff; 256]), 2048);
    }

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-store"), None);
    }

    #[test]
    fn symmetric_and_unfit_keys_are_skipped() {
        let doc = br#"{"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"EC","kid":"p384","crv":"P-384","x":"AA","y":"AA"},
            {"kty":"RSA","kid":"small","n":"AQAB","e":"AQAB"}
        ]}"#;
        assert!(matches!(
            parse_jwks(doc, Duration::from_secs(1)),
            Err(JwksError::NoUsableKeys)
        ));
        assert!(parse_jwks(b"[]", Duration::from_secs(1)).is_err());
    }
}
