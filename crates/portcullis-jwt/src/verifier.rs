//! The JWT verifier: keys, signature, claims, Clerk normalization and the verified-token cache.

use std::{
    fmt,
    hash::{BuildHasherDefault, Hasher},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use moka::sync::Cache;
use portcullis_core::{
    Actor, AuthError, ConfigError, CredentialId, FactorAge, OrgId, OrgMembership, Permissions,
    Principal, PrincipalKind, ScopePolicy, Verification, VerifyCredential, clock,
};

use crate::{
    FpmAlignment, Issuer,
    claims::{Claims, Header, IgnoredOrString, IssuerOnly},
    clerk::decode_v2,
    issuer::KeySource,
    jwks::{self, Alg, KeySet, MAX_KID_LEN},
};

/// The longest token verified, in bytes; longer ones are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The longest a JWKS fetch (or the wait for one under way) may take, whatever the HTTP client.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// 9999-12-31T23:59:59Z: a later `exp` is refused as not a date.
const LAST_DATE: i64 = 253_402_300_799;

const INVALID: AuthError = AuthError::invalid_token("the access token is invalid");

/// Verifies JWTs from one or more trusted issuers and turns them into [`Principal`]s.
///
/// - **Keys** come from each issuer's JWKS (or OpenID discovery), fetched with reqwest
///   (timeouts, 1 MiB limit, no redirects) and cached in moka per issuer. Unfit keys are skipped
///   (`oct`, `use` other than `sig`, `key_ops` without `verify`, RSA under 2048 bits). An unknown
///   `kid` causes at most one fetch per cooldown (default 5 s), shared by all requests waiting on
///   it; a key set is refreshed in the background once it is three quarters through its
///   `max-age`; keys already known keep working while the JWKS endpoint fails; with no keys and a
///   failing endpoint the answer is 503.
/// - **Verification**: the token is bounded to [`MAX_TOKEN_LEN`] before decoding; the algorithm
///   must be one of [`Alg`] and fit the key (`none` and HMAC are impossible); the signature is
///   checked before any claim, so every forged token gets the same answer; then `exp` (required),
///   `nbf`, `iat` (not in the future), `iss` (exact), `aud`, `azp`, `sub`, header `typ` and `crit`
///   (refused), with a leeway of 5 s.
/// - **Claims**: Clerk v1 and v2 session tokens are normalized into the principal's organization,
///   role and scopes through the [`ScopePolicy`] (strict by default); see [`crate::clerk`].
/// - **Cache**: a verified token is remembered until it expires (bounded in size), keyed by a
///   keyed hash and compared on the whole token, so a token seen before costs a hash and a lookup.
///
/// Cloning is cheap; clones share keys and caches.
///
/// ```no_run
/// use portcullis_jwt::{Issuer, JwtVerifier};
///
/// let verifier = JwtVerifier::builder()
///     .issuer(Issuer::new("https://clerk.example.com"))
///     .build()
///     .expect("valid configuration");
/// # let _ = verifier;
/// ```
#[derive(Clone)]
pub struct JwtVerifier(Arc<Shared>);

struct Shared {
    issuers: Box<[IssuerState]>,
    keys: Cache<Arc<str>, Arc<KeySet>>,
    tokens: Option<TokenCache>,
    hasher: ahash::RandomState,
    policy: ScopePolicy,
    alignment: FpmAlignment,
    leeway: i64,
    cooldown: Duration,
    default_max_age: Duration,
    client: reqwest::Client,
    epoch: Instant,
    /// Bumped whenever a refresh withdraws a key, invalidating tokens verified with older sets.
    key_generation: AtomicU64,
    /// How long known keys are used while their JWKS cannot be fetched.
    max_stale: Duration,
}

struct IssuerState {
    config: Issuer,
    name: Arc<str>,
    /// Serializes fetches of this issuer's keys (cold path only).
    fetching: tokio::sync::Mutex<()>,
    /// Milliseconds since `Shared::epoch` of the last fetch attempt, plus one; 0 = never.
    last_attempt: AtomicU64,
    /// The last fetch failed.
    last_failed: AtomicBool,
    background: AtomicBool,
}

/// Verified tokens by keyed hash. Entries are bounded in number and checked against `exp` on
/// every hit, so none is ever used past its expiry.
type TokenCache =
    quick_cache::sync::Cache<u64, Arc<Verified>, TokenWeight, BuildHasherDefault<IdentityHasher>>;

struct Verified {
    token: Box<str>,
    principal: Principal,
    exp: i64,
    /// `Shared::key_generation` when verified: a hit from before a key was withdrawn is no hit.
    key_generation: u64,
}

/// Entries weigh their token's bytes (plus overhead), so the cache is bounded in memory.
#[derive(Clone)]
struct TokenWeight;

impl quick_cache::Weighter<u64, Arc<Verified>> for TokenWeight {
    fn weight(&self, _: &u64, v: &Arc<Verified>) -> u64 {
        v.token.len() as u64 + 256
    }
}

/// The outcome of checking a token against the keys at hand.
enum Step {
    Done(Result<(Principal, i64), AuthError>),
    /// The issuer's keys must be fetched first (none yet, or an unknown `kid`).
    Fetch {
        issuer: usize,
        seen: Option<Instant>,
    },
}

impl JwtVerifier {
    /// Start configuring a verifier; see [`JwtVerifierBuilder`].
    pub fn builder() -> JwtVerifierBuilder {
        JwtVerifierBuilder::default()
    }

    /// Fetch every issuer's keys now, rather than on the first request (for readiness checks).
    pub async fn prefetch(&self) -> Result<(), AuthError> {
        for i in 0..self.0.issuers.len() {
            self.0.refresh(i, None).await?;
        }
        Ok(())
    }

    /// Whether every issuer has usable keys at hand.
    pub fn is_ready(&self) -> bool {
        self.0
            .issuers
            .iter()
            .all(|st| self.0.keys.contains_key(&st.name))
    }

    /// The scope policy that normalizes claims.
    pub fn scope_policy(&self) -> &ScopePolicy {
        &self.0.policy
    }

    /// Verify `token` and wait for the outcome.
    pub async fn verify_token(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify(token).resolve().await
    }
}

impl VerifyCredential for JwtVerifier {
    fn verify(&self, token: &str) -> Verification {
        if let Some(remembered) = self.recall(token.as_bytes()) {
            return Verification::Ready(remembered);
        }
        let shared = &self.0;
        let now = clock::unix_seconds();
        let hash = shared.cache_key(token.as_bytes());
        match shared.check(token, now, true) {
            Step::Done(result) => Verification::Ready(shared.remember(hash, token, result)),
            Step::Fetch { issuer, seen } => {
                let this = self.clone();
                let token: Box<str> = token.into();
                Verification::Pending(Box::pin(async move {
                    let shared = &this.0;
                    shared.refresh(issuer, seen).await?;
                    match shared.check(&token, clock::unix_seconds(), false) {
                        Step::Done(result) => shared.remember(hash, &token, result),
                        Step::Fetch { .. } => Err(AuthError::unavailable("jwks")),
                    }
                }))
            }
        }
    }

    /// A token verified before (with the current keys), compared whole in constant time: its
    /// principal, or `invalid_token` once it has expired.
    fn recall(&self, token: &[u8]) -> Option<Result<Principal, AuthError>> {
        // A JWS header is a JSON object, `{"` in base64url: anything else (an API key) is not
        // looked up.
        if !token.starts_with(b"eyJ") {
            return None;
        }
        let shared = &self.0;
        let cache = shared.tokens.as_ref()?;
        let hash = shared.cache_key(token);
        let hit = cache.get(&hash)?;
        if hit.key_generation != shared.key_generation.load(Ordering::Acquire)
            || !constant_time_eq::constant_time_eq(hit.token.as_bytes(), token)
        {
            return None;
        }
        Some(
            if clock::unix_seconds() < hit.exp.saturating_add(shared.leeway) {
                Ok(hit.principal.clone())
            } else {
                cache.remove(&hash);
                Err(AuthError::invalid_token("the access token expired"))
            },
        )
    }
}

impl Shared {
    /// The cache key of a token: a keyed hash of its last 64 bytes (its signature, unique per
    /// token). A hit is only used after the whole token compares equal, so a collision can cost a
    /// verification but never authenticate.
    fn cache_key(&self, bytes: &[u8]) -> u64 {
        self.hasher
            .hash_one(&bytes[bytes.len().saturating_sub(64)..])
    }

    fn remember(
        &self,
        hash: u64,
        token: &str,
        result: Result<(Principal, i64), AuthError>,
    ) -> Result<Principal, AuthError> {
        let (principal, exp) = result?;
        if let Some(cache) = &self.tokens {
            cache.insert(
                hash,
                Arc::new(Verified {
                    token: token.into(),
                    principal: principal.clone(),
                    exp,
                    key_generation: self.key_generation.load(Ordering::Acquire),
                }),
            );
        }
        Ok(principal)
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a fetch for issuer `i` happened less than `interval` ago.
    fn recently_fetched(&self, i: usize, interval: Duration) -> bool {
        let last = self.issuers[i].last_attempt.load(Ordering::Acquire);
        last != 0
            && self.millis().saturating_sub(last - 1)
                < u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// Fetch issuer `i`'s keys unless someone else did since `seen`, or one was tried within the
    /// cooldown. Returns the keys at hand afterwards.
    async fn refresh(&self, i: usize, seen: Option<Instant>) -> Result<Arc<KeySet>, AuthError> {
        let st = &self.issuers[i];
        let current = || self.keys.get(&st.name);
        if let KeySource::Static(set) = &st.config.source {
            return Ok(set.clone());
        }
        let Ok(_one_at_a_time) = tokio::time::timeout(FETCH_TIMEOUT, st.fetching.lock()).await
        else {
            return Err(AuthError::unavailable("jwks"));
        };
        let before = current();
        if let Some(set) = &before
            && Some(set.fetched_at) != seen
        {
            return Ok(set.clone());
        }
        // With keys at hand, a refetch waits for the cooldown; without, retry at most once a second.
        let interval = if before.is_some() {
            self.cooldown
        } else {
            Duration::from_secs(1)
        };
        if self.recently_fetched(i, interval) {
            return before.ok_or(AuthError::unavailable("jwks"));
        }
        st.last_attempt.store(self.millis() + 1, Ordering::Release);
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch(st))
            .await
            .unwrap_or_else(|_| Err(jwks::JwksError::Http("timed out".into())));
        match fetched {
            Ok(set) => {
                let set = Arc::new(set);
                tracing::debug!(target: "portcullis::jwks", issuer = &*st.name, keys = set.len(), "fetched signing keys");
                if before.as_ref().is_some_and(|old| old.withdrawn_in(&set)) {
                    self.key_generation.fetch_add(1, Ordering::AcqRel);
                }
                self.keys.insert(st.name.clone(), set.clone());
                st.last_failed.store(false, Ordering::Release);
                Ok(set)
            }
            Err(e) => {
                tracing::warn!(target: "portcullis::jwks", issuer = &*st.name, error = %e, known_keys = before.is_some(), "JWKS fetch failed");
                st.last_failed.store(true, Ordering::Release);
                before.ok_or(AuthError::unavailable("jwks"))
            }
        }
    }

    async fn fetch(&self, st: &IssuerState) -> Result<KeySet, jwks::JwksError> {
        let url = match &st.config.source {
            KeySource::JwksUrl(url) => url.to_string(),
            KeySource::Discovery => jwks::discover(&self.client, &st.config.issuer).await?,
            KeySource::Static(_) => unreachable!("static keys are never fetched"),
        };
        let (body, max_age) = jwks::fetch(&self.client, &url).await?;
        let max_age = max_age
            .unwrap_or(self.default_max_age)
            .clamp(Duration::from_secs(60), Duration::from_secs(24 * 3600));
        jwks::parse_jwks(&body, max_age)
    }

    /// Refresh issuer `i`'s keys in the background once they are three quarters through their age.
    fn refresh_in_background_if_old(self: &Arc<Self>, i: usize, set: &KeySet) {
        let st = &self.issuers[i];
        if matches!(st.config.source, KeySource::Static(_))
            || set.fetched_at.elapsed() < set.max_age / 4 * 3
            || st.background.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            st.background.store(false, Ordering::Release);
            return;
        };
        let this = self.clone();
        let seen = Some(set.fetched_at);
        runtime.spawn(async move {
            let _ = this.refresh(i, seen).await;
            this.issuers[i].background.store(false, Ordering::Release);
        });
    }

    fn check(self: &Arc<Self>, token: &str, now: i64, may_fetch: bool) -> Step {
        if token.len() > MAX_TOKEN_LEN {
            return Step::Done(Err(AuthError::invalid_token(
                "the access token is too large",
            )));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Step::Done(Err(INVALID));
        };
        if [header_b64, payload_b64, signature_b64]
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(is_base64url))
        {
            return Step::Done(Err(INVALID));
        }
        let Some(header) = decode_json::<Header>(header_b64) else {
            return Step::Done(Err(INVALID));
        };
        let Some(alg) = Alg::from_name(&header.alg) else {
            return Step::Done(Err(INVALID));
        };
        if header.crit.is_some() || header.b64.is_some() {
            return Step::Done(Err(INVALID));
        }
        let Some(kid) = header
            .kid
            .filter(|k| !k.is_empty() && k.len() <= MAX_KID_LEN)
        else {
            return Step::Done(Err(INVALID));
        };
        let Some(i) = self.issuer_of(payload_b64) else {
            return Step::Done(Err(INVALID));
        };
        let st = &self.issuers[i];
        if header
            .typ
            .as_deref()
            .is_some_and(|t| !st.config.accepts_type(t))
        {
            return Step::Done(Err(INVALID));
        }
        let fetchable = !matches!(st.config.source, KeySource::Static(_));
        let current = self.keys.get(&st.name);
        // Known keys outlive a failing JWKS endpoint only up to `max_stale`.
        let usable = current
            .clone()
            .filter(|set| !fetchable || set.fetched_at.elapsed() <= self.max_stale);
        let Some(set) = usable else {
            return if may_fetch {
                Step::Fetch {
                    issuer: i,
                    seen: current.map(|set| set.fetched_at),
                }
            } else {
                Step::Done(Err(AuthError::unavailable("jwks")))
            };
        };
        self.refresh_in_background_if_old(i, &set);
        let Some(key) = set.get(&kid) else {
            return if may_fetch && fetchable && !self.recently_fetched(i, self.cooldown) {
                Step::Fetch {
                    issuer: i,
                    seen: Some(set.fetched_at),
                }
            } else if fetchable && st.last_failed.load(Ordering::Acquire) {
                // The key may exist; its JWKS could not be read. Fail closed, but as an outage.
                Step::Done(Err(AuthError::unavailable("jwks")))
            } else {
                Step::Done(Err(INVALID))
            };
        };
        if !key.accepts(alg) {
            return Step::Done(Err(INVALID));
        }
        let message = &token[..header_b64.len() + 1 + payload_b64.len()];
        match jsonwebtoken::crypto::verify(
            signature_b64,
            message.as_bytes(),
            &key.decoding,
            alg.jwt(),
        ) {
            Ok(true) => {}
            _ => return Step::Done(Err(INVALID)),
        }
        // The signature holds: from here on, descriptions may say what is wrong.
        let Some(claims) = decode_json::<Claims>(payload_b64) else {
            return Step::Done(Err(AuthError::invalid_token(
                "the access token's claims are malformed",
            )));
        };
        Step::Done(self.validate(&st.config, claims, &kid, now))
    }

    /// Which configured issuer the token claims to come from (untrusted until the signature holds).
    fn issuer_of(&self, payload_b64: &str) -> Option<usize> {
        if self.issuers.len() == 1 {
            return Some(0);
        }
        let IgnoredOrString::String(iss) = decode_json::<IssuerOnly>(payload_b64)?.iss? else {
            return None;
        };
        self.issuers.iter().position(|st| *st.name == *iss)
    }

    fn validate(
        &self,
        issuer: &Issuer,
        claims: Claims,
        kid: &str,
        now: i64,
    ) -> Result<(Principal, i64), AuthError> {
        let leeway = self.leeway;
        if claims.exp.0 > LAST_DATE {
            return Err(AuthError::invalid_token("the token's expiry is not a date"));
        }
        if now >= claims.exp.0.saturating_add(leeway) {
            return Err(AuthError::invalid_token("the access token expired"));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf.0 > now.saturating_add(leeway))
        {
            return Err(AuthError::invalid_token(
                "the access token is not yet valid",
            ));
        }
        if claims
            .iat
            .is_some_and(|iat| iat.0 > now.saturating_add(leeway))
        {
            return Err(AuthError::invalid_token(
                "the access token was issued in the future",
            ));
        }
        if *claims.iss != *issuer.issuer {
            return Err(AuthError::invalid_token("the token issuer is not accepted"));
        }
        // Without a configured audience, `aud` is not checked (the gateway's contract).
        if !issuer.audiences.is_empty()
            && !claims
                .aud
                .as_ref()
                .is_some_and(|aud| aud.contains_any(&issuer.audiences))
        {
            return Err(AuthError::invalid_token(
                "the token audience is not accepted",
            ));
        }
        if !issuer.authorized_parties.is_empty()
            && !claims
                .azp
                .as_deref()
                .is_some_and(|azp| issuer.authorized_parties.iter().any(|p| **p == *azp))
        {
            return Err(AuthError::invalid_token(
                "the token's authorized party is not accepted",
            ));
        }
        if claims.sub.is_empty() {
            return Err(AuthError::invalid_token("the token has no subject"));
        }
        if claims.sts.as_deref() == Some("pending") {
            return Err(AuthError::invalid_token("the session is pending"));
        }
        let exp = claims.exp.0;
        Ok((self.principal(claims, kid)?, exp))
    }

    fn principal(&self, claims: Claims, kid: &str) -> Result<Principal, AuthError> {
        let bad_org = || AuthError::invalid_token("the token's organization is malformed");
        let (org, permissions) = match claims.v.unwrap_or(1) {
            1 => match claims.org_id.as_deref() {
                None => (None, Permissions::Missing),
                Some(id) => {
                    let mut m = OrgMembership::new(OrgId::new(id).map_err(|_| bad_org())?);
                    if let Some(role) = &claims.org_role {
                        m = m.role(role);
                    }
                    if let Some(slug) = &claims.org_slug {
                        m = m.slug(slug);
                    }
                    let perms = claims
                        .org_permissions
                        .map_or(Permissions::Missing, Permissions::Listed);
                    (Some(m), perms)
                }
            },
            2 => match &claims.o {
                None => (None, Permissions::Missing),
                Some(o) => {
                    let mut m = OrgMembership::new(OrgId::new(&o.id).map_err(|_| bad_org())?);
                    if let Some(role) = &o.rol {
                        m = m.role(role);
                    }
                    if let Some(slug) = &o.slg {
                        m = m.slug(slug);
                    }
                    let decoded = decode_v2(
                        claims.fea.as_deref(),
                        o.per.as_deref(),
                        o.fpm.as_deref(),
                        self.alignment,
                    );
                    if decoded.ambiguous {
                        tracing::warn!(
                            target: "portcullis::clerk",
                            event = "clerk.fpm_alignment_ambiguous",
                            sub = claims.sub,
                            org = o.id,
                            "Clerk's SDKs read this token's feature permissions differently; only the permissions both readings grant are kept"
                        );
                    }
                    (Some(m), decoded.permissions)
                }
            },
            _ => {
                return Err(AuthError::invalid_token(
                    "the token version is not supported",
                ));
            }
        };
        let role = org.as_ref().and_then(|m: &OrgMembership| m.role.as_deref());
        let resolved = if org.is_some() {
            self.policy.resolve(permissions, role)
        } else {
            self.policy
                .resolve(Permissions::<Vec<String>>::Malformed, None)
        };
        if resolved.dropped > 0 {
            tracing::debug!(target: "portcullis::clerk", dropped = resolved.dropped, "permissions outside the canonical scope list were dropped");
        }
        let mut b = Principal::builder(PrincipalKind::User, claims.sub)
            .scopes(resolved.scopes)
            .issuer(claims.iss)
            .expires_at(claims.exp.0)
            .credential(CredentialId::Jwt {
                kid: Some(kid.into()),
                jti: claims.jti.map(Into::into),
            });
        if let Some(org) = org {
            b = b.org(org);
        }
        if let Some(sid) = claims.sid {
            b = b.session_id(sid);
        }
        if let Some(iat) = claims.iat {
            b = b.issued_at(iat.0);
        }
        if let Some([first, second]) = claims.fva {
            let minutes = |m: i64| u32::try_from(m).ok();
            b = b.factor_age(FactorAge {
                first_factor_minutes: minutes(first),
                second_factor_minutes: minutes(second),
            });
        }
        if let Some(act) = claims.act {
            b = b.actor(Actor {
                subject: act.sub.into(),
                issuer: act.iss.map(Into::into),
                session_id: act.sid.map(Into::into),
                kind: act.kind.map(Into::into),
            });
        }
        Ok(b.build())
    }
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The deepest JSON nesting read in a header or claims; no real token comes near it.
const MAX_JSON_DEPTH: usize = 32;

fn decode_json<T: serde::de::DeserializeOwned>(b64: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    if !nesting_within(&bytes, MAX_JSON_DEPTH) {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// Whether brackets outside strings nest at most `max` deep (serde_json skips unknown members
/// without its recursion limit).
fn nesting_within(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field(
                "issuers",
                &self.0.issuers.iter().map(|s| &s.config).collect::<Vec<_>>(),
            )
            .field("policy", &self.0.policy)
            .field("alignment", &self.0.alignment)
            .field("leeway", &self.0.leeway)
            .field("cooldown", &self.0.cooldown)
            .finish_non_exhaustive()
    }
}

/// Whether jsonwebtoken can verify a known Ed25519 signature (without a backend it panics).
fn crypto_backend_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        const X: &str = "YaKiRKWuFUzfopKrtTzcMhDdtSm05ab5CfTDvlRhjPw";
        const SIGNATURE: &str = "sb9mejrqeTy8BGo9gOXd16J1uDL53l5890Xz-0NW2lvlHY7WZepO6cEFUmsfnroZ_DacnOQa_yQUWdgISfKHAA";
        const MESSAGE: &[u8] = b"portcullis crypto self-check";
        let Ok(key) = jsonwebtoken::DecodingKey::from_ed_components(X) else {
            return false;
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            jsonwebtoken::crypto::verify(SIGNATURE, MESSAGE, &key, jsonwebtoken::Algorithm::EdDSA)
        }))
        .is_ok_and(|r| matches!(r, Ok(true)))
    })
}

