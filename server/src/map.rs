//! The `map` workflow step: a fan-out over an object-store prefix.
//!
//! A step with a `map` table runs its template once per *split* of the
//! objects under `prefix`. This module is the pure part:
//!
//! * [`MapSpec`] is the step's `map` table, checked by [`MapSpec::validate`]
//!   when the workflow is created, with errors naming the field;
//! * [`plan`] packs listed objects into splits balanced by bytes, the way
//!   Hadoop's `CombineFileInputFormat` packs small files, and cuts an object
//!   larger than `max_split_bytes` into byte ranges when the step says its
//!   task reads ranges (`"ranges": true`);
//! * [`Split::input`] is the JSON a split's run gets as its input, which the
//!   SDKs' `Split` types parse.
//!
//! Listing, storing splits and running them is the scheduler's
//! (`services::scheduler`).
//!
//! ```
//! use caisson_server::map::{MapSpec, Listed, plan};
//! let spec: MapSpec = serde_json::from_value(serde_json::json!({
//!     "store": "raw", "prefix": "logs/", "max_split_bytes": 100
//! })).unwrap();
//! let objects = [("logs/a", 60), ("logs/b", 50), ("logs/c", 40), ("logs/d", 30)]
//!     .map(|(key, size)| Listed { key: key.into(), size });
//! let splits = plan(objects.to_vec(), &spec, 10).unwrap();
//! assert_eq!(splits.len(), 2);
//! assert_eq!(splits.iter().map(|s| s.bytes).sum::<u64>(), 180);
//! assert!(splits.iter().all(|s| s.bytes <= 100));
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

/// The default `max_split_bytes`: 128 MiB, HDFS's block size.
pub const DEFAULT_MAX_SPLIT_BYTES: u64 = 128 << 20;
/// The default `max_split_objects`.
pub const DEFAULT_MAX_SPLIT_OBJECTS: u64 = 10_000;
/// The default `parallelism`.
pub const DEFAULT_PARALLELISM: u64 = 4;
/// The most `max_split_objects` and `parallelism` may be.
pub const MAX_SPLIT_OBJECTS: u64 = 1_000_000;
pub const MAX_PARALLELISM: u64 = 10_000;
/// The most objects one listing may hold: the scheduler keeps each key
/// and size in memory while it plans (about 100 bytes each).
pub const MAX_LISTED_OBJECTS: usize = 2_000_000;
/// The longest `prefix`, in bytes.
pub const MAX_PREFIX_BYTES: usize = 1024;

/// A step's `map` table: which objects to fan out over, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    /// The object store's label; the step's `run.grants.objects` must
    /// include it (the split's run reads its objects through it).
    #[schema(min_length = 1)]
    pub store: String,
    /// Every object under this prefix, listed once when the step starts.
    /// Whole path segments: `logs/2026-12-01/` (or without the slash)
    /// lists `logs/2026-12-01/x`, not `logs/2026-12-010`. Empty: the whole store.
    #[serde(default)]
    pub prefix: String,
    /// The most bytes one split holds, except a lone object larger than
    /// this (when `ranges` is false). Default 128 MiB.
    #[serde(
        default = "default_max_split_bytes",
        deserialize_with = "crate::model::whole::number"
    )]
    #[schema(minimum = 1)]
    pub max_split_bytes: u64,
    /// The most objects (or ranges) one split holds. Default 10,000.
    #[serde(
        default = "default_max_split_objects",
        deserialize_with = "crate::model::whole::number"
    )]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_split_objects: u64,
    /// The most splits running at once. Default 4.
    #[serde(
        default = "default_parallelism",
        deserialize_with = "crate::model::whole::number"
    )]
    #[schema(minimum = 1, maximum = 10000)]
    pub parallelism: u64,
    /// Whether the task reads byte ranges: an object larger than
    /// `max_split_bytes` is then cut into ranges of at most that size, which
    /// may land in different splits. Otherwise it is a split on its own.
    #[serde(default)]
    pub ranges: bool,
}

