//! `tocsin`: run the whole pipeline on one machine (`tocsin up`), and manage users, feeds,
//! history and dead letters through the API.

mod cli;
mod entrypoint;
mod manage;
mod nats_auth;
mod print;
mod up;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Cmd};
use std::process::ExitCode;
use std::time::Duration;

tocsin_runtime::global_allocator!();

fn main() -> ExitCode {
    match tocsin_runtime::runtime() {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("tocsin: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    if let Some(service) = entrypoint::called_as() {
        let args = std::env::args().skip(1).collect();
        return entrypoint::service(service, args)
            .await
            .unwrap_or(ExitCode::FAILURE);
    }
    tocsin_runtime::install_crypto();
    let cli = Cli::parse();
    // a command that prints ends quietly when its reader goes (`tocsin history | head`); what
    // serves (`up`, the demo feed) keeps Rust's default and sees a closed pipe as an error
    if !matches!(cli.command, Cmd::Up { .. } | Cmd::DemoFeed { .. }) {
        tocsin_runtime::cli_pipe::end_quietly_on_closed_pipe();
    }
    match dispatch(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tocsin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Up {
            config,
            nats_url,
            no_loopback_feeds,
            demo_feed_port,
            demo_feed_every_secs,
            api,
        } => {
            let demo = (demo_feed_port > 0).then(|| {
                (
                    demo_feed_port,
                    Duration::from_secs(demo_feed_every_secs.max(1)),
                )
            });
            up::up(config, nats_url, !no_loopback_feeds, demo, api).await
        }
        Cmd::DemoFeed { port, every_secs } => {
            tocsin_runtime::init_tracing();
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
            println!(
                "demo feed: http://127.0.0.1:{port}/search.rdf (a new listing every {every_secs}s)"
            );
            let token = tocsin_runtime::shutdown_on_signal();
            tocsin::demo::serve(listener, Duration::from_secs(every_secs.max(1)), token).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::NatsAuth { dir, config, helm } => nats_auth::run(&dir, config, helm),
        Cmd::Probe { url, timeout_secs } => {
            entrypoint::probe(&url, Duration::from_secs(timeout_secs)).await
        }
        Cmd::Entrypoint { args } => {
            let mut args = args.into_iter();
            let first = args.next().unwrap_or_else(|| "help".to_owned());
            if first == "tocsin" || first == "cli" {
                let cli = Cli::try_parse_from(std::iter::once("tocsin".to_owned()).chain(args))
                    .unwrap_or_else(|e| e.exit());
                return Box::pin(dispatch(cli.command)).await;
            }
            match entrypoint::service(&first, args.collect()).await {
                Some(code) => Ok(code),
                None => {
                    eprintln!("{}", entrypoint::USAGE);
                    Ok(if first == "help" {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(tocsin_runtime::EXIT_CONFIG)
                    })
                }
            }
        }
        other => manage::run(other).await,
    }
}
