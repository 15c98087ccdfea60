//! Threads for blocking work off the pipeline's hot path (history's writes), run at a lower CPU
//! priority, so that where the pipeline shares a machine's cores, a notification on its way to
//! delivery is scheduled before the bookkeeping that follows it.
//!
//! Linux keeps a nice value per thread (`setpriority` with a thread id), so lowering these
//! threads leaves every other thread of the process as it was. A thread whose priority cannot
//! be lowered (a sandbox that forbids the call) runs at the process's, and says so once.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A job that panicked (a bug, never input), with the panic's message.
#[derive(Debug, thiserror::Error)]
#[error("the job panicked: {0}")]
pub struct Panicked(pub String);

/// A fixed set of threads taking blocking jobs in the order they are given.
pub struct Background {
    jobs: mpsc::Sender<Job>,
}

impl Background {
    /// Start `threads` threads (at least one) named `name`, each at nice value `nice` (0 to 19;
    /// 0 leaves them at the process's priority). They end when the `Background` is dropped,
    /// after the jobs already given to them.
    pub fn start(name: &str, threads: usize, nice: i32) -> io::Result<Background> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads.max(1) {
            let queue = queue.clone();
            let what = name.to_owned();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    if nice != 0
                        && let Err(e) = lower_priority(nice)
                    {
                        tracing::warn!(
                            threads = %what,
                            nice,
                            error = %e,
                            "cannot lower these threads' CPU priority; they run at the process's"
                        );
                    }
                    loop {
                        // the lock is held only while waiting for the next job, never while one runs
                        let job = crate::lock(&queue).recv();
                        match job {
                            Ok(job) => job(),
                            Err(mpsc::RecvError) => break,
                        }
                    }
                })?;
        }
        Ok(Background { jobs })
    }

    /// Run `f` on one of the threads and wait for what it returns. A panic in `f` is caught
    /// and returned as [`Panicked`], for the caller to treat as the failure of that one job;
    /// the thread itself carries on with the next.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Panicked>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // the caller may have stopped waiting (its task was cancelled): nothing to tell
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        });
        // the threads outlive `self` (they only end once every sender is gone), so the job
        // is always taken, and its answer always sent
        self.jobs
            .send(job)
            .unwrap_or_else(|_| unreachable!("the background threads outlive their pool"));
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|m| (*m).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                Err(Panicked(message))
            }
            Err(_) => unreachable!("a background job always answers: its panics are caught"),
        }
    }
}

/// Lower the calling thread's priority to nice value `nice`; a thread already at that nice value
/// or lower in priority (a process started under `nice`) is left as it is, never raised.
#[allow(unsafe_code)]
fn lower_priority(nice: i32) -> io::Result<()> {
    // SAFETY: the calls take and return plain integers and touch no memory of ours
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let tid = libc::id_t::try_from(tid).map_err(|_| io::Error::other("no thread id"))?;
    // the raw system call answers 20 - nice (1 to 40), so -1 can only be an error
    // SAFETY: as above
    let answer = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, tid) };
    if answer == -1 {
        return Err(io::Error::last_os_error());
    }
    let current = 20 - i32::try_from(answer).unwrap_or(20);
    if current >= nice {
        return Ok(());
    }
    // SAFETY: as above
    match unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The calling thread's nice value.
    #[allow(unsafe_code)]
    fn nice_here() -> i32 {
        // SAFETY: plain integers in and out
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    /// How many of this process's threads are named `name`.
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    #[tokio::test]
    async fn runs_jobs_at_a_lower_priority_and_leaves_the_caller_as_it_was() {
        let before = nice_here();
        let pool = Background::start("bg-priority", 2, 7).unwrap();
        let (theirs, name) = pool
            .run(|| {
                (
                    nice_here(),
                    std::thread::current().name().map(str::to_owned),
                )
            })
            .await
            .unwrap();
        // lowered to 7, or left where it was if the process already ran lower than that
        assert_eq!(theirs, before.max(7));
        assert_eq!(name.as_deref(), Some("bg-priority"));
        assert_eq!(nice_here(), before, "the caller's thread is not touched");
        let asked_higher = pool
            .run(|| lower_priority(3).map(|()| nice_here()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(asked_higher, before.max(7), "a priority is never raised");
        for i in 0..20u64 {
            assert_eq!(pool.run(move || i * 2).await.unwrap(), i * 2);
        }
    }

    #[tokio::test]
    async fn the_threads_end_when_the_pool_is_dropped() {
        let until = |n: usize, what: &'static str| async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while threads_named("bg-drop") != n {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let pool = Background::start("bg-drop", 3, 0).unwrap();
        // a thread names itself as it starts
        until(3, "the three threads did not start").await;
        drop(pool);
        until(0, "the threads did not end").await;
    }
}
