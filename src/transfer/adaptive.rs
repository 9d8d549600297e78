//! Adaptive concurrency shared by all workers: how many transfers run at once follows the
//! share of the server's answers that asked to slow down, judged once per round.
//!
//! Every object transfer holds a slot. A round ends when as many transfers as the limit
//! have completed; after a cut, only transfers started since count, so the round judges
//! the limit it ran at. The share of the run's answers in the round that were throttling
//! (503 SlowDown, 429, counted by the request interceptor) decides:
//! - under `RAISE_BELOW` (a quiet round among them): one slot more, up to `--threads`;
//! - over `CUT_ABOVE`: the limit times the share that was not throttled, at most halved;
//! - in between: the limit holds.
//!
//! A round with throttled answers but fewer than `MIN_ANSWERS` answers stays open until it
//! has that many, so a share is never judged from a handful of answers.
//!
//! Why a share per round, not each throttled answer: a rate limit (S3 throttling a prefix)
//! refuses the more, the faster it is asked, so its share stays high until the limit has
//! come down to what it allows, and cutting by the share lands near that. Scattered
//! throttling (a server refusing one request in ten whatever the rate) keeps a steady share
//! below `CUT_ABOVE` at any concurrency, and lowering the limit for it only slows the run:
//! halving on every throttled answer drives the limit to 1 within seconds. The SDK retries
//! each throttled request either way; this decides only how many transfers run at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A round whose share of throttled answers is above this lowers the limit. Well above
/// the 10 % that scattered throttling may reach: with `MIN_ANSWERS` answers at a steady
/// 10 %, a round goes over it about once in 250,000 (at 15 %, once in 300).
const CUT_ABOVE: f64 = 0.25;

/// A round whose share is below this raises the limit. The gap up to `CUT_ABOVE` is
/// where a rate limit settles: sending up to a third more than it allows keeps it busy
/// (the refused requests are retried), without raising the share further.
const RAISE_BELOW: f64 = 0.15;

/// Answers a round needs before its share is judged, unless none was throttled: at a
/// limit of 4, four transfers' answers are too few to tell 10 % from 30 %.
const MIN_ANSWERS: u64 = 100;

/// The answers of the run so far, as the request interceptor counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answers {
    pub total: u64,
    /// Of those, 503 SlowDown and 429.
    pub throttled: u64,
}

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

/// The limit and the round that will judge it. Nothing here waits or counts slots, so
/// tests drive it with made-up answers.
#[derive(Debug)]
struct Policy {
    max: usize,
    limit: usize,
    /// Cuts so far. A transfer started before the last cut ran beside more transfers
    /// than the limit now allows, so it does not count towards the round judging it.
    cuts: u64,
    /// Transfers of the current generation completed in this round.
    completed: usize,
    /// The run's answers when this round began.
    began: Answers,
}

impl Policy {
    fn new(max: usize) -> Self {
        Self {
            max,
            limit: max,
            cuts: 0,
            completed: 0,
            began: Answers::default(),
        }
    }