/// The key is already a keyed hash: pass it through.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builder of a [`JwtVerifier`].
#[derive(Debug)]
#[must_use]
pub struct JwtVerifierBuilder {
    issuers: Vec<Issuer>,
    policy: Option<ScopePolicy>,
    alignment: FpmAlignment,
    leeway: Duration,
    cooldown: Duration,
    default_max_age: Duration,
    cache_bytes: u64,
    max_stale: Duration,
    client: Option<reqwest::Client>,
}

impl Default for JwtVerifierBuilder {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            policy: None,
            alignment: FpmAlignment::default(),
            leeway: Duration::from_secs(5),
            cooldown: Duration::from_secs(5),
            default_max_age: Duration::from_secs(300),
            cache_bytes: 64 * 1024 * 1024,
            max_stale: Duration::from_secs(24 * 3600),
            client: None,
        }
    }
}

impl JwtVerifierBuilder {
    /// Trust `issuer` (repeat for several).
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// The policy that turns permissions and roles into scopes (default: the Prism policy with
    /// `STRICT_SCOPES` read from the environment).
    pub fn scope_policy(mut self, policy: ScopePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// How to read Clerk v2 `fpm` masks (default [`FpmAlignment::Intersect`]).
    pub fn fpm_alignment(mut self, alignment: FpmAlignment) -> Self {
        self.alignment = alignment;
        self
    }

    /// Clock leeway for `exp`, `nbf` and `iat` (default 5 s, as Clerk).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The least time between two JWKS fetches caused by unknown `kid`s (default 5 s).
    pub fn jwks_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// How long keys are fresh when the JWKS response has no `max-age` (default 5 min; any
    /// age is clamped to between 1 min and 24 h).
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.default_max_age = max_age;
        self
    }

