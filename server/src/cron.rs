//! Cron schedules: when a scheduled task fires, in which time zone, and which
//! fire times are due after the scheduler was down.
//!
//! Everything here is pure logic over [`DateTime<Utc>`]: the database stores
//! instants, the scheduler asks this module which instants are fire times.
//! Wall-clock arithmetic happens only inside [`CronSchedule`], in the
//! schedule's own IANA time zone, because "every day at 09:00" means 09:00 on
//! the wall clock of the people who wrote it — 08:00Z in a Berlin winter and
//! 07:00Z in a Berlin summer.
//!
//! Time never comes from the system clock directly: the scheduler takes a
//! [`Clock`], so its tests can use a [`ManualClock`] and jump over days of
//! schedule in microseconds instead of sleeping.
//!
//! # Daylight-saving time
//!
//! Fire times are computed by [`croner`] on the wall clock, then mapped to
//! instants. Two wall-clock situations have no one-to-one mapping:
//!
//! * **Gaps** (spring forward: in Europe/Berlin, 02:00–02:59 on the last
//!   Sunday of March does not exist). A fire time that falls in the gap is
//!   *shifted* to the first instant after the gap (03:00 local), not dropped —
//!   a daily 02:30 job still runs that day. Several fire times in the same gap
//!   (e.g. `*/15 * * * *`) collapse into that single shifted fire, and if the
//!   first instant after the gap is itself a fire time it still fires once.
//! * **Overlaps** (fall back: 02:00–02:59 on the last Sunday of October happens
//!   twice). Each wall-clock time fires **once**, at its first occurrence
//!   (the summer-time one), so nothing runs twice; the flip side is that the
//!   repeated hour has no fire times of its own: an hourly job runs 24 times
//!   on the 25-hour day, with a two-hour gap. Schedules that need evenly
//!   spaced instants should use the `UTC` zone.
//!
//! Gaps longer than croner's one-hour shift window (historical zone changes
//! that skipped a whole day, such as Pacific/Apia on 2011-12-30) drop the
//! fire times inside them instead of shifting them.
//!
//! # Range
//!
//! Fire times exist from year 1 to year 4999 (croner stops searching at year
//! 5000); [`CronSchedule::next_after`] returns `None` past that, which callers
//! treat as "the schedule has ended".

use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Fire times are searched up to (not including) this year; croner gives up
/// at year 5000, and converting instants near chrono's own limits to local
/// time would panic.
const YEAR_LIMIT: i32 = 5000;

/// How many candidate fire times [`CronSchedule::next_after`] may examine
/// before giving up. Candidates are only rejected inside a DST overlap (at
/// most one per second of the overlap, normally 3600) or after a croner
/// error (one per hour of a long historical gap), so this is never reached
/// by a real schedule; it only guarantees termination.
const MAX_CANDIDATES: usize = 100_000;

/// Why a cron expression or time zone was rejected. The messages are meant
/// to be returned verbatim to an API client in a 400 response, so they name
/// the offending input and say what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// The expression does not parse. The string is the full explanation,
    /// including the expression itself.
    #[error("invalid cron expression {0}")]
    InvalidExpression(String),
    /// The time zone is not an IANA time zone name.
    #[error(
        "unknown time zone {0:?}: expected an IANA time zone name such as \"UTC\", \
         \"Europe/Berlin\" or \"America/New_York\" (names are case-sensitive)"
    )]
    UnknownTimeZone(String),
    /// The expression parses but matches no date at all, such as
    /// `0 0 30 2 *` (30 February). Rejected up front so that a schedule
    /// never silently does nothing.
    #[error("cron expression {0:?} never fires: it matches no existing date (such as 30 February)")]
    NeverFires(String),
}

/// A parsed cron expression together with the time zone its wall-clock
/// fields are read in.
///
/// Accepted expressions:
///
/// * the standard five fields `minute hour day-of-month month day-of-week`,
///   e.g. `0 9 * * MON-FRI`;
/// * six fields, with a leading *seconds* field, e.g. `*/10 * * * * *`;
/// * the aliases `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`,
///   `@midnight` and `@hourly` (case-insensitive);
/// * croner's extensions: `L` (last day of month / last weekday of month),
///   `W` (nearest weekday), `#` (nth weekday of month), `?` as `*`, and
///   month and weekday names.
///
/// When both day-of-month and day-of-week are restricted, a day matches if
/// *either* does (Vixie cron semantics): `0 0 1 * MON` fires on the 1st and
/// on every Monday.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    tz: Tz,
    cron: croner::Cron,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expression", &self.expression)
            .field("tz", &self.tz.name())
            .finish()
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expression, self.tz.name())
    }
}

/// Two schedules are equal when written identically in the same zone
/// (equivalent but differently written expressions are not equal).
impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.tz == other.tz
    }
}

impl Eq for CronSchedule {}

impl CronSchedule {
    /// Parses `expr` (see the type's documentation for the syntax) in the
    /// IANA time zone `tz`. Surrounding whitespace is ignored in both.
    ///
    /// Besides syntax errors this rejects expressions that can never fire
    /// (`0 0 31 4 *`), because accepting them would create a schedule that
    /// silently never runs.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, CronError> {
        let expression = expr.trim();
        let tz_name = tz.trim();
        let tz: Tz = tz_name
            .parse()
            .map_err(|_| CronError::UnknownTimeZone(tz_name.to_owned()))?;