    /// A transfer started after `generation` cuts has completed and the run has had
    /// `answers`; returns the limit from now on.
    fn completed(&mut self, generation: u64, answers: Answers) -> usize {
        if generation == self.cuts {
            self.completed += 1;
        }
        if self.completed < self.limit {
            return self.limit;
        }
        let total = answers.total.saturating_sub(self.began.total);
        let throttled = answers.throttled.saturating_sub(self.began.throttled);
        if throttled > 0 && total < MIN_ANSWERS {
            return self.limit;
        }
        let share = throttled as f64 / total.max(1) as f64;
        self.began = answers;
        self.completed = 0;
        if share > CUT_ABOVE {
            let kept = ((self.limit as f64) * (1.0 - share)) as usize;
            let cut_to = kept.max(self.limit / 2).max(1);
            if cut_to < self.limit {
                self.limit = cut_to;
                self.cuts += 1;
            }
        } else if share < RAISE_BELOW {
            self.limit = (self.limit + 1).min(self.max);
        }
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible stream of numbers in 0..1 (xorshift), for made-up answers.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Completes `transfers` transfers at the policy's limit, each retried after every
    /// throttled answer, with `share(limit)` the chance that an answer is throttling.
    /// Returns the limit after each completion.
    fn drive(
        policy: &mut Policy,
        answers: &mut Answers,
        dice: &mut Dice,
        transfers: usize,
        share: impl Fn(usize) -> f64,
    ) -> Vec<usize> {
        (0..transfers)
            .map(|_| {
                let p = share(policy.limit);
                loop {
                    answers.total += 1;
                    if dice.roll() >= p {
                        break;
                    }
                    answers.throttled += 1;
                }
                policy.completed(policy.cuts, *answers)
            })
            .collect()
    }

    #[test]
    fn scattered_throttling_does_not_collapse_the_limit() {
        for (max, seed) in [(64, 1), (100, 2), (16, 3), (4, 4)] {
            let mut policy = Policy::new(max);
            let (mut answers, mut dice) = (Answers::default(), Dice(seed));
            // One answer in ten throttled, whatever the concurrency.
            let limits = drive(&mut policy, &mut answers, &mut dice, 50_000, |_| 0.10);
            let lowest = *limits.iter().min().unwrap();
            assert!(lowest * 4 >= max * 3, "{max}: down to {lowest}");
            let shares = answers.throttled as f64 / answers.total as f64;
            assert!((0.09..0.11).contains(&shares), "{shares}");
        }
    }

    /// How busy a server allowing `allowed` transfers at once was kept (1 when the limit
    /// never fell below it), and how many transfers it was asked to serve on average.
    fn busy_and_asked(limits: &[usize], allowed: usize) -> (f64, f64) {
        let n = limits.len() as f64;
        let busy = limits.iter().map(|&l| l.min(allowed)).sum::<usize>() as f64;
        let asked = limits.iter().sum::<usize>() as f64;
        (busy / n / allowed as f64, asked / n / allowed as f64)
    }

    #[test]
    fn a_rate_limit_brings_the_limit_down_to_what_it_allows() {
        // A server serving 10 transfers' requests at once refuses the excess: at a limit
        // of 40, three answers in four are throttling.
        let allowed = 10;
        let rate_limit = |limit: usize| (1.0 - allowed as f64 / limit as f64).max(0.0);
        let mut policy = Policy::new(64);
        let (mut answers, mut dice) = (Answers::default(), Dice(7));
        let limits = drive(&mut policy, &mut answers, &mut dice, 20_000, rate_limit);
        // A few rounds bring it down...
        let down = limits.iter().position(|&l| l <= 14).unwrap();
        assert!(down < 500, "after {down} transfers");
        // ...and it stays where the server is kept busy without being asked far more.
        let (busy, asked) = busy_and_asked(&limits[down..], allowed);
        assert!(busy > 0.97 && asked < 1.35, "{busy} {asked}");
        assert!(limits[down..].iter().all(|&l| l >= allowed / 2));
    }

    #[test]
    fn a_rate_limit_above_scattered_throttling_is_still_found() {
        let allowed = 20;
        let both = |limit: usize| 0.10 + 0.90 * (1.0 - allowed as f64 / limit as f64).max(0.0);
        let mut policy = Policy::new(100);
        let (mut answers, mut dice) = (Answers::default(), Dice(11));
        let limits = drive(&mut policy, &mut answers, &mut dice, 20_000, both);
        let (busy, asked) = busy_and_asked(&limits[2_000..], allowed);
        assert!(busy > 0.9 && asked < 1.3, "{busy} {asked}");
    }

    #[test]
    fn the_limit_recovers_when_throttling_stops() {
        let mut policy = Policy::new(64);
        let (mut answers, mut dice) = (Answers::default(), Dice(5));
        drive(&mut policy, &mut answers, &mut dice, 2_000, |limit| {
            (1.0 - 4.0 / limit as f64).max(0.0)
        });
        let from = policy.limit;
        assert!(from <= 6, "{from}");
        // Quiet: one slot more per round of `limit` transfers, up to the maximum.
        let limits = drive(&mut policy, &mut answers, &mut dice, 3_000, |_| 0.0);
        let back = limits.iter().position(|&l| l == 64).unwrap();
        assert!(back < (from..=64).sum::<usize>(), "{back}");
        // Scattered throttling after that does not take it away again.
        let limits = drive(&mut policy, &mut answers, &mut dice, 10_000, |_| 0.10);
        assert!(limits.iter().all(|&l| l >= 48), "{limits:?}");
    }

    #[test]
    fn a_round_judges_only_transfers_started_at_its_limit() {
        let mut policy = Policy::new(8);
        let mut answers = Answers::default();
        // Eight transfers, every other answer throttled: cut to 4.
        for _ in 0..8 {
            answers.total += 20;
            answers.throttled += 10;
            policy.completed(0, answers);
        }
        assert_eq!((policy.limit, policy.cuts), (4, 1));
        // The transfers still running from before the cut ran beside eight: however
        // many end, they do not close the round judging four.
        for _ in 0..8 {
            answers.total += 10;
            policy.completed(0, answers);
        }
        assert_eq!(policy.limit, 4);
        // Four started since, quiet: one slot more.
        for _ in 0..4 {
            answers.total += 10;
            policy.completed(1, answers);
        }
        assert_eq!(policy.limit, 5);
    }

    #[test]
    fn a_few_throttled_answers_wait_for_enough_to_judge() {
        let mut policy = Policy::new(2);
        let mut answers = Answers::default();
        answers.total += 2;
        answers.throttled += 1;
        policy.completed(0, answers);
        answers.total += 1;
        assert_eq!(policy.completed(0, answers), 2, "1 of 3 is no share yet");
        // More transfers, no more throttling: the share of the round falls below the
        // raise line and, the limit being the maximum, holds it.
        for _ in 0..MIN_ANSWERS {
            answers.total += 1;
            policy.completed(0, answers);
        }
        assert_eq!(policy.limit, 2);
        assert_eq!(policy.cuts, 0);
    }

    #[tokio::test]
    async fn a_cut_takes_slots_out_as_they_come_back_and_a_raise_gives_them_back() {
        let concurrency = AdaptiveConcurrency::new(8);
        let mut held: Vec<Slot> =
            futures::future::join_all((0..8).map(|_| concurrency.acquire())).await;
        let mut answers = Answers::default();
        // A round of 8 transfers with most answers throttled, 8 always in flight but at
        // the end: the limit is halved, and the slots still in use are retired as they
        // come back.
        for i in 0..8 {
            answers.total += 20;
            answers.throttled += 18;
            concurrency.completed(held.remove(0), answers);
            if i < 7 {
                held.push(concurrency.acquire().await);
            }
        }
        assert_eq!((concurrency.limit(), concurrency.lowest()), (4, 4));
        assert_eq!(concurrency.lowered(), Some(4));
        assert_eq!(concurrency.slots.available_permits(), 0);
        drop(held);
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
