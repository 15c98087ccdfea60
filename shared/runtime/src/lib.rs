//! What every tocsin service shares at run time: layered configuration (defaults → file →
//! `TOCSIN_<SECTION>__<KEY>` environment), telemetry, the shutdown signal, and the
//! `/healthz`, `/readyz`, `/metrics` endpoints. Each service's `main` is
//! [`service_main`]; its library's `run(config, shutdown)` does the work.

pub mod background;
pub mod cli_pipe;
pub mod clients;
pub mod config;
pub mod error;
pub mod local_nats;
pub mod logs;
pub mod memory;
pub mod ops;
pub mod rate;
pub mod thread_meter;

pub use config::{ConfigDoc, ConfigSource, Section};
pub use error::ServiceError;
pub use logs::init_tracing;
pub use ops::{Readiness, serve_ops};

/// Lock `m`, recovering it if a panic poisoned it. For state that stays consistent whatever
/// point a panic interrupted (counts, caches, tables): one panicking task must not turn every
/// later lock into a panic of its own.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

use std::future::Future;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Exit code for configuration errors (`EX_USAGE`-style, as sysexits' `EX_CONFIG` is 78 but
/// operators grep for 64 in our docs).
pub const EXIT_CONFIG: u8 = 64;

/// The start every service shares: connect to the bus as `name`, make sure the streams exist,
/// and serve `/healthz`, `/readyz` and `/metrics` on `ops_listen` (ready once the caller says
/// so, and only while the bus is connected).
pub async fn connect_service(
    bus: &tocsin_bus::BusConfig,
    name: &str,
    ops_listen: &str,
    shutdown: &CancellationToken,
) -> Result<(tocsin_bus::Bus, Readiness), ServiceError> {
    let bus = tocsin_bus::Bus::connect(bus, name).await?;
    bus.ensure_streams().await?;
    let ready = Readiness::default();
    ready.add_check(bus.connected_check());
    serve_ops(ops_listen, ready.clone(), shutdown.clone()).await?;
    Ok((bus, ready))
}

/// Wait for every one of `tasks` (already running: join handles) for at most `grace`; true
/// when all finished in time. The drain step of every service's shutdown.
pub async fn finish_within<F: Future>(
    grace: std::time::Duration,
    tasks: impl IntoIterator<Item = F>,
) -> bool {
    let all = async {
        for t in tasks {
            t.await;
        }
    };
    tokio::time::timeout(grace, all).await.is_ok()
}

/// Install the process-wide TLS crypto provider (ring). Safe to call more than once.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested, draining");
        t.cancel();
    });
    token
}

/// The `--config PATH` argument among a service's arguments (without the program's name), if
/// given.
pub fn config_path_from(
    mut args: impl Iterator<Item = String>,
) -> Result<Option<std::path::PathBuf>, String> {
    let mut path = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => {
                path = Some(args.next().ok_or("--config needs a file path")?.into())
            }
            other => {
                if let Some(p) = other.strip_prefix("--config=") {
                    path = Some(p.into());
                } else {
                    return Err(format!(
                        "unknown argument {other:?}; usage: [--config FILE]"
                    ));
                }
            }
        }
    }
    Ok(path)
}

/// The whole `main` of a service binary: read config (exit 64 listing every problem), start
/// telemetry, wire signals to the shutdown token, run.
pub async fn service_main<C, E, L, R, Fut>(name: &str, load: L, run: R) -> ExitCode
where
    L: FnOnce(&ConfigDoc) -> Result<C, Vec<String>>,
    R: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    service_main_with(name, std::env::args().skip(1), load, run).await
}

