//! Shared helpers: signing keys made with aws-lc-rs (not the code under test), raw token
//! assembly for malformed tokens, a JWKS server on loopback that counts its fetches, and an
//! authenticated app whose inner service counts the requests that reach it.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    rand::SystemRandom,
    rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents},
    signature::{
        self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
    },
};
use axum::{Router, body::Body, extract::State, http::StatusCode, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::Request;
use serde_json::{Value, json};

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub enum Material {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

pub struct SigningKey {
    pub kid: String,
    pub material: Material,
}

impl SigningKey {
    pub fn rsa(kid: &str) -> Self {
        Self::rsa_sized(kid, KeySize::Rsa2048)
    }

    pub fn rsa_sized(kid: &str, size: KeySize) -> Self {
        Self {
            kid: kid.into(),
            material: Material::Rsa(RsaKeyPair::generate(size).unwrap()),
        }
    }

    pub fn ec(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            material: Material::Ec(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            ),
        }
    }

    pub fn ed(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            material: Material::Ed(Ed25519KeyPair::generate().unwrap()),
        }
    }

    pub fn default_alg(&self) -> &'static str {
        match self.material {
            Material::Rsa(_) => "RS256",
            Material::Ec(_) => "ES256",
            Material::Ed(_) => "EdDSA",
        }
    }

    /// The public JWK, with `alg` and `use`.
    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::Rsa(k) => {
                let c = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty":"RSA","kid":self.kid,"use":"sig","alg":"RS256","n":b64(&c.n),"e":b64(&c.e)})
            }
            Material::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty":"EC","kid":self.kid,"use":"sig","alg":"ES256","crv":"P-256","x":b64(&p[1..33]),"y":b64(&p[33..65])})
            }
            Material::Ed(k) => {
                json!({"kty":"OKP","kid":self.kid,"use":"sig","alg":"EdDSA","crv":"Ed25519","x":b64(k.public_key().as_ref())})
            }
        }
    }

    /// The RSA modulus, raw (for HMAC-with-public-key attacks).
    pub fn rsa_modulus(&self) -> Vec<u8> {
        match &self.material {
            Material::Rsa(k) => PublicKeyComponents::<Vec<u8>>::from(k.public_key()).n,
            _ => panic!("not RSA"),
        }
    }

    pub fn sign_raw(&self, alg: &str, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.material {
            Material::Rsa(k) => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(enc, &rng, message, &mut sig).unwrap();
                sig
            }
            Material::Ec(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
            Material::Ed(k) => k.sign(message).as_ref().to_vec(),
        }
    }

    /// A token with header `{"alg":<default>,"kid":<kid>,"typ":"JWT"}` merged with `extra_header`
    /// (a `null` member removes one).
    pub fn token_with(&self, extra_header: Value, claims: &Value) -> String {
        let mut header = json!({"alg": self.default_alg(), "kid": self.kid, "typ": "JWT"});
        merge(&mut header, extra_header);
        let alg = header["alg"].as_str().unwrap_or("RS256").to_owned();
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.sign_raw(&alg, message.as_bytes());
        format!("{message}.{}", b64(&sig))
    }

    pub fn token(&self, claims: &Value) -> String {
        self.token_with(json!({}), claims)
    }

    /// Sign exactly these header and payload bytes.
    pub fn token_raw(&self, alg: &str, header: &str, payload: &str) -> String {
        let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = self.sign_raw(alg, message.as_bytes());
        format!("{message}.{}", b64(&sig))
    }
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
}

/// Keys shared by every test of a binary (RSA generation takes a while).
pub fn keys() -> &'static [SigningKey; 3] {
    static KEYS: OnceLock<[SigningKey; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            SigningKey::rsa("rsa-1"),
            SigningKey::ec("ec-1"),
            SigningKey::ed("ed-1"),
        ]
    })
}

pub fn jwks_of(keys: &[&SigningKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// A JWKS (and OpenID discovery) server on loopback.
#[derive(Clone)]
pub struct JwksServer {
    pub base: String,
    pub fetches: Arc<AtomicUsize>,
    pub document: Arc<Mutex<Value>>,
    pub failing: Arc<AtomicBool>,
    pub discovery_issuer: Arc<Mutex<Option<String>>>,
}

impl JwksServer {
    pub async fn start(document: Value) -> Self {
        let server = Self {
            base: String::new(),
            fetches: Arc::default(),
            document: Arc::new(Mutex::new(document)),
            failing: Arc::default(),
            discovery_issuer: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/.well-known/jwks.json",
                get(|State(s): State<Self>| async move {
                    s.fetches.fetch_add(1, Ordering::SeqCst);
                    if s.failing.load(Ordering::SeqCst) {
                        return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
                    }
                    (StatusCode::OK, s.document.lock().unwrap().to_string())
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<Self>| async move {
                    let issuer = s.discovery_issuer.lock().unwrap().clone().unwrap_or_else(|| s.base.clone());
                    json!({"issuer": issuer, "jwks_uri": format!("{}/.well-known/jwks.json", s.base)}).to_string()
                }),
            );
        let server = Self {
            base: format!("http://{addr}"),
            ..server
        };
        let app = app.with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }

    pub fn issuer(&self) -> String {
        self.base.clone()
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set(&self, document: Value) {
        *self.document.lock().unwrap() = document;
    }
}

/// Standard Clerk-like v1 claims for `iss`, valid now.
pub fn claims(iss: &str) -> Value {
    let now = now();
    json!({
        "iss": iss, "sub": "user_1", "sid": "sess_1", "azp": "https://app.example.com",
        "iat": now, "nbf": now - 10, "exp": now + 60, "jti": "jti_1",
        "org_id": "org_a", "org_slug": "acme", "org_role": "org:admin",
        "org_permissions": ["org:comps:read", "org:reports:write"]
    })
}

/// Set members of a JSON object (`null` removes).
pub fn with(mut base: Value, extra: Value) -> Value {
    merge(&mut base, extra);
    base
}

/// An app: authenticate + org context + `comps:read` on `/orgs/{org}/comps`, with a counter of
/// requests that reached the handler.
pub fn app(verifier: portcullis_jwt::JwtVerifier) -> (Router, Arc<AtomicUsize>) {
    let reached = Arc::new(AtomicUsize::new(0));
    let r = reached.clone();
    let app = Router::new()
        .route(
            "/orgs/{org}/comps",
            get(move |p: portcullis_core::Principal| {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    p.subject().to_owned()
                }
            }),
        )
        .route_layer(portcullis_authz::RequireScopesLayer::all(["comps:read"]))
        .route_layer(portcullis_authz::OrgContextLayer::new())
        .layer(portcullis_authn::AuthenticateLayer::new(verifier));
    (app, reached)
}

pub fn get_with(path: &str, token: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

pub async fn body_json(res: http::Response<Body>) -> Value {
    use http_body_util::BodyExt;
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}
