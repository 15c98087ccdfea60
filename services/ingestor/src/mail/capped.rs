//! A stream that fails once more bytes were read than its budget allows. An IMAP server says
//! how large a message is, and then sends what it likes: the budget, set before each command,
//! is what bounds the memory a hostile or broken server can make the ingestor spend.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bytes a [`Capped`] stream may still read; shared with whoever sets it.
#[derive(Clone, Debug, Default)]
pub struct Budget(Arc<AtomicUsize>);

impl Budget {
    /// Allow `bytes` more reads from now on (replacing what was left).
    pub fn set(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Capped<T> {
    inner: T,
    budget: Budget,
}

impl<T> Capped<T> {
    pub fn new(inner: T, budget: Budget) -> Capped<T> {
        Capped { inner, budget }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Capped<T> {
    /// Reads pass through; the read that takes them past the budget fails instead (what it
    /// read is dropped: the connection is given up).
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let n = buf.filled().len() - before;
            let left = self.budget.0.load(Ordering::Relaxed);
            if n > left {
                self.budget.0.store(0, Ordering::Relaxed);
                // an error reports no bytes read (the contract of `poll_read`)
                buf.set_filled(before);
                return Poll::Ready(Err(std::io::Error::other(
                    "the server sent more than the size limit allows",
                )));
            }
            self.budget.0.fetch_sub(n, Ordering::Relaxed);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Capped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_fail_past_the_budget_and_a_new_budget_allows_more() {
        let data = vec![7u8; 10_000];
        let budget = Budget::default();
        budget.set(4096);
        let mut r = Capped::new(&data[..], budget.clone());
        let mut small = [0u8; 1000];
        r.read_exact(&mut small).await.unwrap();
        let mut rest = Vec::new();
        let e = r.read_to_end(&mut rest).await.unwrap_err();
        assert!(e.to_string().contains("size limit"), "{e}");
        budget.set(100_000);
        r.read_to_end(&mut rest).await.unwrap();
    }
}
