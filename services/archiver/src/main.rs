//! `tocsin-archiver`: the archiver as its own process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tocsin_runtime::service_main(
        "archiver",
        tocsin_archiver::Config::load,
        tocsin_archiver::run,
    )
    .await
}
