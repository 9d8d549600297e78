//! The parallel listing: a window of spans in key order, at most `width` ListObjectsV2
//! requests in flight, entries forwarded strictly in order.
//!
//! One task owns the window, so no span is shared: it asks for pages, cuts each answer to
//! its span and forwards the front span's entries. Requests go to the spans nearest the
//! front first, and a span further on is asked only while the entries held ahead of the
//! output stay within a budget of `width` × `SPAN_BUFFER`, so memory is bounded by the
//! width, not by the number of keys. The front span may always ask: the output waits on it.
//!
//! The first page is asked plainly (a small listing costs one request); the rest is
//! listed with delimiter `/`, and each common prefix its pages return becomes a span of
//! its own, listed at once with the others. Where keys come without common prefixes
//! (a flat key space), a span whose full page shows there is more is cut after that page
//! (`split`) whenever fewer than `width` spans are ready to be asked, so the listing's
//! parallelism does not depend on the layout of the keys.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::pages::Pages;
use super::span::{Item, Lower, Page, Span};
use super::split::{split, Sample};
use crate::storage::{KeyRange, ListError, ListItem};

/// Keys a ListObjectsV2 page holds at most.
const PAGE: usize = 1_000;
/// Entries one span holds ahead of the output at most.
const SPAN_BUFFER: usize = 5_000;
/// Spans in the window at most; a delimited page (up to `PAGE` common prefixes and as many
/// runs of keys between them) is asked only while they fit.
const SPAN_LIMIT: usize = 4_000;

type Response = Pin<Box<dyn Future<Output = (u64, Result<Page, ListError>)> + Send>>;

/// Lists `range` from `pages` into `tx`, in key order, with up to `width` requests at once.
pub(super) async fn list_in_parallel<P: Pages>(
    pages: P,
    width: usize,
    range: KeyRange,
    tx: mpsc::Sender<ListItem>,
) {
    let mut window = Window {
        pages: Arc::new(pages),
        width: width.max(1),
        slots: VecDeque::from([Slot::new(0, Span::of_range(&range))]),
        next_id: 1,
        buffered: 0,
        in_flight: FuturesUnordered::new(),
    };
    window.slots[0].opening = true;
    window.run(tx).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// It has more to list and no request out.
    Idle,
    Requesting,
    /// Listed: what is left of it is its buffer.
    Done,
}

struct Slot {
    /// Names the slot for the answer to its request, as slots before it come and go.
    id: u64,
    span: Span,
    state: State,
    /// Entries listed and not yet forwarded (and, last, the error that ended the listing).
    buffer: VecDeque<ListItem>,
    /// The first page of the whole listing: asked plainly, the rest with the delimiter.
    opening: bool,
    /// What its last page, a full one, tells about the keys after it: it may be split.
    sample: Option<Sample>,
}

impl Slot {
    fn new(id: u64, span: Span) -> Self {
        Self {
            id,
            span,
            state: State::Idle,
            buffer: VecDeque::new(),
            opening: false,
            sample: None,
        }
    }
}

struct Window<P> {
    pages: Arc<P>,
    width: usize,
    /// Spans in key order; the front one is being forwarded.
    slots: VecDeque<Slot>,
    next_id: u64,
    /// Entries in all buffers.
    buffered: usize,
    in_flight: FuturesUnordered<Response>,
}

impl<P: Pages> Window<P> {
    async fn run(&mut self, tx: mpsc::Sender<ListItem>) {
        loop {
            if !self.forward_ready(&tx) {
                return;
            }
            self.ask();
            let Some(front) = self.slots.front() else {
                return;
            };
            let front_ready = !front.buffer.is_empty();
            tokio::select! {
                biased;
                Some((id, answer)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.receive(id, answer);
                }
                permit = tx.reserve(), if front_ready => {
                    let Ok(permit) = permit else { return };
                    let item = self.slots[0].buffer.pop_front().expect("front has entries");
                    self.buffered -= 1;
                    let fatal = matches!(item, Err(ListError::Fatal(_)));
                    permit.send(item);
                    if fatal {
                        return;
                    }
                }
                else => {
                    // Nothing to forward and nothing asked: a listing cut short here must
                    // not pass for complete.
                    let stalled = ListError::Fatal("the parallel listing stalled".into());
                    let _ = tx.send(Err(stalled)).await;
                    return;
                }
            }
        }
    }

