//! The API's listener: what a client may hold of the process's sockets. At most
//! `api.max_connections` connections in all and `api.max_connections_per_client` from one
//! client (an IPv4 address or an IPv6 /64); others are closed as they arrive. A connection
//! must send its first request's headers within `api.header_timeout_secs` and is closed after
//! `api.idle_timeout_secs` with nothing read or written (a live stream writes a keep-alive
//! every 15 s). A client that opens sockets and sends nothing used to hold them forever, and
//! under `tocsin up` the file descriptors it took were every service's.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tocsin_runtime::clients::{PerClient, Slot};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

/// The limits, from `[api]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub per_client: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

pub struct Guarded {
    inner: TcpListener,
    limits: Limits,
    all: Arc<Semaphore>,
    clients: PerClient,
}

impl Guarded {
    pub fn new(inner: TcpListener, limits: Limits) -> Guarded {
        Guarded {
            inner,
            limits,
            all: Arc::new(Semaphore::new(limits.max_connections)),
            clients: PerClient::new(limits.per_client),
        }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // out of file descriptors, most likely: give connections time to close
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = self.clients.open(peer.ip()) else {
                debug!(%peer, "closing a connection: its client holds all of its own");
                continue;
            };
            let Ok(permit) = self.all.clone().try_acquire_owned() else {
                warn!(%peer, max = self.limits.max_connections, "closing a connection: api.max_connections are open");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                io: stream,
                deadline: Box::pin(tokio::time::sleep(self.limits.header_timeout)),
                idle: self.limits.idle_timeout,
                answered: false,
                _slot: slot,
                _permit: permit,
            };
            return (conn, peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The client's address, for handlers (`ConnectInfo<Peer>`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Guarded>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Guarded>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// A connection with its deadline: the headers' until the first answer, then the idle one,
/// pushed back by every byte read or written.
pub struct Conn {
    io: TcpStream,
    deadline: Pin<Box<Sleep>>,
    idle: Duration,
    /// Whether anything was written: until then only the header deadline applies.
    answered: bool,
    _slot: Slot,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    fn touch(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// After a write: bytes out mean the client is answered and the connection alive; a
    /// write that cannot proceed past the deadline ends it.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                self.answered = true;
                self.touch();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection deadline passed")
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // before the first answer, bytes read do not extend the header deadline (a
                // client trickling its headers is still cut off)
                if buf.filled().len() > before && self.answered {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, data);
        self.wrote(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
