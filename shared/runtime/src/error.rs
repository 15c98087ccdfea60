//! The error a service's `run` stops with, for every service: the bus failed, a file or socket
//! could not be used, the configuration does not hold together, something could not be set
//! up, or the service's own store failed. Its text is for the operator.

/// Why a service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Bus(#[from] tocsin_bus::BusError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Setup(String),
    /// The service's own durable store (history's SQLite, the archive's files).
    #[error(transparent)]
    Store(Box<dyn std::error::Error + Send + Sync>),
}
