use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use portcullis_core::{AuthError, PendingVerification, Principal, RequestId};
use tower_service::Service;

pin_project! {
    /// Response future for [`Authenticate`](crate::Authenticate).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // Boxed: the cold path is rare, and the hot path keeps a future no larger than the inner one.
        Verifying {
            state: Box<Verifying<S, ReqBody>>,
        },
        Inner {
            #[pin]
            fut: S::Future,
            // For an audit layer recording granted requests; `None` otherwise.
            principal: Option<Principal>,
        },
        Reject {
            res: Option<S::Response>,
        },
    }
}

struct Verifying<S, ReqBody> {
    verifying: PendingVerification,
    req: Option<Request<ReqBody>>,
    inner: S,
    realm: Arc<str>,
}

impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    pub(crate) fn inner(fut: S::Future, principal: Option<Principal>) -> Self {
        Self {
            kind: Kind::Inner { fut, principal },
        }
    }

    pub(crate) fn reject(err: &AuthError, realm: &str, req: &Request<ReqBody>) -> Self {
        let request_id = RequestId::from_headers(req.headers());
        Self {
            kind: Kind::Reject {
                res: Some(err.to_response(realm, &request_id)),
            },
        }
    }

    pub(crate) fn verifying(
        verifying: PendingVerification,
        req: Request<ReqBody>,
        inner: S,
        realm: Arc<str>,
    ) -> Self {
        Self {
            kind: Kind::Verifying {
                state: Box::new(Verifying {
                    verifying,
                    req: Some(req),
                    inner,
                    realm,
                }),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.kind.as_mut().project() {
                KindProj::Verifying { state } => {
                    let outcome = ready!(state.verifying.as_mut().poll(cx));
                    let mut req = state.req.take().expect("polled after completion");
                    match outcome {
                        Ok(principal) => {
                            let hand_back = crate::service::wants_principal_back(&req)
                                .then(|| principal.clone());
                            req.extensions_mut().insert(principal);
                            let fut = state.inner.call(req);
                            this.kind.set(Kind::Inner {
                                fut,
                                principal: hand_back,
                            });
                        }
                        Err(err) => {
                            let request_id = RequestId::from_headers(req.headers());
                            let res = err.to_response(&state.realm, &request_id);
                            return Poll::Ready(Ok(res));
                        }
                    }
                }
                KindProj::Inner { fut, principal } => {
                    let mut res = ready!(fut.poll(cx))?;
                    if let Some(principal) = principal.take() {
                        res.extensions_mut().insert(principal);
                    }
                    return Poll::Ready(Ok(res));
                }
                KindProj::Reject { res } => {
                    return Poll::Ready(Ok(res.take().expect("polled after completion")));
                }
            }
        }
    }
}
