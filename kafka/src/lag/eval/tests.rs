use super::*;

const T: &str = "orders";
const SEC: i64 = 1000;

/// Samples every 5 s, a window of 12 (55 s), STOP after 110 s without progress.
fn evaluator() -> Evaluator {
    Evaluator::new(EvalConfig::new(12, Duration::from_secs(5)))
}

/// A builder for one observation of group `g` on topic `orders`.
struct Obs(Observation);

fn at(seconds: i64) -> Obs {
    Obs(Observation {
        at_ms: 1_700_000_000_000 + seconds * SEC,
        ..Default::default()
    })
}

impl Obs {
    /// Partition `p` with log end `end` (log start 0) and the group's commit there.
    fn part(mut self, p: i32, end: i64, committed: Option<i64>) -> Self {
        self.0
            .watermarks
            .insert((T.into(), p), Watermarks { start: 0, end });
        self.0
            .groups
            .entry("g".into())
            .or_default()
            .committed
            .insert((T.into(), p), committed);
        self
    }

    fn members(mut self, n: Option<usize>) -> Self {
        self.0.groups.entry("g".into()).or_default().members = n;
        self
    }

    /// The first unconsumed record of partition `p`, read from `from`, is `age` seconds old.
    fn record(mut self, p: i32, from: i64, offset: i64, age: i64) -> Self {
        let timestamp_ms = self.0.at_ms - age * SEC;
        self.0.peeks.insert(
            ((T.into(), p), from),
            Peek::Record {
                offset,
                timestamp_ms,
            },
        );
        self
    }

    fn nothing_before_end(mut self, p: i32, from: i64) -> Self {
        self.0
            .peeks
            .insert(((T.into(), p), from), Peek::NothingBeforeEnd);
        self
    }

    fn time(&self) -> i64 {
        self.0.at_ms
    }
}

fn group(report: &LagReport) -> &GroupLag {
    report.group("g").expect("group g is reported")
}

#[test]
fn a_caught_up_idle_group_is_ok_with_no_lag_and_zero_seconds_for_an_hour() {
    let mut eval = evaluator();
    let mut report = None;
    for s in (0..3600).step_by(5) {
        report = Some(eval.observe(at(s).part(0, 500, Some(500)).members(Some(1)).0));
    }
    let report = report.unwrap();
    let g = group(&report);
    assert_eq!((g.status, g.lag, g.lag_seconds), (Status::Ok, 0, 0.0));
    assert_eq!(g.partitions[0].lag_seconds, Some(0.0));
    assert_eq!(g.drain_seconds, Some(0.0));
}

#[test]
fn a_burst_after_an_idle_hour_reads_seconds_not_hours() {
    let mut eval = evaluator();
    for s in (0..3600).step_by(5) {
        eval.observe(at(s).part(0, 500, Some(500)).0);
    }
    // 1,000 records arrived over the last 2 s; the consumer has just started on them.
    let report = eval.observe(at(3600).part(0, 1500, Some(500)).record(0, 500, 500, 2).0);
    let p = &group(&report).partitions[0];
    assert_eq!(p.lag, Some(1000));
    assert_eq!(p.lag_seconds, Some(2.0));
    assert!(!p.lag_seconds_interpolated);

    // Without the record's timestamp the estimate is labelled and bounded by the sampling
    // interval: the log end was still at the commit 5 s ago.
    let mut eval = evaluator();
    for s in (0..3600).step_by(5) {
        eval.observe(at(s).part(0, 500, Some(500)).0);
    }
    let report = eval.observe(at(3605).part(0, 1500, Some(500)).0);
    let p = &group(&report).partitions[0];
    assert!(p.lag_seconds_interpolated);
    assert!(p.lag_seconds.unwrap() <= 5.0, "{p:?}");
}

#[test]
fn a_partition_without_a_commit_is_reported_apart_and_leaves_the_totals_alone() {
    let mut eval = evaluator();
    let report = eval.observe(
        at(0)
            .part(0, 105, Some(100))
            .record(0, 100, 100, 1)
            .part(1, 53, Some(50))
            .record(1, 50, 50, 3)
            .part(2, 1_000_000, None)
            .members(Some(1))
            .0,
    );
    let g = group(&report);
    assert_eq!(
        (g.lag, g.max_lag, g.lag_seconds, g.uncommitted_partitions),
        (8, 5, 3.0, 1)
    );
    let uncommitted = &g.partitions[2];
    assert_eq!(
        (
            uncommitted.committed_offset,
            uncommitted.lag,
            uncommitted.lag_seconds
        ),
        (None, None, None)
    );
    assert_eq!(g.topics[0].lag, 8);
}

