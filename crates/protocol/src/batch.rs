//! A lane's batching writer: whatever is queued when the transport asks for
//! the next message goes out in one message, so a busy lane costs one
//! encode, one HTTP/2 frame and one wake-up for many exchanges.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

use crate::lanes::Batch;

/// The messages of a lane's side: each holds every item queued at the time,
/// within [`crate::lanes::MAX_BATCH_BYTES`] (one larger item travels
/// alone). Ends when every sender is gone and the queue is empty.
pub struct Batched<T, S, W> {
    queue: mpsc::UnboundedReceiver<T>,
    /// An item that did not fit the last message: the next one starts with it.
    carried: Option<T>,
    size: S,
    wrap: W,
}

/// Batches `queue`: `size` says an item's encoded bytes, `wrap` makes the
/// message of a batch.
pub fn batched<T, M, S, W>(queue: mpsc::UnboundedReceiver<T>, size: S, wrap: W) -> Batched<T, S, W>
where
    S: Fn(&T) -> usize,
    W: Fn(Vec<T>) -> M,
{
    Batched { queue, carried: None, size, wrap }
}

impl<T, M, S, W> Stream for Batched<T, S, W>
where
    T: Unpin,
    S: Fn(&T) -> usize + Unpin,
    W: Fn(Vec<T>) -> M + Unpin,
{
    type Item = M;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<M>> {
        let this = self.get_mut();
        let first = match this.carried.take() {
            Some(item) => item,
            None => match this.queue.poll_recv(cx) {
                Poll::Ready(Some(item)) => item,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        let mut batch = Batch::default();
        let bytes = (this.size)(&first);
        let _always = batch.offer(first, bytes);
        while let Ok(item) = this.queue.try_recv() {
            let bytes = (this.size)(&item);
            if let Err(item) = batch.offer(item, bytes) {
                this.carried = Some(item);
                break;
            }
        }
        Poll::Ready(Some((this.wrap)(batch.take())))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::lanes::MAX_BATCH_BYTES;

    #[tokio::test]
    async fn what_is_queued_goes_in_one_message_within_the_limit() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut messages = batched(rx, |item: &usize| *item, |items: Vec<usize>| items);
        for item in [1, 2, 3] {
            tx.send(item).unwrap();
        }
        assert_eq!(messages.next().await.unwrap(), [1, 2, 3], "everything ready, in one message");
        tx.send(MAX_BATCH_BYTES - 10).unwrap();
        tx.send(20).unwrap();
        tx.send(5).unwrap();
        assert_eq!(messages.next().await.unwrap(), [MAX_BATCH_BYTES - 10], "the next would pass the limit");
        assert_eq!(messages.next().await.unwrap(), [20, 5], "the item held back starts the next message");
        tx.send(MAX_BATCH_BYTES * 3).unwrap();
        assert_eq!(messages.next().await.unwrap(), [MAX_BATCH_BYTES * 3], "one large item travels alone");
        drop(tx);
        assert_eq!(messages.next().await, None, "ends with its senders");
    }
}