        if expression.is_empty() {
            return Err(CronError::InvalidExpression(
                "\"\": the expression is empty; expected five fields \
                 (minute hour day-of-month month day-of-week), e.g. \"0 9 * * *\""
                    .to_owned(),
            ));
        }
        // croner knows every common alias except `@midnight`; anything else
        // starting with `@` (`@reboot`, typos) would reach croner as a
        // one-field pattern and get a confusing field-count message.
        let pattern = if expression.starts_with('@') {
            match expression.to_ascii_lowercase().as_str() {
                "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@hourly" => {
                    expression.to_owned()
                }
                "@midnight" => "0 0 * * *".to_owned(),
                _ => {
                    return Err(CronError::InvalidExpression(format!(
                        "{expression:?}: unknown alias; supported aliases are @yearly, \
                         @annually, @monthly, @weekly, @daily, @midnight and @hourly"
                    )));
                }
            }
        } else {
            expression.to_owned()
        };

        let cron = croner::Cron::new(&pattern)
            .with_seconds_optional()
            .parse()
            .map_err(|e| CronError::InvalidExpression(describe_croner_error(expression, &e)))?;

        // Cron has no year field, so the fire times repeat at least every
        // 400 years (the Gregorian cycle, which also covers 29 February):
        // if nothing fires in the 400 years after 1970, nothing ever does.
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let limit = NaiveDate::from_ymd_opt(2371, 1, 1)
            .expect("valid date")
            .and_hms_opt(0, 0, 0)
            .expect("valid time")
            .and_utc();
        match cron.find_next_occurrence(&epoch, false) {
            Ok(first) if first < limit => {}
            _ => return Err(CronError::NeverFires(expression.to_owned())),
        }

