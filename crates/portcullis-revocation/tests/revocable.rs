//! `Revocable` around a verifier that remembers what it verified: a remembered credential is
//! checked against the revocations all the same.

use portcullis_core::{AuthError, Principal, PrincipalKind, Verification, VerifyCredential};
use portcullis_revocation::{Revocable, Revocation, RevocationList, Target};

/// Verifies and remembers one session's token.
struct Remembering;

fn alice() -> Principal {
    Principal::builder(PrincipalKind::User, "user_alice")
        .session_id("sess_alice")
        .build()
}

impl VerifyCredential for Remembering {
    fn verify(&self, _: &str) -> Verification {
        Verification::Ready(Ok(alice()))
    }

    fn recall(&self, credential: &[u8]) -> Option<Result<Principal, AuthError>> {
        (credential == b"token").then(|| Ok(alice()))
    }
}

#[test]
fn a_remembered_token_of_a_revoked_session_is_refused() {
    let list = RevocationList::new();
    let verifier = Revocable::new(Remembering, list.clone());
    let recalled = verifier.recall(b"token").expect("remembered");
    assert_eq!(recalled.unwrap().subject(), "user_alice");
    assert!(verifier.recall(b"other").is_none());

    list.insert(Revocation {
        target: Target::Session("sess_alice".into()),
        not_before: None,
        expires_at: i64::MAX,
        reason: "session.ended".into(),
    });
    let refused = verifier.recall(b"token").expect("still remembered");
    assert_eq!(refused.unwrap_err().code(), "invalid_token");
}
