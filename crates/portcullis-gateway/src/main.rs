//! The `portcullis-gateway` command; see the README.

use std::{path::PathBuf, process::ExitCode};

/// jemalloc keeps per-thread caches for the 8 KiB read buffers hyper takes for each request and
/// response; glibc's allocator serves those from its shared bins.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand, ValueEnum};
use portcullis_gateway::{
    config::Config,
    keys::{self, CliError},
    server::Gateway,
};

/// Access control in front of any HTTP service: authenticate, fix the organization, check the
/// route policy, audit, forward the identity.
#[derive(Parser, Debug)]
#[command(name = "portcullis-gateway", version)]
struct Cli {
    /// A TOML configuration file (every key can be overridden from the environment).
    #[arg(long, global = true, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Run the gateway on the embedded default with a local issuer and an echo upstream, and
    /// print curl commands to try.
    Demo,
    /// Create, list and revoke API keys in the configured store.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Access review of an organization's API keys: by last use; dormant, expiring, expired,
    /// revoked.
    Review {
        /// The organization.
        #[arg(long)]
        org: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReviewFormat::Markdown)]
        format: ReviewFormat,
        /// Unused for this many days (or never used since creation) is dormant.
        #[arg(long, default_value_t = 90)]
        dormant_days: u32,
        /// Expiring within this many days.
        #[arg(long, default_value_t = 30)]
        expiring_days: u32,
    },
    /// Refuse a session's, a user's or a membership's tokens at once, as the matching Clerk
    /// webhook would.
    Revoke {
        #[command(subcommand)]
        what: RevokeCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key: prints it once, then its record.
    Create {
        /// The organization the key acts in.
        #[arg(long)]
        org: String,
        /// A name for people.
        #[arg(long)]
        name: String,
        /// Scopes, comma separated (from the canonical list).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Days until the key expires.
        #[arg(long, default_value_t = 90)]
        expires_in_days: u32,
        /// Who is creating it (recorded as `cli:<by>`).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// List an organization's keys (never a secret).
    List {
        /// The organization.
        #[arg(long)]
        org: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Revoke a key: refused on its next request.
    Revoke {
        /// The organization the key belongs to.
        #[arg(long)]
        org: String,
        /// The key id (`key_…`).
        id: String,
        /// Who is revoking it (recorded as `cli:<by>`).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
}

#[derive(Subcommand, Debug)]
enum RevokeCommand {
    /// Every token of a user (deleted, banned, locked).
    User {
        /// The user id (`sub`).
        user: String,
        /// Who is revoking (recorded as `cli:<by>`).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// Every token of a session (`sid`).
    Session {
        /// The session id.
        session: String,
        /// Who is revoking (recorded as `cli:<by>`).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// A user's tokens for one organization.
    Membership {
        /// The user id (`sub`).
        user: String,
        /// The organization.
        #[arg(long)]
        org: String,
        /// Who is revoking (recorded as `cli:<by>`).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Verify a JSON Lines audit file's hash chain; names the first bad line.
    Verify {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReviewFormat {
    Json,
    Markdown,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ListFormat {
    Json,
    Table,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Some(Command::Audit {
        action: AuditCommand::Verify { file },
    }) = &cli.command
    {
        return verify(file);
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(message) => {
            eprintln!("error: configuration: {message}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let listen = config.listen;
                let gateway = Gateway::build(&config, None).await.map_err(|e| CliError {
                    message: e.0,
                    code: 2,
                })?;
                portcullis_gateway::serve(gateway, listen)
                    .await
                    .map_err(|e| CliError {
                        message: e.0,
                        code: 1,
                    })
            }
            Command::Demo => portcullis_gateway::demo::run(config)
                .await
                .map_err(|e| CliError {
                    message: e.0,
                    code: 1,
                }),
            Command::Keys { action } => match action {
                KeysCommand::Create {
                    org,
                    name,
                    scopes,
                    expires_in_days,
                    by,
                } => keys::create(&config, &org, &name, &scopes, expires_in_days, &by).await,
                KeysCommand::List { org, format } => {
                    keys::list(&config, &org, matches!(format, ListFormat::Json)).await
                }
                KeysCommand::Revoke { org, id, by } => keys::revoke(&config, &org, &id, &by).await,
            },
            Command::Review {
                org,
                format,
                dormant_days,
                expiring_days,
            } => {
                keys::review(
                    &config,
                    &org,
                    matches!(format, ReviewFormat::Markdown),
                    dormant_days,
                    expiring_days,
                )
                .await
            }
            Command::Revoke { what } => {
                use portcullis_revocation::Target;
                let (target, by) = match what {
                    RevokeCommand::User { user, by } => (Target::User(user), by),
                    RevokeCommand::Session { session, by } => (Target::Session(session), by),
                    RevokeCommand::Membership { user, org, by } => {
                        (Target::Membership { user, org }, by)
                    }
                };
                portcullis_gateway::revoke::revoke(&config, target, &by).await
            }
            Command::Audit { .. } => unreachable!("handled before the configuration is loaded"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// `PORTCULLIS_WORKER_THREADS` workers (default: the CPUs this process may run on); with one,
/// a current-thread runtime, which skips the work-stealing scheduler's bookkeeping.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    let workers = match std::env::var("PORTCULLIS_WORKER_THREADS") {
        Ok(v) if !v.is_empty() => {
            v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("PORTCULLIS_WORKER_THREADS: `{v}` is not a positive number")
            })?
        }
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    Ok(builder
        .enable_all()
        .build()
        .expect("the tokio runtime starts"))
}

fn verify(file: &std::path::Path) -> ExitCode {
    match portcullis_audit::verify(file) {
        Ok(verified) => {
            println!(
                "{}: ok, {} events, chain head {}",
                file.display(),
                verified.events,
                verified.head
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::from(1)
        }
    }
}