    /// Forwards what the front spans hold, as far as the channel takes it without waiting.
    /// False when the listing is over: it failed, or nobody reads it any more.
    fn forward_ready(&mut self, tx: &mpsc::Sender<ListItem>) -> bool {
        while let Some(front) = self.slots.front_mut() {
            let Some(item) = front.buffer.pop_front() else {
                if front.state != State::Done {
                    return true;
                }
                self.slots.pop_front();
                continue;
            };
            let fatal = matches!(item, Err(ListError::Fatal(_)));
            match tx.try_send(item) {
                Ok(()) => self.buffered -= 1,
                Err(TrySendError::Full(item)) => {
                    front.buffer.push_front(item);
                    return true;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
            if fatal {
                return false;
            }
        }
        true
    }

    /// Sends requests while fewer than `width` are out, to the spans nearest the front.
    /// While fewer than `width` spans are ready to be asked, the first that may be split
    /// is: one waiting to be asked, or (when nothing else could use a request) one whose
    /// request is out, whose answer is then cut short at its narrowed prefix.
    fn ask(&mut self) {
        while self.in_flight.len() < self.width {
            let ready = (0..self.slots.len())
                .filter(|&i| self.may_ask(i))
                .take(self.width)
                .count();
            if (ready < self.width && self.split_first(State::Idle))
                || (ready == 0 && self.split_first(State::Requesting))
            {
                continue;
            }
            let Some(i) = (0..self.slots.len()).find(|&i| self.may_ask(i)) else {
                return;
            };
            self.send_request(i);
        }
    }

    /// Splits the first span in `state` that has a sample; false if there is none.
    fn split_first(&mut self, state: State) -> bool {
        let Some(i) = self
            .slots
            .iter()
            .position(|slot| slot.state == state && slot.sample.is_some())
        else {
            return false;
        };
        let sample = self.slots[i].sample.take().expect("found with a sample");
        let Some(cut) = split(&self.slots[i].span, &sample) else {
            return true;
        };
        if self.slots.len() + cut.after.len() > SPAN_LIMIT {
            return true;
        }
        self.slots[i].span.prefix = cut.narrowed;
        let after = cut
            .after
            .into_iter()
            .map(|span| self.slot(span, State::Idle))
            .collect();
        self.insert_after(i, after);
        true
    }

    fn may_ask(&self, i: usize) -> bool {
        let slot = &self.slots[i];
        if slot.state != State::Idle || slot.buffer.len() + PAGE > SPAN_BUFFER {
            return false;
        }
        if i == 0 {
            return true;
        }
        if slot.span.delimited && self.slots.len() + 2 * PAGE > SPAN_LIMIT {
            return false;
        }
        self.buffered + (self.in_flight.len() + 1) * PAGE <= self.width * SPAN_BUFFER
    }

    fn send_request(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.state = State::Requesting;
        let (id, request, pages) = (slot.id, slot.span.request(), self.pages.clone());
        self.in_flight
            .push(Box::pin(async move { (id, pages.page(request).await) }));
    }

    fn receive(&mut self, id: u64, answer: Result<Page, ListError>) {
        // A span that is gone went after a failed one: its answer is not needed.
        let Some(i) = self.slots.iter().position(|slot| slot.id == id) else {
            return;
        };
        let page = match answer {
            Ok(page) => page,
            Err(err) => return self.fail(i, err),
        };
        let slot = &mut self.slots[i];
        let span = slot.span.clone();
        let admitted = span.admit(page);
        if std::mem::take(&mut slot.opening) {
            slot.span.delimited = true;
        }
        slot.span.probe = false;
        slot.sample = sample_of(&slot.span, &admitted.items, admitted.next.as_ref());
        // Each common prefix becomes a span of its own, and the entries after it wait in a
        // span already listed (a run); the rest of this span goes on after the last of them.
        let mut after: Vec<Slot> = Vec::new();
        let mut in_run = true;
        for item in admitted.items {
            match item {
                Item::Entry(entry) => {
                    if !in_run {
                        after.push(self.slot(span.clone(), State::Done));
                        in_run = true;
                    }
                    let run = after.last_mut().unwrap_or(&mut self.slots[i]);
                    run.buffer.push_back(Ok(entry));
                    self.buffered += 1;
                }
                Item::Prefix(prefix) => {
                    after.push(self.slot(span.below(prefix), State::Idle));
                    in_run = false;
                }
            }
        }
        if !after.is_empty() {
            self.slots[i].state = State::Done;
            if !in_run {
                after.push(self.slot(span.clone(), State::Done));
            }
        }
        let rest = after.last_mut().unwrap_or(&mut self.slots[i]);
        match admitted.next {
            Some(lower) => {
                rest.span.lower = lower;
                rest.state = State::Idle;
            }
            None => rest.state = State::Done,
        }
        if !after.is_empty() {
            self.insert_after(i, after);
        }
    }

    fn slot(&mut self, span: Span, state: State) -> Slot {
        let mut slot = Slot::new(self.next_id, span);
        slot.state = state;
        self.next_id += 1;
        slot
    }

    fn insert_after(&mut self, i: usize, slots: Vec<Slot>) {
        let tail = self.slots.split_off(i + 1);
        self.slots.extend(slots);
        self.slots.extend(tail);
    }

    /// A failed request ends the listing at its span: the spans before it are listed and
    /// forwarded, then the error, then nothing.
    fn fail(&mut self, i: usize, err: ListError) {
        self.slots.truncate(i + 1);
        let slot = &mut self.slots[i];
        slot.buffer.push_back(Err(err));
        slot.state = State::Done;
        self.buffered = self.slots.iter().map(|slot| slot.buffer.len()).sum();
    }
}

/// The sample a page gives its span, if it may be split after it: a full page of keys,
/// none of them a common prefix, that the span goes on after. A delimited span counts only
/// the keys at its top level (the plain first page may end with some).
fn sample_of(span: &Span, items: &[Item], next: Option<&Lower>) -> Option<Sample> {
    let Some(Lower::After(position)) = next else {
        return None;
    };
    let mut keys = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Entry(entry)
                if span.delimited && entry.key[span.prefix.len()..].contains('/') =>
            {
                keys.clear()
            }
            Item::Entry(entry) => keys.push(entry.key.as_str()),
            Item::Prefix(_) => return None,
        }
    }
    Sample::of(&keys).filter(|sample| sample.last() == position)
}

