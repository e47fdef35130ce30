//! axum extractors for what the layers put in a request's extensions.

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use crate::{AuthError, OrgId, Principal, ScopeSet};

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(AuthError::Misconfigured {
                missing: "Principal",
            })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for OrgId {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(AuthError::Misconfigured { missing: "OrgId" })
    }
}

/// Extractor of the principal's normalized scopes.
///
/// ```
/// use portcullis_core::Scopes;
///
/// async fn handler(Scopes(scopes): Scopes) -> String {
///     scopes.to_string()
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scopes(pub ScopeSet);

impl<S: Send + Sync> FromRequestParts<S> for Scopes {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .map(|p| Self(p.scopes().clone()))
            .ok_or(AuthError::Misconfigured {
                missing: "Principal",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrincipalKind;

    #[tokio::test]
    async fn extractors() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        let err = <Principal as FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
            .unwrap_err();
        assert_eq!(err.status(), 500);
        let none = <Principal as OptionalFromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
            .unwrap();
        assert!(none.is_none());

        let p = Principal::builder(PrincipalKind::User, "u")
            .scopes(ScopeSet::parse(["comps:read"]).unwrap())
            .build();
        parts.extensions.insert(p.clone());
        let got = <Principal as FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
            .unwrap();
        assert_eq!(got, p);
        let Scopes(s) = Scopes::from_request_parts(&mut parts, &()).await.unwrap();
        assert!(s.contains("comps:read"));
        assert!(OrgId::from_request_parts(&mut parts, &()).await.is_err());
    }
}