/// [`service_main`] with the service's arguments given (the multi-call `tocsin` binary's).
pub async fn service_main_with<C, E, L, R, Fut>(
    name: &str,
    args: impl Iterator<Item = String>,
    load: L,
    run: R,
) -> ExitCode
where
    L: FnOnce(&ConfigDoc) -> Result<C, Vec<String>>,
    R: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    init_tracing();
    install_crypto();
    let path = match config_path_from(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tocsin-{name}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = ConfigSource::from_process(path)
        .load()
        .map_err(|e| vec![e])
        .and_then(|doc| load(&doc));
    let config = match config {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("tocsin-{name}: invalid configuration:");
            for p in problems {
                eprintln!("  - {p}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let shutdown = shutdown_on_signal();
    match run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tocsin-{name} stopped with an error");
            ExitCode::FAILURE
        }
    }
}

#[doc(hidden)]
pub use tocsin_bus as __bus;
#[doc(hidden)]
pub use tokio_util::sync::CancellationToken as __CancellationToken;

/// A service's `Config`: the shared `[bus]` section and its own section under a field named
/// after the service, with `load` (reads and checks both, reporting every problem) and
/// `connect`. `service_config!(router: RouterConfig, ops: ops_listen)` gives
/// `Config { bus, router }`, and makes `RouterConfig` the `[router]` `Section`, checked by its
/// own `check(&self, bus) -> Vec<String>`, serving its ops endpoints on `ops_listen`.
#[macro_export]
macro_rules! service_config {
    ($field:ident: $section:ty, ops: $ops:ident) => {
        impl $crate::Section for $section {
            const NAME: &'static str = stringify!($field);

            fn problems(&self, bus: &$crate::__bus::BusConfig) -> Vec<String> {
                self.check(bus)
            }

            fn ops_listen(&self) -> &str {
                &self.$ops
            }
        }

        /// This service's configuration: the shared `[bus]` section and its own.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Config {
            pub bus: $crate::__bus::BusConfig,
            pub $field: $section,
        }

        impl Config {
            /// Read and check both sections; every problem of both is reported.
            pub fn load(doc: &$crate::ConfigDoc) -> Result<Self, Vec<String>> {
                let (bus, $field) = doc.service::<$section>()?;
                Ok(Config { bus, $field })
            }

            /// Connect to the bus as this service and serve its ops endpoints
            /// ([`connect_service`]($crate::connect_service)).
            pub async fn connect(
                &self,
                shutdown: &$crate::__CancellationToken,
            ) -> Result<($crate::__bus::Bus, $crate::Readiness), $crate::ServiceError> {
                use $crate::Section;
                let ops = self.$field.ops_listen();
                $crate::connect_service(&self.bus, <$section>::NAME, ops, shutdown).await
            }
        }
    };
}

#[doc(hidden)]
pub use metrics as __metrics;

/// A service's metric names, each with its kind and help text, and `describe()`, which gives
/// every one its help text on `/metrics`:
/// `metric_names! { POLLS: counter = "tocsin_ingestor_polls_total", "feed polls"; }`.
#[macro_export]
macro_rules! metric_names {
    ($($name:ident: $kind:ident = $metric:literal, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub(crate) const $name: &str = $metric;
        )*

        /// Give every metric its help text (once, at start).
        pub(crate) fn describe() {
            $($crate::__describe!($kind, $name, $help);)*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __describe {
    (counter, $name:ident, $help:literal) => {
        $crate::__metrics::describe_counter!($name, $help)
    };
    (gauge, $name:ident, $help:literal) => {
        $crate::__metrics::describe_gauge!($name, $help)
    };
    (histogram, $name:ident, $help:literal) => {
        $crate::__metrics::describe_histogram!($name, $help)
    };
}

pub use memory::{Allocator, runtime};

/// Make [`Allocator`] the binary's global allocator: once, in each binary's root.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::Allocator = $crate::Allocator;
    };
}

/// A service's binary: `service_binary!("router", tocsin_router)` is its whole `main`
/// ([`service_main`] with the library's `Config::load` and `run`), with tocsin's allocator.
#[macro_export]
macro_rules! service_binary {
    ($name:literal, $lib:ident) => {
        $crate::global_allocator!();

        fn main() -> std::process::ExitCode {
            match $crate::runtime() {
                Ok(rt) => rt.block_on($crate::service_main($name, $lib::Config::load, $lib::run)),
                Err(e) => {
                    eprintln!("tocsin-{}: cannot start the async runtime: {e}", $name);
                    std::process::ExitCode::FAILURE
                }
            }
        }
    };
}
