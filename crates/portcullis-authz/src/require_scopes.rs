//! Middleware that requires scopes of the request's principal.
//!
//! Attach it per route (axum `route_layer`, or a route of the gateway's policy file). It reads the
//! [`Principal`] an authentication layer inserted and checks its normalized scopes: all of a list
//! ([`RequireScopesLayer::all`]) or any one of it ([`RequireScopesLayer::any`]). A principal
//! without them gets 403 with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`,
//! and the inner service is never called. Optionally the route can also demand a recent second
//! factor (Clerk `fva`), answered per RFC 9470 when missing.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use portcullis_authz::RequireScopesLayer;
//! use portcullis_core::{Principal, PrincipalKind, ScopeSet};
//! use tower::ServiceExt;
//!
//! # #[tokio::main] async fn main() {
//! let app = Router::new()
//!     .route("/comps", get(|| async { "comps" }))
//!     .route_layer(RequireScopesLayer::all(["comps:read"]));
//!
//! let reader = Principal::builder(PrincipalKind::User, "user_1")
//!     .scopes(ScopeSet::parse(["comps:read"]).unwrap())
//!     .build();
//! let mut req = Request::get("/comps").body(Body::empty()).unwrap();
//! req.extensions_mut().insert(reader);
//! assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
//!
//! let nobody = Principal::builder(PrincipalKind::User, "user_2").build();
//! let mut req = Request::get("/comps").body(Body::empty()).unwrap();
//! req.extensions_mut().insert(nobody);
//! assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::FORBIDDEN);
//! # }
//! ```

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use portcullis_core::{AuthError, DEFAULT_REALM, Principal, Scope};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;

/// Layer that applies [`RequireScopes`], which requires scopes of each request's principal.
///
/// See the [module docs](self) for an example.
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireScopesLayer {
    rule: Arc<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    required: Arc<[Scope]>,
    all: bool,
    second_factor_within: Option<u32>,
    realm: Box<str>,
}

impl RequireScopesLayer {
    /// Require every one of `scopes`. An empty list lets every principal through.
    ///
    /// # Panics
    ///
    /// When a name is not a valid [`Scope`]; use [`RequireScopesLayer::try_all`] for names read
    /// from configuration.
    pub fn all<I>(scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::try_all(scopes).expect("valid scope names")
    }

    /// Require at least one of `scopes`.
    ///
    /// # Panics
    ///
    /// When a name is not a valid [`Scope`], or the list is empty.
    pub fn any<I>(scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::try_any(scopes).expect("at least one valid scope name")
    }

    /// Like [`RequireScopesLayer::all`], returning an error for an invalid name.
    pub fn try_all<I>(scopes: I) -> Result<Self, portcullis_core::InvalidScope>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Ok(Self::from_rule(parse(scopes)?, true))
    }

    /// Like [`RequireScopesLayer::any`], returning an error for an invalid name or an empty list.
    pub fn try_any<I>(scopes: I) -> Result<Self, portcullis_core::InvalidScope>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let scopes = parse(scopes)?;
        if scopes.is_empty() {
            // "any of nothing" would refuse everyone: a configuration mistake.
            return Err(Scope::new("").unwrap_err());
        }
        Ok(Self::from_rule(scopes, false))
    }

    fn from_rule(required: Arc<[Scope]>, all: bool) -> Self {
        Self {
            rule: Arc::new(Rule {
                required,
                all,
                second_factor_within: None,
                realm: DEFAULT_REALM.into(),
            }),
        }
    }

    fn rule_mut(&mut self) -> &mut Rule {
        Arc::make_mut(&mut self.rule)
    }

    /// Also require that the session verified a second factor at most `minutes` ago (Clerk's
    /// `fva` claim). A principal without that information is refused.
    pub fn second_factor_within(mut self, minutes: u32) -> Self {
        self.rule_mut().second_factor_within = Some(minutes);
        self
    }

    /// The realm named in `WWW-Authenticate` challenges.
    pub fn realm(mut self, realm: &str) -> Self {
        self.rule_mut().realm = realm.into();
        self
    }

    /// The scopes this layer requires.
    pub fn required(&self) -> &[Scope] {
        &self.rule.required
    }
}

fn parse<I>(scopes: I) -> Result<Arc<[Scope]>, portcullis_core::InvalidScope>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut v = scopes
        .into_iter()
        .map(|s| Scope::new(s.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    v.sort_unstable();
    v.dedup();
    Ok(v.into())
}

impl<S> Layer<S> for RequireScopesLayer {
    type Service = RequireScopes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopes {
            inner,
            rule: self.rule.clone(),
        }
    }
}

/// Middleware that requires scopes of each request's principal; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct RequireScopes<S> {
    inner: S,
    rule: Arc<Rule>,
}

impl<S> RequireScopes<S> {
    /// Returns a new [`Layer`] that requires every one of `scopes`; see
    /// [`RequireScopesLayer::all`].
    ///
    /// # Panics
    ///
    /// When a name is not a valid [`Scope`].
    pub fn layer<I>(scopes: I) -> RequireScopesLayer
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        RequireScopesLayer::all(scopes)
    }

    crate::macros::define_inner_service_accessors!();
}

impl Rule {
    fn check(&self, principal: Option<&Principal>) -> Result<(), AuthError> {
        let principal = principal.ok_or(AuthError::Misconfigured {
            missing: "Principal",
        })?;
        let held = principal.scopes();
        let granted = if self.all {
            held.contains_all(self.required.iter())
        } else {
            held.contains_any(self.required.iter())
        };
        if !granted {
            return Err(AuthError::InsufficientScope {
                required: self.required.clone(),
                all: self.all,
            });
        }
        if let Some(max) = self.second_factor_within {
            let age = principal.factor_age().and_then(|a| a.second_factor_minutes);
            if age.is_none_or(|m| m > max) {
                return Err(AuthError::InsufficientUserAuthentication {
                    max_age_minutes: max,
                });
            }
        }
        Ok(())
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopes<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.rule.check(req.extensions().get::<Principal>()) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(err) => ResponseFuture::reject(&err, &self.rule.realm, &req),
        }
    }
}
