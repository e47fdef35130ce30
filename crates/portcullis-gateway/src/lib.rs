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
mod connection;
pub mod demo;
pub mod issuer;
pub mod keys;
pub mod policy;
pub mod proxy;
pub mod revoke;
pub mod routes;
pub mod server;
mod wire;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use server::{Gateway, StartError};
use tokio_util::task::TaskTracker;

/// Serve `gateway` on `listen` until SIGINT or SIGTERM, then drain: in-flight requests finish,
/// last key uses and queued audit events are written.
///
/// HTTP/1.1 and HTTP/2 (prior knowledge) downstream. HTTP/1.1 requests without a body are
/// parsed and answered by the gateway's own connection loop; every other request, and the rest
/// of its connection, is served by hyper. An HTTP/1.1 connection that takes longer than the
/// gateway's `client_timeout` to send a request head, or stays idle that long between requests,
/// is closed (`client_timeout_secs`, 30 s by default). Each downstream connection forwards over
/// an upstream connection of its own while it sends one request at a time (see
/// [`proxy::Downstream`]); requests carry the peer's address as
/// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), as under `axum::serve`.
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
    let Gateway {
        app,
        stores,
        client_timeout,
        ..
    } = gateway;
    let shared = Arc::new(connection::Shared::new(app, client_timeout));
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers go out as soon as they are written, as nginx does (`tcp_nodelay`).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
        connections.spawn(connection::run(stream, peer, shared.clone()));
    }
    drop(listener);
    tracing::info!("stopped accepting; finishing requests in flight");
    shared.stop();
    connections.close();
    connections.wait().await;
    // The connections held their own clones; this one holds audit emitters that must be gone
    // for the audit writer to finish.
    drop(shared);
    tracing::info!("writing what is pending");
    stores.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// An accept error: a connection that failed before it was accepted is skipped; anything else
/// (out of file descriptors, say) is logged and retried after a pause, as `axum::serve` does.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
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
