//! The attack and edge-case matrix of `jwt-anchors.md` §4, case by case, through the real layer
//! stack (authenticate → org context → `comps:read`) over a JWKS served on loopback. Every
//! refused case also proves the handler was never reached.

mod support;

use std::{sync::atomic::Ordering, time::Duration};

use axum::{Router, body::Body};
use http::{Request, StatusCode};
use portcullis_core::ScopeSet;
use portcullis_jwt::{Issuer, JwtVerifier};
use serde_json::{Value, json};
use support::*;
use tower::ServiceExt;

const AZP: &str = "https://app.example.com";

struct Case {
    app: Router,
    reached: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    server: JwksServer,
    iss: String,
}

async fn setup() -> Case {
    let [rsa, ec, ed] = keys();
    let server = JwksServer::start(jwks_of(&[rsa, ec, ed])).await;
    let iss = server.issuer();
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(iss.clone()).authorized_party(AZP))
        .scope_policy(portcullis_core::ScopePolicy::default())
        .jwks_cooldown(Duration::from_secs(30))
        .build()
        .unwrap();
    let (app, reached) = app(verifier);
    Case {
        app,
        reached,
        server,
        iss,
    }
}

impl Case {
    async fn send(&self, token: &str) -> (StatusCode, Value, Option<String>) {
        self.send_req(get_with("/orgs/org_a/comps", token)).await
    }

    async fn send_req(&self, req: Request<Body>) -> (StatusCode, Value, Option<String>) {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let www = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, body_json(res).await, www)
    }

    /// Assert `token` is refused with `status` and never reaches the handler.
    async fn refused(&self, token: &str, status: StatusCode, why: &str) -> Value {
        let before = self.reached.load(Ordering::SeqCst);
        let (got, body, www) = self.send(token).await;
        assert_eq!(got, status, "{why}: body {body}");
        assert_eq!(
            self.reached.load(Ordering::SeqCst),
            before,
            "{why}: reached the handler"
        );
        if status == StatusCode::UNAUTHORIZED {
            assert!(www.unwrap().starts_with("Bearer realm="), "{why}");
        }
        body
    }

    async fn accepted(&self, token: &str, why: &str) {
        let (got, body, _) = self.send(token).await;
        assert_eq!(got, StatusCode::OK, "{why}: body {body}");
    }

    fn claims(&self) -> Value {
        claims(&self.iss)
    }

    fn with(&self, extra: Value) -> Value {
        with(self.claims(), extra)
    }
}

fn rsa() -> &'static SigningKey {
    &keys()[0]
}

fn ec() -> &'static SigningKey {
    &keys()[1]
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&k, msg).as_ref().to_vec()
}

#[tokio::test]
async fn valid_tokens_of_every_key_type_pass() {
    let c = setup().await;
    for key in keys() {
        c.accepted(&key.token(&c.claims()), key.default_alg()).await;
    }
}

#[tokio::test]
async fn m01_alg_none() {
    let c = setup().await;
    let payload = b64(c.claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "kid": "rsa-1", "typ": "JWT"})
            .to_string()
            .as_bytes());
        c.refused(
            &format!("{header}.{payload}."),
            StatusCode::UNAUTHORIZED,
            alg,
        )
        .await;
        let sig = b64(b"x");
        c.refused(
            &format!("{header}.{payload}.{sig}"),
            StatusCode::UNAUTHORIZED,
            alg,
        )
        .await;
    }
}

