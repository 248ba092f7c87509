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
    ///
    /// Scans for the whitespace that ends each word, eight bytes at a time
    /// (`word_end`), and counts the word as a slice of the chunk: only a
    /// word cut by the chunk's end is copied (into `word`, to be completed
    /// by the next chunk). The byte-at-a-time loop this replaces (each byte
    /// pushed onto `word`) was where the wasm build lost most to the
    /// native one: Cranelift keeps the loop's values on the stack (the
    /// memory base, the instance and the epoch deadline are live there
    /// too) and checks the epoch on every iteration, so fewer iterations
    /// narrow the gap; natively it is about as fast as before.
    pub fn feed(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else { return };
        self.summary.bytes += chunk.len() as u64;
        self.last = Some(last);
        let mut rest = chunk;
        loop {
            let end = word_end(rest);
            let (part, tail) = rest.split_at(end);
            let Some((&space, tail)) = tail.split_first() else {
                // The chunk ends inside a word, which may go on in the next.
                self.extend_word(part);
                return;
            };
            if self.word.is_empty() && !self.word_too_long {
                self.count_word(part);
            } else {
                self.extend_word(part);
                self.end_word();
            }
            if space == b'\n' {
                self.summary.lines += 1;
            }
            rest = tail;
        }
    }

    /// Adds `part` to the word cut by a chunk's end.
    fn extend_word(&mut self, part: &[u8]) {
        if self.word_too_long {
            return;
        }
        if self.word.len() + part.len() > MAX_TRACKED_WORD {
            self.word_too_long = true;
        } else {
            self.word.extend_from_slice(part);
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

    /// Counts the word cut by a chunk's end, now complete.
    fn end_word(&mut self) {
        if self.word_too_long {
            self.summary.words += 1;
        } else {
            let word = std::mem::take(&mut self.word);
            self.count_word(&word);
            self.word = word;
        }
        self.word.clear();
        self.word_too_long = false;
    }

    /// Counts one whole word (nothing if it is empty); ranks it if it is
    /// short enough.
    fn count_word(&mut self, word: &[u8]) {
        if word.is_empty() {
            return;
        }
        self.summary.words += 1;
        if word.len() <= MAX_TRACKED_WORD {
            // Look up by slice first so a repeated word costs no allocation.
            match self.freq.get_mut(word) {
                Some(n) => *n += 1,
                None => {
                    self.freq.insert(word.to_vec(), 1);
                }
            }
        }
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

/// The index of the first ASCII whitespace byte in `bytes`, or its length.
///
/// Eight bytes at a time: the word trick below flags, in the lowest
/// position exactly, the first byte under 0x21 (whitespace and the other
/// control bytes); a control byte that is not whitespace is skipped.
fn word_end(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(eight) = bytes.get(i..i + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(eight);
        let x = u64::from_le_bytes(word);
        // A borrow only runs upwards from a byte under 0x21, and a byte of
        // 0x80 or more is never flagged, so the lowest flag is exact.
        let below = x.wrapping_sub(ONES * 0x21) & !x & HIGH;
        if below == 0 {
            i += 8;
            continue;
        }
        let at = i + (below.trailing_zeros() / 8) as usize;
        if bytes[at].is_ascii_whitespace() {
            return at;
        }
        i = at + 1;
    }
    bytes[i..]
        .iter()
        .position(u8::is_ascii_whitespace)
        .map_or(bytes.len(), |p| i + p)
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

#[cfg(test)]
mod tests {
    use super::word_end;

    /// `word_end` agrees with a plain scan for every byte at every offset
    /// of a word, after any other byte.
    #[test]
    fn word_end_finds_the_first_whitespace() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    for before in [b'a', 0x01, 0x20, 0x80, 0xff] {
                        let mut bytes = vec![b'a'; len];
                        bytes[at] = b;
                        if at > 0 {
                            bytes[at - 1] = before;
                        }
                        let want = bytes
                            .iter()
                            .position(u8::is_ascii_whitespace)
                            .unwrap_or(len);
                        assert_eq!(word_end(&bytes), want, "{bytes:?}");
                    }
                }
            }
        }
    }
}
