//! Svix webhook signatures, as Clerk sends them.
//!
//! The scheme (Svix's "verifying payloads manually"): the secret is `whsec_` and base64; the
//! signed content is `{svix-id}.{svix-timestamp}.{body}`; `svix-signature` holds one or more
//! space-separated `v1,<base64 HMAC-SHA256>` (several while a secret is rotated); the timestamp
//! must be within five minutes of now. Comparisons are constant-time. The unbranded
//! `webhook-id` / `webhook-timestamp` / `webhook-signature` headers are accepted too.
//!
//! Svix's Rust crate does exactly this, but its current release (1.99) does not build against
//! the hyper-util this workspace uses unless its HTTP client and TLS stack come along; these
//! sixty lines are checked against Svix's published test vector and against signatures made by
//! Svix's own JavaScript library (`tests/peers/svix-sign.mjs`).

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::STANDARD};
use http::HeaderMap;

/// The tolerance on `svix-timestamp`, in seconds.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Why a signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// A header is missing or unreadable.
    MissingHeader,
    /// The timestamp is not a number, or further than the tolerance from now.
    StaleTimestamp,
    /// No `v1` signature matches.
    BadSignature,
}

/// A webhook endpoint's signing secret.
pub struct SigningSecret(hmac::Key);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

impl SigningSecret {
    /// Parse `whsec_<base64>`; `None` when it is not that.
    pub fn new(secret: &str) -> Option<Self> {
        let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
        (!key.is_empty()).then(|| Self(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// The `v1,…` signature of a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }

    /// Check the headers' signature of `body` at `now` (Unix seconds); returns the message id.
    pub fn verify<'h>(
        &self,
        headers: &'h HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<&'h str, SignatureError> {
        let header = |branded: &str, plain: &str| {
            headers
                .get(branded)
                .or_else(|| headers.get(plain))
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .ok_or(SignatureError::MissingHeader)
        };
        let id = header("svix-id", "webhook-id")?;
        let timestamp = header("svix-timestamp", "webhook-timestamp")?;
        let signatures = header("svix-signature", "webhook-signature")?;
        let timestamp: i64 = timestamp
            .parse()
            .map_err(|_| SignatureError::StaleTimestamp)?;
        if (now - timestamp).abs() > TOLERANCE_SECS {
            return Err(SignatureError::StaleTimestamp);
        }
        let expected = self.sign(id, timestamp, body);
        let expected = expected.as_bytes();
        // Every candidate is compared in full: the time taken does not say which one matched.
        let mut matched = false;
        for candidate in signatures.split(' ').filter(|s| s.starts_with("v1,")) {
            matched |= constant_time_eq::constant_time_eq(candidate.as_bytes(), expected);
        }
        if matched {
            Ok(id)
        } else {
            Err(SignatureError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1_649_367_553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    fn headers(sig: &str, ts: i64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("svix-id", ID.parse().unwrap());
        h.insert("svix-timestamp", ts.to_string().parse().unwrap());
        h.insert("svix-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn svix_published_vector() {
        let secret = SigningSecret::new(SECRET).unwrap();
        assert_eq!(
            secret.sign(ID, TS, BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn verification_cases() {
        let secret = SigningSecret::new(SECRET).unwrap();
        let good = secret.sign(ID, TS, BODY);
        assert_eq!(secret.verify(&headers(&good, TS), BODY, TS + 10), Ok(ID));
        let several = format!("v1,AAAA v2,whatever {good} v1,BBBB");
        assert_eq!(secret.verify(&headers(&several, TS), BODY, TS), Ok(ID));
        assert_eq!(
            secret.verify(&headers(&good, TS), b"{}", TS),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            secret.verify(&headers(&good, TS), BODY, TS + TOLERANCE_SECS + 1),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            secret.verify(&headers(&good, TS), BODY, TS - TOLERANCE_SECS - 1),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            secret.verify(&headers("v1,", TS), BODY, TS),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            secret.verify(&headers(&good[..8], TS), BODY, TS),
            Err(SignatureError::BadSignature)
        );
        let mut missing = headers(&good, TS);
        missing.remove("svix-id");
        assert_eq!(
            secret.verify(&missing, BODY, TS),
            Err(SignatureError::MissingHeader)
        );
        assert!(SigningSecret::new("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_none());
        assert!(SigningSecret::new("whsec_!!!").is_none());
    }
}