    /// How much memory verified tokens may take, in bytes (default 64 MiB, about 60 000 Clerk
    /// tokens); 0 disables the cache.
    pub fn token_cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// How long known keys keep working while their JWKS cannot be fetched (default 24 h); past
    /// it, tokens get 503 until the endpoint answers again.
    pub fn jwks_max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// The HTTP client for JWKS and discovery (default: 2 s connect and 5 s total timeouts, no
    /// redirects).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Check the configuration and build the verifier. Nothing is fetched yet.
    ///
    /// Also checks that jsonwebtoken has a crypto backend, so that a binary built without one
    /// fails here, at start-up, rather than on its first request.
    pub fn build(self) -> Result<JwtVerifier, ConfigError> {
        if !crypto_backend_works() {
            return Err(ConfigError::new(
                "crypto",
                "jsonwebtoken has no crypto backend: enable the `aws-lc-rs` (or `rust-crypto`) \
                 feature of portcullis-jwt, or install a jsonwebtoken CryptoProvider",
            ));
        }
        if self.issuers.is_empty() {
            return Err(ConfigError::new(
                "issuers",
                "at least one issuer is required",
            ));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate()?;
            if self.issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
                return Err(ConfigError::new(
                    format!("issuers.{}", issuer.issuer),
                    "the issuer is configured twice",
                ));
            }
        }
        let policy = match self.policy {
            Some(p) => p,
            None => ScopePolicy::builder().strict_from_env()?.build()?,
        };
        let client = match self.client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ConfigError::new("http_client", e.to_string()))?,
        };
        let tokens = (self.cache_bytes > 0).then(|| {
            let estimated = usize::try_from(self.cache_bytes / 1024).unwrap_or(usize::MAX);
            TokenCache::with(
                estimated.max(16),
                self.cache_bytes,
                TokenWeight,
                BuildHasherDefault::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            )
        });
        let issuers = self
            .issuers
            .into_iter()
            .map(|config| IssuerState {
                name: Arc::from(&*config.issuer),
                config,
                fetching: tokio::sync::Mutex::new(()),
                last_attempt: AtomicU64::new(0),
                last_failed: AtomicBool::new(false),
                background: AtomicBool::new(false),
            })
            .collect::<Box<[_]>>();
        // Never full, so never evicting: a key set is only ever replaced by a newer one.
        let keys = Cache::builder()
            .max_capacity(issuers.len() as u64 + 1)
            .build();
        for st in &issuers {
            if let KeySource::Static(set) = &st.config.source {
                keys.insert(st.name.clone(), set.clone());
            }
        }
        Ok(JwtVerifier(Arc::new(Shared {
            keys,
            issuers,
            tokens,
            hasher: ahash::RandomState::new(),
            policy,
            alignment: self.alignment,
            leeway: i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX),
            cooldown: self.cooldown,
            default_max_age: self.default_max_age,
            client,
            epoch: Instant::now(),
            key_generation: AtomicU64::new(0),
            max_stale: self.max_stale,
        })))
    }
}
