//! Adaptive concurrency shared by all workers: every object transfer holds a slot, and
//! the number of slots follows the server's throttling, as `policy` decides once per round
//! of transfers.
//!
//! A cut takes free slots out at once and the slots in use out as they come back (their
//! transfers run to the end); a raise puts slots back.

mod policy;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use policy::Answers;
use policy::Policy;

pub struct AdaptiveConcurrency {
    max: usize,
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    /// The lowest limit reached, for the summary and tests.
    lowest: AtomicUsize,
}

struct State {
    policy: Policy,
    /// Slots to take out of circulation as they are released (the limit dropped while
    /// they were in use).
    debt: usize,
}

/// A slot; released when dropped.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    /// The cuts made before this transfer started (see `Policy::cuts`).
    generation: u64,
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
                policy: Policy::new(max),
                debt: 0,
            }),
            lowest: AtomicUsize::new(max),
        })
    }

    pub async fn acquire(self: &Arc<Self>) -> Slot {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("concurrency slots are never closed");
        let generation = self.state.lock().expect("concurrency lock").policy.cuts;
        Slot {
            permit: Some(permit),
            generation,
            owner: Arc::clone(self),
        }
    }

    /// Called when a transfer ends, with its slot and the run's answers so far.
    pub fn completed(&self, slot: Slot, answers: Answers) {
        let generation = slot.generation;
        drop(slot);
        let mut state = self.state.lock().expect("concurrency lock");
        let before = state.policy.limit;
        let after = state.policy.completed(generation, answers);
        if after < before {
            let cut = before - after;
            let forgotten = self.slots.forget_permits(cut);
            state.debt += cut - forgotten;
            self.lowest.fetch_min(after, Ordering::Relaxed);
        } else if after > before {
            let added = after - before;
            let repaid = added.min(state.debt);
            state.debt -= repaid;
            self.slots.add_permits(added - repaid);
        }
    }

    pub fn limit(&self) -> usize {
        self.state.lock().expect("concurrency lock").policy.limit
    }

    pub fn lowest(&self) -> usize {
        self.lowest.load(Ordering::Relaxed)
    }

    /// The lowest limit reached, if throttling ever lowered it.
    pub fn lowered(&self) -> Option<usize> {
        Some(self.lowest()).filter(|&lowest| lowest < self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cut_takes_slots_out_as_they_come_back_and_a_raise_gives_them_back() {
        let concurrency = AdaptiveConcurrency::new(8);
        let held: Vec<Slot> =
            futures::future::join_all((0..8).map(|_| concurrency.acquire())).await;
        concurrency.state.lock().unwrap().policy = Policy::new(8).knowing_the_share_follows();
        let mut answers = Answers::default();
        // A round of 8 transfers, each with 40 answers, 36 of them throttled: the limit is
        // halved, and the slots still in use are retired as they come back.
        let mut held = held.into_iter();
        for slot in held.by_ref().take(7) {
            answers.total += 40;
            answers.throttled += 36;
            concurrency.completed(slot, answers);
        }
        assert_eq!(concurrency.limit(), 8);
        let last: Vec<Slot> =
            futures::future::join_all((0..7).map(|_| concurrency.acquire())).await;
        answers.total += 40;
        answers.throttled += 36;
        concurrency.completed(held.next().unwrap(), answers);
        assert_eq!((concurrency.limit(), concurrency.lowest()), (4, 4));
        assert_eq!(concurrency.lowered(), Some(4));
        assert_eq!(concurrency.slots.available_permits(), 0);
        drop(last);
        assert_eq!(concurrency.slots.available_permits(), 4);
        // Quiet rounds: one slot back per round, up to the maximum.
        for _ in 0..100 {
            let slot = concurrency.acquire().await;
            answers.total += 1;
            concurrency.completed(slot, answers);
        }
        assert_eq!(concurrency.limit(), 8);
        assert_eq!(concurrency.slots.available_permits(), 8);
        assert_eq!(concurrency.lowest(), 4);
    }
}
