//! Splits of a workflow's `map` step.
//!
//! A map step runs its task once per *split* of the objects under a prefix;
//! each run's input is its split, as JSON:
//!
//! ```json
//! {"store": "raw", "index": 0, "objects": [
//!     {"key": "logs/a", "size": 812},
//!     {"key": "logs/big", "size": 300000000, "range": [0, 134217728]}
//! ]}
//! ```
//!
//! `range` (`[start, end)`, in bytes) appears only when the step declares
//! `"ranges": true`, for objects larger than its `max_split_bytes`. A
//! [`Split`] is the parsed input (it is a [`FromInput`], so
//! it can be the task's argument), and [`Split::read`] reads its objects in
//! order with several requests in flight ([`Store::read_many`]).
//!
//! ```no_run
//! use caisson_sdk::map::Split;
//! use caisson_sdk::Result;
//!
//! #[caisson_sdk::task]
//! fn run(split: Split) -> Result<String> {
//!     let mut bytes = 0;
//!     for (piece, data) in split.read()? {
//!         bytes += data?.len();
//!         let _ = piece.key;
//!     }
//!     Ok(bytes.to_string())
//! }
//! ```

use serde::{Deserialize, Serialize};

use crate::objects::{ReadMany, Store};
use crate::{Error, FromInput, Result};

/// One split: the objects (or byte ranges of objects) one run reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// The label of the store the objects are in.
    pub store: String,
    /// Its place among the step's splits, from 0: the order in which a
    /// step depending on the map gets the outputs.
    pub index: u64,
    /// The pieces, in key order.
    pub objects: Vec<Piece>,
}

/// A whole object, or a byte range of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The object's key.
    pub key: String,
    /// The whole object's size, in bytes.
    pub size: u64,
    /// `[start, end)`: only these bytes of the object belong to the split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[u64; 2]>,
}

impl Piece {
    /// The bytes this piece stands for.
    pub fn len(&self) -> u64 {
        match self.range {
            Some([start, end]) => end.saturating_sub(start),
            None => self.size,
        }
    }

    /// Whether it stands for no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Split {
    /// Parses a split from a run's input.
    pub fn from_json(input: &[u8]) -> Result<Split> {
        serde_json::from_slice(input)
            .map_err(|e| Error::InvalidInput(format!("the input is not a map split: {e}")))
    }

    /// The bytes of every piece.
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(Piece::len).sum()
    }

    /// Reads every piece in order: whole objects with several requests in
    /// flight, ranges with [`Store::get_range`] as they come.
    pub fn read(&self) -> Result<SplitReader> {
        let store = Store::open(&self.store)?;
        let whole = store.read_many(
            self.objects
                .iter()
                .filter(|p| p.range.is_none())
                .map(|p| p.key.as_str()),
        )?;
        Ok(SplitReader {
            store,
            pieces: self.objects.clone().into_iter(),
            whole,
        })
    }
}

impl FromInput for Split {
    fn from_input(input: Vec<u8>) -> Result<Self> {
        Split::from_json(&input)
    }
}

/// The pieces of a split with their bytes, from [`Split::read`]. A piece
/// that could not be read comes with its error, at its place.
#[derive(Debug)]
pub struct SplitReader {
    store: Store,
    pieces: std::vec::IntoIter<Piece>,
    whole: ReadMany,
}

impl Iterator for SplitReader {
    type Item = (Piece, Result<Vec<u8>>);

    fn next(&mut self) -> Option<Self::Item> {
        let piece = self.pieces.next()?;
        let data = match piece.range {
            Some([start, end]) => {
                self.store
                    .get_range(&piece.key, start, end.saturating_sub(start))
            }
            None => match self.whole.next() {
                Some((_, data)) => data,
                None => Err(Error::Other(format!(
                    "the host ended the read of {} early",
                    piece.key
                ))),
            },
        };
        Some((piece, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_input() {
        let split = Split::from_json(
            br#"{"store": "raw", "index": 2, "objects": [
                {"key": "a", "size": 3},
                {"key": "b", "size": 10, "range": [5, 10]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(split.index, 2);
        assert_eq!(split.objects[1].range, Some([5, 10]));
        assert_eq!(split.bytes(), 8);
        assert!(matches!(
            Split::from_json(b"[1]"),
            Err(Error::InvalidInput(_))
        ));
    }
}
