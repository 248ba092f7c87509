//! Counts the words in every object under a prefix of a store.
//!
//! Parameters:
//!
//! | name     | default                  | meaning                          |
//! |----------|--------------------------|----------------------------------|
//! | `store`  | `data`                   | label of the store to read       |
//! | `prefix` | `""` (everything)        | which objects to count           |
//! | `output` | `word-count/summary.json`| key the summary is written to    |
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
//! The counting itself ([`Counter`], [`count_words`]) is plain Rust, usable
//! and benchmarkable natively.

mod counter;

use caisson_sdk::objects::Store;
use caisson_sdk::{Context, Error, Json, Result, info, log, params};

pub use counter::{Counter, MAX_TRACKED_WORD, Summary, TOP, count_words};

#[caisson_sdk::task]
fn run() -> Result<Json<Summary>> {
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
        match data {
            Ok(data) => {
                counter.feed(&data);
                counter.end_object();
            }
            // Too large to read whole: stream it.
            Err(Error::TooLarge(_)) => {
                let reader = store
                    .reader(&key)
                    .with_context(|| format!("reading {key}"))?;
                counter
                    .count_reader(reader)
                    .with_context(|| format!("reading {key}"))?;
            }
            Err(e) => return Err(e.context(format!("reading {key}"))),
        }
        log::progress(i as u64 + 1, keys.len() as u64);
    }

    let summary = counter.summary(TOP);
    store.put(&output, serde_json::to_vec(&summary)?)?;
    info!(
        "{} words in {} objects; summary at {output}",
        summary.words, summary.objects
    );
    Ok(Json(summary))
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