#[test]
fn lag_is_never_negative_and_counts_from_log_start() {
    let mut eval = evaluator();
    // A high watermark reported below the commit (tansu's memory engine does this after a
    // batch of several records) reads as caught up.
    let report = eval.observe(at(0).part(0, 10, Some(14)).0);
    assert_eq!(group(&report).partitions[0].lag, Some(0));
    assert_eq!(group(&report).lag, 0);

    // A commit below log start: the deleted records are not lag.
    let mut obs = at(5).part(0, 300, Some(20)).record(0, 200, 200, 4);
    obs.0.watermarks.get_mut(&(T.into(), 0)).unwrap().start = 200;
    let report = eval.observe(obs.0);
    assert_eq!(group(&report).partitions[0].lag, Some(100));
}

#[test]
fn a_commit_behind_only_a_transaction_marker_is_caught_up_not_one_behind() {
    let mut eval = evaluator();
    let mut report = None;
    for s in (0..600).step_by(5) {
        report = Some(
            eval.observe(
                at(s)
                    .part(0, 101, Some(100))
                    .nothing_before_end(0, 100)
                    .members(Some(1))
                    .0,
            ),
        );
    }
    let g = group(report.as_ref().unwrap());
    assert_eq!((g.lag, g.lag_seconds, g.status), (0, 0.0, Status::Ok));
    // A compaction gap: the first record left is at 150, so 50 records remain, not 100.
    let report = eval.observe(at(600).part(0, 200, Some(100)).record(0, 100, 150, 1).0);
    assert_eq!(group(&report).lag, 50);
}

#[test]
fn a_committed_offset_that_goes_back_is_rewind() {
    let mut eval = evaluator();
    eval.observe(at(0).part(0, 200, Some(150)).record(0, 150, 150, 1).0);
    let report = eval.observe(at(5).part(0, 200, Some(40)).record(0, 40, 40, 9).0);
    assert_eq!(group(&report).status, Status::Rewind);
    assert_eq!(group(&report).partitions[0].status, Status::Rewind);
}

/// A lagging partition whose offset does not move, observed every 5 s for `seconds`, of
/// one of the platform's groups (`expected`) or another.
fn standing_still_in(members: Option<usize>, seconds: i64, expected: bool) -> Status {
    let mut eval = evaluator();
    let mut status = Status::Ok;
    for s in (0..=seconds).step_by(5) {
        let mut obs = at(s)
            .part(0, 300, Some(100))
            .record(0, 100, 100, s + 1)
            .members(members);
        obs.0.groups.get_mut("g").unwrap().expected = expected;
        status = group(&eval.observe(obs.0)).status;
    }
    status
}

fn standing_still(members: Option<usize>, seconds: i64) -> Status {
    standing_still_in(members, seconds, true)
}

#[test]
fn an_offset_standing_still_while_behind_is_stall_with_members_and_stop_without() {
    assert_eq!(standing_still(Some(2), 30), Status::Ok, "within the window");
    assert_eq!(standing_still(Some(0), 0), Status::Stop, "nobody consumes");
    // A group that consumes by assignment has no members: judged on movement alone.
    assert_eq!(standing_still_in(Some(0), 30, false), Status::Ok);
    assert_eq!(standing_still_in(Some(0), 60, false), Status::Stop);
    assert_eq!(standing_still(Some(2), 60), Status::Stall);
    assert_eq!(standing_still(Some(0), 60), Status::Stop);
    assert_eq!(standing_still(None, 60), Status::Stall);
    assert_eq!(standing_still(None, 120), Status::Stop, "past stop_after");
    assert_eq!(
        standing_still(Some(2), 300),
        Status::Stall,
        "members are there: stalled, however long"
    );
}

