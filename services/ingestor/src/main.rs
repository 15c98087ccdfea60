//! `tocsin-ingestor`: the ingestor service as its own process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tocsin_runtime::service_main(
        "ingestor",
        tocsin_ingestor::Config::load,
        tocsin_ingestor::run,
    )
    .await
}
