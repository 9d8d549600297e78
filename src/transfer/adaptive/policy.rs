//! When to change the number of transfers in flight: once per round, from the share of
//! throttled answers in it, and only for throttling that follows the limit.
//!
//! A round ends when as many transfers as the limit have completed; after a cut, only
//! transfers started since count, so a round judges the limit it ran at. A round with
//! throttled answers is judged once it has `MIN_ANSWERS` answers.
//!
//! Throttling comes in two kinds that one round's share cannot tell apart. A rate limit (S3
//! throttling a prefix) refuses the more, the faster it is asked, so fewer transfers lower
//! its share. Scattered throttling (a server refusing one request in ten whatever the rate)
//! keeps its share at any concurrency, and lowering the limit for it only slows the run:
//! halving on every throttled answer drives the limit to 1 within seconds. The SDK's backoff
//! blurs the one into the other: refused transfers sleep in their slots, so seven times too
//! many transfers against a rate limit (64 where 9 would do) see a share of about 20 %, not
//! far from what scattered throttling may show, while the sleepers and the few transfers
//! refused again and again hold the run back.
//!
//! So the policy asks the server. A round whose share is clearly above the background (the
//! share known not to follow the limit; none at first) is followed by one more round at the
//! same limit, a fair sample (the round that crossed the line was picked for being high),
//! and then by a round at half the limit with as many answers. If the share fell by more
//! than chance explains, the throttling follows the limit: the cut stays, and later rounds
//! over the line cut by their excess at once while the limit is within the range the
//! comparison covered. If it did not fall, the limit goes back and that share becomes the
//! background, unless it is over `MAX_BACKGROUND`. Rounds within `RAISE_WITHIN` of the
//! background add a slot, up to `--threads`, and the background follows the rounds under
//! the line, so that it fades once scattered throttling stops. The SDK retries each
//! throttled request either way; this decides only how many transfers run at once.

/// Answers a round with throttled answers needs before it is judged: at a limit of 4, four
/// transfers' answers are too few to tell 10 % from 30 %.
const MIN_ANSWERS: u64 = 200;

/// How many standard errors a round's share must exceed the background by to be looked
/// at closer: one chance in 160 that a round of scattered throttling does.
const SIGNIFICANT: f64 = 2.5;

/// How many standard errors the share must fall by when the limit is halved for the cut
/// to stay: one chance in 740 that the same share measured twice differs by this much.
/// Stricter than `SIGNIFICANT`, since a cut kept wrongly lets the rounds after it cut
/// again, while a rate limit shows a fall far larger than this.
const SIGNIFICANT_FALL: f64 = 3.0;

/// A round's share must exceed the background by at least this much to be over the line,
/// so that at a rate limit a few refusals per round are let be.
const MIN_EXCESS: f64 = 0.02;

/// A round whose share is under the background plus this adds a slot.
const RAISE_WITHIN: f64 = 0.02;

/// The highest share taken for a background: a server refusing more than this is treated
/// as a rate limit whatever the comparison says, since running through it at full
/// concurrency spends more requests on refusals than on work (and the comparison is
/// weakest there, where few answers get through).
const MAX_BACKGROUND: f64 = 0.5;

/// Each round not over the line brings the background this fraction of the way to the
/// round's share: it fades within a few dozen rounds once scattered throttling stops, and
/// follows it up as well as down, so that it stays the mean (a background that only fell
/// would sink to the lowest rounds' share, and ordinary rounds would cross the line).
const BACKGROUND_FADE: f64 = 1.0 / 8.0;

/// The run's answers so far, as the request interceptor counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answers {
    pub total: u64,
    /// Of those, 503 SlowDown and 429.
    pub throttled: u64,
}

impl Answers {
    fn since(self, start: Answers) -> Answers {
        Answers {
            total: self.total.saturating_sub(start.total),
            throttled: self.throttled.saturating_sub(start.throttled),
        }
    }