fn default_max_split_bytes() -> u64 {
    DEFAULT_MAX_SPLIT_BYTES
}
fn default_max_split_objects() -> u64 {
    DEFAULT_MAX_SPLIT_OBJECTS
}
fn default_parallelism() -> u64 {
    DEFAULT_PARALLELISM
}

/// A `map` table that cannot work; `field` is its path in the request
/// (`steps[2].map.parallelism`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MapSpecError {
    pub field: String,
    pub message: String,
}

impl MapSpec {
    /// Checks the values; `at` is the table's path (`steps[0].map`).
    pub fn validate(&self, at: &str) -> Result<(), MapSpecError> {
        let err = |key: &str, message: String| MapSpecError {
            field: format!("{at}.{key}"),
            message,
        };
        if self.store.is_empty() {
            return Err(err("store", "must name an object store label".into()));
        }
        if self.prefix.len() > MAX_PREFIX_BYTES {
            return Err(err(
                "prefix",
                format!("may be at most {MAX_PREFIX_BYTES} bytes"),
            ));
        }
        let trimmed = self.prefix.strip_suffix('/').unwrap_or(&self.prefix);
        if !trimmed.is_empty()
            && let Err(e) = object_store::path::Path::parse(trimmed)
        {
            return Err(err("prefix", format!("not a valid key prefix: {e}")));
        }
        if self.max_split_bytes == 0 || self.max_split_bytes > i64::MAX as u64 {
            return Err(err(
                "max_split_bytes",
                "must be at least 1 (and fit in 63 bits)".into(),
            ));
        }
        if !(1..=MAX_SPLIT_OBJECTS).contains(&self.max_split_objects) {
            return Err(err(
                "max_split_objects",
                format!("must be 1 to {MAX_SPLIT_OBJECTS}"),
            ));
        }
        if !(1..=MAX_PARALLELISM).contains(&self.parallelism) {
            return Err(err(
                "parallelism",
                format!("must be 1 to {MAX_PARALLELISM}"),
            ));
        }
        Ok(())
    }

    /// The prefix as object_store lists it: `None` for the whole store.
    pub fn prefix_path(&self) -> Option<object_store::path::Path> {
        let trimmed = self.prefix.strip_suffix('/').unwrap_or(&self.prefix);
        (!trimmed.is_empty()).then(|| object_store::path::Path::from(trimmed))
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// One piece of a split: a whole object, or a byte range of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub key: String,
    /// The object's whole size.
    pub size: u64,
    /// `[start, end)`: only this range of the object belongs to the split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[u64; 2]>,
}

impl Piece {
    /// The bytes this piece stands for.
    pub fn bytes(&self) -> u64 {
        match self.range {
            Some([start, end]) => end - start,
            None => self.size,
        }
    }
}

/// One split: the pieces one run reads, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub pieces: Vec<Piece>,
    pub bytes: u64,
}

impl Split {
    /// The run's input: `{"store", "index", "objects": [{key, size, range?}]}`.
    pub fn input(&self, store: &str, index: usize) -> String {
        serde_json::json!({
            "store": store,
            "index": index,
            "objects": self.pieces,
        })
        .to_string()
    }
}

/// Why a listing could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error(
        "the prefix gives at least {count} splits, more than `[server] max_map_splits` ({max}); \
         raise `max_split_bytes` or `max_split_objects`, or the setting"
    )]
    TooManySplits { count: u64, max: u64 },
}

