use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// Truth by rows: a = [5, 1, 0], b = [2, 3, 1], c never occurs but is predicted once.
fn hand_checked() -> Confusion {
    let mut m = Confusion::new(&["a", "b", "c"]);
    for (truth, predicted, times) in [(0, 0, 5), (0, 1, 1), (1, 0, 2), (1, 1, 3), (1, 2, 1)] {
        for _ in 0..times {
            m.add(truth, predicted);
        }
    }
    m
}

#[test]
fn per_class_precision_recall_and_f1_match_a_hand_computed_matrix() {
    let m = hand_checked().metrics();
    assert_eq!(m.windows, 12);
    assert!(close(m.accuracy, 8.0 / 12.0), "accuracy {}", m.accuracy);
    let a = &m.per_class[0];
    assert_eq!((a.support, a.predicted), (6, 7));
    assert!(close(a.precision, 5.0 / 7.0) && close(a.recall, 5.0 / 6.0) && close(a.f1, 10.0 / 13.0), "{a:?}");
    let b = &m.per_class[1];
    assert_eq!((b.support, b.predicted), (6, 4));
    assert!(close(b.precision, 0.75) && close(b.recall, 0.5) && close(b.f1, 0.6), "{b:?}");
    assert!(close(m.macro_f1, 89.0 / 195.0), "macro F1 {}", m.macro_f1);
    assert!(close(m.macro_precision, (5.0 / 7.0 + 0.75) / 3.0));
    assert!(close(m.macro_recall, (5.0 / 6.0 + 0.5) / 3.0));
    assert_eq!(m.confusion, vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 0, 0]]);
}

#[test]
fn a_class_never_present_or_never_predicted_scores_zero_not_nan() {
    let m = hand_checked().metrics();
    let c = &m.per_class[2];
    assert_eq!((c.support, c.predicted), (0, 1));
    assert_eq!((c.precision, c.recall, c.f1), (0.0, 0.0, 0.0));
    let empty = Confusion::new(&["a", "b"]).metrics();
    assert_eq!((empty.windows, empty.accuracy, empty.macro_f1), (0, 0.0, 0.0));
    assert!(empty.per_class.iter().all(|c| c.precision == 0.0 && c.recall == 0.0 && c.f1 == 0.0));
}

#[test]
fn a_window_is_predicted_as_the_anomaly_raised_first() {
    assert_eq!(decide(&[], 0), 0, "nothing active: normal");
    assert_eq!(decide(&[(30.0, 3)], 0), 3);
    assert_eq!(decide(&[(40.0, 1), (30.0, 4), (35.0, 2)], 0), 4, "the earliest raise wins");
    assert_eq!(decide(&[(30.0, 4), (30.0, 2)], 0), 2, "a tie goes to the lower class index");
}

#[test]
fn argmax_takes_the_first_of_equal_scores() {
    assert_eq!(argmax(&[0.1, 0.6, 0.3]), Some(1));
    assert_eq!(argmax(&[0.4, 0.2, 0.4]), Some(0));
    assert_eq!(argmax(&[]), None);
}

fn ev(t_s: f64, detector: &str, kind: &str, raised: bool) -> Event {
    Event { t_s, detector: detector.into(), kind: kind.into(), raised }
}

fn fault(kind: &str, onset_s: f64) -> Fault {
    Fault { kind: kind.into(), onset_s }
}

#[test]
fn delay_runs_from_the_onset_to_the_first_raise_of_the_faults_kind() {
    let f = fault("cavitation", 100.0);
    let events = [
        ev(60.0, "rules", "overheating", true),
        ev(70.0, "rules", "overheating", false),
        ev(90.0, "rules", "cavitation", true),
        ev(100.0, "rules", "cavitation", false),
        ev(112.0, "rules", "stuck_sensor", true),
        ev(130.0, "rules", "cavitation", true),
        ev(150.0, "rules", "cavitation", true),
    ];
    let o = outcome(7, Some(&f), &events);
    assert_eq!(o.delay_s, Some(30.0), "the raise cleared by the onset reading does not count");
    assert_eq!(o.false_alarms, 2, "the raises at 60 s and 90 s are false alarms");
    assert_eq!(o.wrong_kind, 1);
    assert_eq!((o.run_id, o.class.as_str(), o.onset_s), (7, "cavitation", Some(100.0)));
}

