//! Middleware that authenticates the bearer credential of a request into a [`Principal`].
//!
//! [`AuthenticateLayer`] reads the one `Authorization: Bearer …` credential, hands it to a
//! [`VerifyCredential`] (the JWT verifier of `portcullis-jwt`, an API-key verifier, or both
//! behind one dispatcher), and inserts the resulting [`Principal`] into the request's extensions.
//! A missing, malformed or bad credential is answered with 401 and an RFC 6750 challenge; an
//! unavailable verifier with 503. The inner service is never called for a refused request.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use portcullis_authn::AuthenticateLayer;
//! use portcullis_core::{AuthError, Principal, PrincipalKind, Verification, VerifyCredential};
//! use tower::ServiceExt;
//!
//! // A verifier that knows one static credential (use portcullis-jwt in real services).
//! struct OneKey;
//! impl VerifyCredential for OneKey {
//!     fn verify(&self, credential: &str) -> Verification {
//!         Verification::Ready(if credential == "let-me-in" {
//!             Ok(Principal::builder(PrincipalKind::User, "user_1").build())
//!         } else {
//!             Err(AuthError::invalid_token("the access token is invalid"))
//!         })
//!     }
//! }
//!
//! # #[tokio::main] async fn main() {
//! let app = Router::new()
//!     .route("/", get(|p: Principal| async move { p.subject().to_owned() }))
//!     .layer(AuthenticateLayer::new(std::sync::Arc::new(OneKey)));
//!
//! let res = app.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//!
//! let req = Request::get("/").header("authorization", "Bearer let-me-in").body(Body::empty()).unwrap();
//! let res = app.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::AuthenticateLayer;
pub use service::Authenticate;

#[doc(no_inline)]
pub use portcullis_core::{Principal, VerifyCredential};
