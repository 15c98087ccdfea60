//! SMTP on the wire: bounded reads of command lines and of a message's data, and replies
//! written together for pipelined commands (RFC 2920).

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

#[derive(Debug)]
pub(crate) enum Line {
    Text(Vec<u8>),
    TooLong,
}

/// Read one line (without its CRLF) of at most `max` bytes, within the command timeout.
pub(crate) async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    max: usize,
    timeout: Duration,
) -> std::io::Result<Line> {
    let mut buf = read_raw_line(r, max as u64 + 2, timeout, "a command").await?;
    if buf.last() != Some(&b'\n') {
        return Ok(Line::TooLong);
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Line::Text(buf))
}

/// Read the message up to the lone dot, undoing dot-stuffing. `None` when it is larger than
/// `max` (the rest is read and dropped, so the session can go on).
pub(crate) async fn read_data<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    max: usize,
    timeout: Duration,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut too_big = false;
    loop {
        let line = read_raw_line(r, 1 << 20, timeout, "the data").await?;
        if line == b".\r\n" || line == b".\n" {
            return Ok((!too_big).then_some(data));
        }
        let content: &[u8] = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line
        };
        if data.len() + content.len() > max {
            too_big = true;
            data.clear();
        }
        if !too_big {
            data.extend_from_slice(content);
        }
    }
}

/// Read up to and with the next LF, at most `cap` bytes, within `timeout`; an error names
/// `what` was being read when the client went quiet or closed the connection.
async fn read_raw_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    cap: u64,
    timeout: Duration,
    what: &str,
) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = tokio::time::timeout(timeout, (&mut *r).take(cap).read_until(b'\n', &mut line))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("timeout while reading {what}"),
            )
        })??;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("connection closed while reading {what}"),
        ));
    }
    Ok(line)
}

/// Replies held at most before they are written: a client that pipelines without end (and
/// never reads) meets the socket's back-pressure, not a growing buffer.
const HELD_MAX: usize = 8 * 1024;

/// A session's replies. Replies to pipelined commands (RFC 2920) are held until the last
/// command the client sent in one go is answered and written in one write, as the RFC asks
/// of servers; any other reply is written at once, after what is held. At most
/// [`HELD_MAX`] bytes are held.
pub(crate) struct Replies<W> {
    w: W,
    held: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Replies<W> {
    pub(crate) fn new(w: W) -> Replies<W> {
        Replies {
            w,
            held: Vec::new(),
        }
    }

    /// The writer, once what is held is written and flushed (before STARTTLS).
    pub(crate) async fn into_inner(mut self) -> std::io::Result<W> {
        self.w.write_all(&self.held).await?;
        self.w.flush().await?;
        Ok(self.w)
    }

    /// Write what is held and `bytes`.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.held.is_empty() {
            return self.w.write_all(bytes).await;
        }
        self.held.extend_from_slice(bytes);
        let written = self.w.write_all(&self.held).await;
        self.held.clear();
        written
    }

    /// Hold `bytes` while the client has sent more commands that are not yet answered;
    /// otherwise write them with what is held.
    pub(crate) async fn hold(&mut self, bytes: &[u8], more_commands: bool) -> std::io::Result<()> {
        if more_commands && self.held.len() + bytes.len() <= HELD_MAX {
            self.held.extend_from_slice(bytes);
            return Ok(());
        }
        self.write_all(bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_is_unstuffed_and_bounded() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\nNOOP\r\n".to_vec();
        let mut r = BufReader::new(&input[..]);
        let d = read_data(&mut r, 1000, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d, b"Subject: x\r\n\r\n.leading dot\r\nbody\r\n");
        let mut r = BufReader::new(&input[..]);
        assert!(
            read_data(&mut r, 10, Duration::from_secs(1))
                .await
                .unwrap()
                .is_none()
        );
        // the session can go on after an oversized message
        assert!(
            matches!(read_line(&mut r, 1000, Duration::from_secs(1)).await.unwrap(), Line::Text(l) if l == b"NOOP")
        );
    }

    #[tokio::test]
    async fn held_replies_are_written_in_one_go_and_never_beyond_their_bound() {
        let mut w = Replies::new(Vec::new());
        w.hold(b"250 a\r\n", true).await.unwrap();
        w.hold(b"250 b\r\n", true).await.unwrap();
        assert!(w.w.is_empty(), "held while more commands wait");
        w.hold(b"250 c\r\n", false).await.unwrap();
        assert_eq!(w.w, b"250 a\r\n250 b\r\n250 c\r\n");
        // a client pipelining without end: replies go out once the bound is reached
        let mut w = Replies::new(Vec::new());
        let reply = [b'x'; 100];
        for _ in 0..1000 {
            w.hold(&reply, true).await.unwrap();
            assert!(w.held.len() <= HELD_MAX);
        }
        assert_eq!(w.w.len() + w.held.len(), 100 * 1000);
        assert!(!w.w.is_empty());
    }
}
