//! An avatar's mailbox: a bounded queue from its silo's worker (the one sender) to the
//! avatar's task (the one receiver), lighter than tokio's `mpsc`, whose channel allocates a
//! block of 32 slots and its bookkeeping up front — about 550 bytes per active avatar, most
//! of it never used by a user with one message at a time. Here an idle mailbox is a queue with
//! nothing allocated, two wake-up points and two flags.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Woken when a message arrives or the sender is gone.
    to_receiver: Notify,
    /// Woken when room is made or the receiver is closed or gone.
    to_sender: Notify,
}

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    /// The receiver takes no more (closed, or dropped).
    closed: bool,
    /// The sender is dropped: once the queue is empty, there is nothing more.
    sender_gone: bool,
}

/// The capacity a drained queue keeps; a burst's larger one is given back.
const KEPT: usize = 8;

impl<T> Shared<T> {
    /// The state; a panic elsewhere while it was held cannot leave it half-changed (every
    /// change is a single push, pop or flag), so a poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A mailbox holding at most `capacity` messages (at least one).
pub(crate) fn mailbox<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            closed: false,
            sender_gone: false,
        }),
        to_receiver: Notify::new(),
        to_sender: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queue `msg`, waiting while the mailbox is full; the message back if the receiver is
    /// closed or gone (it was not queued).
    pub(crate) async fn send(&self, msg: T) -> Result<(), T> {
        loop {
            {
                let mut s = self.shared.lock();
                if s.closed {
                    return Err(msg);
                }
                if s.queue.len() < s.capacity {
                    s.queue.push_back(msg);
                    drop(s);
                    self.shared.to_receiver.notify_one();
                    return Ok(());
                }
            }
            // a wake-up given while this was not waiting is kept (Notify's permit)
            self.shared.to_sender.notified().await;
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.lock().sender_gone = true;
        self.shared.to_receiver.notify_one();
    }
}

pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next message; None once the sender is gone (or the mailbox closed) and every
    /// queued message was taken. Cancel-safe: a message is taken only when it is returned.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut s = self.shared.lock();
                if let Some(msg) = s.queue.pop_front() {
                    if s.queue.is_empty() && s.queue.capacity() > KEPT {
                        s.queue.shrink_to(KEPT);
                    }
                    drop(s);
                    self.shared.to_sender.notify_one();
                    return Some(msg);
                }
                if s.sender_gone || s.closed {
                    return None;
                }
            }
            self.shared.to_receiver.notified().await;
        }
    }

    /// Take no more messages (the sender gets its message back); those queued can still be
    /// received.
    pub(crate) fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.to_sender.notify_one();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.shared.lock().queue.is_empty()
    }
}

impl<T> Drop for Receiver<T> {
    /// Closed, and what was queued is dropped now (as tokio's receiver does), not when the
    /// sender goes: an avatar that ended leaves no messages held in memory behind it.
    fn drop(&mut self) {
        let queued = {
            let mut s = self.shared.lock();
            s.closed = true;
            std::mem::take(&mut s.queue)
        };
        self.shared.to_sender.notify_one();
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_full_mailbox_makes_the_sender_wait() {
        let (tx, mut rx) = mailbox::<u32>(2);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        // full: the third waits until one is taken
        let third = tokio::spawn(async move {
            tx.send(3).await.unwrap();
            tx
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!third.is_finished());
        assert_eq!(rx.recv().await, Some(1));
        let tx = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the sender was woken")
            .unwrap();
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert!(rx.is_empty());
        // nothing queued: recv waits, and a timeout cancels it without losing what comes next
        let waited = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await;
        assert!(waited.is_err());
        tx.send(4).await.unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(4));
        assert_eq!(
            rx.recv().await,
            None,
            "the sender is gone and the queue empty"
        );
    }

    #[tokio::test]
    async fn a_closed_mailbox_gives_new_messages_back_and_finishes_its_queue() {
        let (tx, mut rx) = mailbox::<u32>(4);
        tx.send(1).await.unwrap();
        rx.close();
        assert_eq!(tx.send(2).await, Err(2));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, None);
        // a sender waiting on a full mailbox gets its message back when the receiver goes
        let (tx, rx) = mailbox::<u32>(1);
        tx.send(1).await.unwrap();
        let waiting = tokio::spawn(async move { tx.send(2).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        drop(rx);
        let back = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the sender was woken")
            .unwrap();
        assert_eq!(back, Err(2));
        // what was queued when the receiver went is dropped with it
        let (tx, rx) = mailbox::<Arc<()>>(4);
        let held = Arc::new(());
        tx.send(held.clone()).await.unwrap();
        assert_eq!(Arc::strong_count(&held), 2);
        drop(rx);
        assert_eq!(Arc::strong_count(&held), 1);
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_room_back() {
        let (tx, mut rx) = mailbox::<u64>(256);
        for i in 0..200 {
            tx.send(i).await.unwrap();
        }
        for i in 0..200 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert!(rx.shared.lock().queue.capacity() <= KEPT);
    }
}
