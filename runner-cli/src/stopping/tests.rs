use super::*;

/// A curve `f(p)` at progressions 1..=n.
fn curve(trial: u64, n: usize, f: impl Fn(f64) -> f64) -> Curve {
    Curve::new(trial, (1..=n).map(|p| (p as f64, f(p as f64))).collect())
}

fn all(curves: &[Curve]) -> Curves {
    curves.into()
}

fn opts(min_curves: usize) -> Options {
    Options { min_curves, ..Options::default() }
}

#[test]
fn curves_interpolate_inside_their_range_only() {
    let c = Curve::new(0, vec![(4.0, 2.0), (2.0, 1.0), (4.0, 3.0), (f64::NAN, 1.0)]);
    assert_eq!(c.points, vec![(2.0, 1.0), (4.0, 3.0)], "sorted, the last value of a progression, no NaN");
    assert_eq!(c.at(3.0), Some(2.0));
    assert_eq!(c.at(2.0), Some(1.0));
    assert_eq!(c.at(4.0), Some(3.0));
    assert_eq!(c.at(1.9), None);
    assert_eq!(c.at(4.1), None);
}

#[test]
fn points_pushed_one_at_a_time_make_the_curve_new_makes() {
    let pts = [(3.0, 1.0), (1.0, 5.0), (2.0, 4.0), (3.0, 0.5), (f64::INFINITY, 1.0), (4.0, f64::NAN), (5.0, 2.0)];
    let mut curves = Curves::default();
    for (p, v) in pts {
        curves.push(7, p, v);
    }
    assert_eq!(curves.get(7), Some(&Curve::new(7, pts.to_vec())));
    assert_eq!(curves.get(7).unwrap().points, vec![(1.0, 5.0), (2.0, 4.0), (3.0, 0.5), (5.0, 2.0)]);
    assert_eq!(curves.len(), 1);
}

#[test]
fn percentile_matches_numpy() {
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 25.0), 1.75);
    assert_eq!(percentile(&[5.0], 90.0), 5.0);
}

#[test]
fn percentile_stops_the_bad_curves_and_keeps_the_good_ones() {
    // Losses: trial k decays to k; the worst ones are above the median at progression 5.
    let curves: Vec<Curve> = (0..6).map(|k| curve(k, 5, |p| k as f64 + 10.0 / p)).collect();
    let mut c = Checker::new(Rule::Percentile { threshold: 50.0 }, opts(5));
    let stopped: Vec<u64> = c.decide(&all(&curves), &[0, 1, 2, 3, 4, 5]).into_iter().map(|d| d.trial).collect();
    assert_eq!(stopped, vec![3, 4, 5], "above the median 2.5 + 2 = 4.5 at progression 5");
    // Maximized: the low ones are the bad ones.
    let mut c = Checker::new(Rule::Percentile { threshold: 50.0 }, Options { minimize: false, ..opts(5) });
    let stopped: Vec<u64> = c.decide(&all(&curves), &[0, 1, 2, 3, 4, 5]).into_iter().map(|d| d.trial).collect();
    assert_eq!(stopped, vec![0, 1, 2]);
}

#[test]
fn no_decision_before_min_curves_reach_min_progression_or_have_data_at_the_point() {
    let mut curves: Vec<Curve> = (0..4).map(|k| curve(k, 5, |_| k as f64)).collect();
    let o = Options { min_progression: Some(3.0), ..opts(5) };
    let mut c = Checker::new(Rule::Percentile { threshold: 50.0 }, o);
    assert!(c.decide(&all(&curves), &[3]).is_empty(), "4 curves, min_curves 5");
    // A fifth curve that has not reached min_progression does not count.
    curves.push(curve(4, 2, |_| 0.0));
    assert!(c.decide(&all(&curves), &[3]).is_empty());
    // A fifth that reaches it, but not the compared progression (5): 4 values there.
    curves[4] = curve(4, 4, |_| 0.0);
    assert!(c.decide(&all(&curves), &[3]).is_empty());
    curves[4] = curve(4, 5, |_| 0.0);
    assert_eq!(c.decide(&all(&curves), &[3]).len(), 1);
}

#[test]
fn curves_of_different_lengths_are_compared_where_they_overlap() {
    // Trial 9 is at progression 2.5, between the points of the others: interpolated.
    let mut curves: Vec<Curve> = (0..5).map(|k| curve(k, 10, |p| k as f64 + p)).collect();
    curves.push(Curve::new(9, vec![(1.0, 100.0), (2.5, 100.0)]));
    let mut c = Checker::new(Rule::Percentile { threshold: 50.0 }, opts(5));
    let d = c.decide(&all(&curves), &[9]);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].progression, 2.5);
    assert!(d[0].reason.contains("of the 6 trials with data there"), "{}", d[0].reason);
}

#[test]
fn ties_are_not_worse() {
    let curves: Vec<Curve> = (0..5).map(|k| curve(k, 3, |_| 1.0)).collect();
    let mut c = Checker::new(Rule::Percentile { threshold: 50.0 }, opts(5));
    assert!(c.decide(&all(&curves), &[0, 1, 2, 3, 4]).is_empty());
}

