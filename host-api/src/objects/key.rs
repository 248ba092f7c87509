//! The keys and prefixes a guest passes, checked before they reach a store.

use object_store::path::Path;

use crate::ObjectsError as WitError;

/// Checks a key from the guest and turns it into a store path.
///
/// Its length is the caller's to bound first (the host checks it against
/// [`ObjectLimits::max_key_bytes`](super::ObjectLimits)), because the error
/// quotes the key.
///
/// The rules are stricter than `object_store`'s own: besides what
/// [`Path::parse`] rejects, a key may not be empty, start with `/`, contain
/// an empty, `.` or `..` segment, a backslash or a control character. A
/// guest therefore has no spelling that climbs out of the store's prefix,
/// whatever the backend does with such names. Percent signs are ordinary
/// characters: `%2e%2e` is a three-letter-pair name, never decoded.
pub fn parse_key(key: &str) -> Result<Path, WitError> {
    let invalid = |why: &str| {
        Err(WitError::InvalidInput(format!(
            "invalid key {key:?}: {why}"
        )))
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.starts_with('/') {
        return invalid("keys are relative to the store and may not start with `/`");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return invalid("control characters and `\\` are not allowed");
    }
    for segment in key.split('/') {
        match segment {
            "" => return invalid("empty path segment"),
            "." | ".." => return invalid("`.` and `..` segments are not allowed"),
            _ => {}
        }
    }
    Path::parse(key).or_else(|e| invalid(&e.to_string()))
}

/// A prefix for `list`: like a key, but may be empty or end with `/`.
pub(super) fn parse_prefix(prefix: &str) -> Result<Option<Path>, WitError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Ok(None);
    }
    parse_key(trimmed).map(Some)
}

/// Whether `path` is the temporary name `hdfs-native-object-store` writes a
/// file under until it is finished: `.NAME.tmp.N` in the key's directory.
pub(super) fn is_partial_file(path: &Path) -> bool {
    path.filename()
        .and_then(|name| name.strip_prefix('.'))
        .and_then(|name| name.rsplit_once(".tmp."))
        .is_some_and(|(base, n)| {
            !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
}