#[test]
fn a_fault_never_raised_is_a_miss_and_one_raised_before_its_onset_counts_at_once() {
    let f = fault("overheating", 100.0);
    let missed = outcome(1, Some(&f), &[ev(150.0, "model", "bearing_wear", true)]);
    assert_eq!((missed.delay_s, missed.wrong_kind, missed.false_alarms), (None, 1, 0));
    let early =
        outcome(2, Some(&f), &[ev(90.0, "model", "overheating", true), ev(150.0, "rules", "overheating", true)]);
    assert_eq!((early.delay_s, early.false_alarms), (Some(0.0), 1));
    // The reading at the onset is taken before the injection: a raise there is a false alarm.
    let at_onset = outcome(5, Some(&f), &[ev(100.0, "model", "overheating", true)]);
    assert_eq!((at_onset.delay_s, at_onset.false_alarms), (Some(0.0), 1));
    // Cleared before the onset: the later raise counts.
    let cleared = [ev(50.0, "model", "overheating", true), ev(80.0, "model", "overheating", false)];
    let mut events = cleared.to_vec();
    events.push(ev(125.0, "model", "overheating", true));
    assert_eq!(outcome(3, Some(&f), &events).delay_s, Some(25.0));
    // Still raised by one detector although the other cleared it.
    let events = [
        ev(50.0, "model", "overheating", true),
        ev(60.0, "rules", "overheating", true),
        ev(80.0, "rules", "overheating", false),
    ];
    assert_eq!(outcome(4, Some(&f), &events).delay_s, Some(0.0));
}

#[test]
fn every_raise_in_a_normal_run_is_a_false_alarm() {
    let events = [
        ev(10.0, "rules", "stuck_sensor", true),
        ev(20.0, "rules", "stuck_sensor", false),
        ev(30.0, "model", "cavitation", true),
    ];
    let o = outcome(0, None, &events);
    assert_eq!((o.class.as_str(), o.onset_s, o.delay_s, o.false_alarms, o.wrong_kind), ("normal", None, None, 2, 0));
}

#[test]
fn summaries_give_median_max_and_misses_per_class() {
    let run = |id, class: &str, onset: Option<f64>, delay: Option<f64>, fa| RunOutcome {
        run_id: id,
        class: class.into(),
        onset_s: onset,
        delay_s: delay,
        false_alarms: fa,
        wrong_kind: 0,
    };
    let outcomes = [
        run(0, "normal", None, None, 0),
        run(1, "normal", None, None, 3),
        run(2, "cavitation", Some(100.0), Some(10.0), 1),
        run(3, "cavitation", Some(100.0), Some(40.0), 0),
        run(4, "cavitation", Some(100.0), None, 0),
        run(5, "cavitation", Some(100.0), Some(20.0), 0),
        run(6, "overheating", Some(100.0), None, 0),
    ];
    let d = summarize(&outcomes, &["cavitation", "overheating", "stuck_sensor"]);
    let cav = &d.per_class[0];
    assert_eq!((cav.runs, cav.detected, cav.missed), (4, 3, 1));
    assert_eq!((cav.median_s, cav.max_s), (Some(20.0), Some(40.0)));
    assert!(close(cav.mean_s.unwrap(), 70.0 / 3.0));
    let hot = &d.per_class[1];
    assert_eq!((hot.runs, hot.detected, hot.missed, hot.median_s, hot.max_s), (1, 0, 1, None, None));
    assert_eq!(d.per_class[2].runs, 0);
    assert_eq!(
        d.false_alarms,
        FalseAlarms { normal_runs: 2, normal_runs_alarmed: 1, in_normal_runs: 3, before_onset: 1, wrong_kind: 0 }
    );
}

#[test]
fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(&[5.0]), Some(5.0));
    assert_eq!(median(&[]), None);
}
