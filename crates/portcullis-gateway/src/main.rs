//! The `portcullis-gateway` command; see the README.

use std::{path::PathBuf, process::ExitCode};

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
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
