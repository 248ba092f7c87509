//! A pooled connection taken at the first of a run of statements and kept
//! for the rest ([`HeldConnection`]). sqlx pings a connection as it goes
//! back to the pool, a trip of its own, so statements that each took a
//! connection paid that trip each time (BENCHMARKS.md, stop 47).

use sqlx::pool::PoolConnection;

/// A connection from `pool`, taken when first asked for and given back when
/// dropped (or by [`HeldConnection::give_back`]).
pub(super) struct HeldConnection<'p> {
    pool: &'p sqlx::AnyPool,
    conn: Option<PoolConnection<sqlx::Any>>,
}

impl<'p> HeldConnection<'p> {
    /// Nothing taken yet.
    pub(super) fn new(pool: &'p sqlx::AnyPool) -> Self {
        HeldConnection { pool, conn: None }
    }

    /// The connection, taken from the pool if none is held.
    pub(super) async fn get(&mut self) -> Result<&mut sqlx::AnyConnection, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// Gives the connection back to the pool, which checks it: after a
    /// statement on it failed, the next one takes another.
    pub(super) fn give_back(&mut self) {
        self.conn = None;
    }
}