#[test]
fn records_waiting_without_a_commit_stall_a_group_that_should_consume_them() {
    let observe = |eval: &mut Evaluator, s: i64, expected: bool, members: Option<usize>| {
        let mut obs = at(s)
            .part(0, 10, Some(10))
            .part(1, 500, None)
            .members(members);
        obs.0.groups.get_mut("g").unwrap().expected = expected;
        group(&eval.observe(obs.0)).clone()
    };
    let mut eval = evaluator();
    assert_eq!(observe(&mut eval, 0, true, Some(1)).status, Status::Ok);
    assert_eq!(observe(&mut eval, 30, true, Some(1)).status, Status::Ok);
    let g = observe(&mut eval, 60, true, Some(1));
    assert_eq!(
        (g.status, g.partitions[1].status),
        (Status::Stall, Status::Stall)
    );
    assert_eq!(
        (g.lag, g.uncommitted_partitions),
        (0, 1),
        "still out of the totals"
    );
    assert_eq!(observe(&mut eval, 65, true, Some(0)).status, Status::Stop);

    // Another team's group, watched on what it has consumed, is not judged on the rest.
    let mut eval = evaluator();
    for s in [0, 30, 60, 120] {
        assert_eq!(observe(&mut eval, s, false, Some(1)).status, Status::Ok);
    }
}

#[test]
fn an_unreadable_broker_turns_even_caught_up_groups_stall_then_stop() {
    let mut eval = evaluator();
    let first = at(0).part(0, 300, Some(300)).members(Some(1));
    let start = first.time();
    eval.observe(first.0);
    let report = eval.observe_failure(start + 10 * SEC, "broker down".into());
    assert_eq!(group(&report).status, Status::Ok, "not yet a window");
    assert_eq!(report.failing_since, report.sampled_at.into());
    let report = eval.observe_failure(start + 60 * SEC, "broker down".into());
    assert_eq!(group(&report).status, Status::Stall);
    let report = eval.observe_failure(start + 120 * SEC, "broker down".into());
    assert_eq!(group(&report).status, Status::Stop);
    assert_eq!(
        report.failing_since.unwrap().timestamp_millis(),
        start + 10 * SEC,
        "failing since the first failure"
    );
    // Readable again: judged on what it sees.
    let report = eval.observe(at(125).part(0, 300, Some(300)).members(Some(1)).0);
    assert_eq!(group(&report).status, Status::Ok);
    assert!(report.up && report.failing_since.is_none());
}

#[test]
fn status_does_not_depend_on_how_often_the_consumer_commits() {
    // One consumer commits every 5 s, another every 20 s; both keep up with a steady
    // producer, a few hundred records behind at any moment.
    for every in [5, 20] {
        let mut eval = evaluator();
        let mut status = Status::Ok;
        for s in (0..600).step_by(5) {
            let end = 1000 + s * 10;
            let committed = 1000 + (s / every) * every * 10 - 200;
            let obs = at(s)
                .part(0, end, Some(committed))
                .record(0, committed, committed, 1)
                .members(Some(1));
            status = group(&eval.observe(obs.0)).status;
        }
        assert_eq!(status, Status::Ok, "committing every {every} s");
    }
}

#[test]
fn lag_growing_through_the_window_while_consuming_is_warn() {
    let mut eval = evaluator();
    let mut report = None;
    for (i, s) in (0..60).step_by(5).enumerate() {
        let i = i as i64;
        // Consumes 10 per sample, 30 arrive.
        let obs = at(s)
            .part(0, 1000 + 30 * i, Some(900 + 10 * i))
            .record(0, 900 + 10 * i, 900 + 10 * i, 2)
            .members(Some(1));
        report = Some(eval.observe(obs.0));
    }
    let g = group(report.as_ref().unwrap());
    assert_eq!(g.status, Status::Warn);
    assert!(g.drain_seconds.is_none(), "a growing backlog never drains");
    assert!((g.consume_rate.unwrap() - 2.0).abs() < 1e-9);
    assert!((g.produce_rate.unwrap() - 6.0).abs() < 1e-9);
}

