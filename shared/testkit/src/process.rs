//! Child processes of the test servers: killed hard, and reaped.

/// SIGKILL `child`, if running, and reap it.
pub(crate) fn sigkill(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
