//! `keys create|list|revoke` and `review`, against the configured store.
//!
//! Creation and revocation are recorded in the configured audit sink as sensitive events of an
//! `operator` actor (`cli:<--by>`) before they happen; when the sink cannot take them, nothing
//! happens.

use std::fmt::Write as _;

use portcullis_apikey::{ApiKeyRecord, CreateError};
use portcullis_core::{
    OrgId, Scope, ScopeSet,
    audit::{AuditActor, AuditEvent, AuditSink, Outcome, rfc3339},
    clock,
};
use serde::Serialize;
use serde_json::json;

use crate::{config::Config, server::Stores};

/// A command's failure: the message for standard error, and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong.
    pub message: String,
    /// The process's exit code.
    pub code: u8,
}

impl CliError {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }

    fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

fn org(org: &str) -> Result<OrgId, CliError> {
    OrgId::new(org).map_err(|_| CliError::usage(format!("--org: `{org}` is not an org id")))
}

/// The actor of a command-line action: `operator`, `cli:<by>`.
pub(crate) fn operator(by: &str) -> AuditActor {
    AuditActor {
        kind: "operator".into(),
        id: format!("cli:{by}"),
        on_behalf_of: None,
        session: None,
    }
}

pub(crate) fn operator_event(
    action: &'static str,
    by: &str,
    org: &OrgId,
    key_id: &str,
) -> AuditEvent {
    let mut event = AuditEvent::new(action, Outcome::Success)
        .target("api_key", key_id)
        .sensitive();
    event.actor = Some(operator(by));
    event.org_id = Some(org.clone());
    event
}

/// `keys create`: prints the key once, then its record as JSON.
pub async fn create(
    config: &Config,
    org_id: &str,
    name: &str,
    scopes: &[String],
    expires_in_days: u32,
    by: &str,
) -> Result<(), CliError> {
    if config.api_key_secret.is_none() {
        return Err(CliError::usage(
            "PORTCULLIS_API_KEY_SECRET (`api_key_secret`): required to create keys",
        ));
    }
    let org = org(org_id)?;
    let mut set = Vec::new();
    for s in scopes {
        let scope = Scope::new(s)
            .map_err(|_| CliError::usage(format!("--scopes: `{s}` is not a scope")))?;
        if !config.scope_policy.canonical().contains(&scope) {
            return Err(CliError::usage(format!(
                "--scopes: `{s}` is not in the canonical list"
            )));
        }
        set.push(scope);
    }
    if name.is_empty() || name.len() > 100 {
        return Err(CliError::usage("--name: 1 to 100 characters"));
    }
    let stores = Stores::open(config)
        .await
        .map_err(|e| CliError::failed(e.0))?;
    let max = stores.keys.max_lifetime_days(&org);
    if expires_in_days == 0 || expires_in_days > max {
        stores.close().await;
        return Err(CliError::usage(format!("--expires-in-days: 1 to {max}")));
    }
    let prepared = stores.keys.prepare(
        &org,
        name,
        ScopeSet::from_iter(set),
        &format!("cli:{by}"),
        expires_in_days,
    );
    let event = operator_event("api_key.created", by, &org, &prepared.record.id);
    let result = match stores.auditor.record_sensitive(event).await {
        Err(_) => Err(CliError::failed(
            "the audit sink cannot record the creation; no key was created",
        )),
        Ok(()) => match stores.keys.store_prepared(prepared).await {
            Ok(created) => {
                let now = clock::unix_seconds();
                println!("{}", created.key.expose());
                println!(
                    "{}",
                    serde_json::to_string_pretty(&KeyView::of(&created.record, now))
                        .expect("a view serializes")
                );
                eprintln!("The key above is shown this once; only its hash is stored.");
                Ok(())
            }
            Err(CreateError::Store(e)) => Err(CliError::failed(format!("key store: {e}"))),
            Err(e) => Err(CliError::failed(format!("{e:?}"))),
        },
    };
    stores.close().await;
    result
}

/// `keys list`.
pub async fn list(config: &Config, org_id: &str, json_format: bool) -> Result<(), CliError> {
    let org = org(org_id)?;
    let stores = Stores::open(config)
        .await
        .map_err(|e| CliError::failed(e.0))?;
    let result = stores.keys.list(&org).await;
    stores.close().await;
    let records = result.map_err(|e| CliError::failed(format!("key store: {e}")))?;
    let now = clock::unix_seconds();
    if json_format {
        let keys: Vec<_> = records.iter().map(|r| KeyView::of(r, now)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "keys": keys })).expect("views serialize")
        );
    } else {
        println!(
            "{:<27} {:<10} {:<24} {:<10} scopes",
            "id", "status", "name", "expires"
        );
        for r in &records {
            println!(
                "{:<27} {:<10} {:<24} {:<10} {}",
                r.id,
                status(r, now).as_str(),
                r.name,
                &rfc3339(r.expires_at)[..10],
                scopes(&r.scopes)
            );
        }
    }
    Ok(())
}

