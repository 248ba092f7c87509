//! Counts the words in every object under a prefix of a store.
//!
//! Parameters:
//!
//! | name     | default                  | meaning                          |
//! |----------|--------------------------|----------------------------------|
//! | `store`  | `data`                   | label of the store to read       |
//! | `prefix` | `""` (everything)        | which objects to count           |
//! | `output` | `word-count/summary.json`| key the summary is written to    |
//! | `mode`   | `""` (one run)           | `map` or `reduce`, see below     |
//!
//! Objects are read whole with several requests in flight
//! ([`Store::read_many`]: the host overlaps the reads with the counting); one
//! over the host's limit for a whole read is streamed instead, so objects of
//! any size use bounded memory. The summary is written to `output` (which is skipped if it lies under the
//! prefix) and returned as the run's output:
//!
//! ```json
//! {"objects": 2, "lines": 3, "words": 7, "bytes": 35, "top": [["the", 2], ["cat", 1]]}
//! ```
//!
//! A word is a maximal run of bytes other than ASCII whitespace, compared
//! exactly (case-sensitive, not UTF-8-normalised). `lines` counts `\n` bytes
//! plus one for a last line without one. `top` holds the ten most frequent
//! words, most frequent first, ties in byte order. Words longer than
//! [`MAX_TRACKED_WORD`] bytes count towards `words` but are not ranked, so a
//! hostile object cannot make the frequency table huge one word at a time.
//!
//! # As a workflow's map and reduce steps
//!
//! With `mode = map` the task is a workflow `map` step's task: its input is
//! a split ([`Split`]), whose objects it counts and returns as a
//! [`Partial`] (every word's count, so that nothing is lost to `top`). With
//! `mode = reduce` its input is the map step's output, the array of every
//! split's `Partial`, which it merges into the same summary one run over
//! the whole prefix gives, and writes to `output`:
//!
//! ```json
//! {"steps": [
//!   {"name": "count", "map": {"store": "data", "prefix": "logs/", "max_split_bytes": 1048576},
//!    "run": {"module": "word-count", "params": {"mode": "map"}, "grants": {"objects": ["data"]}}},
//!   {"name": "total", "depends_on": ["count"],
//!    "run": {"module": "word-count", "params": {"mode": "reduce"}, "grants": {"objects": ["data"]}}}
//! ]}
//! ```
//!
//! Objects are never cut into byte ranges (the step does not declare
//! `ranges`), as a word or a line could straddle the cut.
//!
//! The counting itself ([`Counter`], [`count_words`]) is plain Rust, usable
//! and benchmarkable natively.

mod counter;

use caisson_sdk::map::Split;
use caisson_sdk::objects::Store;
use caisson_sdk::{Context, Error, Result, info, log, params};

pub use counter::{Counter, MAX_TRACKED_WORD, Partial, Summary, TOP, count_words};

#[caisson_sdk::task]
fn run(input: Vec<u8>) -> Result<Vec<u8>> {
    match params::get_or("mode", "").as_str() {
        "" => Ok(serde_json::to_vec(&count_prefix()?)?),
        "map" => Ok(serde_json::to_vec(&count_split(&Split::from_json(
            &input,
        )?)?)?),
        "reduce" => Ok(serde_json::to_vec(&merge(&input)?)?),
        other => Err(Error::InvalidInput(format!(
            "param mode is {other:?}: use map, reduce or nothing"
        ))),
    }
}

/// Counts one object as `read_many` gave it: whole, or, when it was too
/// large to read whole, streamed.
fn count_object(
    counter: &mut Counter,
    store: &Store,
    key: &str,
    data: Result<Vec<u8>>,
) -> Result<()> {
    match data {
        Ok(data) => {
            counter.feed(&data);
            counter.end_object();
        }
        Err(Error::TooLarge(_)) => {
            let reader = store
                .reader(key)
                .with_context(|| format!("reading {key}"))?;
            counter
                .count_reader(reader)
                .with_context(|| format!("reading {key}"))?;
        }
        Err(e) => return Err(e.context(format!("reading {key}"))),
    }
    Ok(())
}

/// `mode = map`: the counts of one split's objects.
fn count_split(split: &Split) -> Result<Partial> {
    let store = Store::open(&split.store)?;
    let mut counter = Counter::new();
    for (piece, data) in split.read()? {
        count_object(&mut counter, &store, &piece.key, data)?;
    }
    info!(
        "split {}: {} objects, {} bytes",
        split.index,
        split.objects.len(),
        split.bytes()
    );
    Ok(counter.partial())
}

