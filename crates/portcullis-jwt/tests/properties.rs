//! Property tests: the token decoder and the bearer parser never panic on arbitrary input, and a
//! mangled token never verifies.

mod support;

use http::{HeaderMap, HeaderValue};
use portcullis_core::{VerifyCredential, bearer_credential};
use portcullis_jwt::{Issuer, JwtVerifier};
use proptest::prelude::*;
use support::*;

fn verifier() -> JwtVerifier {
    let jwks = jwks_of(&[&keys()[0], &keys()[1], &keys()[2]]).to_string();
    JwtVerifier::builder()
        .issuer(Issuer::new("https://issuer.example.com").static_jwks(&jwks))
        .build()
        .unwrap()
}

fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,64}\\.[A-Za-z0-9_-]{0,256}\\.[A-Za-z0-9_-]{0,128}",
        // Base64url of random JSON-ish headers and payloads, with a random signature.
        (
            "\\{\"alg\":\"(RS256|ES256|EdDSA|none|HS256)\",\"kid\":\"[a-z0-9-]{0,8}\".{0,40}\\}",
            ".{0,200}",
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(h, p, s)| format!(
                "{}.{}.{}",
                b64(h.as_bytes()),
                b64(p.as_bytes()),
                b64(&s)
            )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_never_panics_and_never_accepts_garbage(token in token_like()) {
        let v = verifier();
        match v.verify(&token) {
            portcullis_core::Verification::Ready(r) => prop_assert!(r.is_err()),
            portcullis_core::Verification::Pending(_) => prop_assert!(false, "static keys never fetch"),
        }
    }

    #[test]
    fn a_mangled_token_never_verifies(pos in 0usize..2000, byte in any::<u8>()) {
        let v = verifier();
        let good = keys()[0].token(&claims("https://issuer.example.com"));
        let mut bytes = good.into_bytes();
        let pos = pos % bytes.len();
        prop_assume!(bytes[pos] != byte);
        bytes[pos] = byte;
        // Some base64url characters share their last bits; a change that decodes to the same
        // bytes is the same token, so a pass must still be user_1's.
        if let Ok(bad) = String::from_utf8(bytes)
            && let portcullis_core::Verification::Ready(Ok(p)) = v.verify(&bad)
        {
            prop_assert_eq!(p.subject(), "user_1");
        }
    }

    #[test]
    fn bearer_parsing_never_panics(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..3)) {
        let mut headers = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                headers.append("authorization", v);
            }
        }
        if let Ok(c) = bearer_credential(&headers) {
            prop_assert!(!c.is_empty() && !c.contains(' '));
        }
    }
}

#[test]
fn a_genuine_token_verifies_with_static_keys() {
    let v = verifier();
    let t = keys()[2].token(&claims("https://issuer.example.com"));
    match v.verify(&t) {
        portcullis_core::Verification::Ready(r) => assert_eq!(r.unwrap().subject(), "user_1"),
        portcullis_core::Verification::Pending(_) => panic!("static keys never fetch"),
    }
}
