//! `revoke user|session|membership`: the effect of the matching Clerk webhook, by hand.
//!
//! The revocation is recorded as a sensitive audit event of an `operator` actor before it is
//! stored; every gateway sharing the store refuses the covered tokens within a second (at once
//! on PostgreSQL, by `NOTIFY`; SQLite gateways look every second).

use portcullis_core::audit::{AuditEvent, AuditSink, Outcome};
use portcullis_revocation::Target;

use crate::{config::Config, keys::CliError, server::Stores};

/// Revoke `target` on behalf of `by`.
pub async fn revoke(config: &Config, target: Target, by: &str) -> Result<(), CliError> {
    let stores = Stores::open(config).await.map_err(|e| CliError {
        message: e.0,
        code: 1,
    })?;
    let (action, kind) = match &target {
        Target::Session(_) => ("session.revoked", "session"),
        Target::User(_) => ("user.deactivated", "user"),
        Target::Membership { .. } => ("membership.revoked", "user"),
    };
    let mut event = AuditEvent::new(action, Outcome::Success)
        .target(kind, target.subject())
        .reason("operator")
        .sensitive();
    event.actor = Some(crate::keys::operator(by));
    if let Target::Membership { org, .. } = &target {
        event.org_id = portcullis_core::OrgId::new(org).ok();
    }
    let result = if stores.auditor.record_sensitive(event).await.is_err() {
        Err(CliError {
            message: "the audit sink cannot record the revocation; nothing was revoked".into(),
            code: 1,
        })
    } else {
        match stores
            .revocations
            .revoke(target.clone(), None, "operator")
            .await
        {
            Ok(r) => {
                println!(
                    "revoked {} {}{} until {}",
                    target.kind(),
                    target.subject(),
                    match &target {
                        Target::Membership { org, .. } => format!(" in {org}"),
                        _ => String::new(),
                    },
                    portcullis_core::audit::rfc3339(r.expires_at)
                );
                Ok(())
            }
            Err(e) => Err(CliError {
                message: format!("store: {e}"),
                code: 1,
            }),
        }
    };
    stores.close().await;
    result
}
