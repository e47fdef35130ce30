use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;
use portcullis_core::{AuthError, Principal, RequestId};

pin_project! {
    /// Response future for [`OrgContext`](crate::OrgContext) and
    /// [`RequireScopes`](crate::RequireScopes).
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] fut: F },
        Reject { res: Option<Response<B>> },
    }
}

impl<F, B: From<Bytes>> ResponseFuture<F, B> {
    pub(crate) fn inner(fut: F) -> Self {
        Self {
            kind: Kind::Inner { fut },
        }
    }

    /// A refusal; the principal (if any) goes into the response's extensions, so that an outer
    /// audit layer can attribute the refusal.
    pub(crate) fn reject<Req>(err: &AuthError, realm: &str, req: &http::Request<Req>) -> Self {
        let request_id = RequestId::from_headers(req.headers());
        let mut res = err.to_response(realm, &request_id);
        if let Some(principal) = req.extensions().get::<Principal>() {
            res.extensions_mut().insert(principal.clone());
        }
        Self {
            kind: Kind::Reject { res: Some(res) },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut } => fut.poll(cx),
            KindProj::Reject { res } => {
                Poll::Ready(Ok(res.take().expect("polled after completion")))
            }
        }
    }
}
