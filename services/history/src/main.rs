//! `tocsin-history`: the history service as its own process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tocsin_runtime::service_main("history", tocsin_history::Config::load, tocsin_history::run).await
}
