//! The figures of a run: attainable calls, fair shares, Jain's index,
//! percentiles.

use crate::spec::Scenario;

/// Calls each app makes over the run.
pub fn offered_per_app(s: &Scenario) -> Vec<u64> {
    s.apps
        .iter()
        .map(|a| (0..s.minutes).map(|m| s.rate(a, m).round() as u64).sum())
        .collect()
}

/// Calls an ideal client could get answered: the calls the ideal FIFO
/// schedule ([`crate::ideal::ideal`]) admits before the end of the drain
/// minutes, at the quota's rate (the primary model's, then the fallback
/// model's when the scenario has one; none of a model's while a fault takes
/// it out). Partial 503 faults are ignored (an ideal client retries them).
pub fn attainable(s: &Scenario) -> f64 {
    crate::ideal::ideal(s).served as f64
}

/// Max-min fair shares of `total` among demands `offered` (water filling).
pub fn fair_shares(offered: &[u64], total: f64) -> Vec<f64> {
    let mut share = vec![0.0; offered.len()];
    let mut left = total;
    let mut open: Vec<usize> = (0..offered.len()).filter(|&i| offered[i] > 0).collect();
    while !open.is_empty() && left > 1e-9 {
        let each = left / open.len() as f64;
        let mut next = Vec::new();
        for &i in &open {
            let want = offered[i] as f64 - share[i];
            let give = want.min(each);
            share[i] += give;
            left -= give;
            if offered[i] as f64 - share[i] > 1e-9 {
                next.push(i);
            }
        }
        if next.len() == open.len() {
            break;
        }
        open = next;
    }
    share
}

/// Jain's fairness index of `x`: `(sum x)^2 / (n * sum x^2)`, 1 when all
/// are equal, `1/n` when one gets everything.
pub fn jain(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let sum: f64 = x.iter().sum();
    let sq: f64 = x.iter().map(|v| v * v).sum();
    if sq == 0.0 { 1.0 } else { sum * sum / (n * sq) }
}

/// A percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_bounds() {
        assert!((jain(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[1.0, 0.0, 0.0]) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn water_filling_gives_small_demands_all_they_ask() {
        let s = fair_shares(&[1600, 160], 1200.0);
        assert!((s[1] - 160.0).abs() < 1e-9);
        assert!((s[0] - 1040.0).abs() < 1e-9);
        let s = fair_shares(&[10, 10], 100.0);
        assert_eq!(s, vec![10.0, 10.0]);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn the_seed_peak_is_attainable_in_full() {
        // 1410 calls, 150 a minute, a backlog of 125 drained after the peak.
        let s = Scenario::seed_peak();
        assert_eq!(s.total_calls(), 1410);
        assert!((attainable(&s) - 1410.0).abs() < 1e-9);
        // At 100 rpm: 90 in the first minute (all there is), then 100 a
        // minute for the 12 others, the queue never empty.
        let s = s.with_quota_factor(100.0 / 150.0);
        assert!((attainable(&s) - 1290.0).abs() < 1e-9);
    }

    #[test]
    fn an_overload_without_fallback_removes_the_primary() {
        let mut s = Scenario::overload_fallback();
        s.drain_minutes = 0;
        let with = attainable(&s);
        s.fallback = None;
        let without = attainable(&s);
        assert!(without < with);
    }
}
