//! Backend errors as the guest sees them (the kind only), and as the
//! server's log sees them (everything).

use crate::ObjectsError as WitError;

/// What the guest is told when the store cannot be reached (connection
/// refused, no such host, a local store's root gone).
pub const UNAVAILABLE: &str = "object store unavailable";
/// What the guest is told for any other failure of the backend.
pub const REQUEST_FAILED: &str = "request failed (retry later)";

/// Maps a backend error to what the guest sees: a fixed message per kind
/// of failure. The backend's own text names the endpoint, the bucket, a
/// local path or quotes an S3 response, and a task never sees an address
/// (SECURITY.md), so it goes only to the server's log, through
/// [`log_error`].
pub(super) fn map_error_ref(error: &object_store::Error) -> WitError {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => WitError::NotFound,
        // Keys are checked before they reach a backend; one refusing the
        // key anyway says nothing the guest needs to know beyond that.
        E::InvalidPath { .. } => WitError::InvalidInput("the store refused this key".into()),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => WitError::AccessDenied,
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            WitError::Unsupported("not supported by this store".into())
        }
        // A conditional write that did not hold (`PutMode::Create` finds an
        // object, `PutMode::Update` another version): the task decides.
        E::AlreadyExists { .. } => WitError::Conflict("the object already exists".into()),
        E::Precondition { .. } => {
            WitError::Conflict("the object is not the version the write expected".into())
        }
        E::NotModified { .. } => WitError::Other("not modified".into()),
        // Everything else is the network or the server (`Generic`, after
        // object_store's own retries): transient as far as we can tell.
        other if unreachable(other) => WitError::Backend(UNAVAILABLE.into()),
        _ => WitError::Backend(REQUEST_FAILED.into()),
    }
}

/// Whether `error` says the store could not be reached at all.
fn unreachable(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::AddrNotAvailable
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::TimedOut
                    | K::NotFound
                    | K::NotADirectory
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Writes what the backend said to the server's log (inside the run's
/// span, so with the run), with the store's label.
pub(super) fn log_error(label: &str, error: &object_store::Error) {
    if matches!(error, object_store::Error::NotFound { .. }) {
        tracing::debug!(label, "object store: {error}");
    } else {
        tracing::warn!(label, "object store call failed: {error}");
    }
}

/// A reader's failure as the guest may see it, through `stream-error` or
/// through the error's `to-debug-string`: the kind, never the backend's
/// own text (which [`log_error`] logged).
#[derive(Debug)]
pub(super) struct StreamFailure(pub(super) WitError);

impl std::fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for StreamFailure {}

/// [`log_error`], then [`map_error_ref`]: for a failed call on `label`.
pub(super) fn backend_error(label: &str, error: object_store::Error) -> WitError {
    log_error(label, &error);
    map_error_ref(&error)
}

/// An I/O error of an upload: the backend's error inside it, if any, is
/// logged and mapped; anything else is a failed request.
pub(super) fn upload_error(label: &str, error: &std::io::Error) -> WitError {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<object_store::Error>())
    {
        Some(e) => {
            log_error(label, e);
            map_error_ref(e)
        }
        None => {
            tracing::warn!(label, "object store upload failed: {error}");
            WitError::Backend(REQUEST_FAILED.into())
        }
    }
}

/// A host buffer the run's memory limit has no room for.
pub(super) fn too_large(e: crate::memory::OverBudget) -> WitError {
    WitError::TooLarge(e.to_string())
}
