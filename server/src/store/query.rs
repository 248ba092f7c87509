//! What every statement of the store is built from: a query with its
//! values bound ([`AnyQuery`]), what binds them ([`Binder`]), and the text
//! of a statement assembled at run time ([`built`]). Below the connection
//! ([`Db`](super::Db)) and every concern, so each can use them.

use sqlx::Execute;

use super::error::DbError;

/// A statement with its values bound, as `sqlx::query(..).bind(..)` builds
/// it: what the store's binders take and return.
pub(super) type AnyQuery = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds one statement's values, in its placeholders' order.
pub(super) type Binder<'a> = Box<dyn FnOnce(AnyQuery) -> AnyQuery + Send + 'a>;

/// A statement the store assembles at run time: its own column lists,
/// numbered placeholders and fixed clauses, never a value (values are
/// bound). sqlx's guard against spliced input has nothing to catch here;
/// this is the one place that says so.
pub(super) fn built(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// The placeholders of an `IN (..)` list of `n` values, the first bound
/// at `$first`: `$2, $3, $4` for `in_list(2, 3)`.
pub(super) fn in_list(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values `bind` binds, taken from a query of no text of its own: for
/// a statement run in place, or run again elsewhere.
pub(super) fn bound(
    bind: impl FnOnce(AnyQuery) -> AnyQuery,
) -> Result<sqlx::any::AnyArguments, DbError> {
    Ok(bind(sqlx::query(built(String::new())))
        .take_arguments()
        .map_err(DbError::Other)?
        .unwrap_or_default())
}
