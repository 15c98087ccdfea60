//! One binary for everything, as the container image runs it: `tocsin entrypoint <service>
//! [--config FILE]` runs that service exactly as its own `tocsin-<service>` binary would, and
//! `tocsin entrypoint tocsin <command>` is the CLI. A link to this binary named
//! `tocsin-<service>` is that service too.

use std::process::ExitCode;
use std::time::Duration;

/// What the image runs: the services, and `tocsin` for the CLI.
pub(crate) const SERVICES: [&str; 6] = [
    "ingestor", "router", "history", "delivery", "api", "archiver",
];

/// Run service `name` with its arguments; None when no service has that name.
pub(crate) async fn service(name: &str, args: Vec<String>) -> Option<ExitCode> {
    use tocsin_runtime::service_main_with as main;
    let args = args.into_iter();
    Some(match name {
        "ingestor" => {
            main(
                name,
                args,
                tocsin_ingestor::Config::load,
                tocsin_ingestor::run,
            )
            .await
        }
        "router" => main(name, args, tocsin_router::Config::load, tocsin_router::run).await,
        "history" => {
            main(
                name,
                args,
                tocsin_history::Config::load,
                tocsin_history::run,
            )
            .await
        }
        "delivery" => {
            main(
                name,
                args,
                tocsin_delivery::Config::load,
                tocsin_delivery::run,
            )
            .await
        }
        "api" => main(name, args, tocsin_api::Config::load, tocsin_api::run).await,
        "archiver" => {
            main(
                name,
                args,
                tocsin_archiver::Config::load,
                tocsin_archiver::run,
            )
            .await
        }
        _ => return None,
    })
}

/// The service this binary was started as, by its own name (`tocsin-router`, a link to it).
pub(crate) fn called_as() -> Option<&'static str> {
    let argv0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&argv0).file_name()?.to_str()?;
    let service = name.strip_prefix("tocsin-")?;
    SERVICES.into_iter().find(|s| *s == service)
}

/// How the entrypoint is used, for a wrong first argument.
pub(crate) const USAGE: &str = "usage: IMAGE ingestor|router|history|delivery|api|archiver [--config FILE]\n       IMAGE tocsin <command>   (the CLI)";

/// A health check: whether `url` answers 200 within `timeout` (the reason on stderr if not).
pub(crate) async fn probe(url: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    match client.get(url).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!("{url}: {}", r.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{url}: {}", tocsin_netguard::with_causes(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}
