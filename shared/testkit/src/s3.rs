//! moto's S3 server on loopback (the archive's object store in tests).

use crate::process::start_quiet;
use crate::wait::wait_listening;
use crate::{free_port, workspace_root};
use anyhow::{Result, anyhow};
use std::path::PathBuf;

/// An S3-compatible server (moto's server mode, installed into `.tools/s3venv` by
/// `make test-tools`) on a free loopback port, everything in memory; killed on drop. It speaks
/// the S3 REST API with SigV4 as AWS does; any access key is accepted.
pub struct S3Server {
    child: std::process::Child,
    pub port: u16,
}

impl S3Server {
    pub fn start() -> Result<Self> {
        let binary = std::env::var("TOCSIN_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join(".tools/s3venv/bin/moto_server"));
        let port = free_port();
        let mut child = start_quiet(
            std::process::Command::new(&binary).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            &binary.display().to_string(),
            "run `make test-tools`",
        )?;
        wait_listening(&mut child, port, "moto_server")?;
        Ok(Self { child, port })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create a bucket (S3 CreateBucket: `PUT /<bucket>`; moto takes it unsigned).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        let answer = crate::http_request(self.port, "PUT", &format!("/{bucket}"), "")?;
        if !answer.starts_with("HTTP/1.1 200") {
            return Err(anyhow!(
                "create bucket {bucket}: {}",
                answer.lines().next().unwrap_or("")
            ));
        }
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
