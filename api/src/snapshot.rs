//! A value read from the read tables and held in memory for a short while: the hot reads of the
//! checkout page (the active funnels, the active bumps) come from it instead of a query per
//! request.
//!
//! Single flight, stale while it refreshes: when the value is older than its lifetime, one
//! caller reads it again while the others keep answering with the one they have, so a
//! thousand concurrent requests at the moment it goes stale cost one query, not a thousand
//! (and none of them waits for it). Only when there is no value at all (at the start, after
//! `invalidate`) do callers wait — for the one read, not each for its own.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub struct Refreshing<T> {
    current: RwLock<Option<(Instant, Arc<T>)>>,
    refresh: tokio::sync::Mutex<()>,
}

impl<T> Default for Refreshing<T> {
    fn default() -> Self {
        Self {
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T> std::fmt::Debug for Refreshing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshing").finish_non_exhaustive()
    }
}

impl<T> Refreshing<T> {
    fn held(&self) -> Option<(Instant, Arc<T>)> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(at, value)| (*at, value.clone()))
    }

    fn store(&self, value: Arc<T>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), value));
    }

    /// The value, read again by `load` when it is older than `ttl` (see the module).
    pub async fn get<E, F, Fut>(&self, ttl: Duration, load: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.held() {
            Some((at, value)) if at.elapsed() < ttl => Ok(value),
            Some((_, stale)) => {
                // Someone is reading it again already: answer with what there is.
                let Ok(_refreshing) = self.refresh.try_lock() else {
                    return Ok(stale);
                };
                if let Some((at, value)) = self.held() {
                    if at.elapsed() < ttl {
                        return Ok(value);
                    }
                }
                let fresh = Arc::new(load().await?);
                self.store(fresh.clone());
                Ok(fresh)
            }
            None => {
                let _refreshing = self.refresh.lock().await;
                if let Some((at, value)) = self.held() {
                    if at.elapsed() < ttl {
                        return Ok(value);
                    }
                }
                let fresh = Arc::new(load().await?);
                self.store(fresh.clone());
                Ok(fresh)
            }
        }
    }

    /// Forgets the value (after a write of this process): the next caller reads it again.
    pub fn invalidate(&self) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_read_and_a_stale_value_is_served_while_it_refreshes() {
        let cache: Arc<Refreshing<usize>> = Arc::new(Refreshing::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let load = |reads: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, ()>(reads.fetch_add(1, Ordering::SeqCst) + 1)
        };
        let ttl = Duration::from_millis(50);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, reads) = (cache.clone(), reads.clone());
                tokio::spawn(async move { *cache.get(ttl, || load(reads)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1, "every first caller gets the one read");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        tokio::time::sleep(ttl).await;
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, reads) = (cache.clone(), reads.clone());
                tokio::spawn(async move { *cache.get(ttl, || load(reads)).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "one refresh for fifty stale callers"
        );
        assert!(answers.iter().all(|a| *a == 1 || *a == 2), "{answers:?}");
        assert!(
            answers.contains(&1),
            "the others were answered with the stale value"
        );

        cache.invalidate();
        assert_eq!(*cache.get(ttl, || load(reads.clone())).await.unwrap(), 3);
    }
}