#[tokio::test]
async fn m02_hmac_with_the_rsa_public_key() {
    let c = setup().await;
    let header = b64(json!({"alg":"HS256","kid":"rsa-1","typ":"JWT"})
        .to_string()
        .as_bytes());
    let payload = b64(c.claims().to_string().as_bytes());
    let message = format!("{header}.{payload}");
    let jwk = rsa().jwk();
    for secret in [
        rsa().rsa_modulus(),
        jwk.to_string().into_bytes(),
        jwk["n"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let sig = b64(&hmac_sha256(&secret, message.as_bytes()));
        c.refused(
            &format!("{message}.{sig}"),
            StatusCode::UNAUTHORIZED,
            "HS256",
        )
        .await;
    }
}

#[tokio::test]
async fn m03_same_family_algorithm_outside_the_key_alg() {
    let c = setup().await;
    // The JWK says RS256; RS384, RS512 and PS256 signatures by the same key are refused.
    for alg in ["RS384", "RS512", "PS256", "PS384"] {
        let t = rsa().token_with(json!({"alg": alg}), &c.claims());
        c.refused(&t, StatusCode::UNAUTHORIZED, alg).await;
    }
}

#[tokio::test]
async fn m04_token_alg_differs_from_key() {
    let c = setup().await;
    // An ES256 signature presented with the RSA key's kid.
    let t = ec().token_with(json!({"kid": "rsa-1"}), &c.claims());
    c.refused(&t, StatusCode::UNAUTHORIZED, "ES256 on an RSA kid")
        .await;
    let t = rsa().token_with(json!({"kid": "ec-1"}), &c.claims());
    c.refused(&t, StatusCode::UNAUTHORIZED, "RS256 on an EC kid")
        .await;
}

#[tokio::test]
async fn m05_psychic_signature() {
    let c = setup().await;
    let t = ec().token(&c.claims());
    let (message, _) = t.rsplit_once('.').unwrap();
    let zero = b64(&[0u8; 64]);
    c.refused(
        &format!("{message}.{zero}"),
        StatusCode::UNAUTHORIZED,
        "r=s=0",
    )
    .await;
}

#[tokio::test]
async fn m06_missing_kid() {
    let c = setup().await;
    let t = rsa().token_with(json!({"kid": null}), &c.claims());
    c.refused(&t, StatusCode::UNAUTHORIZED, "no kid").await;
}

/// 50 concurrent requests with made-up kids, all refused.
async fn flood_of_unknown_kids(app: &Router, iss: &str) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let t = rsa().token_with(json!({"kid": format!("random-{i}")}), &claims(iss));
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.oneshot(get_with("/orgs/org_a/comps", &t))
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn m07_unknown_kid_refetches_once_per_cooldown() {
    let server = JwksServer::start(jwks_of(&[rsa()])).await;
    let iss = server.issuer();
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(iss.clone()))
        .jwks_cooldown(Duration::from_millis(300))
        .build()
        .unwrap();
    let (app, reached) = app(verifier);
    let ok = app
        .clone()
        .oneshot(get_with("/orgs/org_a/comps", &rsa().token(&claims(&iss))))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(server.fetches(), 1);
    flood_of_unknown_kids(&app, &iss).await;
    assert_eq!(
        server.fetches(),
        1,
        "no refetch within the cooldown of the last fetch"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    flood_of_unknown_kids(&app, &iss).await;
    assert_eq!(server.fetches(), 2, "one refetch for the whole flood");
    assert_eq!(reached.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn m08_kid_injection() {
    let c = setup().await;
    c.accepted(&rsa().token(&c.claims()), "warm-up").await;
    for kid in [
        json!("../../dev/null"),
        json!("' OR '1'='1"),
        json!("kid\u{0000}\r\n"),
        json!("k".repeat(300)),
        json!(7),
        json!({"a": 1}),
        json!(["rsa-1"]),
    ] {
        let t = rsa().token_with(json!({"kid": kid}), &c.claims());
        c.refused(&t, StatusCode::UNAUTHORIZED, &kid.to_string())
            .await;
    }
    // A 10 KB kid makes the token too large to read at all.
    let t = rsa().token_with(json!({"kid": "k".repeat(10 * 1024)}), &c.claims());
    c.refused(&t, StatusCode::UNAUTHORIZED, "10 KB kid").await;
    assert!(
        c.server.fetches() <= 2,
        "injected kids cost at most one refetch"
    );
}

#[tokio::test]
async fn m09_token_of_another_issuer() {
    let c = setup().await;
    // Another instance: its own key and iss, served by its own JWKS.
    let other_key = SigningKey::rsa("ins_other");
    let other = JwksServer::start(jwks_of(&[&other_key])).await;
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(c.iss.clone()))
        .issuer(Issuer::new(other.issuer()))
        .scope_policy(Default::default())
        .build()
        .unwrap();
    let (app, reached) = app(verifier);
    // Our issuer's claim, signed by the other instance's key: looked up in our issuer's keys only.
    let forged = other_key.token(&claims(&c.iss));
    let res = app
        .clone()
        .oneshot(get_with("/orgs/org_a/comps", &forged))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Our key with the other issuer's claim: refused the same way.
    let forged = rsa().token(&claims(&other.issuer()));
    let res = app
        .clone()
        .oneshot(get_with("/orgs/org_a/comps", &forged))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Both genuine tokens pass.
    for t in [
        rsa().token(&claims(&c.iss)),
        other_key.token(&claims(&other.issuer())),
    ] {
        let res = app
            .clone()
            .oneshot(get_with("/orgs/org_a/comps", &t))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(reached.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn m10_jku_x5u_jwk_x5c_are_never_used() {
    let c = setup().await;
    let attacker = SigningKey::rsa("rsa-1");
    let trap = JwksServer::start(jwks_of(&[&attacker])).await;
    let jku = format!("{}/.well-known/jwks.json", trap.base);
    for header in [
        json!({"jku": jku}),
        json!({"x5u": jku}),
        json!({"jwk": attacker.jwk()}),
        json!({"x5c": ["MIIBIjANBg=="]}),
    ] {
        let t = attacker.token_with(header.clone(), &c.claims());
        c.refused(&t, StatusCode::UNAUTHORIZED, &header.to_string())
            .await;
    }
    assert_eq!(trap.fetches(), 0, "no outbound fetch to attacker URLs");
}

#[tokio::test]
async fn m11_crit_is_refused() {
    let c = setup().await;
    for header in [
        json!({"crit": ["exp"], "exp": 1}),
        json!({"crit": []}),
        json!({"crit": ["b64"], "b64": false}),
        json!({"b64": false}),
    ] {
        let t = rsa().token_with(header.clone(), &c.claims());
        c.refused(&t, StatusCode::UNAUTHORIZED, &header.to_string())
            .await;
    }
    // Present but null is still present.
    for header in [
        r#"{"alg":"RS256","kid":"rsa-1","crit":null}"#,
        r#"{"alg":"RS256","kid":"rsa-1","b64":null}"#,
    ] {
        let t = rsa().token_raw("RS256", header, &c.claims().to_string());
        c.refused(&t, StatusCode::UNAUTHORIZED, header).await;
    }
}

#[tokio::test]
async fn m12_typ_jwe_and_json_serialization() {
    let c = setup().await;
    for typ in ["at+jwt", "JWE", "secevent+jwt"] {
        let t = rsa().token_with(json!({"typ": typ}), &c.claims());
        c.refused(&t, StatusCode::UNAUTHORIZED, typ).await;
    }
    // typ absent and "JWT" in any case are fine.
    c.accepted(
        &rsa().token_with(json!({"typ": null}), &c.claims()),
        "no typ",
    )
    .await;
    c.accepted(&rsa().token_with(json!({"typ": "jwt"}), &c.claims()), "jwt")
        .await;
    // A JWE has five segments.
    c.refused(
        "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d",
        StatusCode::UNAUTHORIZED,
        "JWE",
    )
    .await;
    // JSON serialization is not a b64token at all.
    let req = Request::get("/orgs/org_a/comps")
        .header(
            "authorization",
            r#"Bearer {"payload":"e30","signatures":[]}"#,
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(c.send_req(req).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn m13_jwks_hygiene() {
    let rsa_jwk = rsa().jwk();
    let mut enc = rsa_jwk.clone();
    enc["use"] = json!("enc");
    let mut sign_only = rsa_jwk.clone();
    sign_only["key_ops"] = json!(["sign"]);
    let mut small = rsa_jwk.clone();
    small["n"] = json!(b64(&[0xC3; 128]));
    let mut hs = rsa_jwk.clone();
    hs["alg"] = json!("HS256");
    let oct = json!({"kty":"oct","kid":"rsa-1","k":"c2VjcmV0"});
    for (name, jwk) in [
        ("enc", enc),
        ("key_ops", sign_only),
        ("1024 bits", small),
        ("alg HS256", hs),
        ("oct", oct),
    ] {
        let server = JwksServer::start(json!({"keys": [jwk]})).await;
        let verifier = JwtVerifier::builder()
            .issuer(Issuer::new(server.issuer()))
            .build()
            .unwrap();
        let (app, reached) = app(verifier);
        let t = rsa().token(&claims(&server.issuer()));
        let res = app
            .oneshot(get_with("/orgs/org_a/comps", &t))
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{name}: no usable key is an outage, never a pass"
        );
        assert!(res.headers().contains_key("retry-after"));
        assert_eq!(reached.load(Ordering::SeqCst), 0);
    }
    // Empty key set, and an error status.
    let server = JwksServer::start(json!({"keys": []})).await;
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()))
        .build()
        .unwrap();
    let (router, _) = app(verifier);
    let t = rsa().token(&claims(&server.issuer()));
    assert_eq!(
        router
            .oneshot(get_with("/orgs/org_a/comps", &t))
            .await
            .unwrap()
            .status(),
        503
    );
    let server = JwksServer::start(jwks_of(&[rsa()])).await;
    server.failing.store(true, Ordering::SeqCst);
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()))
        .build()
        .unwrap();
    let (router, _) = app(verifier);
    let t = rsa().token(&claims(&server.issuer()));
    assert_eq!(
        router
            .oneshot(get_with("/orgs/org_a/comps", &t))
            .await
            .unwrap()
            .status(),
        503
    );
}

#[tokio::test]
async fn m14_exp() {
    let c = setup().await;
    let now = now();
    let body = c
        .refused(
            &rsa().token(&c.with(json!({"exp": null}))),
            StatusCode::UNAUTHORIZED,
            "no exp",
        )
        .await;
    assert_eq!(body["error"], "invalid_token");
    for exp in [
        json!("9999999999"),
        json!(now - 6),
        json!(-1),
        json!(f64::from(u32::try_from(now - 100).unwrap())),
        json!(true),
        json!(null),
    ] {
        c.refused(
            &rsa().token(&c.with(json!({"exp": exp}))),
            StatusCode::UNAUTHORIZED,
            &exp.to_string(),
        )
        .await;
    }
    // Within the 5 s leeway, and a fractional NumericDate, are deliberately accepted.
    c.accepted(
        &rsa().token(&c.with(json!({"exp": now - 3}))),
        "exp within leeway",
    )
    .await;
    c.accepted(
        &rsa().token(&c.with(json!({"exp": now as f64 + 30.5}))),
        "float exp",
    )
    .await;
    // Beyond year 9999 is not a date.
    c.refused(
        &rsa().token(&c.with(json!({"exp": 1e20}))),
        StatusCode::UNAUTHORIZED,
        "huge exp",
    )
    .await;
    c.refused(
        &rsa().token(&c.with(json!({"exp": u64::MAX}))),
        StatusCode::UNAUTHORIZED,
        "u64::MAX exp",
    )
    .await;
}

#[tokio::test]
async fn m15_nbf() {
    let c = setup().await;
    let now = now();
    c.refused(
        &rsa().token(&c.with(json!({"nbf": now + 30}))),
        StatusCode::UNAUTHORIZED,
        "nbf future",
    )
    .await;
    c.refused(
        &rsa().token(&c.with(json!({"nbf": "0"}))),
        StatusCode::UNAUTHORIZED,
        "nbf string",
    )
    .await;
    c.accepted(
        &rsa().token(&c.with(json!({"nbf": now + 3}))),
        "nbf within leeway",
    )
    .await;
    // Absent nbf is accepted (OAuth access tokens and Clerk M2M tokens have none).
    c.accepted(&rsa().token(&c.with(json!({"nbf": null}))), "no nbf")
        .await;
}

#[tokio::test]
async fn m16_iat() {
    let c = setup().await;
    c.refused(
        &rsa().token(&c.with(json!({"iat": now() + 60}))),
        StatusCode::UNAUTHORIZED,
        "iat future",
    )
    .await;
    c.refused(
        &rsa().token(&c.with(json!({"iat": "now"}))),
        StatusCode::UNAUTHORIZED,
        "iat string",
    )
    .await;
}

#[tokio::test]
async fn m17_leeway_is_configurable() {
    let [rsa, ..] = keys();
    let server = JwksServer::start(jwks_of(&[rsa])).await;
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()))
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    let stale = with(claims(&server.issuer()), json!({"exp": now() - 1}));
    assert!(verifier.verify_token(&rsa.token(&stale)).await.is_err());
}

#[tokio::test]
async fn m18_iss() {
    let c = setup().await;
    let slash = format!("{}/", c.iss);
    for iss in [
        json!(null),
        json!("https://evil.example.com"),
        json!(42),
        json!([c.iss.clone()]),
        json!(slash),
    ] {
        c.refused(
            &rsa().token(&c.with(json!({"iss": iss}))),
            StatusCode::UNAUTHORIZED,
            &iss.to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn m19_aud() {
    let [rsa, ..] = keys();
    let server = JwksServer::start(jwks_of(&[rsa])).await;
    let iss = server.issuer();
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(iss.clone()).audience("api"))
        .build()
        .unwrap();
    let verdict = |aud: Value| {
        let t = rsa.token(&with(claims(&iss), json!({"aud": aud})));
        let v = verifier.clone();
        async move { v.verify_token(&t).await.is_ok() }
    };
    assert!(verdict(json!("api")).await);
    assert!(verdict(json!(["other", "api"])).await);
    assert!(!verdict(json!([])).await);
    assert!(!verdict(json!("other")).await);
    assert!(!verdict(json!([1, "x"])).await);
    assert!(
        !verdict(json!(null)).await,
        "audience configured but absent"
    );
    // Without a configured audience, aud is not checked (the gateway contract: "none checked").
    let c = setup().await;
    c.accepted(
        &rsa.token(&c.with(json!({"aud": "api"}))),
        "aud not configured",
    )
    .await;
}

#[tokio::test]
async fn m20_azp() {
    let c = setup().await;
    for azp in [
        json!(null),
        json!("https://evil.example.com"),
        json!(["https://app.example.com"]),
        json!(1),
    ] {
        c.refused(
            &rsa().token(&c.with(json!({"azp": azp}))),
            StatusCode::UNAUTHORIZED,
            &azp.to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn m21_sub() {
    let c = setup().await;
    for sub in [json!(null), json!(""), json!(5), json!({"id": "u"})] {
        c.refused(
            &rsa().token(&c.with(json!({"sub": sub}))),
            StatusCode::UNAUTHORIZED,
            &sub.to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn m22_pending_session() {
    let c = setup().await;
    c.refused(
        &rsa().token(&c.with(json!({"sts": "pending"}))),
        StatusCode::UNAUTHORIZED,
        "pending",
    )
    .await;
    c.accepted(&rsa().token(&c.with(json!({"sts": "active"}))), "active")
        .await;
}

fn v2(c: &Case, o: Value, fea: &str) -> Value {
    c.with(json!({
        "v": 2, "fea": fea, "o": o,
        "org_id": null, "org_slug": null, "org_role": null, "org_permissions": null
    }))
}

#[tokio::test]
async fn m23_v2_without_an_org() {
    let c = setup().await;
    let body = c
        .refused(
            &rsa().token(&v2(&c, Value::Null, "o:comps")),
            StatusCode::FORBIDDEN,
            "no org",
        )
        .await;
    assert_eq!(body["error"], "org_forbidden");
}

#[tokio::test]
async fn m24_v2_org_without_permissions_is_zero_scopes_in_strict_mode() {
    let c = setup().await;
    let body = c
        .refused(
            &rsa().token(&v2(&c, json!({"id":"org_a","rol":"admin"}), "o:comps")),
            StatusCode::FORBIDDEN,
            "no per/fpm",
        )
        .await;
    assert_eq!(body["error"], "insufficient_scope");
    c.accepted(
        &rsa().token(&v2(
            &c,
            json!({"id":"org_a","rol":"admin","per":"read","fpm":"1"}),
            "o:comps",
        )),
        "with fpm",
    )
    .await;
}

#[tokio::test]
async fn m25_fea_without_colon() {
    let c = setup().await;
    let t = rsa().token(&v2(
        &c,
        json!({"id":"org_a","per":"read","fpm":"1"}),
        "comps",
    ));
    c.refused(&t, StatusCode::FORBIDDEN, "fea without colon")
        .await;
}

#[tokio::test]
async fn m26_malformed_masks() {
    let c = setup().await;
    for fpm in ["-1", "1.5", "1e3", "0x3", "one", ""] {
        let t = rsa().token(&v2(
            &c,
            json!({"id":"org_a","per":"read","fpm":fpm}),
            "o:comps",
        ));
        c.refused(&t, StatusCode::FORBIDDEN, fpm).await;
    }
}

#[tokio::test]
async fn m27_masks_beyond_64_and_128_bits() {
    let c = setup().await;
    // `read` is permission 130: mask 2^130 grants it exactly, 2^130 - 1 does not.
    let per: Vec<String> = (0..130)
        .map(|i| format!("p{i}"))
        .chain(["read".into()])
        .collect();
    let per = per.join(",");
    let two_130 = "1361129467683753853853498429727072845824";
    let below = "1361129467683753853853498429727072845823";
    c.accepted(
        &rsa().token(&v2(
            &c,
            json!({"id":"org_a","per":per,"fpm":two_130}),
            "o:comps",
        )),
        "2^130",
    )
    .await;
    c.refused(
        &rsa().token(&v2(
            &c,
            json!({"id":"org_a","per":per,"fpm":below}),
            "o:comps",
        )),
        StatusCode::FORBIDDEN,
        "2^130-1",
    )
    .await;
    c.refused(
        &rsa().token(&v2(
            &c,
            json!({"id":"org_a","per":"read","fpm":"18446744073709551616"}),
            "o:comps",
        )),
        StatusCode::FORBIDDEN,
        "2^64",
    )
    .await;
}

#[tokio::test]
async fn m28_fpm_longer_or_shorter_than_fea() {
    let c = setup().await;
    c.refused(
        &rsa().token(&v2(
            &c,
            json!({"id":"org_a","per":"read","fpm":"1"}),
            "o:reports,o:comps",
        )),
        StatusCode::FORBIDDEN,
        "mask missing for comps",
    )
    .await;
    c.accepted(
        &rsa().token(&v2(
            &c,
            json!({"id":"org_a","per":"read","fpm":"1,1,1"}),
            "o:comps",
        )),
        "extra masks ignored",
    )
    .await;
}

#[tokio::test]
async fn m29_alignment_fixture_grants_the_intersection() {
    let [rsa, ..] = keys();
    let server = JwksServer::start(jwks_of(&[rsa])).await;
    let policy = portcullis_core::ScopePolicy::builder()
        .canonical(
            ScopeSet::parse([
                "reservations:read",
                "reservations:manage",
                "support-chat:read",
                "support-chat:manage",
                "impersonation:read",
                "impersonation:manage",
            ])
            .unwrap(),
        )
        .build()
        .unwrap();
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(server.issuer()))
        .scope_policy(policy)
        .build()
        .unwrap();
    let now = now();
    let fixture = json!({"v":2,"sid":"sessionId","sub":"userId","act":{"sub":"actor"},
        "fea":"o:reservations,u:dashboard,uo:support-chat,o:impersonation","pla":"u:pro,o:business",
        "o":{"id":"orgId","rol":"member","slg":"orgSlug","per":"read,manage","fpm":"2,3"},
        "iss": server.issuer(), "iat": now, "exp": now + 60});
    let p = verifier.verify_token(&rsa.token(&fixture)).await.unwrap();
    assert_eq!(p.scopes().to_string(), "reservations:manage");
    assert_eq!(p.actor().unwrap().subject.as_ref(), "actor");
    assert_eq!(p.org_role(), Some("member"));
}

#[tokio::test]
async fn m30_unprefixed_role() {
    let c = setup().await;
    let lenient = portcullis_core::ScopePolicy::builder()
        .strict(false)
        .build()
        .unwrap();
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::new(c.iss.clone()))
        .scope_policy(lenient)
        .build()
        .unwrap();
    let t = rsa().token(&c.with(json!({"org_role": "admin", "org_permissions": null})));
    let p = verifier.verify_token(&t).await.unwrap();
    assert_eq!(p.org_role(), Some("admin"));
    assert!(
        p.scopes().contains("api_keys:manage"),
        "non-strict: admin role fallback"
    );
}

#[tokio::test]
async fn m31_org_permissions_not_an_array() {
    let c = setup().await;
    for perms in [json!("org:comps:read"), json!({"a": 1}), json!([1, 2])] {
        c.refused(
            &rsa().token(&c.with(json!({"org_permissions": perms}))),
            StatusCode::UNAUTHORIZED,
            &perms.to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn m32_unknown_version() {
    let c = setup().await;
    for v in [json!(3), json!(0), json!("2"), json!(2.5)] {
        c.refused(
            &rsa().token(&c.with(json!({"v": v}))),
            StatusCode::UNAUTHORIZED,
            &v.to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn m33_duplicate_keys() {
    let c = setup().await;
    let claims = c.claims().to_string();
    let t = rsa().token_raw(
        "RS256",
        r#"{"alg":"RS256","alg":"none","kid":"rsa-1"}"#,
        &claims,
    );
    c.refused(&t, StatusCode::UNAUTHORIZED, "alg twice").await;
    let doubled = claims.replacen('{', &format!("{{\"exp\":{},", now() + 100), 1);
    let t = rsa().token_raw("RS256", r#"{"alg":"RS256","kid":"rsa-1"}"#, &doubled);
    c.refused(&t, StatusCode::UNAUTHORIZED, "exp twice").await;
}

#[tokio::test]
async fn m34_35_36_claims_that_are_not_an_object() {
    let c = setup().await;
    let h = r#"{"alg":"RS256","kid":"rsa-1"}"#;
    let nested = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let deep = c
        .claims()
        .to_string()
        .replacen('{', &format!("{{\"deep\":{nested},"), 1);
    for payload in ["[]", "\"claims\"", "null", "42", &deep] {
        c.refused(
            &rsa().token_raw("RS256", h, payload),
            StatusCode::UNAUTHORIZED,
            payload,
        )
        .await;
    }
    // Not UTF-8.
    let message = format!("{}.{}", b64(h.as_bytes()), b64(&[0xff, 0xfe, b'{', b'}']));
    let sig = b64(&rsa().sign_raw("RS256", message.as_bytes()));
    c.refused(
        &format!("{message}.{sig}"),
        StatusCode::UNAUTHORIZED,
        "non-UTF-8",
    )
    .await;
}

#[tokio::test]
async fn m37_oversized_token() {
    let c = setup().await;
    let t = rsa().token(&c.with(json!({"pad": "x".repeat(9000)})));
    let body = c.refused(&t, StatusCode::UNAUTHORIZED, "9 KB").await;
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn m38_shape() {
    let c = setup().await;
    let good = rsa().token(&c.claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let mut flipped = p.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other = rsa().token(&c.with(json!({"sub": "user_2"})));
    let other_sig = other.rsplit_once('.').unwrap().1;
    for (why, t) in [
        ("two segments", format!("{h}.{p}")),
        ("four segments", format!("{good}.x")),
        ("padding", format!("{h}=.{p}.{s}")),
        (
            "standard base64",
            format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/")),
        ),
        ("empty signature", format!("{h}.{p}.")),
        ("flipped payload byte", format!("{h}.{flipped}.{s}")),
        ("transplanted signature", format!("{h}.{p}.{other_sig}")),
        ("empty header", format!(".{p}.{s}")),
    ] {
        c.refused(&t, StatusCode::UNAUTHORIZED, why).await;
    }
    let req = Request::get("/orgs/org_a/comps")
        .header("authorization", format!("Bearer {h}. {p}.{s}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        c.send_req(req).await.0,
        StatusCode::UNAUTHORIZED,
        "whitespace"
    );
}

#[tokio::test]
async fn m39_transport() {
    let c = setup().await;
    let t = rsa().token(&c.claims());
    let req = |f: &dyn Fn(http::request::Builder) -> http::request::Builder| {
        f(Request::get("/orgs/org_a/comps"))
            .body(Body::empty())
            .unwrap()
    };
    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        (
            "two headers",
            req(&|b| {
                b.header("authorization", format!("Bearer {t}"))
                    .header("authorization", format!("Bearer {t}"))
            }),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "empty",
            req(&|b| b.header("authorization", "Bearer ")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bare token",
            req(&|b| b.header("authorization", t.as_str())),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "basic",
            req(&|b| b.header("authorization", "Basic dXNlcjpwdw==")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "query only",
            Request::get(format!("/orgs/org_a/comps?access_token={t}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "cookie only",
            req(&|b| b.header("cookie", format!("__session={t}"))),
            StatusCode::UNAUTHORIZED,
        ),
        // Deliberately accepted: the scheme is case-insensitive and may be followed by spaces.
        (
            "lowercase",
            req(&|b| b.header("authorization", format!("bearer {t}"))),
            StatusCode::OK,
        ),
        (
            "extra spaces",
            req(&|b| b.header("authorization", format!("Bearer   {t}"))),
            StatusCode::OK,
        ),
        // A cookie beside the header is ignored; the header decides.
        (
            "cookie and header",
            req(&|b| {
                b.header("authorization", format!("Bearer {t}"))
                    .header("cookie", "__session=garbage")
            }),
            StatusCode::OK,
        ),
    ];
    for (why, r, status) in cases {
        let (got, body, www) = c.send_req(r).await;
        assert_eq!(got, status, "{why}: {body}");
        if status == StatusCode::UNAUTHORIZED {
            assert!(www.is_some(), "{why}");
        }
    }
    let (_, body, www) = c.send_req(req(&|b| b)).await;
    assert_eq!(body["error"], "unauthorized");
    assert!(
        !www.unwrap().contains("error="),
        "no error attribute without a credential"
    );
}

#[tokio::test]
async fn m40_forged_tokens_all_get_the_same_answer() {
    let c = setup().await;
    let attacker = SigningKey::rsa("rsa-1");
    let mut answers = std::collections::BTreeSet::new();
    for claims in [
        c.claims(),
        c.with(json!({"exp": 1})),
        c.with(json!({"iss": "https://other"})),
        c.with(json!({"sub": null, "v": 3})),
    ] {
        let body = c
            .refused(&attacker.token(&claims), StatusCode::UNAUTHORIZED, "forged")
            .await;
        let (_, _, www) = c.send(&attacker.token(&claims)).await;
        answers.insert((
            body["error"].to_string(),
            body["error_description"].to_string(),
            www.unwrap(),
        ));
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
}