/// `mode = reduce`: every split's counts merged into one summary.
fn merge(input: &[u8]) -> Result<Summary> {
    let partials: Vec<Partial> = serde_json::from_slice(input)
        .map_err(|e| Error::InvalidInput(format!("the input is not the map step's counts: {e}")))?;
    let mut counter = Counter::new();
    for partial in &partials {
        counter.merge(partial).map_err(Error::InvalidInput)?;
    }
    let summary = counter.summary(TOP);
    let label = params::get_or("store", "data");
    let output = params::get_or("output", "word-count/summary.json");
    Store::open(&label)?.put(&output, serde_json::to_vec(&summary)?)?;
    info!(
        "{} words in {} objects from {} splits",
        summary.words,
        summary.objects,
        partials.len()
    );
    Ok(summary)
}

/// One run over the whole prefix.
fn count_prefix() -> Result<Summary> {
    let label = params::get_or("store", "data");
    let prefix = params::get_or("prefix", "");
    let output = params::get_or("output", "word-count/summary.json");
    let store = Store::open(&label)?;

    // List first so that progress has a total. Metadata is small; the
    // objects themselves are read below.
    let keys = store
        .list(&prefix)
        .filter(|m| m.as_ref().map_or(true, |m| m.key != output))
        .map(|m| m.map(|m| m.key))
        .collect::<Result<Vec<_>>>()?;
    info!(
        "counting {} objects under {prefix:?} in {label}",
        keys.len()
    );

    let mut counter = Counter::new();
    for (i, (key, data)) in store.read_many(&keys)?.enumerate() {
        count_object(&mut counter, &store, &key, data)?;
        log::progress(i as u64 + 1, keys.len() as u64);
    }

    let summary = counter.summary(TOP);
    store.put(&output, serde_json::to_vec(&summary)?)?;
    info!(
        "{} words in {} objects; summary at {output}",
        summary.words, summary.objects
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_across_chunks_and_objects() {
        let mut c = Counter::new();
        for chunk in [&b"a b"[..], b"b\n", b"", b"c"] {
            c.feed(chunk);
        }
        c.end_object();
        c.feed(b"\n\n");
        c.end_object();
        let s = c.summary(TOP);
        assert_eq!((s.objects, s.lines, s.words, s.bytes), (2, 4, 3, 8));
        assert_eq!(s.top, [("a".into(), 1), ("bb".into(), 1), ("c".into(), 1)]);
    }

    #[test]
    fn long_words_are_counted_not_ranked() {
        let mut data = vec![b'x'; MAX_TRACKED_WORD + 1];
        data.extend_from_slice(b" y");
        let s = count_words(&data);
        assert_eq!(s.words, 2);
        assert_eq!(s.top, [("y".into(), 1)]);
    }

    #[test]
    fn every_chunking_counts_the_same() {
        // Words of exactly MAX_TRACKED_WORD bytes and one byte more, cut at
        // every point: a word cut by a chunk's end is the only one copied.
        let tracked = "a".repeat(MAX_TRACKED_WORD);
        let untracked = "b".repeat(MAX_TRACKED_WORD + 1);
        // Control bytes that are not whitespace (\x01, \x1f) are part of
        // words; \x0c is whitespace; bytes of 0x80 and more are not.
        let text = format!(
            " x {tracked}\ty\n\n{untracked} {tracked} z\r\nx\x0c\x01\x1f\u{e9} {untracked}"
        );
        let text = text.as_bytes();
        let whole = count_words(text);
        assert_eq!((whole.lines, whole.words), (4, 9));
        assert_eq!(
            whole.top,
            [
                (tracked.clone(), 2),
                ("x".into(), 2),
                ("\u{1}\u{1f}\u{e9}".into(), 1),
                ("y".into(), 1),
                ("z".into(), 1)
            ]
        );
        for step in [1, 2, 3, 7, 255, 256, 257] {
            let mut c = Counter::new();
            for chunk in text.chunks(step) {
                c.feed(chunk);
            }
            c.end_object();
            assert_eq!(c.summary(TOP), whole, "chunks of {step} bytes");
        }
    }

    #[test]
    fn merged_partials_equal_one_count() {
        let objects: [&[u8]; 4] = [b"the cat the", b"dog\n\xff\xfe cat", b"", b"the end\n"];
        let mut one = Counter::new();
        for o in objects {
            one.feed(o);
            one.end_object();
        }
        let mut merged = Counter::new();
        for half in objects.chunks(2) {
            let mut c = Counter::new();
            for o in half {
                c.feed(o);
                c.end_object();
            }
            let json = serde_json::to_vec(&c.partial()).unwrap();
            merged
                .merge(&serde_json::from_slice(&json).unwrap())
                .unwrap();
        }
        assert_eq!(merged.summary(TOP), one.summary(TOP));
        assert_eq!(merged.partial(), one.partial());
    }

    #[test]
    fn empty() {
        assert_eq!(
            count_words(b""),
            Summary {
                objects: 1,
                ..Summary::default()
            }
        );
    }
}
