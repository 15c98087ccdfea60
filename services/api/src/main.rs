//! `tocsin-api`: the API service as its own process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tocsin_runtime::service_main("api", tocsin_api::Config::load, tocsin_api::run).await
}
