//! Wake-ups for readers waiting on one aggregate's stream: a long poll (an upsell acceptance's
//! status) sleeps until this process appends to that aggregate, instead of reading it again
//! and again. Writers in other processes wake nobody here: a waiter also looks again on its
//! own fallback interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

type Key = (String, String);

/// The streams someone waits on, each with its `Notify`; an entry lives while a
/// [`StreamWatch`] of it does.
#[derive(Default)]
pub(super) struct StreamWatchers {
    waiting: Mutex<HashMap<Key, Arc<Notify>>>,
}

impl StreamWatchers {
    /// Wakes every waiter of the stream (a no-op when nobody waits: one map lookup).
    pub(super) fn appended(&self, aggregate_type: &str, aggregate_id: &str) {
        let waiting = self.waiting.lock().expect("stream watchers");
        if waiting.is_empty() {
            return;
        }
        if let Some(notify) = waiting.get(&(aggregate_type.to_owned(), aggregate_id.to_owned())) {
            notify.notify_waiters();
        }
    }
}

/// A registration on one stream; dropping the last one of a stream removes its entry.
pub struct StreamWatch {
    watchers: Arc<StreamWatchers>,
    key: Key,
    notify: Arc<Notify>,
}

impl StreamWatch {
    pub(super) fn new(watchers: Arc<StreamWatchers>, aggregate_type: &str, id: &str) -> Self {
        let key = (aggregate_type.to_owned(), id.to_owned());
        let notify = watchers
            .waiting
            .lock()
            .expect("stream watchers")
            .entry(key.clone())
            .or_default()
            .clone();
        Self {
            watchers,
            key,
            notify,
        }
    }

    /// The next append to the stream. Call it (and `enable` the future, or poll it once)
    /// *before* reading the stream's state, so an append between the read and the wait is not
    /// missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        let mut waiting = self.watchers.waiting.lock().expect("stream watchers");
        // The map's own reference and this one: nobody else waits on the stream.
        if Arc::strong_count(&self.notify) <= 2 {
            waiting.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_append_wakes_the_streams_waiters_only_and_the_last_drop_forgets_it() {
        let watchers = Arc::new(StreamWatchers::default());
        let a = StreamWatch::new(watchers.clone(), "upsell_acceptance", "acc_1");
        let b = StreamWatch::new(watchers.clone(), "upsell_acceptance", "acc_1");
        let other = StreamWatch::new(watchers.clone(), "upsell_acceptance", "acc_2");
        {
            let mut woken_a = std::pin::pin!(a.notified());
            woken_a.as_mut().enable();
            let mut woken_other = std::pin::pin!(other.notified());
            woken_other.as_mut().enable();
            watchers.appended("upsell_acceptance", "acc_1");
            woken_a.await;
            assert!(
                futures::poll!(woken_other.as_mut()).is_pending(),
                "another stream's waiter sleeps on"
            );
        }
        drop(b);
        assert_eq!(watchers.waiting.lock().unwrap().len(), 2);
        drop(a);
        assert_eq!(watchers.waiting.lock().unwrap().len(), 1);
        drop(other);
        assert!(watchers.waiting.lock().unwrap().is_empty());
    }
}
