//! Retention policy: which snapshots of one group `forget` keeps, and why.
//!
//! Pure code: no I/O, no clock. Local time comes through a [`Calendar`], so tests pin time
//! zones and clock changes, and the caller passes "now".
//!
//! The rules are restic's, which users know:
//!
//! - snapshots are taken newest first (equal times ordered by id, so results are stable);
//! - `keep_last N` keeps the N newest;
//! - `keep_hourly/daily/weekly/monthly/yearly N` walk from the newest and keep a snapshot
//!   whenever its hour / day / ISO week / month / year, in local time, differs from that of
//!   the last snapshot the rule kept, until N buckets are filled. If the rule still has
//!   buckets left when it reaches the oldest snapshot, that one is kept as well, so that a
//!   young repository keeps its longest history;
//! - `keep_within D` keeps every snapshot newer than the reference time minus D, and
//!   `keep_within_X D` keeps one snapshot per X bucket among those;
//! - `keep_tags` keeps every snapshot that has any of the tags.
//!
//! The reference time for the `within` rules is the newest snapshot of the group that is not
//! in the future (or now, when they all are), not the clock: a machine whose backups stopped
//! a month ago must not lose every snapshot to `--keep-within 7d`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::format::tree::Timestamp;
use crate::id::SnapshotId;

/// Largest number a [`Span`] accepts for one unit: far beyond any real retention, small
/// enough that the calendar arithmetic cannot overflow.
const MAX_SPAN_NUMBER: u32 = 1_000_000;

const SECS_PER_DAY: i64 = 86_400;

/// A calendar duration such as `1y6m2d3h`: years, months, days and hours, subtracted in
/// that order in local time (so `1m` before March 31 is March 2 or 3, as in Go and restic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Span {
    pub fn is_zero(&self) -> bool {
        *self == Span::default()
    }
}

impl FromStr for Span {
    type Err = Error;

    /// Parses `NyNmNdNh`, each part optional but at least one given, in any order, each unit
    /// once; `m` is months.
    fn from_str(s: &str) -> Result<Span> {
        let bad = |why: String| {
            Error::invalid(format!(
                "{s:?} is not a duration such as 7d, 6m or 1y6m2d3h: {why}"
            ))
        };
        if s.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut span = Span::default();
        let mut seen = [false; 4];
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let slot = match c {
                'y' => 0,
                'm' => 1,
                'd' => 2,
                'h' => 3,
                _ => {
                    return Err(bad(format!(
                        "{c:?} is not a unit (y years, m months, d days, h hours)"
                    )));
                }
            };
            if digits.is_empty() {
                return Err(bad(format!("no number before {c:?}")));
            }
            if seen[slot] {
                return Err(bad(format!("{c:?} appears twice")));
            }
            seen[slot] = true;
            let n = digits
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_SPAN_NUMBER)
                .ok_or_else(|| bad(format!("{digits} is too large")))?;
            digits.clear();
            match slot {
                0 => span.years = n,
                1 => span.months = n,
                2 => span.days = n,
                _ => span.hours = n,
            }
        }
        if !digits.is_empty() {
            return Err(bad(format!("{digits} has no unit (y, m, d or h)")));
        }
        if span.is_zero() {
            return Err(bad("a duration of zero keeps nothing".into()));
        }
        Ok(span)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The calendar periods snapshots are bucketed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// A number naming the bucket of `t`: equal exactly when two times share it.
    fn bucket(self, t: &Civil) -> i64 {
        let (y, m, d, h) = (
            t.year,
            i64::from(t.month),
            i64::from(t.day),
            i64::from(t.hour),
        );
        match self {
            Period::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Daily => (y * 100 + m) * 100 + d,
            Period::Weekly => {
                let (iso_year, week) = t.iso_week();
                iso_year * 100 + i64::from(week)
            }
            Period::Monthly => y * 100 + m,
            Period::Yearly => y,
        }
    }
}

/// What `forget` keeps. Counts of zero and absent spans are rules not given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    pub keep_within: Option<Span>,
    pub keep_within_hourly: Option<Span>,
    pub keep_within_daily: Option<Span>,
    pub keep_within_weekly: Option<Span>,
    pub keep_within_monthly: Option<Span>,
    pub keep_within_yearly: Option<Span>,
    pub keep_tags: Vec<String>,
}

impl Policy {
    /// True when no rule is given: applying it would remove everything, so callers refuse.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && Period::ALL.iter().all(|p| self.count(*p) == 0)
            && self.keep_within.is_none_or(|s| s.is_zero())
            && Period::ALL
                .iter()
                .all(|p| self.within(*p).is_none_or(|s| s.is_zero()))
            && self.keep_tags.is_empty()
    }

    pub fn count(&self, period: Period) -> u32 {
        match period {
            Period::Hourly => self.keep_hourly,
            Period::Daily => self.keep_daily,
            Period::Weekly => self.keep_weekly,
            Period::Monthly => self.keep_monthly,
            Period::Yearly => self.keep_yearly,
        }
    }

    pub fn within(&self, period: Period) -> Option<Span> {
        match period {
            Period::Hourly => self.keep_within_hourly,
            Period::Daily => self.keep_within_daily,
            Period::Weekly => self.keep_within_weekly,
            Period::Monthly => self.keep_within_monthly,
            Period::Yearly => self.keep_within_yearly,
        }
    }
}

