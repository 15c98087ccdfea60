//! `tocsin`: run the whole pipeline on one machine (`tocsin up`), and manage users, feeds,
//! history and dead letters through the API.

mod cli;
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
    tocsin_runtime::install_crypto();
    let cli = Cli::parse();
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
        other => manage::run(other).await,
    }
}
