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
//! Each object is streamed, so objects of any size use bounded memory. The
//! summary is written to `output` (which is skipped if it lies under the
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

use std::collections::HashMap;
use std::io::BufRead;

use caisson_sdk::objects::Store;
use caisson_sdk::{Context, Json, Result, info, log, params};
use serde::Serialize;

/// Words longer than this many bytes are counted but not ranked in `top`.
pub const MAX_TRACKED_WORD: usize = 256;
/// How many words `top` lists.
pub const TOP: usize = 10;

/// What a run reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Objects counted.
    pub objects: u64,
    /// Lines: `\n` bytes, plus one per object whose last line has none.
    pub lines: u64,
    /// Whitespace-separated words.
    pub words: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The most frequent words and their counts, most frequent first.
    pub top: Vec<(String, u64)>,
}

/// A streaming word counter: feed it any number of objects, each in chunks
/// of any size.
///
/// ```
/// let mut c = word_count::Counter::new();
/// c.feed(b"the cat sat on th");
/// c.feed(b"e mat\nthe end");
/// c.end_object();
/// let s = c.summary(2);
/// assert_eq!((s.objects, s.lines, s.words, s.bytes), (1, 2, 8, 30));
/// assert_eq!(s.top, [("the".to_string(), 3), ("cat".to_string(), 1)]);
/// ```
#[derive(Debug, Default)]
pub struct Counter {
    summary: Summary,
    freq: HashMap<Vec<u8>, u64>,
    /// The word being read, which may continue in the next chunk.
    word: Vec<u8>,
    /// Whether `word` has grown past [`MAX_TRACKED_WORD`].
    word_too_long: bool,
    /// The last byte of the current object, to count an unterminated line.
    last: Option<u8>,
}

impl Counter {
    /// A counter with nothing counted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts the next chunk of the current object.
    pub fn feed(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else { return };
        self.summary.bytes += chunk.len() as u64;
        self.last = Some(last);
        for &b in chunk {
            if b.is_ascii_whitespace() {
                if b == b'\n' {
                    self.summary.lines += 1;
                }
                self.end_word();
            } else if !self.word_too_long {
                if self.word.len() < MAX_TRACKED_WORD {
                    self.word.push(b);
                } else {
                    self.word_too_long = true;
                }
            }
        }
    }

    /// Ends the current object: counts its last word and line.
    pub fn end_object(&mut self) {
        self.end_word();
        if self.last.is_some_and(|b| b != b'\n') {
            self.summary.lines += 1;
        }
        self.last = None;
        self.summary.objects += 1;
    }

    fn end_word(&mut self) {
        if self.word.is_empty() && !self.word_too_long {
            return;
        }
        self.summary.words += 1;
        if !self.word_too_long {
            // Look up by slice first so a repeated word costs no allocation.
            match self.freq.get_mut(self.word.as_slice()) {
                Some(n) => *n += 1,
                None => {
                    self.freq.insert(self.word.clone(), 1);
                }
            }
        }
        self.word.clear();
        self.word_too_long = false;
    }

    /// Counts a whole object from a reader.
    pub fn count_reader(&mut self, mut reader: impl BufRead) -> std::io::Result<()> {
        loop {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            self.feed(chunk);
            reader.consume(n);
        }
        self.end_object();
        Ok(())
    }

    /// The totals so far, with the `top` most frequent words.
    pub fn summary(&self, top: usize) -> Summary {
        let mut words: Vec<(&Vec<u8>, u64)> = self.freq.iter().map(|(w, &n)| (w, n)).collect();
        words.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        Summary {
            top: words
                .into_iter()
                .take(top)
                .map(|(w, n)| (String::from_utf8_lossy(w).into_owned(), n))
                .collect(),
            ..self.summary.clone()
        }
    }
}

/// Counts one in-memory object.
pub fn count_words(data: &[u8]) -> Summary {
    let mut c = Counter::new();
    c.feed(data);
    c.end_object();
    c.summary(TOP)
}

#[caisson_sdk::task]
fn run() -> Result<Json<Summary>> {
    let label = params::get_or("store", "data");
    let prefix = params::get_or("prefix", "");
    let output = params::get_or("output", "word-count/summary.json");
    let store = Store::open(&label)?;

    // List first so that progress has a total. Metadata is small; the
    // objects themselves are streamed below.
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
    for (i, key) in keys.iter().enumerate() {
        let reader = store
            .reader(key)
            .with_context(|| format!("reading {key}"))?;
        counter
            .count_reader(reader)
            .with_context(|| format!("reading {key}"))?;
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
