//! A local RS256 issuer for the demo, the load test and the tests: a fresh key, its JWKS, and
//! Clerk-style tokens signed with it. Not for production: real tokens come from Clerk or another
//! OpenID provider.

use aws_lc_rs::{
    rand::SystemRandom,
    rsa::{KeyPair, KeySize, PublicKeyComponents},
    signature::{KeyPair as _, RSA_PKCS1_SHA256},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// A signing key and its key id.
pub struct LocalIssuer {
    key: KeyPair,
    kid: String,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl LocalIssuer {
    /// A fresh 2048-bit RSA key named `kid`.
    pub fn generate(kid: &str) -> Self {
        Self {
            key: KeyPair::generate(KeySize::Rsa2048).expect("key generation works"),
            kid: kid.to_owned(),
        }
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> Value {
        let public = PublicKeyComponents::<Vec<u8>>::from(self.key.public_key());
        json!({"keys": [{"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
            "n": b64(&public.n), "e": b64(&public.e)}]})
    }

    /// A compact RS256 JWT of `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"});
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message.as_bytes(),
                &mut sig,
            )
            .expect("signing works");
        format!("{message}.{}", b64(&sig))
    }
}
