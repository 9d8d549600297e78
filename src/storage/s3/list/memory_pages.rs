//! Pages answered from memory as S3 answers them, for the tests of the parallel listing:
//! keys in byte order, Prefix, StartAfter, the delimiter, MaxKeys and IsTruncated, and
//! Garage's empty answer to a StartAfter before the prefix. A request waits until the test
//! lets its round through, so a test counts round trips and requests in flight as a
//! server with a fixed latency would see them, without a clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::pages::Pages;
use super::span::{entry, Item, Page, PageRequest};
use super::window::list_in_parallel;
use crate::storage::{KeyRange, ListError, ListItem, LISTING_BUFFER};

pub(super) struct MemoryPages {
    keys: Vec<String>,
    /// Answers that would hold this object fail.
    failing: Option<String>,
    rounds: Arc<watch::Sender<u64>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    waiting: AtomicUsize,
}

/// What a listing yielded and what it took.
pub(super) struct Run {
    pub keys: Vec<String>,
    pub error: Option<ListError>,
    pub requests: usize,
    /// Round trips: how long the listing took at a fixed latency per request.
    pub rounds: usize,
    pub most_in_flight: usize,
}

impl MemoryPages {
    pub fn new(keys: impl IntoIterator<Item = String>) -> Self {
        let mut keys: Vec<String> = keys.into_iter().collect();
        keys.sort_unstable();
        keys.dedup();
        Self {
            keys,
            failing: None,
            rounds: Arc::new(watch::channel(0).0),
            counts: Arc::default(),
        }
    }

    pub fn failing_at(mut self, key: &str) -> Self {
        self.failing = Some(key.to_owned());
        self
    }

    /// The keys of `range`, as a sequential listing yields them.
    pub fn expected(&self, range: &KeyRange) -> Vec<String> {
        self.keys
            .iter()
            .filter(|key| range.contains(key))
            .cloned()
            .collect()
    }

    fn answer(&self, request: &PageRequest) -> Page {
        let prefix = request.prefix.as_str();
        let nothing = Page {
            items: Vec::new(),
            truncated: false,
        };
        let start = match request.start_after.as_deref() {
            Some(after) if after < prefix => return nothing,
            Some(after) => self.keys.partition_point(|key| key.as_str() <= after),
            None => self.keys.partition_point(|key| key.as_str() < prefix),
        };
        let max_keys = request.max_keys.map_or(1_000, |max| max as usize);
        let mut items = Vec::new();
        let mut keys = self.keys[start..]
            .iter()
            .take_while(|key| key.starts_with(prefix))
            .peekable();
        while let Some(key) = keys.peek() {
            if items.len() == max_keys {
                return Page {
                    items,
                    truncated: true,
                };
            }
            let below = request
                .delimited
                .then(|| key[prefix.len()..].find('/'))
                .flatten();
            match below {
                Some(slash) => {
                    let common = key[..prefix.len() + slash + 1].to_owned();
                    while keys.next_if(|key| key.starts_with(&common)).is_some() {}
                    items.push(Item::Prefix(common));
                }
                None => items.push(Item::Entry(entry(keys.next().expect("peeked")))),
            }
        }
        Page {
            items,
            truncated: false,
        }
    }
}

impl Pages for MemoryPages {
    async fn page(&self, request: PageRequest) -> Result<Page, ListError> {
        self.counts.requests.fetch_add(1, Ordering::SeqCst);
        self.counts.waiting.fetch_add(1, Ordering::SeqCst);
        let mut round = self.rounds.subscribe();
        let _ = round.changed().await;
        self.counts.waiting.fetch_sub(1, Ordering::SeqCst);
        let page = self.answer(&request);
        let fails = self.failing.as_deref().is_some_and(|failing| {
            page.items
                .iter()
                .any(|item| matches!(item, Item::Entry(entry) if entry.key == failing))
        });
        match fails {
            true => Err(ListError::Fatal("the server failed".into())),
            false => Ok(page),
        }
    }
}

/// Lists `range` of `pages` with `width` requests at once, one round of requests at a time.
pub(super) async fn list_in_rounds(pages: MemoryPages, width: usize, range: KeyRange) -> Run {
    let (rounds, counts) = (pages.rounds.clone(), pages.counts.clone());
    let (tx, mut rx) = mpsc::channel(LISTING_BUFFER);
    tokio::spawn(list_in_parallel(pages, width, range, tx));
    let received: Arc<Mutex<Vec<ListItem>>> = Arc::default();
    let collect = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                received.lock().unwrap().push(item);
            }
        })
    };
    let progress = || {
        (
            received.lock().unwrap().len(),
            counts.requests.load(Ordering::SeqCst),
            counts.waiting.load(Ordering::SeqCst),
        )
    };
    let (mut round_trips, mut most_in_flight) = (0, 0);
    loop {
        // Let every task run until none moves: then the listing waits on its requests.
        loop {
            let before = progress();
            for _ in 0..32 {
                tokio::task::yield_now().await;
            }
            if progress() == before {
                break;
            }
        }
        if collect.is_finished() {
            break;
        }
        let waiting = counts.waiting.load(Ordering::SeqCst);
        assert!(waiting > 0, "the listing waits on nothing");
        most_in_flight = most_in_flight.max(waiting);
        round_trips += 1;
        rounds.send_modify(|round| *round += 1);
    }
    let items = std::mem::take(&mut *received.lock().unwrap());
    let mut run = Run {
        keys: Vec::new(),
        error: None,
        requests: counts.requests.load(Ordering::SeqCst),
        rounds: round_trips,
        most_in_flight,
    };
    for item in items {
        assert!(run.error.is_none(), "an item after the error");
        match item {
            Ok(entry) => run.keys.push(entry.key),
            Err(err) => run.error = Some(err),
        }
    }
    run
}