/// Packs `objects` into splits.
///
/// * An object over `max_split_bytes` is cut into `ceil(size / max)`
///   ranges of near-equal size if `spec.ranges`, else it is a split alone.
/// * Everything else (objects and ranges: *items*) is packed into the
///   fewest splits found such that none holds more than `max_split_bytes`
///   or `max_split_objects`: for a number of splits `k` (from the lower
///   bound `max(ceil(bytes / max_split_bytes), ceil(items / max_split_objects))`
///   up, by binary search when the bound does not fit), the items go, largest
///   first, each to the split holding the fewest bytes (longest processing
///   time first). Each item joins a split that was the lightest, so when
///   the object cap does not bind, any two splits differ by at most the
///   largest item's size.
/// * Splits are returned ordered by their first key, pieces within each in
///   key order: the same listing always gives the same splits.
///
/// `max_splits` caps the result; past it the error says by how much.
pub fn plan(
    mut objects: Vec<Listed>,
    spec: &MapSpec,
    max_splits: u64,
) -> Result<Vec<Split>, PlanError> {
    let cap = spec.max_split_bytes.max(1);
    let max_objects = spec.max_split_objects.max(1);
    objects.sort_unstable_by(|a, b| a.key.cmp(&b.key));

    // Items: (object index, piece). Lone objects: their own split.
    let mut items: Vec<(usize, Piece)> = Vec::with_capacity(objects.len());
    let mut lone: Vec<(usize, Piece)> = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        let whole = Piece {
            key: object.key.clone(),
            size: object.size,
            range: None,
        };
        if object.size <= cap {
            items.push((i, whole));
        } else if !spec.ranges {
            lone.push((i, whole));
        } else {
            let parts = object.size.div_ceil(cap);
            let (base, extra) = (object.size / parts, object.size % parts);
            let mut start = 0;
            for p in 0..parts {
                let len = base + u64::from(p < extra);
                items.push((
                    i,
                    Piece {
                        range: Some([start, start + len]),
                        ..whole.clone()
                    },
                ));
                start += len;
            }
        }
    }

    let total: u64 = items.iter().map(|(_, p)| p.bytes()).sum();
    let n = items.len() as u64;
    let lower = if n == 0 {
        0
    } else {
        total.div_ceil(cap).max(n.div_ceil(max_objects)).max(1)
    };
    let too_many = |count: u64| PlanError::TooManySplits {
        count,
        max: max_splits,
    };
    if lower + lone.len() as u64 > max_splits {
        return Err(too_many(lower + lone.len() as u64));
    }

    // Largest first; ties in key order, so the result is deterministic.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&j| (Reverse(items[j].1.bytes()), j));
    let mut bins = Vec::new();
    if n > 0 {
        bins = match pack(&items, &order, lower as usize, cap, max_objects) {
            Some(bins) => bins,
            None => {
                // One item per split always fits; search between.
                let (mut lo, mut hi) = (lower as usize, n as usize);
                let mut best = pack(&items, &order, hi, cap, max_objects)
                    .expect("one item per split fits every cap");
                while lo + 1 < hi {
                    let mid = lo + (hi - lo) / 2;
                    match pack(&items, &order, mid, cap, max_objects) {
                        Some(bins) => {
                            best = bins;
                            hi = mid;
                        }
                        None => lo = mid,
                    }
                }
                best
            }
        };
    }

    let mut splits: Vec<(usize, Split)> = Vec::with_capacity(bins.len() + lone.len());
    for mut bin in bins.into_iter().filter(|b| !b.is_empty()) {
        bin.sort_unstable();
        let pieces: Vec<Piece> = bin.iter().map(|&j| items[j].1.clone()).collect();
        let bytes = pieces.iter().map(Piece::bytes).sum();
        splits.push((items[bin[0]].0, Split { pieces, bytes }));
    }
    for (i, piece) in lone {
        splits.push((
            i,
            Split {
                bytes: piece.size,
                pieces: vec![piece],
            },
        ));
    }
    if splits.len() as u64 > max_splits {
        return Err(too_many(splits.len() as u64));
    }
    // By first object, then (ranges of one object in different splits)
    // by where the first range starts.
    splits.sort_by_key(|(i, s)| (*i, s.pieces[0].range.map_or(0, |[start, _]| start)));
    Ok(splits.into_iter().map(|(_, s)| s).collect())
}