    fn share(self) -> f64 {
        self.throttled as f64 / self.total.max(1) as f64
    }
}

/// What the next round is for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Next {
    /// Judging the limit.
    Judge,
    /// Measuring the share at this limit, to compare a round at half of it with.
    Measure,
    /// Telling whether halving `before` lowered the share `reference` had.
    Compare { before: usize, reference: Answers },
}

/// The limit and the round that will judge it. Nothing here waits or counts slots, so
/// tests drive it with made-up answers.
#[derive(Debug)]
pub(super) struct Policy {
    max: usize,
    pub(super) limit: usize,
    /// Cuts so far. A transfer started before the last cut ran beside more transfers
    /// than the limit now allows, so it does not count towards the round judging it.
    pub(super) cuts: u64,
    /// Transfers of the current generation completed in this round.
    completed: usize,
    /// The run's answers when this round began.
    began: Answers,
    /// The share of throttled answers that halving the limit did not lower.
    background: f64,
    /// Limits between which the share is taken to follow the limit: from the limit a
    /// halving that lowered the share started at down to a quarter of it (the half it was
    /// seen at, and one more halving's worth).
    follows: Option<(usize, usize)>,
    next: Next,
}

impl Policy {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            limit: max,
            cuts: 0,
            completed: 0,
            began: Answers::default(),
            background: 0.0,
            follows: None,
            next: Next::Judge,
        }
    }

    /// A transfer started after `generation` cuts has completed and the run has had
    /// `answers`; returns the limit from now on.
    pub(super) fn completed(&mut self, generation: u64, answers: Answers) -> usize {
        if generation == self.cuts {
            self.completed += 1;
        }
        let round = answers.since(self.began);
        // A round at half the limit is compared with one at the whole: it needs as many
        // answers, quiet or not, for the comparison to be as sure.
        let needed = match self.next {
            Next::Compare { reference, .. } => reference.total,
            _ if round.throttled > 0 => MIN_ANSWERS,
            _ => 0,
        };
        if self.completed < self.limit || round.total < needed {
            return self.limit;
        }
        self.began = answers;
        self.completed = 0;
        match std::mem::replace(&mut self.next, Next::Judge) {
            Next::Judge => self.judge(round),
            Next::Measure if round.throttled > 0 => {
                let before = self.limit;
                self.cut_to(before / 2);
                self.next = Next::Compare {
                    before,
                    reference: round,
                };
            }
            // Throttling stopped while measuring: nothing to tell apart.
            Next::Measure => {}
            Next::Compare { before, reference } => self.compare(before, reference, round),
        }
        self.limit
    }

    fn judge(&mut self, round: Answers) {
        let share = round.share();
        let error = (self.background * (1.0 - self.background) / round.total.max(1) as f64).sqrt();
        let excess = share - self.background;
        if excess <= (SIGNIFICANT * error).max(MIN_EXCESS) {
            if excess < RAISE_WITHIN {
                self.limit = (self.limit + 1).min(self.max);
            }
            self.background += (share - self.background) * BACKGROUND_FADE;
            return;
        }
        match self.follows {
            Some((low, high)) if low < self.limit && self.limit <= high => {
                let kept = (self.limit as f64 * (1.0 - excess)) as usize;
                self.cut_to(kept.max(self.limit / 2).max(low));
            }
            _ if self.limit > 1 => self.next = Next::Measure,
            _ => {}
        }
    }

    /// After a round at half of `before`: keeps the cut if the share fell by more than
    /// chance explains, or is too high to run through, and otherwise goes back and takes
    /// the share as the background.
    fn compare(&mut self, before: usize, reference: Answers, halved: Answers) {
        let total = reference.total + halved.total;
        let pooled = (reference.throttled + halved.throttled) as f64 / total as f64;
        let error = (pooled
            * (1.0 - pooled)
            * (1.0 / reference.total as f64 + 1.0 / halved.total.max(1) as f64))
            .sqrt();
        let fell = reference.share() - halved.share() > SIGNIFICANT_FALL * error;
        if fell || pooled > MAX_BACKGROUND {
            self.follows = Some((before / 4, before));
        } else {
            self.background = pooled;
            self.follows = None;
            self.limit = before;
        }
    }

    fn cut_to(&mut self, limit: usize) {
        let limit = limit.max(1);
        if limit < self.limit {
            self.limit = limit;
            self.cuts += 1;
        }
    }
}

