//! The Clerk fixtures of `jwt-anchors.md` §1.5, re-signed with current times (their shapes and
//! claims are kept), through the verifier: each decodes to the stated organization, role and
//! permissions.

mod support;

use portcullis_core::{ScopePolicy, ScopeSet};
use portcullis_jwt::{FpmAlignment, Issuer, JwtVerifier};
use serde_json::{Value, json};
use support::*;

const ISS: &str = "https://clerk.inspired.puma-74.lcl.dev";

fn verifier(canonical: &[&str], strict: bool, alignment: FpmAlignment) -> JwtVerifier {
    let policy = ScopePolicy::builder()
        .canonical(ScopeSet::parse(canonical).unwrap())
        .role("admin", ScopeSet::parse(canonical).unwrap())
        .strict(strict)
        .build()
        .unwrap();
    JwtVerifier::builder()
        .issuer(Issuer::new(ISS).static_jwks(&jwks_of(&[&keys()[0]]).to_string()))
        .scope_policy(policy)
        .fpm_alignment(alignment)
        .build()
        .unwrap()
}

/// The fixture with `iss` set to ours and fresh `iat`/`nbf`/`exp`.
fn fresh(mut fixture: Value) -> String {
    let now = now();
    fixture["iss"] = json!(ISS);
    fixture["iat"] = json!(now);
    fixture["nbf"] = json!(now - 10);
    fixture["exp"] = json!(now + 60);
    keys()[0].token_with(json!({"kid": "rsa-1"}), &fixture)
}

#[tokio::test]
async fn v1_mock_payload_without_org() {
    let v = verifier(&["comps:read"], true, FpmAlignment::Intersect);
    let p = v
        .verify_token(&fresh(
            json!({"azp":"https://accounts.inspired.puma-74.lcl.dev",
            "sid":"sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9","sub":"user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr"}),
        ))
        .await
        .unwrap();
    assert_eq!(p.subject(), "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr");
    assert_eq!(p.session_id(), Some("sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9"));
    assert!(p.org().is_none());
    assert!(p.scopes().is_empty());
}

#[tokio::test]
async fn v1_unprefixed_admin_without_permissions() {
    let fixture = json!({"azp":"https://cloud.tembo.io","jti":"575bd5797db3da1dc5b9",
        "org_id":"org_2jyEOHrzo8RWGERumZ61dghllsP","org_role":"admin","org_slug":"darrenbaldwin1",
        "sub":"user_tembo"});
    let strict = verifier(
        &["comps:read", "comps:write"],
        true,
        FpmAlignment::Intersect,
    );
    let p = strict.verify_token(&fresh(fixture.clone())).await.unwrap();
    assert_eq!(p.org_id().unwrap(), "org_2jyEOHrzo8RWGERumZ61dghllsP");
    assert_eq!(p.org_role(), Some("admin"));
    assert_eq!(p.org().unwrap().slug.as_deref(), Some("darrenbaldwin1"));
    assert!(
        p.scopes().is_empty(),
        "strict: no permission claim, no scopes"
    );
    let lenient = verifier(
        &["comps:read", "comps:write"],
        false,
        FpmAlignment::Intersect,
    );
    let p = lenient.verify_token(&fresh(fixture)).await.unwrap();
    assert_eq!(
        p.scopes().to_string(),
        "comps:read comps:write",
        "non-strict: the role map"
    );
}

#[tokio::test]
async fn v1_custom_template_with_fva_and_no_azp() {
    let v = verifier(&["comps:read"], true, FpmAlignment::Intersect);
    let p = v
        .verify_token(&fresh(json!({"email_verified":true,"fva":[5370,-1],"jti":"REDACTED",
            "primary_email_address":"REDACTED","public_metadata":{"admin":"true"},"sid":"sess_x","sub":"user_x"})))
        .await
        .unwrap();
    let age = p.factor_age().unwrap();
    assert_eq!(age.first_factor_minutes, Some(5370));
    assert_eq!(age.second_factor_minutes, None, "-1 means never");
}

#[tokio::test]
async fn v2_js_spec_fixture() {
    let v = verifier(
        &["impersonation:read", "impersonation:manage"],
        true,
        FpmAlignment::Intersect,
    );
    let p = v
        .verify_token(&fresh(
            json!({"sub":"sub","sid":"sid","azp":"azp","v":2,"fea":"o:impersonation",
            "o":{"id":"org_xxxxxxx","rol":"admin","slg":"org_test","per":"read,manage","fpm":"3"}}),
        ))
        .await
        .unwrap();
    assert_eq!(p.org_id().unwrap(), "org_xxxxxxx");
    assert_eq!(p.org_role(), Some("admin"));
    assert_eq!(
        p.scopes().to_string(),
        "impersonation:manage impersonation:read"
    );
}

#[tokio::test]
async fn v2_python_fixture() {
    // The Python fixture carries an `aud`; the issuer must then name it.
    let policy = ScopePolicy::builder()
        .canonical(
            ScopeSet::parse(["admin:view", "admin:edit", "reports:view", "reports:edit"]).unwrap(),
        )
        .build()
        .unwrap();
    let v = JwtVerifier::builder()
        .issuer(
            Issuer::new(ISS)
                .static_jwks(&jwks_of(&[&keys()[0]]).to_string())
                .audience("test-audience"),
        )
        .scope_policy(policy)
        .build()
        .unwrap();
    let p = v
        .verify_token(&fresh(
            json!({"sub":"user_123","v":2,"fea":"o:admin,o:reports",
            "o":{"id":"org_abc","slg":"org-slug","rol":"owner","per":"view,edit","fpm":"1,2"},
            "aud":"test-audience","azp":"https://example.com"}),
        ))
        .await
        .unwrap();
    assert_eq!(p.scopes().to_string(), "admin:view reports:edit");
    assert_eq!(p.org_role(), Some("owner"));
}

#[tokio::test]
async fn v2_alignment_fixture_under_each_reading() {
    let canonical = [
        "reservations:read",
        "reservations:manage",
        "support-chat:read",
        "support-chat:manage",
    ];
    let fixture = json!({"v":2,"sid":"sessionId","sub":"userId","act":{"sub":"actor"},
        "fea":"o:reservations,u:dashboard,uo:support-chat,o:impersonation","pla":"u:pro,o:business",
        "o":{"id":"orgId","rol":"member","slg":"orgSlug","per":"read,manage","fpm":"2,3"}});
    for (alignment, expected) in [
        (FpmAlignment::Intersect, "reservations:manage"),
        (
            FpmAlignment::OrgFeatures,
            "reservations:manage support-chat:manage support-chat:read",
        ),
        (FpmAlignment::AllFeatures, "reservations:manage"),
    ] {
        let v = verifier(&canonical, true, alignment);
        let p = v.verify_token(&fresh(fixture.clone())).await.unwrap();
        assert_eq!(p.scopes().to_string(), expected, "{alignment:?}");
    }
}
