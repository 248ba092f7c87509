//! The counting itself: plain Rust with no Caisson imports, so the task
//! (`lib.rs`), the native benchmark and the `word-count-cmd` WASI command
//! (`src/bin/`, which includes this file by path and so links none of the
//! task's exports) all count with exactly the same code.

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

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

/// A counter's whole state between objects, to send from the runs of a
/// map step to the run that merges them ([`Counter::partial`],
/// [`Counter::merge`]). Merging every split's partial gives exactly the
/// counts of one counter over all the objects.
///
/// Words are bytes, not necessarily UTF-8; each is written as the string
/// whose chars are its bytes (U+0000 to U+00FF, Latin-1), which round-trips
/// any byte string through JSON and leaves ASCII words as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub objects: u64,
    pub lines: u64,
    pub words: u64,
    pub bytes: u64,
    /// Each tracked word and its count, in byte order.
    pub freq: Vec<(String, u64)>,
}

fn latin1(word: &[u8]) -> String {
    word.iter().map(|&b| char::from(b)).collect()
}

fn from_latin1(word: &str) -> Option<Vec<u8>> {
    word.chars().map(|c| u8::try_from(c).ok()).collect()
}

impl Counter {
    /// The counts so far (call between objects), for [`Counter::merge`].
    pub fn partial(&self) -> Partial {
        let mut freq: Vec<(String, u64)> = self.freq.iter().map(|(w, &n)| (latin1(w), n)).collect();
        freq.sort_unstable();
        Partial {
            objects: self.summary.objects,
            lines: self.summary.lines,
            words: self.summary.words,
            bytes: self.summary.bytes,
            freq,
        }
    }

    /// Adds another counter's [`Partial`]. A word that is not Latin-1 text
    /// (not written by [`Counter::partial`]) is refused.
    pub fn merge(&mut self, partial: &Partial) -> Result<(), String> {
        self.summary.objects += partial.objects;
        self.summary.lines += partial.lines;
        self.summary.words += partial.words;
        self.summary.bytes += partial.bytes;
        for (word, n) in &partial.freq {
            let word =
                from_latin1(word).ok_or_else(|| format!("{word:?} is not a counted word"))?;
            *self.freq.entry(word).or_default() += n;
        }
        Ok(())
    }
}

/// Counts one in-memory object.
pub fn count_words(data: &[u8]) -> Summary {
    let mut c = Counter::new();
    c.feed(data);
    c.end_object();
    c.summary(TOP)
}
