//! `tocsin-router`: the router service as its own process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tocsin_runtime::service_main("router", tocsin_router::Config::load, tocsin_router::run).await
}