#[cfg(test)]
impl Policy {
    /// A policy that has seen halving lower the share at every limit, so that a round
    /// over the line cuts at once.
    pub(super) fn knowing_the_share_follows(mut self) -> Self {
        self.follows = Some((0, self.max));
        self
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

    /// A run of made-up transfers, each retried after every throttled answer.
    struct Run {
        policy: Policy,
        answers: Answers,
        dice: Dice,
    }

    impl Run {
        fn new(max: usize, seed: u64) -> Self {
            Self {
                policy: Policy::new(max),
                answers: Answers::default(),
                dice: Dice(seed),
            }
        }

        /// Completes `transfers` transfers at the policy's limit, with `share(limit)` the
        /// chance that an answer is throttling. Returns the limit after each completion.
        fn transfers(&mut self, transfers: usize, share: impl Fn(usize) -> f64) -> Vec<usize> {
            (0..transfers)
                .map(|_| {
                    let p = share(self.policy.limit);
                    loop {
                        self.answers.total += 1;
                        if self.dice.roll() >= p {
                            break;
                        }
                        self.answers.throttled += 1;
                    }
                    let generation = self.policy.cuts;
                    self.policy.completed(generation, self.answers)
                })
                .collect()
        }
    }

    fn mean(limits: &[usize]) -> f64 {
        limits.iter().sum::<usize>() as f64 / limits.len() as f64
    }

    /// A server that serves `allowed` transfers' requests at once and refuses the rest: at
    /// a limit of 40 against 10, three answers in four are throttling.
    fn rate_limit(allowed: usize) -> impl Fn(usize) -> f64 {
        move |limit| (1.0 - allowed as f64 / limit as f64).max(0.0)
    }

    /// How busy such a server was kept (1 when the limit never fell below what it allows),
    /// and how many transfers it was asked to serve, as a multiple of what it allows.
    fn busy_and_asked(limits: &[usize], allowed: usize) -> (f64, f64) {
        let busy: Vec<usize> = limits.iter().map(|&l| l.min(allowed)).collect();
        (mean(&busy) / allowed as f64, mean(limits) / allowed as f64)
    }

    #[test]
    fn scattered_throttling_does_not_collapse_the_limit() {
        for (max, seed) in [(64, 1), (100, 2), (16, 3), (4, 4)] {
            let mut run = Run::new(max, seed);
            // One answer in ten throttled, whatever the concurrency.
            let limits = run.transfers(50_000, |_| 0.10);
            let lowest = *limits.iter().min().unwrap();
            assert!(lowest * 4 >= max, "{max}: down to {lowest}");
            assert!(
                mean(&limits) > 0.75 * max as f64,
                "{max}: {}",
                mean(&limits)
            );
            let share = run.answers.share();
            assert!((0.09..0.11).contains(&share), "{share}");
        }
    }

    #[test]
    fn scattered_throttling_rarely_takes_the_limit_below_half() {
        // Runs as short as a restore of 2,000 files at 32 transfers, over many seeds: a
        // cut kept wrongly (the share falling by chance) is the only way below half, and
        // the rounds it lets cut again the only way below a quarter.
        let runs: u64 = 1_000;
        let lowest: Vec<usize> = (0..runs)
            .map(|seed| {
                let mut run = Run::new(32, 1_000 + seed);
                let limits = run.transfers(2_000, |_| 0.10);
                *limits.iter().min().unwrap()
            })
            .collect();
        let below = |limit| lowest.iter().filter(|&&l| l < limit).count() as u64;
        assert!(
            below(16) * 100 <= runs,
            "{} of {runs} below half",
            below(16)
        );
        assert!(
            below(8) * 500 <= runs,
            "{} of {runs} below a quarter",
            below(8)
        );
    }

    #[test]
    fn halving_that_does_not_lower_the_share_is_taken_back() {
        let mut run = Run::new(64, 9);
        let limits = run.transfers(2_000, |_| 0.10);
        // One round to measure, one at half the limit, and the limit is back.
        assert_eq!(limits.iter().min(), Some(&32));
        assert_eq!(run.policy.limit, 64);
        assert!((0.07..0.13).contains(&run.policy.background));
        assert_eq!(run.policy.follows, None);
    }

    #[test]
    fn a_rate_limit_brings_the_limit_down_to_what_it_allows() {
        let mut run = Run::new(64, 7);
        let limits = run.transfers(20_000, rate_limit(10));
        // A few rounds bring it down...
        let down = limits.iter().position(|&l| l <= 14).unwrap();
        assert!(down < 1_000, "after {down} transfers");
        // ...and it stays where the server is kept busy without being asked far more.
        let (busy, asked) = busy_and_asked(&limits[down..], 10);
        assert!(busy > 0.97 && asked < 1.4, "{busy} {asked}");
        assert!(limits[down..].iter().all(|&l| l >= 5));
    }

    #[test]
    fn a_rate_limit_above_scattered_throttling_is_still_found() {
        let mut run = Run::new(100, 11);
        let rate_limit = rate_limit(20);
        let limits = run.transfers(20_000, |limit| 0.10 + 0.90 * rate_limit(limit));
        let (busy, asked) = busy_and_asked(&limits[2_000..], 20);
        assert!(busy > 0.65 && asked < 1.2, "{busy} {asked}");
    }

    #[test]
    fn the_limit_recovers_when_throttling_stops() {
        let mut run = Run::new(64, 5);
        run.transfers(2_000, rate_limit(4));
        let from = run.policy.limit;
        assert!(from <= 12, "{from}");
        // Quiet: one slot more per round of `limit` transfers, up to the maximum (give or
        // take the rounds under way when throttling stopped).
        let limits = run.transfers(3_000, |_| 0.0);
        let back = limits.iter().position(|&l| l == 64).unwrap();
        assert!(back * 10 <= (from..=64).sum::<usize>() * 11, "{back}");
        // What the rate limit showed holds for the limits it was shown at, not here:
        // scattered throttling now does not take the limit down again.
        let limits = run.transfers(10_000, |_| 0.10);
        assert!(limits.iter().all(|&l| l >= 16), "{:?}", limits.iter().min());
    }

    #[test]
    fn a_round_judges_only_transfers_started_at_its_limit() {
        let mut policy = Policy::new(8).knowing_the_share_follows();
        let mut answers = Answers::default();
        // Eight transfers, every other answer throttled: the share is known to follow
        // the limit here, so it is cut by the share at once.
        for _ in 0..8 {
            answers.total += 30;
            answers.throttled += 15;
            policy.completed(0, answers);
        }
        assert_eq!((policy.limit, policy.cuts), (4, 1));
        // The transfers still running from before the cut ran beside eight: however
        // many end, they do not close the round judging four.
        for _ in 0..8 {
            answers.total += 30;
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
        let mut answers = Answers {
            total: 2,
            throttled: 1,
        };
        policy.completed(0, answers);
        answers.total += 1;
        assert_eq!(policy.completed(0, answers), 2, "1 of 3 is no share yet");
        assert_eq!(policy.next, Next::Judge);
        // More transfers, no more throttling: the round's share, 1 in 200, is no reason
        // to look closer.
        for _ in 0..MIN_ANSWERS {
            answers.total += 1;
            policy.completed(0, answers);
        }
        assert_eq!((policy.limit, policy.next), (2, Next::Judge));
    }
}