#[cfg(test)]
mod tests {
    use super::super::memory_pages::{list_in_rounds, MemoryPages};
    use super::*;

    fn flat(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("f{i:07}")).collect()
    }

    fn nested(dirs: usize, each: usize) -> Vec<String> {
        (0..dirs * each)
            .map(|i| format!("d{:02}/f{:04}", i / each, i % each))
            .collect()
    }

    /// Keys of characters that order differently by byte and by name, XML cannot carry,
    /// take several bytes, or sort last, with keys that are prefixes of each other.
    fn tricky(count: usize) -> Vec<String> {
        let alphabet = [
            'a',
            'b',
            '0',
            '1',
            '/',
            '-',
            '.',
            ' ',
            '\u{1}',
            'é',
            '日',
            '\u{10FFFF}',
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut keys: Vec<String> = ["a", "a0", "a\u{1}", "a/", "a/b", "ab", "b", "é"]
            .map(String::from)
            .to_vec();
        while keys.len() < count {
            let len = 1 + (next() % 8) as usize;
            keys.push(
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect(),
            );
        }
        keys
    }

    fn ranges(keys: &[String]) -> Vec<KeyRange> {
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        let (quarter, three) = (sorted.len() / 4, sorted.len() * 3 / 4);
        // A start that is not a key, right after one.
        let start = Some(format!("{}\u{1}", sorted[quarter]));
        let end = Some(sorted[three].clone());
        vec![
            KeyRange::default(),
            KeyRange {
                start: start.clone(),
                end: None,
            },
            KeyRange {
                start: None,
                end: end.clone(),
            },
            KeyRange { start, end },
        ]
    }

    #[tokio::test]
    async fn the_parallel_listing_is_the_sequential_one() {
        for keys in [flat(4_500), nested(40, 60), tricky(3_000)] {
            for range in ranges(&keys) {
                for width in [2, 5, 16] {
                    let pages = MemoryPages::new(keys.clone());
                    let expected = pages.expected(&range);
                    let run = list_in_rounds(pages, width, range.clone()).await;
                    assert!(run.error.is_none(), "{:?}", run.error);
                    assert!(
                        run.keys == expected,
                        "width {width}, {range:?}: {} keys listed, {} expected",
                        run.keys.len(),
                        expected.len()
                    );
                    assert!(run.most_in_flight <= width, "{range:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn common_prefixes_are_listed_at_once() {
        // The first page holds 20 directories of 50; the delimited page after it names the
        // other 80, each listed with one request, 16 at a time.
        let run = list_in_rounds(MemoryPages::new(nested(100, 50)), 16, KeyRange::default()).await;
        assert_eq!(run.keys.len(), 5_000);
        assert_eq!(run.requests, 1 + 1 + 80);
        assert_eq!((run.most_in_flight, run.rounds), (16, 2 + 5));
        let sequential =
            list_in_rounds(MemoryPages::new(nested(100, 50)), 1, KeyRange::default()).await;
        assert_eq!(sequential.rounds, 82);
    }

    /// Keys without common prefixes, of the layouts buckets hold.
    fn flat_layouts(count: usize) -> Vec<(&'static str, Vec<String>)> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let words = ["alpha", "Beta", "gamma", "delta", "Omega"];
        vec![
            ("numbered", flat(count)),
            (
                "hashes",
                (0..count).map(|_| format!("{:016x}", random())).collect(),
            ),
            (
                "logs",
                (1..=count).map(|i| format!("app-{i:06}.log")).collect(),
            ),
            (
                "words",
                (0..count)
                    .map(|i| format!("{}{}", words[i % 5], i * 7919 % 100_003))
                    .collect(),
            ),
            (
                "one directory",
                (0..count).map(|i| format!("big/f{i:07}")).collect(),
            ),
        ]
    }

    #[tokio::test]
    async fn a_flat_key_space_is_listed_in_parallel() {
        // Sequentially, 100 round trips of one request each.
        for (layout, keys) in flat_layouts(100_000) {
            let pages = MemoryPages::new(keys);
            let expected = pages.expected(&KeyRange::default());
            let run = list_in_rounds(pages, 16, KeyRange::default()).await;
            assert!(run.keys == expected, "{layout}: {} keys", run.keys.len());
            assert_eq!(run.most_in_flight, 16, "{layout}");
            assert!(run.rounds <= 25, "{layout}: {} round trips", run.rounds);
            assert!(run.requests <= 300, "{layout}: {} requests", run.requests);
        }
        let run = list_in_rounds(MemoryPages::new(flat(100_000)), 16, KeyRange::default()).await;
        assert!(
            run.rounds <= 12 && run.requests <= 150,
            "{} round trips, {} requests",
            run.rounds,
            run.requests
        );
        let wide = list_in_rounds(MemoryPages::new(flat(100_000)), 64, KeyRange::default()).await;
        assert!(wide.rounds <= 5, "{} round trips", wide.rounds);
    }

    #[tokio::test]
    async fn a_range_of_a_flat_key_space_is_listed_in_parallel_and_no_further() {
        let keys = flat(100_000);
        let range = KeyRange {
            start: Some(keys[20_000].clone()),
            end: Some(keys[60_000].clone()),
        };
        let run = list_in_rounds(MemoryPages::new(keys.clone()), 16, range).await;
        assert!(run.keys == keys[20_000..60_000], "{} keys", run.keys.len());
        assert!(run.rounds <= 10, "{} round trips", run.rounds);
        assert!(run.requests <= 70, "{} requests", run.requests);
    }

    #[tokio::test]
    async fn a_small_listing_costs_one_request() {
        let run = list_in_rounds(MemoryPages::new(nested(10, 50)), 16, KeyRange::default()).await;
        assert_eq!((run.keys.len(), run.requests), (500, 1));
    }

    #[tokio::test]
    async fn a_failed_request_ends_the_listing_after_the_keys_before_it() {
        let keys = nested(100, 50);
        let run = list_in_rounds(
            MemoryPages::new(keys.clone()).failing_at("d50/f0000"),
            16,
            KeyRange::default(),
        )
        .await;
        assert!(matches!(run.error, Some(ListError::Fatal(_))));
        assert!(run.keys == keys[..50 * 50], "{} keys", run.keys.len());
    }
}