/// Longest processing time first into `k` splits, each item to the split
/// with the fewest bytes (ties: the lower index) among those under the
/// object cap. `None` if a split would go over either cap. Each split is a
/// list of item indices.
fn pack(
    items: &[(usize, Piece)],
    order: &[usize],
    k: usize,
    cap: u64,
    max_objects: u64,
) -> Option<Vec<Vec<usize>>> {
    let mut bins: Vec<Vec<usize>> = vec![Vec::new(); k];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..k).map(|b| Reverse((0, b))).collect();
    for &j in order {
        let Reverse((load, b)) = heap.pop()?;
        let load = load + items[j].1.bytes();
        if load > cap {
            return None;
        }
        bins[b].push(j);
        if (bins[b].len() as u64) < max_objects {
            heap.push(Reverse((load, b)));
        }
    }
    Some(bins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    /// The OpenAPI document says `integer`, which JSON Schema reads as any
    /// integral number: `865.0` is 865 (the REST fuzzer sends such), `1.5`
    /// is refused.
    #[test]
    fn integral_floats_are_integers_and_fractions_are_refused() {
        let parsed: MapSpec = serde_json::from_str(
            r#"{"store": "raw", "parallelism": 865.0, "max_split_bytes": 1e6, "max_split_objects": 3}"#,
        )
        .unwrap();
        assert_eq!(
            (
                parsed.parallelism,
                parsed.max_split_bytes,
                parsed.max_split_objects
            ),
            (865, 1_000_000, 3)
        );
        let defaults: MapSpec = serde_json::from_str(r#"{"store": "raw"}"#).unwrap();
        assert_eq!(defaults.parallelism, DEFAULT_PARALLELISM);
        let refused = serde_json::from_str::<MapSpec>(r#"{"store": "raw", "parallelism": 1.5}"#)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("expected an integer"), "{refused}");
    }

    fn spec(max_bytes: u64, max_objects: u64, ranges: bool) -> MapSpec {
        MapSpec {
            store: "raw".into(),
            prefix: "p/".into(),
            max_split_bytes: max_bytes,
            max_split_objects: max_objects,
            parallelism: 4,
            ranges,
        }
    }

    fn listing(sizes: &[u64]) -> Vec<Listed> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Listed {
                key: format!("p/{i:06}"),
                size,
            })
            .collect()
    }

    /// Every byte of every object is in exactly one split; checks the
    /// caps and, when the object cap does not bind, the balance.
    fn check(objects: &[Listed], spec: &MapSpec, splits: &[Split]) {
        let mut covered: BTreeMap<&str, Vec<[u64; 2]>> = BTreeMap::new();
        let mut largest_item = 0;
        for split in splits {
            assert!(!split.pieces.is_empty());
            assert_eq!(
                split.bytes,
                split.pieces.iter().map(Piece::bytes).sum::<u64>()
            );
            let lone_large = split.pieces.len() == 1
                && split.pieces[0].range.is_none()
                && split.pieces[0].size > spec.max_split_bytes;
            assert!(!lone_large || !spec.ranges, "ranges were allowed");
            if !lone_large {
                assert!(split.bytes <= spec.max_split_bytes, "{split:?}");
                largest_item =
                    largest_item.max(split.pieces.iter().map(Piece::bytes).max().unwrap());
            }
            assert!(split.pieces.len() as u64 <= spec.max_split_objects);
            for w in split.pieces.windows(2) {
                assert!(
                    (&w[0].key, w[0].range) < (&w[1].key, w[1].range),
                    "pieces in key order"
                );
            }
            for piece in &split.pieces {
                covered
                    .entry(&piece.key)
                    .or_default()
                    .push(piece.range.unwrap_or([0, piece.size]));
            }
        }
        assert_eq!(covered.len(), objects.len(), "every object in a split");
        for object in objects {
            let mut ranges = covered[object.key.as_str()].clone();
            ranges.sort_unstable();
            let mut at = 0;
            for [start, end] in ranges {
                assert_eq!(start, at, "{}: no gap, no overlap", object.key);
                assert!(end > start || object.size == 0);
                at = end;
            }
            assert_eq!(at, object.size, "{}: whole object", object.key);
        }
        let total: u64 = objects.iter().map(|o| o.size).sum();
        assert_eq!(splits.iter().map(|s| s.bytes).sum::<u64>(), total);
        // Balance, among the packed splits.
        let object_cap_binds = splits
            .iter()
            .any(|s| s.pieces.len() as u64 == spec.max_split_objects);
        let packed: Vec<u64> = splits
            .iter()
            .filter(|s| {
                !(s.pieces.len() == 1
                    && s.pieces[0].range.is_none()
                    && s.bytes > spec.max_split_bytes)
            })
            .map(|s| s.bytes)
            .collect();
        if !object_cap_binds && !packed.is_empty() {
            let (lo, hi) = (packed.iter().min().unwrap(), packed.iter().max().unwrap());
            assert!(
                hi - lo <= largest_item,
                "splits {packed:?} differ by more than the largest item ({largest_item})"
            );
        }
        // Order: by first key.
        for w in splits.windows(2) {
            let a = &w[0].pieces[0];
            let b = &w[1].pieces[0];
            assert!((&a.key, a.range) < (&b.key, b.range));
        }
    }

    #[test]
    fn properties_hold_over_random_listings() {
        for seed in 0..400u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.random_range(0..300);
            let max_bytes = rng.random_range(1..5_000);
            let sizes: Vec<u64> = (0..n)
                .map(|_| match rng.random_range(0..10) {
                    0 => rng.random_range(0..max_bytes * 4),
                    1 => 0,
                    _ => rng.random_range(0..max_bytes / 3 + 1),
                })
                .collect();
            let objects = listing(&sizes);
            let max_objects = if rng.random_bool(0.3) {
                rng.random_range(1..20)
            } else {
                1_000
            };
            for ranges in [false, true] {
                let spec = spec(max_bytes, max_objects, ranges);
                let splits = plan(objects.clone(), &spec, u64::MAX).unwrap();
                check(&objects, &spec, &splits);
                // The same listing in another order gives the same splits.
                let mut shuffled = objects.clone();
                shuffled.reverse();
                assert_eq!(plan(shuffled, &spec, u64::MAX).unwrap(), splits);
            }
        }
    }

    #[test]
    fn small_objects_are_combined_and_balanced() {
        // 1,000 objects of 1..=8 KB into 64 KB splits.
        let mut rng = StdRng::seed_from_u64(7);
        let sizes: Vec<u64> = (0..1_000)
            .map(|_| rng.random_range(1_024..=8_192))
            .collect();
        let total: u64 = sizes.iter().sum();
        let objects = listing(&sizes);
        let spec = spec(64 << 10, 10_000, false);
        let splits = plan(objects.clone(), &spec, 10_000).unwrap();
        check(&objects, &spec, &splits);
        // The fewest splits the bytes allow, or one more when the last
        // items do not fit the lightest split.
        assert!(splits.len() as u64 <= total.div_ceil(64 << 10) + 1);
    }

    #[test]
    fn a_large_object_is_alone_or_in_ranges() {
        let objects = listing(&[10, 250, 20]);
        let whole = plan(objects.clone(), &spec(100, 100, false), 100).unwrap();
        check(&objects, &spec(100, 100, false), &whole);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1].pieces[0].key, "p/000001");
        assert_eq!(whole[1].pieces.len(), 1);
        assert_eq!(whole[1].bytes, 250);

        let ranged = plan(objects.clone(), &spec(100, 100, true), 100).unwrap();
        check(&objects, &spec(100, 100, true), &ranged);
        let ranges: Vec<[u64; 2]> = ranged
            .iter()
            .flat_map(|s| s.pieces.iter())
            .filter_map(|p| p.range)
            .collect();
        assert_eq!(ranges.len(), 3, "{ranged:?}");
        assert!(ranges.contains(&[0, 84]) && ranges.contains(&[84, 167]));
        // 84, 83, 83, 20 and 10 bytes: no three splits of 100 hold them.
        assert_eq!(ranged.len(), 4);
    }

    #[test]
    fn empty_listing_gives_no_splits() {
        assert!(
            plan(Vec::new(), &spec(100, 10, true), 0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_object_cap_makes_more_splits() {
        let objects = listing(&[1; 25]);
        let splits = plan(objects.clone(), &spec(1_000, 10, false), 100).unwrap();
        check(&objects, &spec(1_000, 10, false), &splits);
        assert_eq!(splits.len(), 3);
    }

    #[test]
    fn too_many_splits_is_an_error_naming_the_setting() {
        let objects = listing(&[10; 50]);
        let err = plan(objects, &spec(10, 100, false), 20).unwrap_err();
        assert_eq!(err, PlanError::TooManySplits { count: 50, max: 20 });
        assert!(err.to_string().contains("[server] max_map_splits"), "{err}");
    }

    #[test]
    fn a_200000_object_listing_plans() {
        let mut rng = StdRng::seed_from_u64(11);
        let sizes: Vec<u64> = (0..200_000).map(|_| rng.random_range(100..3_000)).collect();
        let objects = listing(&sizes);
        let spec = spec(4 << 20, 10_000, false);
        let splits = plan(objects.clone(), &spec, 10_000).unwrap();
        check(&objects, &spec, &splits);
    }

    #[test]
    fn validation_names_the_field() {
        let ok = spec(1, 1, false);
        assert_eq!(ok.validate("steps[0].map"), Ok(()));
        let cases = [
            (
                MapSpec {
                    store: String::new(),
                    ..ok.clone()
                },
                "steps[0].map.store",
            ),
            (
                MapSpec {
                    max_split_bytes: 0,
                    ..ok.clone()
                },
                "steps[0].map.max_split_bytes",
            ),
            (
                MapSpec {
                    max_split_objects: 0,
                    ..ok.clone()
                },
                "steps[0].map.max_split_objects",
            ),
            (
                MapSpec {
                    parallelism: 0,
                    ..ok.clone()
                },
                "steps[0].map.parallelism",
            ),
            (
                MapSpec {
                    parallelism: MAX_PARALLELISM + 1,
                    ..ok.clone()
                },
                "steps[0].map.parallelism",
            ),
            (
                MapSpec {
                    prefix: "a//b".into(),
                    ..ok.clone()
                },
                "steps[0].map.prefix",
            ),
            (
                MapSpec {
                    prefix: "../x".into(),
                    ..ok.clone()
                },
                "steps[0].map.prefix",
            ),
        ];
        for (bad, field) in cases {
            let err = bad.validate("steps[0].map").unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        let err =
            serde_json::from_value::<MapSpec>(serde_json::json!({"store": "raw", "paralelism": 3}))
                .unwrap_err();
        assert!(err.to_string().contains("paralelism"), "{err}");
    }

    #[test]
    fn split_input_is_the_documented_json() {
        let split = Split {
            pieces: vec![
                Piece {
                    key: "p/a".into(),
                    size: 3,
                    range: None,
                },
                Piece {
                    key: "p/b".into(),
                    size: 10,
                    range: Some([5, 10]),
                },
            ],
            bytes: 8,
        };
        let input: serde_json::Value = serde_json::from_str(&split.input("raw", 2)).unwrap();
        assert_eq!(
            input,
            serde_json::json!({"store": "raw", "index": 2, "objects": [
                {"key": "p/a", "size": 3},
                {"key": "p/b", "size": 10, "range": [5, 10]}
            ]})
        );
    }
}