/// `keys revoke`.
pub async fn revoke(config: &Config, org_id: &str, id: &str, by: &str) -> Result<(), CliError> {
    let org = org(org_id)?;
    let stores = Stores::open(config)
        .await
        .map_err(|e| CliError::failed(e.0))?;
    let exists = match stores.keys.list(&org).await {
        Ok(keys) => keys.iter().any(|k| &*k.id == id),
        Err(e) => {
            stores.close().await;
            return Err(CliError::failed(format!("key store: {e}")));
        }
    };
    let result = if !exists {
        Err(CliError::failed(format!("no key {id} in {org}")))
    } else if stores
        .auditor
        .record_sensitive(operator_event("api_key.revoked", by, &org, id))
        .await
        .is_err()
    {
        Err(CliError::failed(
            "the audit sink cannot record the revocation; the key was not revoked",
        ))
    } else {
        match stores.keys.revoke(&org, id).await {
            Ok(true) => {
                println!("revoked {id}");
                Ok(())
            }
            Ok(false) => Err(CliError::failed(format!("no key {id} in {org}"))),
            Err(e) => Err(CliError::failed(format!("key store: {e}"))),
        }
    };
    stores.close().await;
    result
}

/// Where a key stands in an access review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
    /// Not used for `dormant_days` (never used: counted from creation).
    Dormant,
    /// Expires within `expiring_days`.
    Expiring,
    /// In use.
    Active,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Dormant => "dormant",
            Self::Expiring => "expiring",
            Self::Active => "active",
        }
    }
}

const DAY: i64 = 86_400;

fn classify(r: &ApiKeyRecord, now: i64, dormant_days: u32, expiring_days: u32) -> Status {
    if r.revoked_at.is_some() {
        Status::Revoked
    } else if r.expires_at <= now {
        Status::Expired
    } else if now - r.last_used_at.unwrap_or(r.created_at) >= i64::from(dormant_days) * DAY {
        Status::Dormant
    } else if r.expires_at - now <= i64::from(expiring_days) * DAY {
        Status::Expiring
    } else {
        Status::Active
    }
}

fn status(r: &ApiKeyRecord, now: i64) -> Status {
    classify(r, now, 90, 30)
}