/// Why a snapshot is kept. Shown to people as `last`, `daily`, `daily (oldest)`,
/// `within 7d`, `daily within 7d`, `tag:keep`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// One of the `keep_last` newest.
    Last,
    /// The newest of a bucket of a counted rule.
    Bucket(Period),
    /// The oldest snapshot, kept because a counted rule had buckets left.
    Oldest(Period),
    /// Newer than the reference time minus the span.
    Within(Span),
    /// The newest of a bucket, within the span.
    WithinBucket(Period, Span),
    /// It has this tag.
    Tag(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last => f.write_str("last"),
            Reason::Bucket(p) => f.write_str(p.name()),
            Reason::Oldest(p) => write!(f, "{} (oldest)", p.name()),
            Reason::Within(span) => write!(f, "within {span}"),
            Reason::WithinBucket(p, span) => write!(f, "{} within {span}", p.name()),
            Reason::Tag(tag) => write!(f, "tag:{tag}"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A snapshot as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub id: SnapshotId,
    pub time: Timestamp,
    pub tags: &'a [String],
}

/// The policy's verdict on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: SnapshotId,
    pub time: Timestamp,
    pub keep: bool,
    /// Why it is kept; empty when it is removed.
    pub reasons: Vec<Reason>,
}

/// Applies `policy` to the snapshots of one group. Returns a decision for every snapshot,
/// newest first. `now` only decides which snapshots are in the future (see the module
/// documentation); an empty policy keeps nothing, so callers must refuse it first.
pub fn apply(
    policy: &Policy,
    snapshots: &[Candidate<'_>],
    now: Timestamp,
    calendar: &dyn Calendar,
) -> Vec<Decision> {
    let mut order: Vec<&Candidate<'_>> = snapshots.iter().collect();
    order.sort_by_key(|c| std::cmp::Reverse((c.time, c.id)));

    let reference = order
        .iter()
        .map(|c| c.time)
        .find(|t| *t <= now)
        .unwrap_or(now);
    let cutoff = |span: Span| Timestamp {
        secs: cutoff_secs(calendar, reference.secs, span),
        nanos: reference.nanos,
    };
    let within = policy
        .keep_within
        .filter(|s| !s.is_zero())
        .map(|s| (s, cutoff(s)));

    struct Counted {
        period: Period,
        left: u32,
        last: Option<i64>,
    }
    let mut counted: Vec<Counted> = Period::ALL
        .iter()
        .map(|&period| Counted {
            period,
            left: policy.count(period),
            last: None,
        })
        .collect();
    struct Windowed {
        period: Period,
        span: Span,
        cutoff: Timestamp,
        last: Option<i64>,
    }
    let mut windowed: Vec<Windowed> = Period::ALL
        .iter()
        .filter_map(|&period| {
            let span = policy.within(period).filter(|s| !s.is_zero())?;
            Some(Windowed {
                period,
                span,
                cutoff: cutoff(span),
                last: None,
            })
        })
        .collect();
    let mut last_left = policy.keep_last;

    let oldest = order.len().saturating_sub(1);
    let mut decisions = Vec::with_capacity(order.len());
    for (nr, candidate) in order.into_iter().enumerate() {
        let civil = calendar.civil(candidate.time.secs);
        let mut reasons = Vec::new();
        for tag in &policy.keep_tags {
            if candidate.tags.contains(tag) {
                reasons.push(Reason::Tag(tag.clone()));
            }
        }
        if let Some((span, cutoff)) = within
            && candidate.time > cutoff
        {
            reasons.push(Reason::Within(span));
        }
        if last_left > 0 {
            last_left -= 1;
            reasons.push(Reason::Last);
        }
        for rule in counted.iter_mut().filter(|r| r.left > 0) {
            let bucket = rule.period.bucket(&civil);
            if rule.last != Some(bucket) {
                rule.last = Some(bucket);
                rule.left -= 1;
                reasons.push(Reason::Bucket(rule.period));
            } else if nr == oldest {
                rule.left -= 1;
                reasons.push(Reason::Oldest(rule.period));
            }
        }
        for rule in windowed.iter_mut() {
            if candidate.time > rule.cutoff {
                let bucket = rule.period.bucket(&civil);
                if rule.last != Some(bucket) {
                    rule.last = Some(bucket);
                    reasons.push(Reason::WithinBucket(rule.period, rule.span));
                }
            }
        }
        decisions.push(Decision {
            id: candidate.id,
            time: candidate.time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    decisions
}

/// `reference` minus `span`: years, months and days on the local calendar date keeping the
/// wall-clock time (a day overflowing its month rolls into the next), then hours of real
/// time.
fn cutoff_secs(calendar: &dyn Calendar, reference: i64, span: Span) -> i64 {
    let at = calendar.civil(reference);
    let months = at.year * 12 + i64::from(at.month)
        - 1
        - i64::from(span.years) * 12
        - i64::from(span.months);
    let (year, month) = (months.div_euclid(12), months.rem_euclid(12) as u32 + 1);
    let days = days_from_civil(year, month, 1) + i64::from(at.day) - 1 - i64::from(span.days);
    let (year, month, day) = civil_from_days(days);
    let local = Civil {
        year,
        month,
        day,
        ..at
    };
    calendar.secs(&local) - i64::from(span.hours) * 3600
}

/// A local wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Civil {
    /// The ISO 8601 week-numbering year and week (1 to 53) of the date.
    pub fn iso_week(&self) -> (i64, u32) {
        let days = days_from_civil(self.year, self.month, self.day);
        // 1970-01-01 was a Thursday; ISO weekdays run Monday = 0 to Sunday = 6.
        let weekday = (days + 3).rem_euclid(7);
        // A week belongs to the year that holds its Thursday.
        let thursday = days - weekday + 3;
        let (iso_year, _, _) = civil_from_days(thursday);
        let week = (thursday - days_from_civil(iso_year, 1, 1)) / 7 + 1;
        (iso_year, week as u32)
    }

    fn from_utc_secs(secs: i64) -> Civil {
        let (year, month, day) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
        let rest = secs.rem_euclid(SECS_PER_DAY) as u32;
        Civil {
            year,
            month,
            day,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
        }
    }

    fn to_utc_secs(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date; `day` may run past either end of its
/// month (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    days_from_civil_signed(year, month, i64::from(day))
}

fn days_from_civil_signed(year: i64, month: u32, day: i64) -> i64 {
    let month = i64::from(month);
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Local time: the policy buckets by the hours, days, weeks the user lives in.
pub trait Calendar {
    /// The local wall-clock time at `secs` since the epoch.
    fn civil(&self, secs: i64) -> Civil;
    /// The instant a local wall-clock time names. For a time a clock change skips or
    /// repeats, one of the instants next to it.
    fn secs(&self, local: &Civil) -> i64;
}

/// The system's time zone (`TZ`, `/etc/localtime`), through the C library.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemCalendar;

impl Calendar for SystemCalendar {
    fn civil(&self, secs: i64) -> Civil {
        // time_t is narrower than i64 on some systems.
        let Some(t) = libc::time_t::try_from(secs).ok() else {
            return Civil::from_utc_secs(secs);
        };
        // SAFETY: tm is plain data; localtime_r only writes into it and reads t.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
            return Civil::from_utc_secs(secs);
        }
        Civil {
            year: i64::from(tm.tm_year) + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec.min(59) as u32,
        }
    }

    fn secs(&self, local: &Civil) -> i64 {
        let Ok(year) = libc::c_int::try_from(local.year - 1900) else {
            return local.to_utc_secs();
        };
        // SAFETY: tm is plain data, filled in here; mktime reads and normalises it.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = year;
        tm.tm_mon = local.month as libc::c_int - 1;
        tm.tm_mday = local.day as libc::c_int;
        tm.tm_hour = local.hour as libc::c_int;
        tm.tm_min = local.minute as libc::c_int;
        tm.tm_sec = local.second as libc::c_int;
        // Let the C library decide whether daylight saving time is in effect.
        tm.tm_isdst = -1;
        let t = unsafe { libc::mktime(&mut tm) };
        if t == -1 {
            return local.to_utc_secs();
        }
        // time_t is i32 on some systems.
        #[allow(clippy::useless_conversion)]
        let t = i64::from(t);
        t
    }
}

/// A time zone at a fixed offset from UTC, with no clock changes.
#[derive(Clone, Copy, Debug)]
pub struct FixedOffset {
    /// Seconds east of UTC.
    pub offset: i64,
}

impl FixedOffset {
    pub const UTC: FixedOffset = FixedOffset { offset: 0 };
}

impl Calendar for FixedOffset {
    fn civil(&self, secs: i64) -> Civil {
        Civil::from_utc_secs(secs + self.offset)
    }

    fn secs(&self, local: &Civil) -> i64 {
        local.to_utc_secs() - self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zone whose offset changes once, at `switch` (UTC seconds): a daylight-saving
    /// transition. `before < after` springs forward, `before > after` falls back.
    struct Shifting {
        before: i64,
        after: i64,
        switch: i64,
    }

    impl Calendar for Shifting {
        fn civil(&self, secs: i64) -> Civil {
            let offset = if secs < self.switch {
                self.before
            } else {
                self.after
            };
            Civil::from_utc_secs(secs + offset)
        }

        fn secs(&self, local: &Civil) -> i64 {
            let wall = local.to_utc_secs();
            if wall - self.before < self.switch {
                wall - self.before
            } else {
                wall - self.after
            }
        }
    }

    /// Central Europe in 2021: 02:00 became 03:00 on March 28 (a 23-hour day).
    fn spring_forward() -> Shifting {
        Shifting {
            before: 3600,
            after: 7200,
            switch: FixedOffset::UTC.secs(&civil("2021-03-28 01:00")),
        }
    }

    /// Central Europe in 2021: 03:00 became 02:00 on October 31 (a 25-hour day).
    fn fall_back() -> Shifting {
        Shifting {
            before: 7200,
            after: 3600,
            switch: FixedOffset::UTC.secs(&civil("2021-10-31 01:00")),
        }
    }

    /// `YYYY-MM-DD HH:MM[:SS]` as a wall-clock time.
    fn civil(s: &str) -> Civil {
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
        Civil {
            year: i64::from(num(0..4)),
            month: num(5..7),
            day: num(8..10),
            hour: num(11..13),
            minute: num(14..16),
            second: if s.len() > 16 { num(17..19) } else { 0 },
        }
    }

    fn at(cal: &dyn Calendar, s: &str) -> Timestamp {
        Timestamp {
            secs: cal.secs(&civil(s)),
            nanos: 0,
        }
    }

    fn id(n: usize) -> SnapshotId {
        SnapshotId([n as u8; 32])
    }

    fn span(s: &str) -> Span {
        s.parse().unwrap()
    }

    /// Applies `policy` to snapshots at the local `times` (ids 0, 1, … in that order), and
    /// returns the decisions, newest first, each with its local time.
    fn decide(
        cal: &dyn Calendar,
        policy: &Policy,
        times: &[&str],
        now: &str,
    ) -> Vec<(String, Decision)> {
        let candidates: Vec<Candidate<'_>> = times
            .iter()
            .enumerate()
            .map(|(n, t)| Candidate {
                id: id(n),
                time: at(cal, t),
                tags: &[],
            })
            .collect();
        apply(policy, &candidates, at(cal, now), cal)
            .into_iter()
            .map(|d| (times[d.id.0[0] as usize].to_string(), d))
            .collect()
    }

    /// The local times of the snapshots kept, newest first.
    fn kept(cal: &dyn Calendar, policy: &Policy, times: &[&str], now: &str) -> Vec<String> {
        decide(cal, policy, times, now)
            .into_iter()
            .filter(|(_, d)| d.keep)
            .map(|(t, _)| t)
            .collect()
    }

    fn reasons(d: &Decision) -> Vec<String> {
        d.reasons.iter().map(|r| r.to_string()).collect()
    }

    /// Twelve snapshots, two a day (09:00, 21:00) over six days that cross a month, an ISO
    /// week and a year boundary. Monday 2021-12-27 to Sunday 2022-01-02 is ISO week 52 of
    /// 2021; Monday 2022-01-03 starts week 1 of 2022.
    const SPREAD: &[&str] = &[
        "2021-12-29 09:00",
        "2021-12-29 21:00",
        "2021-12-30 09:00",
        "2021-12-30 21:00",
        "2021-12-31 09:00",
        "2021-12-31 21:00",
        "2022-01-01 09:00",
        "2022-01-01 21:00",
        "2022-01-02 09:00",
        "2022-01-02 21:00",
        "2022-01-03 09:00",
        "2022-01-03 21:00",
    ];
    /// Later than every snapshot of the tables, but one.
    const NOW: &str = "2030-01-01 00:00";
    const HOURS: &[&str] = &[
        "2022-01-01 10:05",
        "2022-01-01 10:40",
        "2022-01-01 11:10",
        "2022-01-01 12:30",
        "2022-01-01 12:50",
    ];

    struct Case {
        name: &'static str,
        policy: Policy,
        times: &'static [&'static str],
        keep: &'static [&'static str],
    }

    fn p() -> Policy {
        Policy::default()
    }

    #[rustfmt::skip]
    fn utc_cases() -> Vec<Case> {
        vec![
            Case { name: "keep_last keeps the N newest",
                policy: Policy { keep_last: 3, ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2022-01-03 09:00", "2022-01-02 21:00"] },
            Case { name: "keep_last larger than the number of snapshots keeps them all",
                policy: Policy { keep_last: 50, ..p() }, times: &["2022-01-01 09:00", "2022-01-02 09:00"],
                keep: &["2022-01-02 09:00", "2022-01-01 09:00"] },
            Case { name: "keep_hourly keeps the newest of each hour",
                policy: Policy { keep_hourly: 2, ..p() }, times: HOURS,
                keep: &["2022-01-01 12:50", "2022-01-01 11:10"] },
            Case { name: "keep_daily keeps the newest of each of the N newest days",
                policy: Policy { keep_daily: 3, ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2022-01-02 21:00", "2022-01-01 21:00"] },
            Case { name: "keep_daily goes from Jan 1 to Dec 31",
                policy: Policy { keep_daily: 5, ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2022-01-02 21:00", "2022-01-01 21:00", "2021-12-31 21:00", "2021-12-30 21:00"] },
            Case { name: "keep_weekly uses ISO weeks: Sunday 2022-01-02 is in week 52 of 2021",
                policy: Policy { keep_weekly: 2, ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2022-01-02 21:00"] },
            Case { name: "keep_monthly keeps the newest of each month",
                policy: Policy { keep_monthly: 2, ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2021-12-31 21:00"] },
            Case { name: "keep_yearly keeps the newest of each year",
                policy: Policy { keep_yearly: 1, ..p() },
                times: &["2020-06-01 12:00", "2021-03-01 12:00", "2021-12-31 12:00"],
                keep: &["2021-12-31 12:00"] },
            Case { name: "Dec 31 23:59 and Jan 1 00:00 are two days, two months, two years",
                policy: Policy { keep_daily: 1, keep_monthly: 2, keep_yearly: 2, ..p() },
                times: &["2021-12-31 23:59", "2022-01-01 00:00"],
                keep: &["2022-01-01 00:00", "2021-12-31 23:59"] },
            Case { name: "Dec 31 and Jan 1 in one ISO week are one weekly bucket",
                policy: Policy { keep_weekly: 1, ..p() },
                times: &["2021-12-31 12:00", "2022-01-01 12:00"],
                keep: &["2022-01-01 12:00"] },
            Case { name: "ISO week 53 of 2020 runs into January 2021; week 1 starts on Monday Jan 4",
                policy: Policy { keep_weekly: 2, ..p() },
                times: &["2020-12-27 12:00", "2020-12-31 12:00", "2021-01-03 12:00", "2021-01-04 12:00"],
                keep: &["2021-01-04 12:00", "2021-01-03 12:00"] },
            Case { name: "a rule with buckets left also keeps the oldest snapshot",
                policy: Policy { keep_daily: 10, ..p() },
                times: &["2022-01-01 08:00", "2022-01-01 09:00", "2022-01-02 08:00", "2022-01-02 09:00"],
                keep: &["2022-01-02 09:00", "2022-01-01 09:00", "2022-01-01 08:00"] },
            Case { name: "a rule whose buckets are filled does not keep the oldest",
                policy: Policy { keep_monthly: 1, ..p() },
                times: &["2022-01-01 08:00", "2022-01-01 09:00"],
                keep: &["2022-01-01 09:00"] },
            Case { name: "keep_yearly larger than the number of years keeps one a year and the oldest",
                policy: Policy { keep_yearly: 100, ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2021-12-31 21:00", "2021-12-29 09:00"] },
            Case { name: "keep_within keeps what is newer than the newest snapshot minus the span, not at it",
                policy: Policy { keep_within: Some(span("2d")), ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2022-01-03 09:00", "2022-01-02 21:00", "2022-01-02 09:00"] },
            Case { name: "keep_within in hours",
                policy: Policy { keep_within: Some(span("12h")), ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00"] },
            Case { name: "keep_within: one month before March 31 is March 2 (Feb 31 rolls over)",
                policy: Policy { keep_within: Some(span("1m")), ..p() },
                times: &["2024-03-01 23:00", "2024-03-02 11:59", "2024-03-02 12:00", "2024-03-02 12:01", "2024-03-31 12:00"],
                keep: &["2024-03-31 12:00", "2024-03-02 12:01"] },
            Case { name: "keep_within: one year before Feb 29 is March 1",
                policy: Policy { keep_within: Some(span("1y")), ..p() },
                times: &["2023-02-28 12:00", "2023-03-01 12:00", "2023-03-01 12:01", "2024-02-29 12:00"],
                keep: &["2024-02-29 12:00", "2023-03-01 12:01"] },
            Case { name: "keep_within counts from the newest snapshot, not from now: stopped backups keep theirs",
                policy: Policy { keep_within: Some(span("7d")), ..p() },
                times: &["2021-06-01 12:00", "2021-06-05 12:00", "2021-06-09 12:00"],
                keep: &["2021-06-09 12:00", "2021-06-05 12:00"] },
            Case { name: "a snapshot in the future is kept by keep_within but is not the reference",
                policy: Policy { keep_within: Some(span("7d")), ..p() },
                times: &["2021-06-01 12:00", "2021-06-05 12:00", "2021-06-09 12:00", "2031-01-01 00:00"],
                keep: &["2031-01-01 00:00", "2021-06-09 12:00", "2021-06-05 12:00"] },
            Case { name: "keep_within_hourly keeps one an hour within the span",
                policy: Policy { keep_within_hourly: Some(span("2h")), ..p() }, times: HOURS,
                keep: &["2022-01-01 12:50", "2022-01-01 11:10"] },
            Case { name: "keep_within_daily keeps one a day within the span, none at the cut-off",
                policy: Policy { keep_within_daily: Some(span("3d")), ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2022-01-02 21:00", "2022-01-01 21:00"] },
            Case { name: "keep_within_daily: an hour more reaches the day of the cut-off",
                policy: Policy { keep_within_daily: Some(span("3d1h")), ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2022-01-02 21:00", "2022-01-01 21:00", "2021-12-31 21:00"] },
            Case { name: "keep_within_daily longer than the history keeps one a day and no extra oldest",
                policy: Policy { keep_within_daily: Some(span("1y")), ..p() },
                times: &["2022-01-01 08:00", "2022-01-01 09:00", "2022-01-02 09:00"],
                keep: &["2022-01-02 09:00", "2022-01-01 09:00"] },
            Case { name: "keep_within_weekly",
                policy: Policy { keep_within_weekly: Some(span("10d")), ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2022-01-02 21:00"] },
            Case { name: "keep_within_monthly",
                policy: Policy { keep_within_monthly: Some(span("1y")), ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2021-12-31 21:00"] },
            Case { name: "keep_within_yearly",
                policy: Policy { keep_within_yearly: Some(span("2y")), ..p() },
                times: &["2019-06-01 12:00", "2020-06-01 12:00", "2020-07-01 12:00", "2021-06-01 12:00"],
                keep: &["2021-06-01 12:00", "2020-07-01 12:00"] },
            Case { name: "rules combine: a snapshot is kept when any rule keeps it",
                policy: Policy { keep_last: 1, keep_daily: 2, keep_monthly: 2, ..p() }, times: SPREAD,
                keep: &["2022-01-03 21:00", "2022-01-02 21:00", "2021-12-31 21:00"] },
        ]
    }

    #[test]
    fn each_rule_alone_and_in_combination() {
        for case in utc_cases() {
            assert_eq!(
                kept(&FixedOffset::UTC, &case.policy, case.times, NOW),
                case.keep,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn reasons_name_every_rule_that_keeps_a_snapshot() {
        let policy = Policy {
            keep_last: 1,
            keep_daily: 2,
            keep_weekly: 2,
            keep_monthly: 2,
            keep_yearly: 5,
            keep_within: Some(span("1d")),
            keep_within_daily: Some(span("2d")),
            ..p()
        };
        let decided = decide(&FixedOffset::UTC, &policy, SPREAD, NOW);
        let table: Vec<(&str, Vec<String>)> = decided
            .iter()
            .map(|(t, d)| (t.as_str(), reasons(d)))
            .collect();
        let expected: Vec<(&str, Vec<&str>)> = vec![
            (
                "2022-01-03 21:00",
                vec![
                    "within 1d",
                    "last",
                    "daily",
                    "weekly",
                    "monthly",
                    "yearly",
                    "daily within 2d",
                ],
            ),
            ("2022-01-03 09:00", vec!["within 1d"]),
            (
                "2022-01-02 21:00",
                vec!["daily", "weekly", "daily within 2d"],
            ),
            ("2022-01-02 09:00", vec![]),
            ("2022-01-01 21:00", vec![]),
            ("2022-01-01 09:00", vec![]),
            ("2021-12-31 21:00", vec!["monthly", "yearly"]),
            ("2021-12-31 09:00", vec![]),
            ("2021-12-30 21:00", vec![]),
            ("2021-12-30 09:00", vec![]),
            ("2021-12-29 21:00", vec![]),
            ("2021-12-29 09:00", vec!["yearly (oldest)"]),
        ];
        assert_eq!(table.len(), expected.len());
        for ((time, got), (want_time, want)) in table.iter().zip(&expected) {
            assert_eq!(time, want_time);
            assert_eq!(got, want, "reasons of {time}");
        }
        for (_, d) in &decided {
            assert_eq!(d.keep, !d.reasons.is_empty());
        }
    }

    #[test]
    fn buckets_are_local_days_not_utc_days() {
        // 11:00, 13:30, 14:30, 20:00 UTC are 21:00, 23:30, 00:30 and 06:00 at UTC+10.
        let times: Vec<Timestamp> = [
            "2022-03-01 11:00",
            "2022-03-01 13:30",
            "2022-03-01 14:30",
            "2022-03-01 20:00",
        ]
        .iter()
        .map(|t| at(&FixedOffset::UTC, t))
        .collect();
        let candidates: Vec<Candidate<'_>> = times
            .iter()
            .enumerate()
            .map(|(n, &time)| Candidate {
                id: id(n),
                time,
                tags: &[],
            })
            .collect();
        let policy = Policy {
            keep_daily: 2,
            ..p()
        };
        let kept_ids = |cal: &dyn Calendar| -> Vec<u8> {
            apply(&policy, &candidates, at(&FixedOffset::UTC, NOW), cal)
                .into_iter()
                .filter(|d| d.keep)
                .map(|d| d.id.0[0])
                .collect()
        };
        // UTC+10: the newest of March 2 (06:00) and of March 1 (23:30).
        assert_eq!(kept_ids(&FixedOffset { offset: 10 * 3600 }), vec![3, 1]);
        // UTC: one day, so the newest and, with a bucket left, the oldest.
        assert_eq!(kept_ids(&FixedOffset::UTC), vec![3, 0]);
    }

    #[test]
    fn a_23_hour_day_is_one_daily_bucket() {
        let cal = spring_forward();
        // 00:30 and 23:30 on March 28 are 22 hours apart; the days around are distinct.
        let times = [
            "2021-03-27 23:50",
            "2021-03-28 00:30",
            "2021-03-28 23:30",
            "2021-03-29 00:10",
        ];
        let policy = Policy {
            keep_daily: 3,
            ..p()
        };
        assert_eq!(
            kept(&cal, &policy, &times, "2021-03-30 00:00"),
            ["2021-03-29 00:10", "2021-03-28 23:30", "2021-03-27 23:50"]
        );
        let apart = at(&cal, "2021-03-28 23:30").secs - at(&cal, "2021-03-28 00:30").secs;
        assert_eq!(apart, 22 * 3600);
    }

    #[test]
    fn a_25_hour_day_is_one_daily_bucket() {
        let cal = fall_back();
        // 00:10 and 23:50 on October 31 are 24 h 40 min apart, yet the same day.
        let times = [
            "2021-10-30 12:00",
            "2021-10-31 00:10",
            "2021-10-31 23:50",
            "2021-11-01 00:05",
        ];
        let policy = Policy {
            keep_daily: 3,
            ..p()
        };
        assert_eq!(
            kept(&cal, &policy, &times, "2021-11-02 00:00"),
            ["2021-11-01 00:05", "2021-10-31 23:50", "2021-10-30 12:00"]
        );
        let apart = at(&cal, "2021-10-31 23:50").secs - at(&cal, "2021-10-31 00:10").secs;
        assert_eq!(apart, 24 * 3600 + 40 * 60);
    }

    #[test]
    fn the_repeated_hour_of_a_fall_back_is_one_hourly_bucket() {
        let cal = fall_back();
        // 00:15 and 01:15 UTC both read 02:15 locally; 02:15 UTC reads 03:15.
        let times: Vec<Timestamp> = ["2021-10-31 00:15", "2021-10-31 01:15", "2021-10-31 02:15"]
            .iter()
            .map(|t| at(&FixedOffset::UTC, t))
            .collect();
        assert_eq!(cal.civil(times[0].secs), cal.civil(times[1].secs));
        let candidates: Vec<Candidate<'_>> = times
            .iter()
            .enumerate()
            .map(|(n, &time)| Candidate {
                id: id(n),
                time,
                tags: &[],
            })
            .collect();
        let policy = Policy {
            keep_hourly: 2,
            ..p()
        };
        let kept_ids: Vec<u8> = apply(&policy, &candidates, times[2], &cal)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id.0[0])
            .collect();
        assert_eq!(kept_ids, vec![2, 1]);
    }

    #[test]
    fn keep_within_subtracts_calendar_days_across_a_clock_change() {
        let cal = spring_forward();
        // One day before 2021-03-28 12:00 is 2021-03-27 12:00 local: only 23 hours earlier.
        let times = ["2021-03-27 11:30", "2021-03-27 12:30", "2021-03-28 12:00"];
        let policy = Policy {
            keep_within: Some(span("1d")),
            ..p()
        };
        assert_eq!(
            kept(&cal, &policy, &times, "2021-03-29 00:00"),
            ["2021-03-28 12:00", "2021-03-27 12:30"]
        );
        // Hours are real hours, subtracted after the days.
        let policy = Policy {
            keep_within: Some(span("1d1h")),
            ..p()
        };
        assert_eq!(
            kept(&cal, &policy, &times, "2021-03-29 00:00"),
            ["2021-03-28 12:00", "2021-03-27 12:30", "2021-03-27 11:30"]
        );
    }

    #[test]
    fn equal_times_are_ordered_by_id_whatever_the_input_order() {
        let time = Timestamp {
            secs: 1_700_000_000,
            nanos: 5,
        };
        let tags: &[String] = &[];
        let forward: Vec<Candidate<'_>> = (0..3)
            .map(|n| Candidate {
                id: id(n),
                time,
                tags,
            })
            .collect();
        let backward: Vec<Candidate<'_>> = forward.iter().rev().copied().collect();
        for policy in [
            Policy {
                keep_last: 1,
                ..p()
            },
            Policy {
                keep_daily: 1,
                ..p()
            },
        ] {
            let a = apply(&policy, &forward, time, &FixedOffset::UTC);
            let b = apply(&policy, &backward, time, &FixedOffset::UTC);
            assert_eq!(a, b);
            let order: Vec<u8> = a.iter().map(|d| d.id.0[0]).collect();
            assert_eq!(order, vec![2, 1, 0]);
            let keep: Vec<bool> = a.iter().map(|d| d.keep).collect();
            assert_eq!(keep, vec![true, false, false], "{policy:?}");
        }
        // Nanoseconds order snapshots made within one second.
        let later = Timestamp { nanos: 6, ..time };
        let pair = [
            Candidate {
                id: id(9),
                time,
                tags,
            },
            Candidate {
                id: id(1),
                time: later,
                tags,
            },
        ];
        let decided = apply(
            &Policy {
                keep_last: 1,
                ..p()
            },
            &pair,
            later,
            &FixedOffset::UTC,
        );
        assert_eq!((decided[0].id, decided[0].keep), (id(1), true));
    }

    #[test]
    fn keep_tags_keeps_snapshots_with_any_of_the_tags() {
        let keep = vec!["keep".to_string()];
        let both = vec!["keep".to_string(), "db".to_string()];
        let other = vec!["other".to_string()];
        let none: Vec<String> = Vec::new();
        let t = |secs| Timestamp { secs, nanos: 0 };
        let candidates = [
            Candidate {
                id: id(0),
                time: t(100),
                tags: &keep,
            },
            Candidate {
                id: id(1),
                time: t(200),
                tags: &other,
            },
            Candidate {
                id: id(2),
                time: t(300),
                tags: &both,
            },
            Candidate {
                id: id(3),
                time: t(400),
                tags: &none,
            },
        ];
        let policy = Policy {
            keep_tags: vec!["keep".into(), "db".into()],
            ..p()
        };
        let decided = apply(&policy, &candidates, t(500), &FixedOffset::UTC);
        let table: Vec<(u8, Vec<String>)> =
            decided.iter().map(|d| (d.id.0[0], reasons(d))).collect();
        assert_eq!(
            table,
            vec![
                (3, vec![]),
                (2, vec!["tag:keep".to_string(), "tag:db".to_string()]),
                (1, vec![]),
                (0, vec!["tag:keep".to_string()]),
            ]
        );
        // With keep_last, tags add to what the counted rules keep; they use up no count.
        let policy = Policy {
            keep_last: 1,
            keep_tags: vec!["keep".into()],
            ..p()
        };
        let kept_ids: Vec<u8> = apply(&policy, &candidates, t(500), &FixedOffset::UTC)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id.0[0])
            .collect();
        assert_eq!(kept_ids, vec![3, 2, 0]);
    }

    #[test]
    fn no_snapshots_no_decisions_and_empty_policies_are_recognised() {
        assert!(
            apply(
                &Policy {
                    keep_last: 3,
                    ..p()
                },
                &[],
                Timestamp::default(),
                &FixedOffset::UTC
            )
            .is_empty()
        );
        assert!(Policy::default().is_empty());
        assert!(
            Policy {
                keep_last: 0,
                keep_daily: 0,
                ..p()
            }
            .is_empty()
        );
        assert!(
            !Policy {
                keep_tags: vec!["x".into()],
                ..p()
            }
            .is_empty()
        );
        assert!(
            !Policy {
                keep_within_yearly: Some(span("1y")),
                ..p()
            }
            .is_empty()
        );
        assert!(
            !Policy {
                keep_weekly: 1,
                ..p()
            }
            .is_empty()
        );
    }

    #[test]
    fn spans_parse_and_print() {
        let cases = [
            (
                "1y6m2d3h",
                Span {
                    years: 1,
                    months: 6,
                    days: 2,
                    hours: 3,
                },
                "1y6m2d3h",
            ),
            (
                "7d",
                Span {
                    days: 7,
                    ..Span::default()
                },
                "7d",
            ),
            (
                "2m",
                Span {
                    months: 2,
                    ..Span::default()
                },
                "2m",
            ),
            (
                "36h",
                Span {
                    hours: 36,
                    ..Span::default()
                },
                "36h",
            ),
            (
                "3h1d",
                Span {
                    days: 1,
                    hours: 3,
                    ..Span::default()
                },
                "1d3h",
            ),
            (
                "0y5d",
                Span {
                    days: 5,
                    ..Span::default()
                },
                "5d",
            ),
            (
                "1000000y",
                Span {
                    years: 1_000_000,
                    ..Span::default()
                },
                "1000000y",
            ),
        ];
        for (text, want, shown) in cases {
            let got: Span = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), shown);
            assert_eq!(serde_json::to_string(&got).unwrap(), format!("\"{shown}\""));
        }
    }

    #[test]
    fn spans_reject_bad_input_saying_why() {
        let cases = [
            ("", "empty"),
            ("7", "has no unit"),
            ("d", "no number before 'd'"),
            ("7x", "'x' is not a unit"),
            ("7D", "'D' is not a unit"),
            ("1d2d", "'d' appears twice"),
            ("-1d", "'-' is not a unit"),
            ("1.5d", "'.' is not a unit"),
            (" 7d", "' ' is not a unit"),
            ("0d", "zero keeps nothing"),
            ("0y0h", "zero keeps nothing"),
            ("1000001d", "too large"),
            ("99999999999999999999h", "too large"),
            ("5d3", "3 has no unit"),
        ];
        for (text, why) in cases {
            let err = text.parse::<Span>().unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains("1y6m2d3h"), "{text:?}: {err}");
        }
    }

    #[test]
    fn iso_weeks_around_new_year() {
        let cases = [
            ("2020-12-31", (2020, 53)),
            ("2021-01-03", (2020, 53)),
            ("2021-01-04", (2021, 1)),
            ("2022-01-02", (2021, 52)),
            ("2022-01-03", (2022, 1)),
            ("2024-12-29", (2024, 52)),
            ("2024-12-30", (2025, 1)),
            ("2026-12-31", (2026, 53)),
            ("2027-01-03", (2026, 53)),
            ("2027-01-04", (2027, 1)),
            ("2008-12-29", (2009, 1)),
            ("2010-01-03", (2009, 53)),
            ("2000-02-29", (2000, 9)),
        ];
        for (date, want) in cases {
            assert_eq!(civil(&format!("{date} 12:00")).iso_week(), want, "{date}");
        }
    }

    #[test]
    fn dates_round_trip_through_day_numbers() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        // Days past the end of a month run into the next one.
        assert_eq!(days_from_civil(2024, 2, 31), days_from_civil(2024, 3, 2));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let t = 1_234_567_890;
        assert_eq!(Civil::from_utc_secs(t).to_utc_secs(), t);
        assert_eq!(Civil::from_utc_secs(-1), civil("1969-12-31 23:59:59"));
    }

    #[test]
    fn the_system_calendar_round_trips_away_from_clock_changes() {
        // Mid-January and mid-July, noon UTC: no time zone changes its clocks then.
        for date in [
            "1999-01-15 12:00",
            "2021-07-15 12:00",
            "2038-07-15 12:00",
            "1960-01-15 12:00",
        ] {
            let t = FixedOffset::UTC.secs(&civil(date));
            let local = SystemCalendar.civil(t);
            assert_eq!(SystemCalendar.secs(&local), t, "{date}: {local:?}");
            // No zone is more than a day from UTC.
            assert!((local.to_utc_secs() - t).abs() <= SECS_PER_DAY);
        }
    }
}
