//! `tocsin-delivery`: the delivery service as its own process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tocsin_runtime::service_main(
        "delivery",
        tocsin_delivery::Config::load,
        tocsin_delivery::run,
    )
    .await
}
