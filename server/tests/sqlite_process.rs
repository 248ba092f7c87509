//! SQLite's process-wide settings (`store::lite::configure_process`).
//! A test binary of its own: they apply only when the store is the first
//! to open a database in the process, which another test in the same
//! binary could not promise.

use caisson_server::store::Db;
use rusqlite::ffi;

/// SQLite's count of the memory it holds now and at most, which it keeps
/// only while its memory statistics are on.
fn sqlite_memory_counted() -> (i64, i64) {
    let (mut current, mut highest) = (0_i64, 0_i64);
    // SAFETY: two valid out-pointers; `sqlite3_status64` only reads
    // SQLite's counters, from any thread.
    let rc = unsafe {
        ffi::sqlite3_status64(
            ffi::SQLITE_STATUS_MEMORY_USED,
            &mut current,
            &mut highest,
            0,
        )
    };
    assert_eq!(rc, ffi::SQLITE_OK, "sqlite3_status64 refused");
    (current, highest)
}

#[tokio::test]
async fn the_store_opens_sqlite_without_its_allocator_lock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("caisson.db").display());
    // Opening creates and migrates the file: thousands of SQLite
    // allocations, each counted (under SQLite's global mutex) if the
    // statistics were on.
    let db = Db::connect(&url, 4).await.expect("opening the store");
    let id = db.ensure_tenant("acme").await.expect("a write");
    assert_eq!(db.tenant_id("acme").await.expect("a read"), Some(id));
    assert_eq!(
        sqlite_memory_counted(),
        (0, 0),
        "SQLite counted its allocations: its memory statistics are on, so every \
         sqlite3_malloc and sqlite3_free takes its global mutex"
    );
}