fn scopes(s: &ScopeSet) -> String {
    s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

#[derive(Serialize)]
struct KeyView {
    id: String,
    name: String,
    prefix: String,
    last4: String,
    org_id: String,
    scopes: Vec<String>,
    created_by: String,
    created_at: String,
    expires_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
    status: Status,
    days_since_use: i64,
}

impl KeyView {
    fn of(r: &ApiKeyRecord, now: i64) -> Self {
        Self::classified(r, now, status(r, now))
    }

    fn classified(r: &ApiKeyRecord, now: i64, status: Status) -> Self {
        Self {
            id: r.id.to_string(),
            name: r.name.to_string(),
            prefix: r.start.to_string(),
            last4: r.last4.to_string(),
            org_id: r.org.to_string(),
            scopes: r.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_by: r.created_by.to_string(),
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            last_used_at: r.last_used_at.map(rfc3339),
            revoked_at: r.revoked_at.map(rfc3339),
            status,
            days_since_use: (now - r.last_used_at.unwrap_or(r.created_at)).max(0) / DAY,
        }
    }
}

/// `review`: an org's keys by last use, for access reviews (SOC 2 CC6.2/6.3, HIPAA
/// §164.308(a)(4)).
pub async fn review(
    config: &Config,
    org_id: &str,
    markdown: bool,
    dormant_days: u32,
    expiring_days: u32,
) -> Result<(), CliError> {
    let org = org(org_id)?;
    let stores = Stores::open(config)
        .await
        .map_err(|e| CliError::failed(e.0))?;
    let result = stores.keys.list(&org).await;
    let users = stores.revocations.users_seen(org.as_str()).await;
    stores.close().await;
    let mut records = result.map_err(|e| CliError::failed(format!("key store: {e}")))?;
    let users = users.map_err(|e| CliError::failed(format!("store: {e}")))?;
    let now = clock::unix_seconds();
    let users: Vec<UserView> = users
        .into_iter()
        .map(|(user_id, last_seen)| {
            let days = (now - last_seen).max(0) / DAY;
            UserView {
                user_id,
                last_seen: rfc3339(last_seen),
                days_since_seen: days,
                status: if days >= i64::from(dormant_days) {
                    "dormant"
                } else {
                    "active"
                },
            }
        })
        .collect();
    // Least recently used first: the keys a reviewer should look at.
    records.sort_by_key(|r| (r.last_used_at.unwrap_or(r.created_at), r.created_at));
    let views: Vec<KeyView> = records
        .iter()
        .map(|r| KeyView::classified(r, now, classify(r, now, dormant_days, expiring_days)))
        .collect();
    let count = |s: Status| views.iter().filter(|v| v.status == s).count();
    print!(
        "{}",
        render_review(
            &org,
            now,
            &views,
            &users,
            markdown,
            (dormant_days, expiring_days),
            count
        )
    );
    Ok(())
}

/// A user seen by the gateway, for the review.
#[derive(Serialize)]
struct UserView {
    user_id: String,
    last_seen: String,
    days_since_seen: i64,
    status: &'static str,
}

fn render_review(
    org: &OrgId,
    now: i64,
    views: &[KeyView],
    users: &[UserView],
    markdown: bool,
    (dormant_days, expiring_days): (u32, u32),
    count: impl Fn(Status) -> usize,
) -> String {
    let dormant_users = users.iter().filter(|u| u.status == "dormant").count();
    let summary = json!({
        "active": count(Status::Active),
        "dormant": count(Status::Dormant),
        "expiring": count(Status::Expiring),
        "expired": count(Status::Expired),
        "revoked": count(Status::Revoked),
        "users_seen": users.len(),
        "users_dormant": dormant_users,
    });
    if !markdown {
        return serde_json::to_string_pretty(&json!({
            "org_id": org.as_str(),
            "generated_at": rfc3339(now),
            "dormant_after_days": dormant_days,
            "expiring_within_days": expiring_days,
            "summary": summary,
            "keys": views,
            "users": users,
        }))
        .expect("a review serializes")
            + "\n";
    }
    let mut out = String::new();
    let _ = writeln!(out, "# Access review: API keys of `{org}`\n");
    let _ = writeln!(
        out,
        "Generated {}. Dormant: unused for {dormant_days} days or more (never used: since creation). Expiring: within {expiring_days} days.\n",
        rfc3339(now)
    );
    let _ = writeln!(
        out,
        "| active | dormant | expiring | expired | revoked |\n|---|---|---|---|---|\n| {} | {} | {} | {} | {} |\n",
        count(Status::Active),
        count(Status::Dormant),
        count(Status::Expiring),
        count(Status::Expired),
        count(Status::Revoked)
    );
    let _ = writeln!(
        out,
        "| status | id | name | scopes | created by | last used | days since use | expires |\n|---|---|---|---|---|---|---|---|"
    );
    for v in views {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} |",
            v.status.as_str(),
            v.id,
            v.name.replace('|', "\\|"),
            v.scopes.join(" "),
            v.created_by.replace('|', "\\|"),
            v.last_used_at.as_deref().unwrap_or("never"),
            v.days_since_use,
            &v.expires_at[..10],
        );
    }
    let _ = writeln!(
        out,
        "\n## Users seen by the gateway\n\n{} seen, {dormant_users} dormant (no authenticated request for {dormant_days} days or more). Least recently seen first.\n",
        users.len()
    );
    let _ = writeln!(
        out,
        "| status | user | last seen | days since |\n|---|---|---|---|"
    );
    for u in users {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} |",
            u.status, u.user_id, u.last_seen, u.days_since_seen
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(created: i64, used: Option<i64>, expires: i64, revoked: Option<i64>) -> ApiKeyRecord {
        ApiKeyRecord {
            id: "key_x".into(),
            org: OrgId::new("org_a").unwrap(),
            name: "n".into(),
            scopes: ScopeSet::default(),
            created_by: "u".into(),
            created_at: created,
            expires_at: expires,
            revoked_at: revoked,
            last_used_at: used,
            start: "pc_sk_abcd".into(),
            last4: "wxyz".into(),
            secret_version: 1,
        }
    }

    #[test]
    fn keys_are_classified_for_review() {
        let now = 1_000 * DAY;
        let c = |r: &ApiKeyRecord| classify(r, now, 90, 30);
        assert_eq!(
            c(&record(now - 10 * DAY, None, now + 100 * DAY, Some(now))),
            Status::Revoked
        );
        assert_eq!(
            c(&record(now - 10 * DAY, None, now - 1, None)),
            Status::Expired
        );
        assert_eq!(
            c(&record(now - 91 * DAY, None, now + 100 * DAY, None)),
            Status::Dormant
        );
        assert_eq!(
            c(&record(
                now - 200 * DAY,
                Some(now - 90 * DAY),
                now + 100 * DAY,
                None
            )),
            Status::Dormant
        );
        assert_eq!(
            c(&record(
                now - 200 * DAY,
                Some(now - 89 * DAY),
                now + 100 * DAY,
                None
            )),
            Status::Active
        );
        assert_eq!(
            c(&record(now - DAY, None, now + 30 * DAY, None)),
            Status::Expiring
        );
        assert_eq!(
            c(&record(now - DAY, None, now + 31 * DAY, None)),
            Status::Active
        );
    }
}
