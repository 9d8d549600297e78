//! The backlog: jobs the planner has decided on that no worker has taken yet, with
//! objects copied in parts handed out first.
//!
//! The listings arrive in key order, and so would the copies: a large object whose key
//! sorts late (`large-1` after `d00/` to `d99/`) would start once the small ones are
//! done and end the run alone, its parts the only transfers left while the machine
//! idles. Handing out a large job as soon as the planner finds it starts the long copies
//! while small ones fill the other slots. Only the large jump ahead: measured on a
//! restore, handing out every job largest first ran longer and took more CPU than key
//! order, as the first seconds moved only the biggest files and the last only the
//! smallest.
//!
//! Invariant: the backlog holds at most `capacity` jobs, so memory stays bounded
//! whatever the object count (a job is a few hundred bytes); jobs of one kind go in key
//! order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::pin::Pin;

use super::Job;

/// Jobs the backlog holds by default, as rclone's `--max-backlog`: about 3 MiB.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Moves jobs from the planner to the workers until the planner is done and every job
/// is handed out, or the workers are gone: those of `large` bytes or more first, all in
/// key order when `capacity` is 0.
pub async fn hand_out(
    decided: async_channel::Receiver<Job>,
    workers: async_channel::Sender<Job>,
    capacity: usize,
    large: u64,
) {
    let mut waiting = Waiting {
        large,
        ..Waiting::default()
    };
    // The job being handed to a worker. Its send is kept across turns, not started
    // again: dropping it would drop the job.
    let mut handing: Option<Pin<Box<async_channel::Send<'_, Job>>>> = None;
    let mut planning = true;
    loop {
        if handing.is_none() {
            match waiting.pop() {
                Some(job) => handing = Some(Box::pin(workers.send(job))),
                None if planning => {}
                None => return,
            }
        }
        let room = planning && waiting.len() < capacity.max(1);
        tokio::select! {
            // A free worker is served before the listing is read further.
            biased;
            sent = async { handing.as_mut().expect("a job is being handed").await },
                if handing.is_some() => {
                handing = None;
                if sent.is_err() {
                    return;
                }
            }
            job = decided.recv(), if room => match job {
                Ok(job) => waiting.push(job),
                Err(_) => planning = false,
            },
        }
    }
}

/// The jobs waiting, large ones first, each kind in the order they came.
#[derive(Default)]
struct Waiting {
    heap: BinaryHeap<Ranked>,
    arrived: u64,
    large: u64,
}

impl Waiting {
    fn push(&mut self, job: Job) {
        self.arrived += 1;
        self.heap.push(Ranked {
            large: job.source.size >= self.large,
            arrival: self.arrived,
            job,
        });
    }

    fn pop(&mut self) -> Option<Job> {
        self.heap.pop().map(|ranked| ranked.job)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}

struct Ranked {
    large: bool,
    arrival: u64,
    job: Job,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.large
            .cmp(&other.large)
            .then_with(|| other.arrival.cmp(&self.arrival))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Decision;
    use crate::storage::Entry;
    use std::time::Duration;

    fn job(key: &str, size: u64) -> Job {
        Job {
            source: Entry {
                key: key.into(),
                size,
                mtime: std::time::UNIX_EPOCH,
                etag: None,
                skip: None,
                storage_class: None,
                version: None,
            },
            dest: None,
            decision: Decision::Copy(crate::plan::CopyReason::Missing),
        }
    }

    /// Runs the backlog over `jobs` and returns the keys in the order the workers took
    /// them. When the backlog holds them all, the workers take the first only once every
    /// job is decided, the case where its order shows the most.
    async fn order(jobs: &[(&str, u64)], capacity: usize) -> Vec<String> {
        let (decided_tx, decided_rx) = async_channel::bounded(1);
        let (workers_tx, workers_rx) = async_channel::bounded(1);
        let backlog = tokio::spawn(hand_out(decided_rx, workers_tx, capacity, 100));
        let jobs: Vec<Job> = jobs.iter().map(|&(key, size)| job(key, size)).collect();
        let all_first = capacity >= jobs.len();
        let planner = tokio::spawn(async move {
            for job in jobs {
                decided_tx.send(job).await.unwrap();
            }
        });
        if all_first {
            planner.await.unwrap();
        }
        let taken = taken(workers_rx).await;
        backlog.await.unwrap();
        taken
    }

    /// Small and large jobs (100 bytes or more, in these tests) in key order.
    const MIXED: [(&str, u64); 6] = [
        ("a", 1),
        ("b", 5),
        ("c", 100),
        ("d", 300),
        ("e", 99),
        ("f", 100),
    ];

    /// The keys of the jobs the workers take, in order, until the backlog ends.
    async fn taken(workers: async_channel::Receiver<Job>) -> Vec<String> {
        let mut taken = Vec::new();
        while let Ok(job) = workers.recv().await {
            taken.push(job.source.key);
        }
        taken
    }

    #[tokio::test]
    async fn large_jobs_go_ahead_of_the_small_ones_waiting_each_kind_in_key_order() {
        // The first two are handed out before the others come: one in the workers'
        // channel, one waiting for room in it.
        assert_eq!(order(&MIXED, 10).await, ["a", "b", "c", "d", "f", "e"]);
    }

    #[tokio::test]
    async fn without_a_backlog_jobs_go_in_key_order() {
        assert_eq!(order(&MIXED, 0).await, ["a", "b", "c", "d", "e", "f"]);
    }

    #[tokio::test]
    async fn a_full_backlog_stops_taking_jobs_until_one_is_handed_out() {
        let (decided_tx, decided_rx) = async_channel::bounded(1);
        let (workers_tx, workers_rx) = async_channel::bounded(1);
        let backlog = tokio::spawn(hand_out(decided_rx, workers_tx, 3, 100));
        // One job in the workers' channel, one waiting for room in it, three in the
        // backlog and one in the planner's channel: the seventh waits.
        for i in 0..6 {
            decided_tx.send(job(&format!("k{i}"), i)).await.unwrap();
        }
        let seventh = decided_tx.send(job("k6", 6));
        tokio::pin!(seventh);
        let waited = tokio::time::timeout(Duration::from_millis(50), &mut seventh).await;
        assert!(waited.is_err(), "the backlog took more jobs than it holds");
        assert_eq!(workers_rx.recv().await.unwrap().source.key, "k0");
        tokio::time::timeout(Duration::from_secs(5), seventh)
            .await
            .expect("a job handed out makes room for the next")
            .unwrap();
        drop(decided_tx);
        let rest = taken(workers_rx).await;
        backlog.await.unwrap();
        assert_eq!(rest, ["k1", "k2", "k3", "k4", "k5", "k6"]);
    }

    #[tokio::test]
    async fn gone_workers_end_the_backlog_and_so_the_planning() {
        let (decided_tx, decided_rx) = async_channel::bounded(1);
        let (workers_tx, workers_rx) = async_channel::bounded(1);
        let backlog = tokio::spawn(hand_out(decided_rx, workers_tx, 10, 100));
        decided_tx.send(job("a", 1)).await.unwrap();
        decided_tx.send(job("b", 1)).await.unwrap();
        drop(workers_rx);
        backlog.await.unwrap();
        assert!(decided_tx.send(job("c", 1)).await.is_err());
    }
}
