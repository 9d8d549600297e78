//! Adaptive concurrency shared by all workers: additive increase, multiplicative decrease.
//!
//! Every object transfer holds a slot. When the server answers with throttling (503
//! SlowDown or 429, counted by the request interceptor), the number of slots halves, at
//! most once per `COOL_DOWN` so that one burst of throttled answers counts as one signal;
//! each time as many transfers as there are slots have completed without new throttling,
//! one slot is added back, up to `--threads`. Retries with backoff handle a single
//! throttled request; this lowers the rate of the whole run so that it stops provoking
//! them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const COOL_DOWN: Duration = Duration::from_millis(200);

pub struct AdaptiveConcurrency {
    max: usize,
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    /// The lowest limit reached, for the summary and tests.
    lowest: AtomicUsize,
    /// The throttled-answer count last seen.
    throttled_seen: AtomicU64,
}

struct State {
    limit: usize,
    /// Slots to take out of circulation as they are released (the limit dropped while
    /// they were in use).
    debt: usize,
    /// Transfers completed since the last increase.
    completed: usize,
    last_cut: Option<Instant>,
}

/// A slot; released when dropped.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    owner: Arc<AdaptiveConcurrency>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.owner.state.lock().expect("concurrency lock");
        if let Some(permit) = self.permit.take() {
            if state.debt > 0 {
                state.debt -= 1;
                permit.forget();
            }
        }
    }
}

impl AdaptiveConcurrency {
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max,
            slots: Arc::new(Semaphore::new(max)),
            state: Mutex::new(State {
                limit: max,
                debt: 0,
                completed: 0,
                last_cut: None,
            }),
            lowest: AtomicUsize::new(max),
            throttled_seen: AtomicU64::new(0),
        })
    }

    pub async fn acquire(self: &Arc<Self>) -> Slot {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("concurrency slots are never closed");
        Slot {
            permit: Some(permit),
            owner: Arc::clone(self),
        }
    }

    /// Called when a transfer ends, with the run's count of throttled answers so far.
    pub fn completed(&self, throttled_total: u64) {
        let seen = self.throttled_seen.swap(throttled_total, Ordering::Relaxed);
        if throttled_total > seen {
            self.decrease(Instant::now());
        } else {
            self.increase();
        }
    }

    pub fn limit(&self) -> usize {
        self.state.lock().expect("concurrency lock").limit
    }

    pub fn lowest(&self) -> usize {
        self.lowest.load(Ordering::Relaxed)
    }

    /// The lowest limit reached, if throttling ever lowered it.
    pub fn lowered(&self) -> Option<usize> {
        Some(self.lowest()).filter(|&lowest| lowest < self.max)
    }

    fn decrease(&self, now: Instant) {
        let mut state = self.state.lock().expect("concurrency lock");
        if state
            .last_cut
            .is_some_and(|at| now.duration_since(at) < COOL_DOWN)
        {
            return;
        }
        state.last_cut = Some(now);
        state.completed = 0;
        let new_limit = (state.limit / 2).max(1);
        let cut = state.limit - new_limit;
        state.limit = new_limit;
        let forgotten = self.slots.forget_permits(cut);
        state.debt += cut - forgotten;
        self.lowest.fetch_min(new_limit, Ordering::Relaxed);
    }

    fn increase(&self) {
        let mut state = self.state.lock().expect("concurrency lock");
        if state.limit >= self.max {
            return;
        }
        state.completed += 1;
        if state.completed < state.limit {
            return;
        }
        state.completed = 0;
        state.limit += 1;
        if state.debt > 0 {
            state.debt -= 1;
        } else {
            self.slots.add_permits(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn throttling_halves_the_slots_and_quiet_brings_them_back() {
        let concurrency = AdaptiveConcurrency::new(8);
        let held: Vec<Slot> =
            futures::future::join_all((0..8).map(|_| concurrency.acquire())).await;
        // Throttled while all 8 are in use: the limit drops to 4, and 4 slots are
        // taken out of circulation as they come back.
        concurrency.completed(1);
        assert_eq!((concurrency.limit(), concurrency.lowest()), (4, 4));
        // A second signal within the cool-down counts as the same burst.
        concurrency.completed(2);
        assert_eq!(concurrency.limit(), 4);
        drop(held);
        assert_eq!(concurrency.slots.available_permits(), 4);
        // Quiet: one slot back per `limit` completions, up to the maximum.
        for _ in 0..4 {
            concurrency.completed(2);
        }
        assert_eq!(concurrency.limit(), 5);
        for _ in 0..100 {
            concurrency.completed(2);
        }
        assert_eq!(concurrency.limit(), 8);
        assert_eq!(concurrency.slots.available_permits(), 8);
        assert_eq!(concurrency.lowest(), 4);
    }

    #[test]
    fn cuts_are_spaced_by_the_cool_down() {
        let concurrency = AdaptiveConcurrency::new(64);
        let start = Instant::now();
        concurrency.decrease(start);
        concurrency.decrease(start + COOL_DOWN / 2);
        assert_eq!(concurrency.limit(), 32);
        concurrency.decrease(start + COOL_DOWN * 2);
        assert_eq!(concurrency.limit(), 16);
        for _ in 0..10 {
            concurrency.decrease(start + COOL_DOWN * 100);
        }
        assert_eq!(concurrency.limit(), 8);
    }
}
