//! A command-line tool's output into a pipe that closes early (`tocsin history | head`): the
//! process ends quietly, as Unix tools do, instead of panicking in `println!`.

/// Let a closed pipe end the process (`SIGPIPE`'s default), for a command that only prints.
///
/// Rust starts every program with `SIGPIPE` ignored, so a write to a closed pipe fails and
/// `println!` panics with a backtrace. Not for a service: a server must see a broken
/// connection as an error, not die of it. Sockets are unaffected either way on Linux: Rust
/// writes to them with `MSG_NOSIGNAL`.
pub fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: `signal` only sets the process's disposition for SIGPIPE, to its default: no
    // handler runs, no memory is touched, and it is safe to call from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    /// A child that writes into a pipe whose reader is gone dies of `SIGPIPE`, quietly.
    #[test]
    fn a_write_to_a_closed_pipe_ends_the_process_without_a_panic() {
        if std::env::var_os("TOCSIN_PIPE_CHILD").is_some() {
            super::end_quietly_on_closed_pipe();
            println!("ready");
            loop {
                println!("a line for a reader that has gone");
            }
        }
        use std::os::unix::process::ExitStatusExt;
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "cli_pipe::tests::a_write_to_a_closed_pipe_ends_the_process_without_a_panic",
                "--nocapture",
            ])
            .env("TOCSIN_PIPE_CHILD", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the child");
        // past the test harness's own lines, then gone
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
            child.stdout.take().expect("its stdout"),
        ));
        while let Some(Ok(line)) = lines.next() {
            if line == "ready" {
                break;
            }
        }
        drop(lines);
        let out = child.wait_with_output().expect("the child's end");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