#[test]
fn a_consumer_caught_up_at_any_sample_of_the_window_is_not_warn() {
    let mut eval = evaluator();
    let mut status = Status::Ok;
    for (i, s) in (0..60).step_by(5).enumerate() {
        let i = i as i64;
        // Lag 0, then 1, 2, 3, ...: growing, but caught up at the start of the window.
        let obs = at(s)
            .part(0, 1000 + 11 * i, Some(1000 + 10 * i))
            .record(0, 1000 + 10 * i, 1000 + 10 * i, 1)
            .members(Some(1));
        status = group(&eval.observe(obs.0)).status;
    }
    assert_eq!(status, Status::Ok);
}

#[test]
fn a_consumer_keeping_pace_with_a_steady_backlog_drains_at_its_own_rate() {
    let mut eval = evaluator();
    let mut report = None;
    for (i, s) in (0..60).step_by(5).enumerate() {
        let i = i as i64;
        // 100 produced and 100 consumed every 5 s, 40 waiting throughout.
        let obs = at(s)
            .part(0, 1040 + 100 * i, Some(1000 + 100 * i))
            .record(0, 1000 + 100 * i, 1000 + 100 * i, 1)
            .members(Some(1));
        report = Some(eval.observe(obs.0));
    }
    let g = group(report.as_ref().unwrap());
    assert_eq!((g.lag, g.status), (40, Status::Ok));
    // 20 records/s: the 40 waiting take 2 s.
    assert!((g.drain_seconds.unwrap() - 2.0).abs() < 1e-9, "{g:?}");
}

#[test]
fn time_to_drain_follows_the_rates() {
    let mut eval = evaluator();
    let mut report = None;
    for (i, s) in (0..60).step_by(5).enumerate() {
        let i = i as i64;
        // 100 behind at the end; consumes 50 per 5 s, produces 25 per 5 s.
        let committed = 125 + 50 * i;
        let obs = at(s)
            .part(0, 10 * 50 + 25 * i, Some(committed))
            .record(0, committed, committed, 1)
            .members(Some(1));
        report = Some(eval.observe(obs.0));
    }
    let g = group(report.as_ref().unwrap());
    assert_eq!(g.lag, 100);
    assert_eq!(g.status, Status::Ok);
    // Net 5 records/s: 100 records in 20 s.
    assert!((g.drain_seconds.unwrap() - 20.0).abs() < 1e-9, "{g:?}");
}

#[test]
fn a_stopped_group_stays_reported_until_retention_and_a_deleted_one_goes() {
    let mut config = EvalConfig::new(12, Duration::from_secs(5));
    config.retention = Duration::from_secs(600);
    let mut eval = Evaluator::new(config);
    for s in (0..=590).step_by(5) {
        let report = eval.observe(
            at(s)
                .part(0, 300 + s, Some(100))
                .record(0, 100, 100, s)
                .members(Some(0))
                .0,
        );
        assert!(report.group("g").is_some(), "reported at {s} s");
    }
    let report = eval.observe(at(605).part(0, 905, Some(100)).members(Some(0)).0);
    assert!(report.group("g").is_none(), "dropped after retention");

    // An extra group deleted from the broker: no commits and no members.
    let mut eval = evaluator();
    eval.observe(at(0).part(0, 10, Some(10)).0);
    let report = eval.observe(at(5).part(0, 10, None).members(Some(0)).0);
    assert!(report.group("g").is_none());
    // One of the platform's own groups is reported before its first commit.
    let mut obs = at(10).part(0, 10, None).members(Some(0));
    obs.0.groups.get_mut("g").unwrap().expected = true;
    let report = eval.observe(obs.0);
    assert_eq!(group(&report).uncommitted_partitions, 1);
}

#[test]
fn a_failed_sample_carries_the_offsets_forward_and_lagging_groups_stall() {
    let mut eval = evaluator();
    let first = at(0)
        .part(0, 300, Some(100))
        .record(0, 100, 100, 1)
        .members(Some(1));
    let start = first.time();
    eval.observe(first.0);
    let report = eval.observe_failure(start + 60 * SEC, "broker down".into());
    assert!(!report.up);
    assert_eq!(report.error.as_deref(), Some("broker down"));
    let g = group(&report);
    assert_eq!((g.lag, g.status), (200, Status::Stall));
}

#[test]
fn statuses_are_ordered_from_best_to_worst() {
    assert!(Status::Ok < Status::Warn);
    assert!(Status::Warn < Status::Rewind);
    assert!(Status::Rewind < Status::Stall);
    assert!(Status::Stall < Status::Stop);
}
