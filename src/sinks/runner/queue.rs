//! The queue between the scoring thread and the database sink
//! (docs/low-rate.md §6): a bounded channel whose receiver need not be
//! woken by every batch. At a low rate the sink takes what is queued at its
//! flush tick, so a scored batch costs the async runtime no wake-up of its
//! own; the sender wakes the sink early only when the queue is half full
//! (the rate rose) and when it goes away (shutdown).

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

/// The sending side: a bounded sender that nudges the sink when the queue
/// is half full, and once more when dropped.
pub struct SinkSender<I> {
    tx: Option<mpsc::Sender<I>>,
    nudge: Arc<Notify>,
}

/// The receiving side: the channel and, when the sender nudges, the
/// [`Notify`] it nudges. A plain receiver converts into one without a
/// nudge, and the sink then takes every item as it comes.
pub struct SinkReceiver<I> {
    pub(super) rx: mpsc::Receiver<I>,
    pub(super) nudge: Option<Arc<Notify>>,
}

/// A queue of `capacity` items whose receiver may wait for its own tick.
pub fn sink_queue<I>(capacity: usize) -> (SinkSender<I>, SinkReceiver<I>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let nudge = Arc::new(Notify::new());
    (
        SinkSender {
            tx: Some(tx),
            nudge: nudge.clone(),
        },
        SinkReceiver {
            rx,
            nudge: Some(nudge),
        },
    )
}

impl<I> From<mpsc::Receiver<I>> for SinkReceiver<I> {
    fn from(rx: mpsc::Receiver<I>) -> Self {
        Self { rx, nudge: None }
    }
}

impl<I> SinkSender<I> {
    /// Sends from a thread outside the async runtime, waiting for room.
    ///
    /// # Errors
    /// The item back when the sink has gone.
    pub fn blocking_send(&self, item: I) -> Result<(), I> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(item);
        };
        tx.blocking_send(item).map_err(|e| e.0)?;
        if tx.capacity() <= tx.max_capacity() / 2 {
            self.nudge.notify_one();
        }
        Ok(())
    }
}

impl<I> Drop for SinkSender<I> {
    fn drop(&mut self) {
        // Closed first, so that the sink, once woken, sees the end.
        drop(self.tx.take());
        self.nudge.notify_one();
    }
}
