//! axum extractors for what the layers put in a request's extensions.

use axum_core::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{StatusCode, request::Parts};

use crate::{AuthError, DEFAULT_REALM, OrgId, Principal, RequestId, ScopeSet};

/// Rejection of the [`Principal`], [`OrgId`] and [`Scopes`] extractors: the layer that provides
/// the value did not run, a wiring bug answered with 500. The body echoes the request's id.
#[derive(Debug)]
pub struct ExtractRejection {
    error: AuthError,
    request_id: RequestId,
}

impl ExtractRejection {
    fn missing(missing: &'static str, parts: &Parts) -> Self {
        Self {
            error: AuthError::Misconfigured { missing },
            request_id: RequestId::from_headers(&parts.headers),
        }
    }

    /// The status of the response (500).
    pub fn status(&self) -> StatusCode {
        self.error.status()
    }

    /// The underlying error.
    pub fn error(&self) -> &AuthError {
        &self.error
    }
}

impl std::fmt::Display for ExtractRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ExtractRejection {}

impl IntoResponse for ExtractRejection {
    fn into_response(self) -> Response {
        self.error.to_response(DEFAULT_REALM, &self.request_id)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ExtractRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Self>() {
            Some(p) => Ok(p.clone()),
            None => Err(ExtractRejection::missing("Principal", parts)),
        }
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
    type Rejection = ExtractRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Self>() {
            Some(org) => Ok(org.clone()),
            None => Err(ExtractRejection::missing("OrgId", parts)),
        }
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
    type Rejection = ExtractRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(p) => Ok(Self(p.scopes().clone())),
            None => Err(ExtractRejection::missing("Principal", parts)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrincipalKind;

    #[tokio::test]
    async fn extractors() {
        let (mut parts, ()) = http::Request::builder()
            .header("x-request-id", "rid-7")
            .body(())
            .unwrap()
            .into_parts();
        let err = <Principal as FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
            .unwrap_err();
        assert_eq!(err.status(), 500);
        let res = err.into_response();
        assert_eq!(res.status(), 500);
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["request_id"], "rid-7", "the request's id is echoed");
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