#[test]
fn patience_needs_the_whole_window_to_be_worse() {
    // Trial 5 was good until its last point.
    let mut curves: Vec<Curve> = (0..5).map(|k| curve(k, 6, |_| k as f64)).collect();
    curves.push(curve(5, 6, |p| if p < 6.0 { 0.0 } else { 10.0 }));
    let o = Options { patience: 2.0, ..opts(5) };
    assert!(Checker::new(Rule::Percentile { threshold: 50.0 }, o).decide(&all(&curves), &[5]).is_empty());
    // Without patience its last point alone stops it.
    assert_eq!(Checker::new(Rule::Percentile { threshold: 50.0 }, opts(5)).decide(&all(&curves), &[5]).len(), 1);
    // Bad over the whole window: stopped, and the reason says so.
    curves[5] = curve(5, 6, |p| if p < 4.0 { 0.0 } else { 10.0 });
    let d = Checker::new(Rule::Percentile { threshold: 50.0 }, o).decide(&all(&curves), &[5]);
    assert_eq!(d.len(), 1);
    assert!(d[0].reason.contains("at every point of the last 2 progressions"), "{}", d[0].reason);
}

#[test]
fn protect_best_keeps_the_top_n_by_dense_rank() {
    let curves: Vec<Curve> =
        [0.0, 1.0, 1.0, 2.0, 3.0, 4.0].iter().enumerate().map(|(k, v)| curve(k as u64, 3, |_| *v)).collect();
    // A percentile of 10: all but the best are worse than it.
    let o = Options { protect_best: 2, ..opts(5) };
    let stopped: Vec<u64> = Checker::new(Rule::Percentile { threshold: 90.0 }, o)
        .decide(&all(&curves), &[0, 1, 2, 3, 4, 5])
        .into_iter()
        .map(|d| d.trial)
        .collect();
    // Dense ranks: 0.0 first, both 1.0 second: trials 0, 1, 2 are protected.
    assert_eq!(stopped, vec![3, 4, 5]);
}

#[test]
fn threshold_stops_what_is_worse_than_the_value() {
    let curves: Vec<Curve> = (0..5).map(|k| curve(k, 4, |_| k as f64)).collect();
    let mut c = Checker::new(Rule::Threshold { value: 2.5 }, opts(1));
    let d = c.decide(&all(&curves), &[0, 1, 2, 3, 4]);
    assert_eq!(d.iter().map(|d| d.trial).collect::<Vec<_>>(), vec![3, 4]);
    assert!(d[0].reason.contains("worse than metric_threshold 2.5"), "{}", d[0].reason);
}

#[test]
fn interval_checks_only_at_its_steps_and_the_range_bounds_hold() {
    let o = Options { min_progression: Some(2.0), max_progression: Some(8.0), interval: Some(3.0), ..opts(2) };
    let mut c = Checker::new(Rule::Threshold { value: 0.5 }, o);
    let bad = |n| vec![curve(0, n, |_| 1.0), curve(1, n, |_| 0.0)];
    assert!(c.decide(&all(&bad(1)), &[0]).is_empty(), "before min_progression");
    assert_eq!(c.decide(&all(&bad(2)), &[0]).len(), 1, "first eligible: checked");
    assert!(c.decide(&all(&bad(3)), &[0]).is_empty(), "same interval step (2..5)");
    assert!(c.decide(&all(&bad(4)), &[0]).is_empty());
    assert_eq!(c.decide(&all(&bad(5)), &[0]).len(), 1, "crossed 2 + 3");
    assert!(c.decide(&all(&bad(9)), &[0]).is_empty(), "after max_progression");
}

#[test]
fn asha_keeps_the_top_third_at_each_rung_and_the_first_to_arrive() {
    let rule = Rule::Asha { min_resource: 1.0, max_resource: 9.0, reduction_factor: 3.0 };
    assert_eq!(rung_of(0.5, 1.0, 9.0, 3.0), None);
    assert_eq!(rung_of(1.0, 1.0, 9.0, 3.0), Some(0));
    assert_eq!(rung_of(3.0, 1.0, 9.0, 3.0), Some(1));
    assert_eq!(rung_of(8.9, 1.0, 9.0, 3.0), Some(1));
    assert_eq!(rung_of(27.0, 1.0, 9.0, 3.0), Some(2), "no rung above max_resource");
    let mut c = Checker::new(rule, opts(5));
    // The first trial at rung 0 goes on, whatever its value.
    assert!(c.decide(&all(&[curve(0, 1, |_| 100.0)]), &[0]).is_empty());
    // Six trials at rung 0: the best two go on.
    let curves: Vec<Curve> = (0..6).map(|k| curve(k, 1, |_| k as f64)).collect();
    let mut c = Checker::new(rule, opts(5));
    let stopped: Vec<u64> = c.decide(&all(&curves), &[0, 1, 2, 3, 4, 5]).into_iter().map(|d| d.trial).collect();
    assert_eq!(stopped, vec![2, 3, 4, 5]);
    // Checked once per rung: a second call without a new rung decides nothing.
    assert!(c.decide(&all(&curves), &[2, 3, 4, 5]).is_empty());
    // Rung 1 (progression 3), the value there by interpolation.
    let up: Vec<Curve> = (0..3).map(|k| curve(k, 3, |p| k as f64 * p)).collect();
    let d = c.decide(&all(&up), &[0, 1, 2]);
    assert_eq!(d.iter().map(|d| d.trial).collect::<Vec<_>>(), vec![1, 2], "3 trials at rung 3: the best one goes on");
    assert!(d[0].reason.contains("at rung 3"), "{}", d[0].reason);
}
