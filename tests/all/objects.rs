//! objects (pending)
