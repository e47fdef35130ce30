use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, Response};
use pin_project_lite::pin_project;
use portcullis_core::{AuthError, RequestId};

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

    pub(crate) fn reject(err: &AuthError, realm: &str, headers: &HeaderMap) -> Self {
        let request_id = RequestId::from_headers(headers);
        Self {
            kind: Kind::Reject {
                res: Some(err.to_response(realm, &request_id)),
            },
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
