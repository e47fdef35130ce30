//! `portcullis-gateway`: the Portcullis layers composed in front of an upstream HTTP service.
//!
//! A reverse proxy built only from the public layers: it authenticates the bearer credential (a
//! JWT or an API key), fixes the organization, checks the route's scopes from the policy file
//! (deny by default), runs guards, records audit events, strips every incoming
//! `x-portcullis-*` header and the credential, and forwards the identity headers of the
//! contract. See the README for the subcommands and [`config`] for every setting.
//!
//! The library half exists so that the pieces can be documented and tested; the binary is the
//! product.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod assertion;
pub mod callout;
pub mod config;
pub mod demo;
pub mod issuer;
pub mod keys;
pub mod policy;
pub mod proxy;
pub mod revoke;
pub mod server;

use std::net::SocketAddr;

use server::{Gateway, StartError};

/// Serve `gateway` on `listen` until SIGINT or SIGTERM, then drain: in-flight requests finish,
/// last key uses and queued audit events are written.
pub async fn serve(gateway: Gateway, listen: SocketAddr) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        StartError(format!(
            "PORTCULLIS_LISTEN (`listen`): cannot bind {listen}: {e}"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("listener: {e}")))?;
    tracing::info!("listening on http://{addr}");
    let Gateway { router, stores, .. } = gateway;
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| StartError(format!("server: {e}")))?;
    tracing::info!("stopped accepting; writing what is pending");
    stores.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
