//! The `evently` command: parses the command line, reads the configuration (`config`), sets up
//! logging, and serves or runs a one-off command. Its one environment read of its own is
//! `create-user`'s password (`EVENTLY_USER_PASSWORD`), an argument kept out of `ps`, not a setting.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use evently::app::App;
use evently::config::{Config, TelemetryConfig};
use evently::db::{self, models};
use evently::domain::auth::Passwords;
use evently::domain::{seed, users};

/// glibc's allocator spends a good share of a busy server's time on small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "evently", version, about = "Event-ticketing GraphQL server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations and serve the API (the default).
    Serve(ServeArgs),
    /// Apply pending migrations and exit.
    Migrate,
    /// Create an account with any role: how the first admin is made.
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long, env = "EVENTLY_USER_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "user")]
        role: RoleArg,
    },
    /// Load demo users and events. Safe to repeat: existing demo data is kept.
    SeedDemo,
    /// Print the GraphQL schema (SDL) to stdout.
    PrintSchema,
}

#[derive(Parser)]
struct ServeArgs {
    /// Address to listen on [default: EVENTLY_LISTEN, else 127.0.0.1:8000].
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    User,
    Organizer,
    Admin,
}

impl From<RoleArg> for models::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::User => Self::User,
            RoleArg::Organizer => Self::Organizer,
            RoleArg::Admin => Self::Admin,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = evently::telemetry::init(&TelemetryConfig::from_env());
    let command = match cli.command {
        Some(command) => command,
        None => Command::Serve(ServeArgs::parse_from(["evently"])),
    };
    if let Command::PrintSchema = command {
        print!("{}", evently::graphql::sdl());
        return Ok(());
    }
    let config = Config::from_env()?;
    match command {
        Command::Serve(args) => serve(config, args).await,
        Command::Migrate => {
            let applied = db::run_migrations(&config.database_url).await?;
            println!("applied {applied} migration(s)");
            Ok(())
        }
        Command::CreateUser {
            email,
            password,
            name,
            role,
        } => {
            let app = App::build(config).await?;
            let new = users::NewUser {
                email: &email,
                password: &password,
                name: &name,
                role: role.into(),
            };
            let user = users::create_user(&app.db, &app.passwords, new).await?;
            println!(
                "created {} {} ({})",
                user.role.as_str(),
                user.email,
                user.id
            );
            Ok(())
        }
        Command::SeedDemo => {
            db::run_migrations(&config.database_url).await?;
            let (pool, passwords) = accounts(&config).await?;
            let report = seed::seed_demo(&pool, &passwords).await?;
            println!(
                "demo data: {} user(s) and {} event(s) created (existing ones kept)",
                report.users_created, report.events_created
            );
            println!("demo accounts (email / password / role):");
            for account in &seed::DEMO_ACCOUNTS {
                println!(
                    "  {:<24} {:<22} {}",
                    account.email,
                    account.password,
                    account.role.as_str()
                );
            }
            println!(
                "paid sales: order \"Summer Concert\" tickets with promo code {} (10% off); \
                 access code {} shows its hidden Backstage type",
                seed::DEMO_PROMO_CODE,
                seed::DEMO_ACCESS_CODE
            );
            Ok(())
        }
        Command::PrintSchema => unreachable!("handled above"),
    }
}

/// What the account commands need: the database and the password hasher, not the bus.
async fn accounts(config: &Config) -> anyhow::Result<(db::DbPool, Passwords)> {
    let pool = db::build_pool(&config.database_url, 2).await?;
    Ok((pool, Passwords::new(config.password_hashing)?))
}

async fn serve(config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if config.uses_development_secret() {
        tracing::warn!(
            "JWT_SECRET is not set: using the development secret (EVENTLY_ENV=development)"
        );
    }
    let applied = db::run_migrations(&config.database_url).await?;
    if applied > 0 {
        tracing::info!(applied, "applied migrations");
    }
    let listen = args.listen.unwrap_or(config.listen);
    let app = App::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "Evently is serving");
    println!("GraphiQL: http://{addr}/graphql   (WebSocket: ws://{addr}/graphql/ws)");
    evently::http::serve(listener, app, evently::http::shutdown_signal()).await?;
    Ok(())
}