        Ok(Self {
            expression: expression.to_owned(),
            tz,
            cron,
        })
    }

    /// The expression as written (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is read in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after`, or `None` if there is none
    /// before year 5000.
    ///
    /// Fire times are whole seconds; `after` may have a fractional part. See
    /// the [module documentation](self) for what happens around DST changes.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if after.year() >= YEAR_LIMIT {
            return None;
        }
        // Before year 1 the search starts at 0001-01-01T00:00:00Z: converting
        // instants near chrono's minimum to local time would panic, and no
        // schedule is interested in antiquity.
        let floor = NaiveDate::from_ymd_opt(1, 1, 1)
            .expect("valid date")
            .and_hms_opt(0, 0, 0)
            .expect("valid time")
            .and_utc();
        // croner searches from `start + 1s` on whole seconds, so truncating
        // the fraction is what makes the result strictly after `after`.
        let start = after
            .max(floor - TimeDelta::seconds(1))
            .with_nanosecond(0)?;
        let mut from = start.with_timezone(&self.tz);
        for _ in 0..MAX_CANDIDATES {
            match self.cron.find_next_occurrence(&from, false) {
                Ok(next) => {
                    let next_utc = next.with_timezone(&Utc);
                    if next_utc.year() >= YEAR_LIMIT {
                        return None;
                    }
                    if next_utc > after {
                        return Some(next_utc);
                    }
                    // `after` lies in the second pass of a DST overlap and
                    // croner mapped an overlapping wall-clock time to its
                    // first (earlier) occurrence, which has already fired.
                    // Keep walking the wall clock until we leave the overlap.
                    from = next;
                }
                Err(croner::errors::CronError::TimeSearchLimitExceeded) => return None,
                Err(_) => {
                    // A wall-clock gap longer than croner's one-hour shift
                    // window: step past it an hour at a time.
                    let later = from
                        .with_timezone(&Utc)
                        .checked_add_signed(TimeDelta::hours(1))?;
                    if later.year() >= YEAR_LIMIT {
                        return None;
                    }
                    from = later.with_timezone(&self.tz);
                }
            }
        }
        None
    }

    /// Every fire time in `(after, until]`, oldest first, at most `max` of
    /// them.
    ///
    /// The cap is what keeps a backfill of `* * * * * *` over ten years (three
    /// hundred million fire times) from exhausting memory: callers process
    /// the first `max` and call again from the last one returned.
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::new();
        let mut cursor = after;
        while fires.len() < max {
            match self.next_after(cursor) {
                Some(next) if next <= until => {
                    fires.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        fires
    }

    /// The most recent fire time in `(after, until]`, if any.
    ///
    /// Runs in O(log(until − after)) calls of [`next_after`](Self::next_after)
    /// whatever the schedule's density, by binary search on the predicate
    /// "there is a fire time in (t, until]" (true below the answer, false at
    /// and above it) — so catching up after ten years of downtime on a
    /// per-second schedule costs about 30 searches, not 300 million.
    pub fn last_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let fires_after = |t: DateTime<Utc>| self.next_after(t).is_some_and(|n| n <= until);
        if until <= after || !fires_after(after) {
            return None;
        }
        // Invariant: fires_after(lo) && !fires_after(hi).
        let mut lo = after;
        let mut hi = until;
        while hi - lo > TimeDelta::seconds(1) {
            let mid = lo + (hi - lo) / 2;
            if fires_after(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        // (lo, hi] is at most one second long and fire times are whole
        // seconds, so it holds exactly one fire time, the last before `until`.
        self.next_after(lo)
    }
}

/// Turns croner's terse errors into a message that names the expression
/// and reminds the client of the expected shape.
fn describe_croner_error(expression: &str, error: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    let detail = match error {
        E::EmptyPattern => "the expression is empty".to_owned(),
        E::InvalidPattern(msg) | E::IllegalCharacters(msg) | E::ComponentError(msg) => {
            msg.trim_end_matches('.').to_owned()
        }
        other => other.to_string().trim_end_matches('.').to_owned(),
    };
    format!(
        "{expression:?}: {detail}; expected five fields (minute hour day-of-month month \
         day-of-week), optionally preceded by seconds, e.g. \"0 9 * * MON-FRI\""
    )
}

/// What to do about fire times that passed while the scheduler was not
/// looking (downtime, a paused schedule, a slow tick).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Start one run, for the most recent missed fire time, and forget the
    /// older ones. The default: most jobs ("refresh the cache", "send the
    /// report") only care about the latest state, and a burst of stale runs
    /// after an outage would be harmful.
    #[default]
    Skip,
    /// Start a run for every missed fire time, oldest first. For jobs that
    /// process the interval ending at their logical date (partitioned ETL),
    /// where every interval must be processed exactly once.
    All,
}

/// Which logical dates a schedule should start runs for now.
///
/// `last` is the fire time of the schedule's previous run (or the schedule's
/// creation time if it never ran); the candidates are the fire times in
/// `(last, now]`. With [`CatchUp::Skip`] that is only the most recent one
/// (or nothing); with [`CatchUp::All`] every one, oldest first, capped at
/// `max`. When the cap cuts the list short, the caller records the last
/// returned date as its new `last` and gets the rest on the next tick, so a
/// long outage drains in batches instead of all at once.
pub fn due_fires(
    schedule: &CronSchedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: CatchUp,
    max: usize,
) -> Vec<DateTime<Utc>> {
    if max == 0 {
        return Vec::new();
    }
    match catch_up {
        CatchUp::Skip => schedule.last_between(last, now).into_iter().collect(),
        CatchUp::All => schedule.fires_between(last, now, max),
    }
}

/// The scheduler's source of "now". Production uses [`SystemClock`]; tests
/// use [`ManualClock`] so that a test can cross midnight, a DST change or a
/// week of downtime without sleeping.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Shareable across threads (wrap it
/// in an `Arc`), so a test can hold one handle and give the scheduler
/// another.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock to `now`, forwards or backwards.
    pub fn set(&self, now: DateTime<Utc>) {
        *self.lock() = now;
    }

    /// Moves the clock by `by` (negative to go back) and returns the new time.
    pub fn advance(&self, by: TimeDelta) -> DateTime<Utc> {
        let mut now = self.lock();
        *now += by;
        *now
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A panic while holding this lock cannot leave the time half-written,
        // so a poisoned lock is still good to use.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// Substitutes a run's logical date into `text` (used on run params, so that
/// a scheduled or backfilled run knows which interval it stands for).
///
/// * `{{logical_date}}` → the logical date in RFC 3339, in UTC, e.g.
///   `2024-03-31T07:00:00Z` (fractional seconds only if it has any);
/// * `{{ds}}` → the logical date's calendar day **in the schedule's zone**,
///   `YYYY-MM-DD`: a Berlin schedule firing at 00:30 local on 2 January has
///   `ds` 2024-01-02 although it is still 1 January in UTC.
///
/// Spaces inside the braces are allowed (`{{ ds }}`). Other `{{…}}` text is
/// left as is, so templates meant for the task itself pass through. The
/// substituted values contain no characters that need escaping in JSON
/// strings, so this is safe to apply to serialized JSON params.
pub fn render_template(text: &str, logical_date: DateTime<Utc>, tz: Tz) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        match after_open[..close].trim() {
            "logical_date" => {
                out.push_str(&logical_date.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            }
            "ds" => {
                let local = logical_date.with_timezone(&tz);
                out.push_str(&local.format("%Y-%m-%d").to_string());
            }
            _ => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after_open[close + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    /// `2024-03-31T01:00:00Z`-style literal to instant.
    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
            .with_timezone(&Utc)
    }

    fn ts(list: &[&str]) -> Vec<DateTime<Utc>> {
        list.iter().map(|s| t(s)).collect()
    }

    fn sched(expr: &str, tz: &str) -> CronSchedule {
        CronSchedule::parse(expr, tz).unwrap_or_else(|e| panic!("{expr} in {tz}: {e}"))
    }

    // ---- parsing -------------------------------------------------------

    #[test]
    fn parses_five_fields_and_keeps_expression_and_zone() {
        let s = sched("  0 9 * * MON-FRI ", " Europe/Berlin ");
        assert_eq!(s.expression(), "0 9 * * MON-FRI");
        assert_eq!(s.time_zone(), chrono_tz::Europe::Berlin);
        assert_eq!(s.to_string(), "0 9 * * MON-FRI (Europe/Berlin)");
        assert!(format!("{s:?}").contains("Europe/Berlin"));
        assert_eq!(s, sched("0 9 * * MON-FRI", "Europe/Berlin"));
        assert_ne!(s, sched("0 9 * * MON-FRI", "UTC"));
    }

    #[test]
    fn six_fields_have_leading_seconds() {
        let s = sched("*/10 * * * * *", "UTC");
        assert_eq!(
            s.fires_between(t("2024-01-01T00:00:00Z"), t("2024-01-01T00:00:30Z"), 10),
            ts(&[
                "2024-01-01T00:00:10Z",
                "2024-01-01T00:00:20Z",
                "2024-01-01T00:00:30Z"
            ])
        );
        let s = sched("30 15 10 * * *", "UTC");
        assert_eq!(
            s.next_after(t("2024-01-01T00:00:00Z")),
            Some(t("2024-01-01T10:15:30Z"))
        );
    }

    #[test]
    fn aliases() {
        let after = t("2024-05-15T12:34:56Z");
        let cases = [
            ("@hourly", "2024-05-15T13:00:00Z"),
            ("@daily", "2024-05-16T00:00:00Z"),
            ("@midnight", "2024-05-16T00:00:00Z"),
            ("@weekly", "2024-05-19T00:00:00Z"), // Sunday
            ("@monthly", "2024-06-01T00:00:00Z"),
            ("@yearly", "2025-01-01T00:00:00Z"),
            ("@annually", "2025-01-01T00:00:00Z"),
            ("@DAILY", "2024-05-16T00:00:00Z"),
        ];
        for (alias, want) in cases {
            assert_eq!(
                sched(alias, "UTC").next_after(after),
                Some(t(want)),
                "{alias}"
            );
        }
    }

    #[test]
    fn extended_syntax() {
        // Last day of the month.
        let s = sched("0 0 L * *", "UTC");
        assert_eq!(
            s.next_after(t("2024-02-01T00:00:00Z")),
            Some(t("2024-02-29T00:00:00Z"))
        );
        // Second Tuesday of the month.
        let s = sched("0 12 * * TUE#2", "UTC");
        assert_eq!(
            s.next_after(t("2024-05-01T00:00:00Z")),
            Some(t("2024-05-14T12:00:00Z"))
        );
        // Day-of-month OR day-of-week (Vixie cron).
        let s = sched("0 0 1 * MON", "UTC");
        assert_eq!(
            s.fires_between(t("2024-04-28T00:00:00Z"), t("2024-05-07T00:00:00Z"), 10),
            ts(&[
                "2024-04-29T00:00:00Z",
                "2024-05-01T00:00:00Z",
                "2024-05-06T00:00:00Z"
            ])
        );
    }

    #[test]
    fn rejects_bad_expressions_with_clear_messages() {
        for expr in [
            "",
            "   ",
            "* * *",
            "* * * * * * *",
            "61 * * * *",
            "0 24 * * *",
            "0 0 32 * *",
            "0 0 * 13 *",
            "abc",
            "0 9 * * FUNDAY",
            "@reboot",
            "@every 5m",
        ] {
            match CronSchedule::parse(expr, "UTC") {
                Err(e @ CronError::InvalidExpression(_)) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with("invalid cron expression"), "{msg}");
                    assert!(msg.contains(&format!("{:?}", expr.trim())), "{msg}");
                }
                other => panic!("{expr:?} gave {other:?}"),
            }
        }
        let msg = CronSchedule::parse("@reboot", "UTC")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("@hourly"), "{msg}");
        let msg = CronSchedule::parse("* * *", "UTC").unwrap_err().to_string();
        assert!(msg.contains("five fields"), "{msg}");
    }

    #[test]
    fn rejects_expressions_that_never_fire() {
        for expr in ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"] {
            let err = CronSchedule::parse(expr, "UTC").unwrap_err();
            assert_eq!(err, CronError::NeverFires(expr.to_owned()));
            assert!(err.to_string().contains("never fires"), "{err}");
        }
        // 29 February fires in leap years only, but it fires.
        let s = sched("0 0 29 2 *", "UTC");
        assert_eq!(
            s.next_after(t("2024-03-01T00:00:00Z")),
            Some(t("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn rejects_unknown_time_zones() {
        for tz in ["", "Mars/Olympus_Mons", "Berlin", "europe/berlin", "+02:00"] {
            let err = CronSchedule::parse("0 9 * * *", tz).unwrap_err();
            assert_eq!(err, CronError::UnknownTimeZone(tz.to_owned()));
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{tz:?}")) && msg.contains("IANA"),
                "{msg}"
            );
        }
        // The time zone is checked first, whatever the expression.
        assert!(matches!(
            CronSchedule::parse("nonsense", "Nowhere"),
            Err(CronError::UnknownTimeZone(_))
        ));
    }

    // ---- next_after ----------------------------------------------------

    #[test]
    fn next_after_is_strictly_after() {
        let s = sched("0 9 * * *", "UTC");
        assert_eq!(
            s.next_after(t("2024-01-01T09:00:00Z")),
            Some(t("2024-01-02T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(t("2024-01-01T08:59:59.999Z")),
            Some(t("2024-01-01T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(t("2024-01-01T09:00:00.001Z")),
            Some(t("2024-01-02T09:00:00Z"))
        );
        let every_second = sched("* * * * * *", "UTC");
        assert_eq!(
            every_second.next_after(t("2024-01-01T09:00:00.5Z")),
            Some(t("2024-01-01T09:00:01Z"))
        );
    }

    #[test]
    fn wall_clock_time_in_the_schedule_zone() {
        let s = sched("0 9 * * *", "Europe/Berlin");
        // Winter: CET = UTC+1.
        assert_eq!(
            s.next_after(t("2024-01-15T00:00:00Z")),
            Some(t("2024-01-15T08:00:00Z"))
        );
        // Summer: CEST = UTC+2.
        assert_eq!(
            s.next_after(t("2024-07-15T00:00:00Z")),
            Some(t("2024-07-15T07:00:00Z"))
        );
        // Across the spring change (2024-03-31).
        assert_eq!(
            s.fires_between(t("2024-03-29T12:00:00Z"), t("2024-04-02T00:00:00Z"), 10),
            ts(&[
                "2024-03-30T08:00:00Z",
                "2024-03-31T07:00:00Z",
                "2024-04-01T07:00:00Z"
            ])
        );
        // And New York, on the other side of UTC.
        let s = sched("0 9 * * *", "America/New_York");
        assert_eq!(
            s.next_after(t("2024-01-15T00:00:00Z")),
            Some(t("2024-01-15T14:00:00Z"))
        );
    }

    #[test]
    fn dst_gap_shifts_a_daily_fire_to_the_end_of_the_gap() {
        // 2024-03-31 in Berlin: 02:00 CET jumps to 03:00 CEST (01:00Z), so
        // 02:30 does not exist that day; the job runs at 03:00 CEST instead.
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            s.fires_between(t("2024-03-29T12:00:00Z"), t("2024-04-02T00:00:00Z"), 10),
            ts(&[
                "2024-03-30T01:30:00Z", // 02:30 CET
                "2024-03-31T01:00:00Z", // 03:00 CEST, shifted from 02:30
                "2024-04-01T00:30:00Z", // 02:30 CEST
            ])
        );
        // From inside the shifted window the next fire is the next day's.
        assert_eq!(
            s.next_after(t("2024-03-31T01:00:00Z")),
            Some(t("2024-04-01T00:30:00Z"))
        );
    }

    #[test]
    fn dst_gap_collapses_several_fires_into_one() {
        let s = sched("*/15 * * * *", "Europe/Berlin");
        // 01:30 CET, 01:45 CET, then 02:00-02:45 do not exist and collapse
        // with the real 03:00 CEST into a single fire, then 03:15 CEST.
        assert_eq!(
            s.fires_between(t("2024-03-31T00:15:00Z"), t("2024-03-31T01:30:00Z"), 20),
            ts(&[
                "2024-03-31T00:30:00Z",
                "2024-03-31T00:45:00Z",
                "2024-03-31T01:00:00Z",
                "2024-03-31T01:15:00Z",
                "2024-03-31T01:30:00Z",
            ])
        );
    }

    #[test]
    fn dst_overlap_fires_once_at_the_first_occurrence() {
        // 2024-10-27 in Berlin: 03:00 CEST (01:00Z) falls back to 02:00 CET,
        // so 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET).
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            s.fires_between(t("2024-10-26T00:00:00Z"), t("2024-10-29T00:00:00Z"), 10),
            ts(&[
                "2024-10-26T00:30:00Z", // 02:30 CEST
                "2024-10-27T00:30:00Z", // first 02:30, CEST
                "2024-10-28T01:30:00Z", // 02:30 CET
            ])
        );
        // From inside the repeated hour, the repeat does not fire again.
        assert_eq!(
            s.next_after(t("2024-10-27T01:10:00Z")),
            Some(t("2024-10-28T01:30:00Z"))
        );
        assert_eq!(
            s.next_after(t("2024-10-27T00:10:00Z")),
            Some(t("2024-10-27T00:30:00Z"))
        );
    }

    #[test]
    fn dst_overlap_sub_hourly_schedule_skips_the_repeated_hour() {
        let s = sched("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            s.fires_between(t("2024-10-26T22:45:00Z"), t("2024-10-27T03:00:00Z"), 20),
            ts(&[
                "2024-10-26T23:00:00Z", // 01:00 CEST
                "2024-10-26T23:30:00Z", // 01:30 CEST
                "2024-10-27T00:00:00Z", // 02:00 CEST
                "2024-10-27T00:30:00Z", // 02:30 CEST
                // 02:00 and 02:30 CET (01:00Z, 01:30Z) are repeats: no fire.
                "2024-10-27T02:00:00Z", // 03:00 CET
                "2024-10-27T02:30:00Z",
                "2024-10-27T03:00:00Z",
            ])
        );
        // Every start point inside the repeated hour leads to 03:00 CET.
        for start in [
            "2024-10-27T00:59:59Z",
            "2024-10-27T01:00:00Z",
            "2024-10-27T01:29:59Z",
            "2024-10-27T01:30:00Z",
            "2024-10-27T01:59:59Z",
        ] {
            assert_eq!(
                s.next_after(t(start)),
                Some(t("2024-10-27T02:00:00Z")),
                "{start}"
            );
        }
        // Per-second schedule: the repeated hour is 3600 rejected candidates.
        let s = sched("* * * * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(t("2024-10-27T01:00:00Z")),
            Some(t("2024-10-27T02:00:00Z"))
        );
    }

    #[test]
    fn fire_times_are_strictly_increasing_across_dst_changes() {
        for expr in ["*/7 * * * *", "0 * * * *", "30 2 * * *", "*/20 1-3 * * *"] {
            let s = sched(expr, "Europe/Berlin");
            for (from, to) in [
                ("2024-03-30T20:00:00Z", "2024-03-31T06:00:00Z"),
                ("2024-10-26T20:00:00Z", "2024-10-27T06:00:00Z"),
            ] {
                let fires = s.fires_between(t(from), t(to), 1000);
                assert!(!fires.is_empty(), "{expr}");
                assert!(fires.windows(2).all(|w| w[0] < w[1]), "{expr}: {fires:?}");
                assert!(fires.iter().all(|f| f.nanosecond() == 0), "{expr}");
            }
        }
    }

    #[test]
    fn half_hour_zone_and_southern_hemisphere() {
        // India: UTC+05:30, no DST.
        let s = sched("0 9 * * *", "Asia/Kolkata");
        assert_eq!(
            s.next_after(t("2024-01-01T00:00:00Z")),
            Some(t("2024-01-01T03:30:00Z"))
        );
        // Sydney: DST starts 2024-10-06 02:00 AEST -> 03:00 AEDT.
        let s = sched("30 2 * * *", "Australia/Sydney");
        assert_eq!(
            s.next_after(t("2024-10-05T12:00:00Z")),
            Some(t("2024-10-05T16:00:00Z")) // 03:00 AEDT, shifted
        );
    }

    #[test]
    fn whole_day_gap_does_not_end_the_schedule() {
        // Samoa skipped 2011-12-30 entirely (UTC-10 -> UTC+14).
        let s = sched("0 9 * * *", "Pacific/Apia");
        let fires = s.fires_between(t("2011-12-28T00:00:00Z"), t("2012-01-02T00:00:00Z"), 10);
        assert!(!fires.is_empty());
        assert!(fires.windows(2).all(|w| w[0] < w[1]), "{fires:?}");
        // 2011-12-31 09:00 +14:00 fires.
        assert!(fires.contains(&t("2011-12-30T19:00:00Z")), "{fires:?}");
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let s = sched("0 9 * * *", "Etc/GMT-14"); // UTC+14, no LMT history
        assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(s.next_after(t("4999-12-31T23:00:00Z")), None);
        // The search starts at 0001-01-01T00:00:00Z, which is 14:00 local:
        // the first 09:00 is the next local day, 19:00Z.
        assert_eq!(
            s.next_after(DateTime::<Utc>::MIN_UTC),
            Some(t("0001-01-01T19:00:00Z"))
        );
        let s = sched("0 9 * * *", "Etc/GMT+12");
        assert!(s.next_after(DateTime::<Utc>::MIN_UTC).is_some());
        assert_eq!(
            s.fires_between(t("4999-12-30T00:00:00Z"), DateTime::<Utc>::MAX_UTC, 10)
                .len(),
            2
        );
    }

    // ---- fires_between / last_between ----------------------------------

    #[test]
    fn fires_between_is_half_open_and_capped() {
        let s = sched("0 * * * *", "UTC");
        // (after, until]: a fire at `after` is excluded, one at `until` included.
        assert_eq!(
            s.fires_between(t("2024-01-01T00:00:00Z"), t("2024-01-01T03:00:00Z"), 10),
            ts(&[
                "2024-01-01T01:00:00Z",
                "2024-01-01T02:00:00Z",
                "2024-01-01T03:00:00Z"
            ])
        );
        assert_eq!(
            s.fires_between(t("2024-01-01T00:00:00Z"), t("2024-01-01T03:00:00Z"), 2),
            ts(&["2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"])
        );
        assert!(
            s.fires_between(t("2024-01-01T00:00:00Z"), t("2024-01-01T03:00:00Z"), 0)
                .is_empty()
        );
        assert!(
            s.fires_between(t("2024-01-01T03:00:00Z"), t("2024-01-01T01:00:00Z"), 10)
                .is_empty()
        );
        assert!(
            s.fires_between(t("2024-01-01T00:00:00Z"), t("2024-01-01T00:59:59Z"), 10)
                .is_empty()
        );
    }

    #[test]
    fn fires_between_cap_protects_against_dense_schedules() {
        let s = sched("* * * * *", "UTC");
        let start = Instant::now();
        let fires = s.fires_between(t("2020-01-01T00:00:00Z"), t("2030-01-01T00:00:00Z"), 500);
        assert_eq!(fires.len(), 500);
        assert_eq!(fires[0], t("2020-01-01T00:01:00Z"));
        assert_eq!(fires[499], t("2020-01-01T08:20:00Z"));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    }

    #[test]
    fn fires_between_batches_resume_where_they_stopped() {
        let s = sched("*/5 * * * *", "Europe/Berlin");
        let (from, until) = (t("2024-03-31T00:00:00Z"), t("2024-03-31T03:00:00Z"));
        let all = s.fires_between(from, until, 1000);
        let mut batched = Vec::new();
        let mut cursor = from;
        loop {
            let batch = s.fires_between(cursor, until, 7);
            let Some(&last) = batch.last() else { break };
            batched.extend(batch);
            cursor = last;
        }
        assert_eq!(batched, all);
    }

    #[test]
    fn last_between_finds_the_latest_fire() {
        let s = sched("0 9 * * *", "Europe/Berlin");
        assert_eq!(
            s.last_between(t("2024-01-01T00:00:00Z"), t("2024-01-10T12:00:00Z")),
            Some(t("2024-01-10T08:00:00Z"))
        );
        // `until` itself counts; `after` does not.
        assert_eq!(
            s.last_between(t("2024-01-01T00:00:00Z"), t("2024-01-10T08:00:00Z")),
            Some(t("2024-01-10T08:00:00Z"))
        );
        assert_eq!(
            s.last_between(t("2024-01-10T08:00:00Z"), t("2024-01-10T12:00:00Z")),
            None
        );
        assert_eq!(
            s.last_between(t("2024-01-10T12:00:00Z"), t("2024-01-01T00:00:00Z")),
            None
        );
        // Across the autumn overlap.
        let s = sched("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            s.last_between(t("2024-10-26T00:00:00Z"), t("2024-10-27T01:45:00Z")),
            Some(t("2024-10-27T00:30:00Z"))
        );
    }

    #[test]
    fn last_between_agrees_with_fires_between() {
        for expr in ["*/7 * * * *", "0 */5 * * *", "30 2 * * *", "0 0 L * *"] {
            let s = sched(expr, "Europe/Berlin");
            let after = t("2024-03-20T00:00:00Z");
            for until in [
                "2024-03-31T00:59:59Z",
                "2024-03-31T01:00:00Z",
                "2024-03-31T05:17:00Z",
                "2024-04-03T00:00:00Z",
                "2024-04-30T22:00:00Z",
            ] {
                let until = t(until);
                let all = s.fires_between(after, until, 100_000);
                assert_eq!(
                    s.last_between(after, until),
                    all.last().copied(),
                    "{expr} {until}"
                );
            }
        }
    }

    #[test]
    fn last_between_is_fast_on_dense_schedules() {
        let s = sched("* * * * * *", "UTC");
        let start = Instant::now();
        assert_eq!(
            s.last_between(t("2014-01-01T00:00:00Z"), t("2024-06-01T12:34:56.789Z")),
            Some(t("2024-06-01T12:34:56Z"))
        );
        assert!(start.elapsed().as_secs() < 2, "{:?}", start.elapsed());
    }

    // ---- due_fires -----------------------------------------------------

    #[test]
    fn catch_up_serde_and_default() {
        assert_eq!(CatchUp::default(), CatchUp::Skip);
        assert_eq!(serde_json::to_string(&CatchUp::Skip).unwrap(), "\"skip\"");
        assert_eq!(serde_json::to_string(&CatchUp::All).unwrap(), "\"all\"");
        assert_eq!(
            serde_json::from_str::<CatchUp>("\"all\"").unwrap(),
            CatchUp::All
        );
        assert!(serde_json::from_str::<CatchUp>("\"All\"").is_err());
    }

    #[test]
    fn due_fires_skip_runs_only_the_latest_missed() {
        let s = sched("0 9 * * *", "UTC");
        let last = t("2024-01-01T09:00:00Z");
        // Three days down.
        assert_eq!(
            due_fires(&s, last, t("2024-01-04T10:00:00Z"), CatchUp::Skip, 100),
            ts(&["2024-01-04T09:00:00Z"])
        );
        // Nothing due yet.
        assert!(due_fires(&s, last, t("2024-01-02T08:59:59Z"), CatchUp::Skip, 100).is_empty());
        // Exactly on time.
        assert_eq!(
            due_fires(&s, last, t("2024-01-02T09:00:00Z"), CatchUp::Skip, 100),
            ts(&["2024-01-02T09:00:00Z"])
        );
        // Clock behind the last fire (clock skew between servers).
        assert!(due_fires(&s, last, t("2023-12-31T00:00:00Z"), CatchUp::Skip, 100).is_empty());
        assert!(due_fires(&s, last, t("2024-01-04T10:00:00Z"), CatchUp::Skip, 0).is_empty());
    }

    #[test]
    fn due_fires_all_runs_every_missed_oldest_first_up_to_max() {
        let s = sched("0 9 * * *", "UTC");
        let last = t("2024-01-01T09:00:00Z");
        let now = t("2024-01-04T10:00:00Z");
        assert_eq!(
            due_fires(&s, last, now, CatchUp::All, 100),
            ts(&[
                "2024-01-02T09:00:00Z",
                "2024-01-03T09:00:00Z",
                "2024-01-04T09:00:00Z"
            ])
        );
        let first_batch = due_fires(&s, last, now, CatchUp::All, 2);
        assert_eq!(
            first_batch,
            ts(&["2024-01-02T09:00:00Z", "2024-01-03T09:00:00Z"])
        );
        assert_eq!(
            due_fires(&s, first_batch[1], now, CatchUp::All, 2),
            ts(&["2024-01-04T09:00:00Z"])
        );
        assert!(due_fires(&s, t("2024-01-04T09:00:00Z"), now, CatchUp::All, 2).is_empty());
    }

    #[test]
    fn due_fires_from_creation_time_not_on_a_fire_time() {
        // Created at 09:00:30, the 09:00 fire is not due; 09:01 is.
        let s = sched("* * * * *", "UTC");
        let created = t("2024-01-01T09:00:30Z");
        assert!(due_fires(&s, created, t("2024-01-01T09:00:59Z"), CatchUp::All, 10).is_empty());
        assert_eq!(
            due_fires(&s, created, t("2024-01-01T09:01:00Z"), CatchUp::Skip, 10),
            ts(&["2024-01-01T09:01:00Z"])
        );
    }

    #[test]
    fn due_fires_skip_after_years_of_downtime_is_fast() {
        let s = sched("* * * * * *", "Europe/Berlin");
        let start = Instant::now();
        assert_eq!(
            due_fires(
                &s,
                t("2014-01-01T00:00:00Z"),
                t("2024-01-01T00:00:00.5Z"),
                CatchUp::Skip,
                10
            ),
            ts(&["2024-01-01T00:00:00Z"])
        );
        assert_eq!(
            due_fires(
                &s,
                t("2014-01-01T00:00:00Z"),
                t("2024-01-01T00:00:00Z"),
                CatchUp::All,
                3
            ),
            ts(&[
                "2014-01-01T00:00:01Z",
                "2014-01-01T00:00:02Z",
                "2014-01-01T00:00:03Z"
            ])
        );
        assert!(start.elapsed().as_secs() < 2, "{:?}", start.elapsed());
    }

    // ---- clocks --------------------------------------------------------

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(t("2024-01-01T00:00:00Z"));
        assert_eq!(clock.now(), t("2024-01-01T00:00:00Z"));
        assert_eq!(
            clock.advance(TimeDelta::minutes(90)),
            t("2024-01-01T01:30:00Z")
        );
        assert_eq!(clock.now(), t("2024-01-01T01:30:00Z"));
        clock.advance(TimeDelta::seconds(-30));
        assert_eq!(clock.now(), t("2024-01-01T01:29:30Z"));
        clock.set(t("2030-06-01T00:00:00Z"));
        assert_eq!(clock.now(), t("2030-06-01T00:00:00Z"));
    }

    #[test]
    fn clocks_are_shareable_trait_objects() {
        let manual = Arc::new(ManualClock::new(t("2024-01-01T00:00:00Z")));
        let as_dyn: Arc<dyn Clock> = manual.clone();
        let handle = std::thread::spawn(move || as_dyn.now());
        manual.advance(TimeDelta::days(1));
        let seen = handle.join().unwrap();
        assert!(seen == t("2024-01-01T00:00:00Z") || seen == t("2024-01-02T00:00:00Z"));
        assert_eq!(manual.now(), t("2024-01-02T00:00:00Z"));

        let system: Box<dyn Clock> = Box::new(SystemClock);
        let before = Utc::now();
        let now = system.now();
        assert!(now >= before && now <= Utc::now());
    }

    #[test]
    fn scheduler_style_loop_with_manual_clock() {
        // What the scheduler does each tick, driven by a manual clock across
        // the spring DST change: every daily fire is started exactly once.
        let s = sched("30 2 * * *", "Europe/Berlin");
        let clock = ManualClock::new(t("2024-03-29T00:00:00Z"));
        let mut last = clock.now();
        let mut started = Vec::new();
        while clock.now() < t("2024-04-02T00:00:00Z") {
            clock.advance(TimeDelta::minutes(10));
            for fire in due_fires(&s, last, clock.now(), CatchUp::All, 10) {
                started.push(fire);
                last = fire;
            }
        }
        assert_eq!(
            started,
            ts(&[
                "2024-03-29T01:30:00Z",
                "2024-03-30T01:30:00Z",
                "2024-03-31T01:00:00Z",
                "2024-04-01T00:30:00Z"
            ])
        );
    }

    // ---- render_template -----------------------------------------------

    #[test]
    fn renders_logical_date_and_ds() {
        let berlin = chrono_tz::Europe::Berlin;
        let date = t("2024-01-01T23:30:00Z"); // 00:30 on 2 January in Berlin
        assert_eq!(
            render_template(
                "{\"day\":\"{{ds}}\",\"at\":\"{{logical_date}}\"}",
                date,
                berlin
            ),
            "{\"day\":\"2024-01-02\",\"at\":\"2024-01-01T23:30:00Z\"}"
        );
        assert_eq!(render_template("{{ds}}", date, Tz::UTC), "2024-01-01");
        assert_eq!(
            render_template("{{ ds }}/{{  logical_date }}/{{ds}}", date, Tz::UTC),
            "2024-01-01/2024-01-01T23:30:00Z/2024-01-01"
        );
    }

    #[test]
    fn render_keeps_fractional_seconds_when_present() {
        let date = t("2024-01-01T09:00:00.250Z");
        assert_eq!(
            render_template("{{logical_date}}", date, Tz::UTC),
            "2024-01-01T09:00:00.250Z"
        );
    }

    #[test]
    fn render_leaves_other_text_alone() {
        let date = t("2024-01-01T09:00:00Z");
        for text in [
            "",
            "no placeholders",
            "{{unknown}} stays",
            "{single} braces",
            "unterminated {{ds",
            "}} {{",
            "ünïcödé {{ name }}",
        ] {
            assert_eq!(render_template(text, date, Tz::UTC), text);
        }
        assert_eq!(
            render_template("{{unknown}}{{ds}}{{", date, Tz::UTC),
            "{{unknown}}2024-01-01{{"
        );
        assert_eq!(render_template("ä{{ds}}ö", date, Tz::UTC), "ä2024-01-01ö");
    }
}
